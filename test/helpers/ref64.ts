// A tiny float64 N-D reference, written independently of the library: row-major Float64Array +
// shape, numpy broadcasting, and exactly the ops of mixprec.ops (forward only, PyTorch semantics),
// plus central finite differences in float64 for gradient checks.
import { erf } from './reference';

export interface A64 {
  readonly data: Float64Array;
  readonly shape: readonly number[];
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function arr(data: ArrayLike<number>, shape: readonly number[]): A64 {
  if (data.length !== numel(shape)) throw new Error(`ref64: ${data.length} values for shape [${shape}]`);
  return { data: Float64Array.from(data), shape: [...shape] };
}
export const scalar = (v: number): A64 => arr([v], []);
export const zeros64 = (shape: readonly number[]): A64 => arr(new Float64Array(numel(shape)), shape);

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
  return s;
}

export function normDim(d: number, ndim: number): number {
  const r = d < 0 ? d + ndim : d;
  if (!Number.isInteger(r) || r < 0 || r >= Math.max(ndim, 1)) throw new Error(`ref64: dim ${d} out of range for ${ndim}-D`);
  return r;
}

/** out[idx] = f(idx) over `shape` (idx is reused between calls: copy it to keep it). */
function build(shape: readonly number[], f: (idx: number[]) => number): A64 {
  const n = numel(shape), out = new Float64Array(n), idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    out[i] = f(idx);
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
  return { data: out, shape: [...shape] };
}

export const map = (a: A64, f: (x: number) => number): A64 => ({ data: a.data.map(f), shape: [...a.shape] });
export const abs = (a: A64): A64 => map(a, Math.abs);

// ---------------------------------------------------------------------------------------------
// Broadcasting and element-wise ops

export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length), out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`ref64: shapes [${a}] and [${b}] do not broadcast`);
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** a viewed with `shape` (a broadcast of a.shape): offsets for each out index. */
function broadcastReader(a: A64, shape: readonly number[]): (idx: number[]) => number {
  const st = stridesOf(a.shape), off = shape.length - a.shape.length;
  return (idx) => {
    let o = 0;
    for (let d = 0; d < a.shape.length; d++) if (a.shape[d] !== 1) o += idx[d + off] * st[d];
    return a.data[o];
  };
}

export function expand(a: A64, shape: readonly number[]): A64 {
  const r = broadcastReader(a, shape);
  return build(shape, r);
}

function binary(a: A64, b: A64 | number, f: (x: number, y: number) => number): A64 {
  const bb = typeof b === 'number' ? scalar(b) : b;
  const shape = broadcastShapes(a.shape, bb.shape);
  const ra = broadcastReader(a, shape), rb = broadcastReader(bb, shape);
  return build(shape, (idx) => f(ra(idx), rb(idx)));
}
export const add = (a: A64, b: A64 | number): A64 => binary(a, b, (x, y) => x + y);
export const sub = (a: A64, b: A64 | number): A64 => binary(a, b, (x, y) => x - y);
export const mul = (a: A64, b: A64 | number): A64 => binary(a, b, (x, y) => x * y);

export const relu = (a: A64): A64 => map(a, (x) => (x > 0 ? x : 0));
export const gelu1 = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const gelu = (a: A64): A64 => map(a, gelu1);
export function activation(a: A64, act: 'none' | 'relu' | 'gelu' = 'none'): A64 {
  return act === 'relu' ? relu(a) : act === 'gelu' ? gelu(a) : a;
}

// ---------------------------------------------------------------------------------------------
// Shape ops (each a copy in row-major order of the logical result)

export function reshape(a: A64, shape: readonly number[]): A64 {
  const s = [...shape];
  const inf = s.indexOf(-1);
  if (inf >= 0) {
    const rest = numel(s.filter((_, i) => i !== inf));
    s[inf] = rest === 0 ? 0 : numel(a.shape) / rest;
  }
  if (numel(s) !== numel(a.shape)) throw new Error(`ref64: reshape [${a.shape}] -> [${shape}]`);
  return { data: Float64Array.from(a.data), shape: s };
}

export function permute(a: A64, dims: readonly number[]): A64 {
  const nd = a.shape.length, p = dims.map((d) => normDim(d, nd));
  const st = stridesOf(a.shape);
  const shape = p.map((d) => a.shape[d]);
  return build(shape, (idx) => {
    let o = 0;
    for (let i = 0; i < nd; i++) o += idx[i] * st[p[i]];
    return a.data[o];
  });
}

export function transpose(a: A64, d0: number, d1: number): A64 {
  const nd = a.shape.length, p = [...Array(nd).keys()];
  const x = normDim(d0, nd), y = normDim(d1, nd);
  [p[x], p[y]] = [p[y], p[x]];
  return permute(a, p);
}

export function narrow(a: A64, dim: number, start: number, length: number): A64 {
  const d = normDim(dim, a.shape.length), st = stridesOf(a.shape);
  if (start < 0) start += a.shape[d];
  if (start < 0 || length < 0 || start + length > a.shape[d]) throw new Error('ref64: narrow out of range');
  const shape = [...a.shape];
  shape[d] = length;
  return build(shape, (idx) => {
    let o = 0;
    for (let i = 0; i < shape.length; i++) o += (i === d ? idx[i] + start : idx[i]) * st[i];
    return a.data[o];
  });
}

export function cat(xs: readonly A64[], dim: number): A64 {
  const nd = xs[0].shape.length, d = normDim(dim, nd);
  const shape = [...xs[0].shape];
  shape[d] = xs.reduce((s, x) => s + x.shape[d], 0);
  const starts: number[] = [];
  let acc = 0;
  for (const x of xs) { starts.push(acc); acc += x.shape[d]; }
  return build(shape, (idx) => {
    let k = 0;
    while (idx[d] >= starts[k] + xs[k].shape[d]) k++;
    const x = xs[k], st = stridesOf(x.shape);
    let o = 0;
    for (let i = 0; i < nd; i++) o += (i === d ? idx[i] - starts[k] : idx[i]) * st[i];
    return x.data[o];
  });
}

// ---------------------------------------------------------------------------------------------
// Reductions along dims

function dimsArg(dim: number | readonly number[] | undefined, nd: number): number[] {
  if (dim === undefined) return [...Array(nd).keys()];
  return [...new Set((typeof dim === 'number' ? [dim] : dim).map((d) => normDim(d, nd)))].sort((x, y) => x - y);
}

/** sum over `dim` (all dims when absent), keepdim as PyTorch; `count` gets the reduced count. */
export function sum(a: A64, opts: { dim?: number | readonly number[]; keepdim?: boolean } = {}): A64 {
  const nd = a.shape.length, dims = dimsArg(opts.dim, nd), red = new Set(dims);
  const keepShape = a.shape.map((s, i) => (red.has(i) ? 1 : s));
  const out = new Float64Array(numel(keepShape)), kst = stridesOf(keepShape);
  const idx = new Array<number>(nd).fill(0);
  for (let i = 0; i < a.data.length; i++) {
    let o = 0;
    for (let d = 0; d < nd; d++) if (!red.has(d)) o += idx[d] * kst[d];
    out[o] += a.data[i];
    for (let d = nd - 1; d >= 0; d--) { if (++idx[d] < a.shape[d]) break; idx[d] = 0; }
  }
  const shape = opts.keepdim ? keepShape : a.shape.filter((_, i) => !red.has(i));
  return { data: out, shape };
}

export function mean(a: A64, opts: { dim?: number | readonly number[]; keepdim?: boolean } = {}): A64 {
  const dims = dimsArg(opts.dim, a.shape.length);
  const count = dims.reduce((p, d) => p * a.shape[d], 1);
  return map(sum(a, opts), (x) => x / count); // count 0: 0/0 = NaN, as PyTorch
}

/** Applies f to every 1-D lane along `dim` (values in, values out, same length). */
function alongDim(a: A64, dim: number, f: (lane: Float64Array) => Float64Array): A64 {
  const nd = a.shape.length, d = normDim(dim, nd);
  const n = a.shape[d], st = stridesOf(a.shape)[d];
  const out = new Float64Array(a.data.length);
  const outer = numel(a.shape.slice(0, d)), inner = numel(a.shape.slice(d + 1));
  const lane = new Float64Array(n);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * n * inner + i;
      for (let k = 0; k < n; k++) lane[k] = a.data[base + k * st];
      const r = f(lane);
      for (let k = 0; k < n; k++) out[base + k * st] = r[k];
    }
  }
  return { data: out, shape: [...a.shape] };
}

function lse(lane: Float64Array): number {
  let m = -Infinity;
  for (const v of lane) m = Math.max(m, v);
  if (m === -Infinity) return NaN; // all -inf: PyTorch gives NaN
  let s = 0;
  for (const v of lane) s += Math.exp(v - m);
  return m + Math.log(s);
}
export const softmax = (a: A64, dim = -1): A64 => alongDim(a, dim, (l) => { const z = lse(l); return l.map((v) => Math.exp(v - z)); });
export const logSoftmax = (a: A64, dim = -1): A64 => alongDim(a, dim, (l) => { const z = lse(l); return l.map((v) => v - z); });

/** LayerNorm over the last dim: biased variance, (x - mean) / sqrt(var + eps) * w + b. */
export function layerNorm(x: A64, w: A64 | null, b: A64 | null, eps = 1e-5): A64 {
  const N = x.shape[x.shape.length - 1];
  return alongDim(x, -1, (l) => {
    let mu = 0;
    for (const v of l) mu += v;
    mu /= N;
    let v2 = 0;
    for (const v of l) v2 += (v - mu) ** 2;
    const r = 1 / Math.sqrt(v2 / N + eps);
    return l.map((v, j) => (v - mu) * r * (w ? w.data[j] : 1) + (b ? b.data[j] : 0));
  });
}

// ---------------------------------------------------------------------------------------------
// matmul (torch.matmul), linear, the 2-D fused GEMM

/** torch.matmul: 1-D operands get a dim prepended (a) / appended (b) and removed after; batch dims broadcast. */
export function matmul(a: A64, b: A64): A64 {
  if (a.shape.length === 0 || b.shape.length === 0) throw new Error('ref64: matmul of a 0-d operand');
  const a2 = a.shape.length === 1 ? reshape(a, [1, a.shape[0]]) : a;
  const b2 = b.shape.length === 1 ? reshape(b, [b.shape[0], 1]) : b;
  const [M, K] = a2.shape.slice(-2), [Kb, N] = b2.shape.slice(-2);
  if (K !== Kb) throw new Error(`ref64: matmul inner dims ${K} and ${Kb}`);
  const batch = broadcastShapes(a2.shape.slice(0, -2), b2.shape.slice(0, -2));
  const A = expand(a2, [...batch, M, K]), B = expand(b2, [...batch, K, N]);
  const nb = numel(batch), out = new Float64Array(nb * M * N);
  for (let p = 0; p < nb; p++)
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += A.data[p * M * K + m * K + k] * B.data[p * K * N + k * N + n];
        out[p * M * N + m * N + n] = acc;
      }
  const shape = [...batch];
  if (a.shape.length > 1) shape.push(M);
  if (b.shape.length > 1) shape.push(N);
  return { data: out, shape };
}

export interface Fused2dOptions {
  transA?: boolean; transB?: boolean; alpha?: number; beta?: number; c?: A64; bias?: A64;
  activation?: 'none' | 'relu' | 'gelu';
}
/** act(alpha * op(a) @ op(b) + beta * c + bias) for 2-D operands (BLAS layout of the options). */
export function matmulFused(a: A64, b: A64, o: Fused2dOptions = {}): A64 {
  const A = o.transA ? transpose(a, 0, 1) : a, B = o.transB ? transpose(b, 0, 1) : b;
  let y = mul(matmul(A, B), o.alpha ?? 1);
  if (o.c) y = add(y, mul(o.c, o.beta ?? 1));
  if (o.bias) y = add(y, o.bias);
  return activation(y, o.activation);
}

/** x [..., in] @ w[out, in]^T + b. */
export function linear(x: A64, w: A64, b?: A64 | null, act: 'none' | 'relu' | 'gelu' = 'none'): A64 {
  let y = matmul(x, transpose(w, 0, 1));
  if (b) y = add(y, b);
  return activation(y, act);
}

// ---------------------------------------------------------------------------------------------
// Embedding, losses, dropout with a given mask

/** weight [V, C] rows gathered by ids (any shape) -> [...idsShape, C]. */
export function embedding(ids: ArrayLike<number>, idsShape: readonly number[], w: A64): A64 {
  const C = w.shape[1], out = new Float64Array(ids.length * C);
  for (let i = 0; i < ids.length; i++) for (let c = 0; c < C; c++) out[i * C + c] = w.data[ids[i] * C + c];
  return { data: out, shape: [...idsShape, C] };
}

/** PyTorch's cross_entropy(logits [N, C], targets, label_smoothing), mean over N -> shape []. */
export function crossEntropy(logits: A64, targets: ArrayLike<number>, labelSmoothing = 0): A64 {
  const [N, C] = logits.shape, lp = logSoftmax(logits, -1);
  let total = 0;
  for (let i = 0; i < N; i++) {
    let smooth = 0;
    for (let c = 0; c < C; c++) smooth -= lp.data[i * C + c];
    total += (1 - labelSmoothing) * -lp.data[i * C + targets[i]] + (labelSmoothing / C) * smooth;
  }
  return scalar(total / N);
}

export function mseLoss(p: A64, t: A64): A64 {
  const d = sub(p, t);
  let s = 0;
  for (const v of d.data) s += v * v;
  return scalar(s / d.data.length);
}

/** The dropout of x with a given keep mask (1 keep, 0 drop): x * mask / (1 - p). */
export const dropoutWithMask = (x: A64, mask: A64, p: number): A64 => mul(mul(x, mask), 1 / (1 - p));

// ---------------------------------------------------------------------------------------------
// Finite differences

/**
 * d f / d inputs[which] by central differences in float64: (f(x + h e_i) - f(x - h e_i)) / 2h,
 * f scalar (shape [] or one element). Error: truncation h^2/6 |f'''| plus round-off
 * ~ 2^-53 |f| / h; with h = 1e-6 and O(1) values both are below 1e-9, far under FP32's 2^-24.
 */
export function fdGrad(f: (xs: A64[]) => A64, inputs: readonly A64[], which: number, h = 1e-6): Float64Array {
  const xs = inputs.map((x) => ({ data: Float64Array.from(x.data), shape: [...x.shape] }));
  const x = xs[which], g = new Float64Array(x.data.length);
  for (let i = 0; i < x.data.length; i++) {
    const v = x.data[i];
    x.data[i] = v + h;
    const fp = f(xs).data[0];
    x.data[i] = v - h;
    const fm = f(xs).data[0];
    x.data[i] = v;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

/** sum(y * g): turns a non-scalar output into the scalar whose gradient is J^T g. */
export function dot(y: A64, g: A64): A64 {
  if (numel(y.shape) !== numel(g.shape)) throw new Error('ref64: dot of different sizes');
  let s = 0;
  for (let i = 0; i < y.data.length; i++) s += y.data[i] * g.data[i];
  return scalar(s);
}
