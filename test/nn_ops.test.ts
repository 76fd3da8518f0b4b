// The raw native layer's element-wise, layer and loss ops through the binding (fill, copy,
// binary, reduceSum, activation forward / backward, dropout, softmax forward / backward, softmax
// cross-entropy, MSE, LayerNorm forward / backward, embedding forward / backward), on every
// available backend, against float64 references written here from the textbook formulas
// (PyTorch's semantics), plus finite differences of those references for the backward ops. Inputs
// are drawn fresh each run (the seed is logged); every output is poisoned with NaN first, with a
// few poisoned elements past its end that must stay untouched. Tolerances are derived from the
// dtypes' unit roundoffs and the number of FP32 operations behind each result.
//
// Imports only src/native, src/float16 (through test/helpers/raw) and test/helpers: the
// TypeScript layer is not involved.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { ActCode, StorageHandle } from '../binding';
import { native } from '../src/native';
import { fastRandom } from './helpers/random';
import {
  BF16, BACKENDS, Buf, DType, DTYPES, Device, EPS32, F16, F32, NAN_BITS, TINY, U, alloc, bytesOf, codeOf, dc,
  describeEachBackend, expectClose, expectExact, inp, int32s, makeRng, out, read, readAll, readInt32, readSlots,
  releaseAll, roundTo, slots,
} from './helpers/raw';
import { erf, gelu64 } from './helpers/reference';

const rng = makeRng('nn_ops.test');
// Math's functions held locally: a global lookup inside jest's sandbox is slow in hot loops.
const { abs, cos, exp, floor, fround, log, log2, max, min, sqrt } = Math;
const TWO_PI = 2 * Math.PI;
/** Bulk randomness: a local mulberry32 seeded from the logged test rng (so a run still replays). */
const fastRng = fastRandom(rng);

afterEach(releaseAll);

/** Labels / ids as int32 storage. */
const labelsOn = (labels: ArrayLike<number>, device: Device): StorageHandle => int32s(labels, device);
/** Metrics storage: 4 slots of 4 bytes, all NaN bits (loss at lossOffset, correct at correctOffset). */
const metricsOut = (device: Device): StorageHandle => slots(4, device);
const readMetrics = (h: StorageHandle) => readSlots(h, 4);
/** One FP32 in backend memory (a gradScale). */
function scalarOn(v: number, device: Device): StorageHandle {
  const h = alloc(device, 4);
  native().upload(h, new Float32Array([v]), 0);
  return h;
}

function normal(n: number, scale = 1, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = fastRng() || 1e-12, v = fastRng();
    a[i] = offset + scale * sqrt(-2 * log(u)) * cos(TWO_PI * v);
  }
  return a;
}
const randInt = (n: number) => min(n - 1, floor(rng() * n));
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = max(m, abs(a[i])); return m; };
const pick = <T>(xs: T[]): T => xs[randInt(xs.length)];
/** Row-major contiguous strides of a shape. */
function contiguous(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let k = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = k; k *= shape[d]; }
  return s;
}
/** Calls f(index, linear) for every index of shape in row-major order. */
function forEachIndex(shape: number[], f: (idx: number[], linear: number) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    f(idx, i);
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
}
const dot = (idx: number[], strides: number[]) => idx.reduce((a, v, d) => a + v * strides[d], 0);
const shuffle = <T>(xs: T[]): T[] => { const a = [...xs]; for (let i = a.length - 1; i > 0; i--) { const j = randInt(i + 1); [a[i], a[j]] = [a[j], a[i]]; } return a; };
const PAD = 3;

// ---------------------------------------------------------------------------------------------
// Float64 references (textbook formulas).

const phi = (z: number) => exp(-0.5 * z * z) / sqrt(2 * Math.PI);
const Phi = (z: number) => 0.5 * (1 + erf(z / Math.SQRT2));
const ACTS: { name: string; code: ActCode; f: (x: number) => number; df: (z: number) => number }[] = [
  { name: 'none', code: 0, f: (x) => x, df: () => 1 },
  { name: 'relu', code: 1, f: (x) => (x < 0 ? 0 : x), df: (z) => (z > 0 ? 1 : 0) },
  { name: 'gelu', code: 2, f: gelu64, df: (z) => Phi(z) + z * phi(z) },
];

/** PyTorch's CrossEntropyLoss(label_smoothing=eps), mean over rows: loss, correct (first argmax), dLoss/dz. */
function crossEntropy64(z: ArrayLike<number>, labels: Int32Array, B: number, C: number, eps: number) {
  let total = 0, correct = 0;
  const grad = new Float64Array(B * C), prob = new Float64Array(B * C), target = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    let mx = -Infinity, arg = -1;
    for (let c = 0; c < C; c++) if (z[b * C + c] > mx) { mx = z[b * C + c]; arg = c; }
    if (arg === labels[b]) correct++;
    let s = 0;
    for (let c = 0; c < C; c++) s += exp(z[b * C + c] - mx);
    const lse = mx + log(s);
    for (let c = 0; c < C; c++) {
      const i = b * C + c;
      const t = (c === labels[b] ? 1 - eps : 0) + eps / C; // smoothed one-hot
      const logp = z[i] - lse;
      total -= t * logp;
      prob[i] = exp(logp);
      target[i] = t;
      grad[i] = (prob[i] - t) / B;
    }
  }
  return { loss: total / B, correct, grad, prob, target };
}

/** LayerNorm over rows of x [M, N]: biased variance, y = (x - mean) / sqrt(var + eps) * gamma + beta. */
function layerNorm64(x: ArrayLike<number>, gamma: ArrayLike<number>, beta: ArrayLike<number>, M: number, N: number, eps: number) {
  const y = new Float64Array(M * N), xhat = new Float64Array(M * N), mean = new Float64Array(M), rstd = new Float64Array(M);
  const meanAbs = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    let s = 0, sa = 0;
    for (let j = 0; j < N; j++) { s += x[m * N + j]; sa += abs(x[m * N + j]); }
    const mu = s / N;
    let v = 0;
    for (let j = 0; j < N; j++) v += (x[m * N + j] - mu) ** 2;
    const r = 1 / sqrt(v / N + eps);
    for (let j = 0; j < N; j++) {
      xhat[m * N + j] = (x[m * N + j] - mu) * r;
      y[m * N + j] = xhat[m * N + j] * gamma[j] + beta[j];
    }
    mean[m] = mu; rstd[m] = r; meanAbs[m] = sa / N;
  }
  return { y, xhat, mean, rstd, meanAbs };
}

/** The LayerNorm backward (as in PyTorch's native_layer_norm_backward) given the statistics. */
function layerNormBackward64(dy: ArrayLike<number>, x: ArrayLike<number>, gamma: ArrayLike<number>, mean: ArrayLike<number>,
                             rstd: ArrayLike<number>, M: number, N: number) {
  const dx = new Float64Array(M * N), dgamma = new Float64Array(N), dbeta = new Float64Array(N);
  const xhat = new Float64Array(M * N), g = new Float64Array(M * N);
  const rowA = new Float64Array(M), rowB = new Float64Array(M); // mean |g|, mean |g * xhat|
  for (let m = 0; m < M; m++) {
    let a = 0, b = 0, aa = 0, ba = 0;
    for (let j = 0; j < N; j++) {
      const i = m * N + j;
      xhat[i] = (x[i] - mean[m]) * rstd[m];
      g[i] = dy[i] * gamma[j];
      a += g[i]; b += g[i] * xhat[i]; aa += abs(g[i]); ba += abs(g[i] * xhat[i]);
      dgamma[j] += dy[i] * xhat[i];
      dbeta[j] += dy[i];
    }
    a /= N; b /= N;
    for (let j = 0; j < N; j++) dx[m * N + j] = rstd[m] * (g[m * N + j] - a - xhat[m * N + j] * b);
    rowA[m] = aa / N; rowB[m] = ba / N;
  }
  return { dx, dgamma, dbeta, xhat, g, rowA, rowB };
}

// The documented dropout mask (native/shared/nn.h): splitmix64 finaliser of seed + (i + 1) * golden
// ratio, top 32 bits; keep iff (bits >> 8) / 2^24 >= p. Re-derived here in BigInt.
const MASK64 = (1n << 64n) - 1n;
function keepRef(seedHi: number, seedLo: number, i: number, p: number): boolean {
  const seed = (BigInt(seedHi) << 32n) | BigInt(seedLo);
  let z = (seed + (BigInt(i) + 1n) * 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  const bits = Number((z ^ (z >> 31n)) >> 32n);
  return (bits >>> 8) / 2 ** 24 >= fround(p);
}
const randU32 = () => floor(rng() * 2 ** 32) >>> 0;

// ---------------------------------------------------------------------------------------------

const SIZES = [1, 7, 33, 257, 40000]; // 40000: several element blocks

describeEachBackend('activation forward / backward', (device) => {
  const PAIRS: [DType, DType][] = [[F32, F32], [F16, F16], [BF16, BF16], [F16, F32], [F32, BF16], [BF16, F16]];
  for (const act of ACTS) {
    test(`forward ${act.name}: dtype pairs, sizes ${SIZES.join(', ')}, vs float64`, async () => {
      for (const [xt, yt] of PAIRS) for (const n of SIZES) {
        const x = await inp(normal(n, 3), xt, device);
        const y = out(n, yt, device);
        native().activationForward({ act: act.code, x: x.h, xType: dc(xt), y: y.h, yType: dc(yt), n });
        const got = await read(y, n, `${act.name} ${xt}->${yt} n=${n}`);
        const ref = Array.from(x.v, act.f);
        if (act.name === 'gelu') {
          // erf-based FP32 GELU: a few ulps of |x| (1 + erf cancels for negative x), then the store's rounding.
          expectClose(`gelu ${xt}->${yt} n=${n}`, got, ref, (i) => U[yt] * abs(ref[i]) + 8 * EPS32 * (abs(x.v[i]) + abs(ref[i])) + TINY[yt]);
        } else {
          expectExact(`${act.name} ${xt}->${yt} n=${n}`, got, roundTo(yt, Float32Array.from(ref)));
        }
      }
    });
  }

  const TRIPLES: [DType, DType, DType][] = [[F32, F32, F32], [F16, F16, F16], [BF16, BF16, BF16], [F16, F32, F16], [F32, BF16, F32]];
  for (const act of ACTS) {
    test(`backward ${act.name}: dx = dy * act'(z), dtype triples, sizes ${SIZES.join(', ')}, vs float64`, async () => {
      for (const [dyt, zt, dxt] of TRIPLES) for (const n of SIZES) {
        const zv = normal(n, 3);
        for (let i = 0; i < n; i += 5) zv[i] = 0; // ReLU's gradient at 0 is 0
        const dy = await inp(normal(n), dyt, device), z = await inp(zv, zt, device);
        const dx = out(n, dxt, device);
        native().activationBackward({ act: act.code, dy: dy.h, dyType: dc(dyt), z: z.h, zType: dc(zt), dx: dx.h, dxType: dc(dxt), n });
        const what = `${act.name}' ${dyt},${zt}->${dxt} n=${n}`;
        const got = await read(dx, n, what);
        const ref = Array.from(dy.v, (d, i) => d * act.df(z.v[i]));
        if (act.name === 'gelu')
          expectClose(what, got, ref, (i) => U[dxt] * abs(ref[i]) + 8 * EPS32 * abs(dy.v[i]) * (1 + abs(z.v[i])) + TINY[dxt]);
        else expectExact(what, got, roundTo(dxt, Float32Array.from(ref)));
      }
    });
  }

  test("GELU's gradient matches central differences of the float64 GELU", async () => {
    const n = 2001;
    const zv = new Float32Array(n);
    for (let i = 0; i < n; i++) zv[i] = -7 + (14 * i) / (n - 1) + (rng() - 0.5) * 1e-3;
    const z = await inp(zv, F32, device), dy = await inp(new Float32Array(n).fill(1), F32, device);
    const dx = out(n, F32, device);
    native().activationBackward({ act: 2, dy: dy.h, dyType: 0, z: z.h, zType: 0, dx: dx.h, dxType: 0, n });
    const got = await read(dx, n, 'gelu fd');
    const h = 1e-4;
    const fd = Array.from(z.v, (v) => (gelu64(v + h) - gelu64(v - h)) / (2 * h));
    expectClose('gelu_grad vs finite differences', got, fd, (i) => 1e-6 + 1e-6 * abs(fd[i]));
  });

  test('hand-worked values', async () => {
    const x = await inp(new Float32Array([-2, -0, 0, 1, 3]), F32, device);
    const y = out(5, F32, device);
    native().activationForward({ act: 1, x: x.h, xType: 0, y: y.h, yType: 0, n: 5 });
    expectExact('relu', await read(y, 5, 'relu'), [0, 0, 0, 1, 3]);
    native().activationForward({ act: 2, x: x.h, xType: 0, y: y.h, yType: 0, n: 5 });
    // GELU(1) = Phi(1) = 0.841344746..., GELU(3) = 3 * 0.998650102 = 2.995950..., GELU(-2) = -2 * 0.0227501319
    expectClose('gelu', await read(y, 5, 'gelu'), [-0.0455002638, 0, 0, 0.8413447461, 2.9959503068], () => 1e-6);
    // gelu'(0) = 0.5, gelu'(1) = Phi(1) + phi(1) = 0.8413447 + 0.2419707 = 1.0833155
    const dy = await inp(new Float32Array([2, 2, 2, 2, 2]), F32, device);
    native().activationBackward({ act: 2, dy: dy.h, dyType: 0, z: x.h, zType: 0, dx: y.h, dxType: 0, n: 5 });
    expectClose("gelu'", await read(y, 5, "gelu'"), [2 * (0.0227501319 - 2 * 0.0539909665), 1, 1, 2 * 1.0833154705, 2 * (0.9986501020 + 3 * 0.0044318484)], () => 2e-6);
    native().activationBackward({ act: 1, dy: dy.h, dyType: 0, z: x.h, zType: 0, dx: y.h, dxType: 0, n: 5 });
    expectExact("relu'", await read(y, 5, "relu'"), [0, 0, 0, 2, 2]);
  });

  test('n = 0 writes nothing', async () => {
    const x = await inp(new Float32Array([1]), F32, device);
    const y = out(0, F32, device);
    native().activationForward({ act: 2, x: x.h, xType: 0, y: y.h, yType: 0, n: 0 });
    await read(y, 0, 'n=0');
  });
}, { everyCpuIsa: true });

describeEachBackend('reduceSum', (device) => {
  /** float64 sums over r of x[o, r, i], and the sums of |x| (the rounding error's scale). */
  function sums64(x: ArrayLike<number>, outer: number, R: number, inner: number) {
    const sum = new Float64Array(outer * inner), sumAbs = new Float64Array(outer * inner);
    for (let o = 0; o < outer; o++) for (let r = 0; r < R; r++) {
      const base = (o * R + r) * inner;
      for (let i = 0; i < inner; i++) { sum[o * inner + i] += x[base + i]; sumAbs[o * inner + i] += abs(x[base + i]); }
    }
    return { sum, sumAbs };
  }
  // Any FP32 summation order of R terms is within R ulps of sum |x| (first order); then alpha,
  // beta * out and the store round once each.
  function check(what: string, got: Float32Array, x: ArrayLike<number>, outer: number, R: number, inner: number, ot: DType,
                 alpha: number, beta: number, old: ArrayLike<number> | null) {
    const { sum, sumAbs } = sums64(x, outer, R, inner);
    const a = fround(alpha), b = fround(beta);
    const ref = Array.from(sum, (s, i) => a * s + (b !== 0 ? b * old![i] : 0));
    expectClose(what, got, ref, (i) => abs(a) * R * EPS32 * sumAbs[i] + 2 * EPS32 * (abs(a * sum[i]) + (b !== 0 ? abs(b * old![i]) : 0)) +
      U[ot] * abs(ref[i]) + TINY[ot]);
  }

  const SHAPES: [number, number, number][] = [
    // outer = 1: column sums (bias gradients; the former columnSum)
    ...[1, 7, 33, 300, 5000].flatMap((M) => [1, 7, 33, 257].map((N) => [1, M, N] as [number, number, number])),
    // inner = 1: row sums, rows of several blocks included
    [1, 40000, 1], [7, 33, 1], [300, 257, 1], [3, 50000, 1], [1000, 3, 1],
    // both: the sum over a middle dim
    [3, 300, 33], [2, 7, 1500], [5, 1000, 2], [40, 33, 7], [2, 2100, 1030],
  ];
  const PAIRS: [DType, DType][] = [[F32, F32], [F16, F32], [BF16, BF16], [F16, F16]];
  test(`out[o, i] = alpha * sum_r x[o, r, i] + beta * out[o, i] for ${SHAPES.length} (outer, R, inner), every dtype pair, vs float64`, () => {
    let k = 0;
    for (const [outer, R, inner] of SHAPES) for (const [xt, ot] of PAIRS) {
      const x = inp(normal(outer * R * inner, 1, rng() - 0.5), xt, device);
      const alpha = [1, 1 / R, 0.5 + rng() * 2][k % 3], beta = [0, 0, -0.75 + rng()][k % 3];
      k++;
      let o: Buf, old: Float32Array | null = null;
      if (beta !== 0) {
        const init = inp(normal(outer * inner + PAD), ot, device);
        o = init;
        old = init.v.slice(0, outer * inner);
        native().upload(o.h, new Float32Array(PAD).fill(NaN), dc(ot), outer * inner);
      } else {
        o = out(outer * inner, ot, device);
      }
      native().reduceSum({ outer, R, inner, alpha, beta, x: x.h, xType: dc(xt), out: o.h, outType: dc(ot) });
      const what = `reduceSum ${xt}->${ot} [${outer}, ${R}, ${inner}] alpha=${alpha} beta=${beta}`;
      check(what, read(o, outer * inner, what), x.v, outer, R, inner, ot, alpha, beta, old);
    }
  });

  test('hand-worked: column sums, row sums, a mean, beta; R = 0 gives beta * out (beta 0: zeros, out not read)', () => {
    const x = inp([1, 2, 3, 4, 5, 6], F32, device);
    const o = out(3, F32, device);
    native().reduceSum({ outer: 1, R: 2, inner: 3, alpha: 1, beta: 0, x: x.h, xType: 0, out: o.h, outType: 0 });
    expectExact('columns', read(o, 3, 'columns'), [5, 7, 9]);
    const r = out(2, F32, device);
    native().reduceSum({ outer: 2, R: 3, inner: 1, alpha: 1, beta: 0, x: x.h, xType: 0, out: r.h, outType: 0 });
    expectExact('rows', read(r, 2, 'rows'), [6, 15]);
    native().reduceSum({ outer: 1, R: 6, inner: 1, alpha: 0.5, beta: 0, x: x.h, xType: 0, out: r.h, outType: 0 });
    expectExact('half sum', read(r, 2, 'half').slice(0, 1), [10.5]);
    const mid = out(4, F32, device); // x as [3, 2]: column sums
    native().reduceSum({ outer: 1, R: 3, inner: 2, alpha: 1, beta: 0, x: x.h, xType: 0, out: mid.h, outType: 0 });
    expectExact('[3, 2] columns', read(mid, 4, 'mid').slice(0, 2), [9, 12]);
    const acc = inp([10, 20, 30], F32, device);
    native().reduceSum({ outer: 1, R: 2, inner: 3, alpha: 2, beta: -1, x: x.h, xType: 0, out: acc.h, outType: 0 });
    expectExact('alpha 2, beta -1', readAll(acc), [0, -6, -12]);
    const z = out(5, BF16, device);
    native().reduceSum({ outer: 1, R: 0, inner: 5, alpha: 1, beta: 0, x: x.h, xType: 0, out: z.h, outType: 2 });
    expectExact('R = 0', read(z, 5, 'R=0'), [0, 0, 0, 0, 0]);
    const zb = inp([1, -2, 4], F16, device);
    native().reduceSum({ outer: 3, R: 0, inner: 1, alpha: 1, beta: 0.5, x: x.h, xType: 0, out: zb.h, outType: 1 });
    expectExact('R = 0, beta 0.5', readAll(zb), [0.5, -1, 2]);
    const none = out(0, F32, device);
    native().reduceSum({ outer: 0, R: 5, inner: 3, alpha: 1, beta: 0, x: x.h, xType: 0, out: none.h, outType: 0 });
    read(none, 0, 'outer = 0');
  });
});

describeEachBackend('binary', (device) => {
  const OPS = [
    { code: 0 as const, name: 'add', f: (a: number, b: number) => fround(a + b) },
    { code: 1 as const, name: 'sub', f: (a: number, b: number) => fround(a - b) },
    { code: 2 as const, name: 'mul', f: (a: number, b: number) => fround(a * b) },
  ];
  type Operand = { buf: Buf & { v: Float32Array }; offset: number; strides: number[] };
  /** An operand of `shape` broadcast along the dims in `mask` (stride 0), stored in the dim order `order`, `offset` elements in. */
  function operand(shape: number[], mask: number, order: number[], dtype: DType, offset: number): Operand {
    const stored = shape.map((s, d) => ((mask >> d) & 1 ? 1 : s));
    const cs = contiguous(order.map((d) => stored[d]));
    const strides = new Array<number>(shape.length).fill(0);
    order.forEach((d, k) => { strides[d] = (mask >> d) & 1 ? 0 : cs[k]; });
    const n = stored.reduce((a, b) => a * b, 1);
    return { buf: inp(normal(n + offset, 2), dtype, device), offset, strides };
  }
  /** Runs binary and checks every element exactly: FP32 math on the stored values, one rounding to outType. */
  function run(what: string, op: (typeof OPS)[number], shape: number[], a: Operand, b: Operand | null, scalar: number, ot: DType,
               into?: { buf: Buf; offset: number }) {
    const n = shape.reduce((x, y) => x * y, 1);
    const o = into ?? { buf: out(n, ot, device), offset: 0 };
    // The reference first: an in-place call overwrites an input.
    const ref = new Float32Array(n);
    forEachIndex(shape, (idx, i) => {
      const av = a.buf.v[a.offset + dot(idx, a.strides)];
      const bv = b ? b.buf.v[b.offset + dot(idx, b.strides)] : fround(scalar);
      ref[i] = op.f(av, bv);
    });
    native().binary({
      op: op.code, shape, scalar, a: a.buf.h, aOffset: a.offset, aType: dc(a.buf.dtype), aStrides: a.strides,
      ...(b ? { b: b.buf.h, bOffset: b.offset, bType: dc(b.buf.dtype), bStrides: b.strides } : {}),
      out: o.buf.h, outOffset: o.offset, outType: dc(ot),
    });
    const got = into ? readAll(o.buf).slice(o.offset, o.offset + n) : read(o.buf, n, what);
    expectExact(what, got, roundTo(ot, ref), true);
  }

  test('broadcast in every position of a and b (stride 0), permuted (non-contiguous) storage, offsets, mixed dtypes: exact', () => {
    let k = 0;
    for (const shape of [[3, 4, 5], [2, 1, 6, 3]]) {
      const nd = shape.length, dims = shape.map((_, d) => d);
      for (let am = 0; am < 1 << nd; am++) for (let bm = 0; bm < 1 << nd; bm++) {
        const op = OPS[k % 3];
        const at = pick(DTYPES), bt = pick(DTYPES), ot = pick(DTYPES);
        const a = operand(shape, am, k % 4 === 1 ? shuffle(dims) : dims, at, randInt(3));
        const b = operand(shape, bm, k % 4 === 2 ? shuffle(dims) : dims, bt, randInt(3));
        run(`${op.name} [${shape}] aMask=${am} bMask=${bm} ${at},${bt}->${ot}`, op, shape, a, b, 0, ot);
        k++;
      }
    }
  });

  test('b absent is the scalar; flat runs of several blocks; bias rows and columns; zero-size and 0-d shapes', () => {
    for (const op of OPS) for (const [at, ot] of [[F32, F32], [F16, F16], [BF16, F32], [F32, BF16]] as [DType, DType][]) {
      const s = fround((rng() - 0.5) * 8);
      run(`${op.name} scalar ${at}->${ot}`, op, [257, 33], operand([257, 33], 0, [0, 1], at, 1), null, s, ot);
      run(`${op.name} scalar, broadcast a`, op, [5, 6], operand([5, 6], 2, [0, 1], at, 0), null, s, ot);
      run(`${op.name} flat 100003 ${at}->${ot}`, op, [100003], operand([100003], 0, [0], at, 2), operand([100003], 0, [0], pick(DTYPES), 0), 0, ot);
      // a bias row added to every row (b strides [0, 1]) and a column broadcast along rows (b strides [1, 0])
      run(`${op.name} bias row [300, 257]`, op, [300, 257], operand([300, 257], 0, [0, 1], at, 0), operand([300, 257], 1, [0, 1], pick(DTYPES), 0), 0, ot);
      run(`${op.name} column [257, 300]`, op, [257, 300], operand([257, 300], 0, [0, 1], at, 0), operand([257, 300], 2, [0, 1], pick(DTYPES), 0), 0, ot);
      run(`${op.name} long rows [3, 40000] + row`, op, [3, 40000], operand([3, 40000], 0, [0, 1], at, 0), operand([3, 40000], 1, [0, 1], at, 0), 0, ot);
      run(`${op.name} 0-d`, op, [], operand([], 0, [], at, 2), operand([], 0, [], at, 1), 0, ot);
    }
    const a = inp([1, 2, 3], F32, device), o = out(0, F32, device);
    native().binary({ op: 0, shape: [3, 0], scalar: 1, a: a.h, aType: 0, aStrides: [1, 1], out: o.h, outType: 0 });
    read(o, 0, 'zero-size');
  });

  test('in place: out is a (a += b, b a broadcast row) or out is b (a - b into b), every dtype', () => {
    for (const op of OPS) for (const t of DTYPES) {
      const shape = [33, 70];
      const a = operand(shape, 0, [0, 1], t, 5), b = operand(shape, 1, [0, 1], pick(DTYPES), 0);
      run(`${op.name} out = a ${t}`, op, shape, a, b, 0, t, { buf: a.buf, offset: a.offset });
      const a2 = operand(shape, 2, [0, 1], pick(DTYPES), 0), b2 = operand(shape, 0, [0, 1], t, 3);
      run(`${op.name} out = b ${t}`, op, shape, a2, b2, 0, t, { buf: b2.buf, offset: b2.offset });
      const a3 = operand([100000], 0, [0], t, 0);
      run(`${op.name} flat out = a, scalar ${t}`, op, [100000], a3, null, 1.5, t, { buf: a3.buf, offset: 0 });
    }
  });
}, { everyCpuIsa: true });

describeEachBackend('copy and fill', (device) => {
  /** A copy of x (stored in dim order xOrder) into out (stored in dim order oOrder), both with offsets; checked exactly. */
  function permuted(shape: number[], xOrder: number[], oOrder: number[], xt: DType, ot: DType) {
    const n = shape.reduce((a, b) => a * b, 1);
    const stridesOf = (order: number[]) => {
      const cs = contiguous(order.map((d) => shape[d]));
      const s = new Array<number>(shape.length).fill(0);
      order.forEach((d, k) => { s[d] = cs[k]; });
      return s;
    };
    const xs = stridesOf(xOrder), os = stridesOf(oOrder);
    const xOff = randInt(4), oOff = randInt(4);
    const x = inp(normal(n + xOff, 3), xt, device);
    const o = out(n + oOff, ot, device);
    native().copy({ shape, xStrides: xs, outStrides: os, x: x.h, xOffset: xOff, xType: dc(xt), out: o.h, outOffset: oOff, outType: dc(ot) });
    const what = `copy [${shape}] x order [${xOrder}] -> out order [${oOrder}] ${xt}->${ot}`;
    const got = read(o, n + oOff, what);
    const ref = new Float32Array(n + oOff).fill(NaN);
    forEachIndex(shape, (idx) => { ref[oOff + dot(idx, os)] = x.v[xOff + dot(idx, xs)]; });
    expectExact(what, got, roundTo(ot, ref), true); // [0, oOff) stays NaN
  }

  test('transposes and permutations of 2-D, 3-D and 4-D views, every dtype pair (casts with one RNE), vs index math', () => {
    const PAIRS = DTYPES.flatMap((a) => DTYPES.map((b) => [a, b] as [DType, DType]));
    let k = 0;
    const next = () => PAIRS[k++ % PAIRS.length];
    for (const shape of [[37, 45], [300, 257], [1, 9], [9, 1], [8, 8]]) for (let rep = 0; rep < 3; rep++) {
      const [xt, ot] = next();
      permuted(shape, [1, 0], [0, 1], xt, ot); // contiguous() of a transpose
      permuted(shape, [0, 1], [1, 0], xt, ot); // a transpose written into a transposed view
    }
    const perms3 = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for (const xo of perms3) for (const oo of perms3) { const [xt, ot] = next(); permuted([5, 6, 7], xo, oo, xt, ot); }
    for (const shape of [[3, 4, 5, 6], [2, 33, 3, 40], [16, 1, 9, 17]]) for (let rep = 0; rep < 6; rep++) {
      const [xt, ot] = next();
      permuted(shape, shuffle([0, 1, 2, 3]), rep % 2 ? shuffle([0, 1, 2, 3]) : [0, 1, 2, 3], xt, ot);
    }
    permuted([64, 3, 48], [2, 1, 0], [0, 1, 2], F16, F16); // the tiled path with planes
    permuted([2, 300, 257], [0, 2, 1], [0, 1, 2], BF16, F32);
  });

  test('int32 moves as raw 4-byte words through any view; int32 copies only to int32 (E_DTYPE)', () => {
    const shape = [7, 5, 3], n = 105;
    const words = Int32Array.from({ length: n }, () => (floor(rng() * 2 ** 32) | 0));
    words[0] = NAN_BITS; words[1] = 0x7f800001; words[2] = -1; words[3] = -2147483648;
    const x = int32s(words, device);
    const o = int32s(new Int32Array(n + PAD).fill(0x5a5a5a5a), device);
    const xs = [1, 7, 35], os = contiguous(shape); // x stored [3, 5, 7]
    native().copy({ shape, xStrides: xs, outStrides: os, x, xType: 3, out: o, outType: 3 });
    const got = readInt32(o, n + PAD);
    forEachIndex(shape, (idx, i) => { if (got[i] !== words[dot(idx, xs)]) throw new Error(`int32 copy: element ${i}: ${got[i]} != ${words[dot(idx, xs)]}`); });
    for (let i = n; i < n + PAD; i++) expect(got[i]).toBe(0x5a5a5a5a);
    const f = out(n, F32, device);
    expect(codeOf(() => native().copy({ shape, xStrides: xs, outStrides: os, x, xType: 3, out: f.h, outType: 0 }))).toBe('E_DTYPE');
    expect(codeOf(() => native().copy({ shape, xStrides: os, outStrides: os, x: f.h, xType: 0, out: o, outType: 3 }))).toBe('E_DTYPE');
    expect(Array.from(readInt32(o, n)).every((v, i) => v === got[i])).toBe(true);
  });

  test('expand (stride 0), cat into narrow views of out, long contiguous copies and casts, NaN payloads kept, 0-d and empty', () => {
    // expand: x [1, 7] -> [5, 7]
    const row = inp(normal(7), F16, device), e = out(35, F32, device);
    native().copy({ shape: [5, 7], xStrides: [0, 1], outStrides: [7, 1], x: row.h, xType: 1, out: e.h, outType: 0 });
    expectExact('expand', read(e, 35, 'expand'), Array.from({ length: 35 }, (_, i) => row.v[i % 7]));
    // cat along dim 1: [4, 3] and [4, 5] into [4, 8] (out rows 8 apart, second part at offset 3)
    const p = inp(normal(12), F32, device), q = inp(normal(20), BF16, device), cat = out(32, F16, device);
    native().copy({ shape: [4, 3], xStrides: [3, 1], outStrides: [8, 1], x: p.h, xType: 0, out: cat.h, outType: 1 });
    native().copy({ shape: [4, 5], xStrides: [5, 1], outStrides: [8, 1], x: q.h, xType: 2, out: cat.h, outOffset: 3, outType: 1 });
    const catRef = Array.from({ length: 32 }, (_, i) => { const r = floor(i / 8), c = i % 8; return c < 3 ? p.v[r * 3 + c] : q.v[r * 5 + c - 3]; });
    expectExact('cat', read(cat, 32, 'cat'), roundTo(F16, catRef));
    // long contiguous runs: same dtype (memcpy), casts
    for (const [xt, ot] of [[F32, F32], [F16, F16], [F32, F16], [F16, F32], [BF16, F16], [F32, BF16], [BF16, BF16]] as [DType, DType][]) {
      const n = 200003;
      const x = inp(normal(n + 1, 100), xt, device), o = out(n, ot, device);
      native().copy({ shape: [n], xStrides: [1], outStrides: [1], x: x.h, xOffset: 1, xType: dc(xt), out: o.h, outType: dc(ot) });
      expectExact(`contiguous ${xt}->${ot}`, read(o, n, 'contiguous'), roundTo(ot, x.v.subarray(1)), true);
    }
    // same-dtype copies move bits: FP16 signalling NaNs and payloads survive (a cast would quiet them)
    const bits = Uint16Array.from({ length: 4096 }, () => floor(rng() * 65536));
    bits[0] = 0x7c01; bits[1] = 0xfd55; bits[2] = 0x8000;
    const hb = alloc(device, 8192), ob = alloc(device, 8192);
    native().writeBytes(hb, new Uint8Array(bits.buffer));
    native().copy({ shape: [64, 64], xStrides: [64, 1], outStrides: [64, 1], x: hb, xType: 1, out: ob, outType: 1 });
    expect(Buffer.from(native().readBytes(ob, 8192)).equals(Buffer.from(bits.buffer))).toBe(true);
    native().copy({ shape: [64, 64], xStrides: [1, 64], outStrides: [64, 1], x: hb, xType: 1, out: ob, outType: 1 });
    const tb = new Uint16Array(native().readBytes(ob, 8192).slice().buffer);
    for (let i = 0; i < 4096; i++) if (tb[i] !== bits[(i % 64) * 64 + floor(i / 64)]) throw new Error(`transposed f16 bits differ at ${i}`);
    // x and out the same contiguous array: unchanged
    const same = inp(normal(100), BF16, device);
    native().copy({ shape: [10, 10], xStrides: [10, 1], outStrides: [10, 1], x: same.h, xType: 2, out: same.h, outType: 2 });
    expectExact('onto itself', readAll(same), same.v);
    // 0-d: one element; a zero-size dim: nothing
    const one = out(1, F32, device);
    native().copy({ shape: [], xStrides: [], outStrides: [], x: row.h, xOffset: 2, xType: 1, out: one.h, outType: 0 });
    expectExact('0-d', read(one, 1, '0-d'), [row.v[2]]);
    const none = out(0, F32, device);
    native().copy({ shape: [4, 0, 3], xStrides: [0, 0, 0], outStrides: [3, 3, 1], x: row.h, xType: 1, out: none.h, outType: 0 });
    read(none, 0, 'empty');
  });

  test('fill: every float dtype (value rounded once), int32 (nearest, ties to even, saturated, NaN -> 0), offsets, n = 0', () => {
    for (const t of DTYPES) for (const n of [1, 7, 70001]) {
      const v = fround((rng() - 0.5) * 1e4), off = randInt(3);
      const o = out(n + off, t, device);
      native().fill({ n, value: v, out: o.h, outOffset: off, outType: dc(t) });
      const got = read(o, n + off, `fill ${t} n=${n}`);
      for (let i = 0; i < off; i++) expect(Number.isNaN(got[i])).toBe(true);
      expectExact(`fill ${t} n=${n}`, got.subarray(off), new Float32Array(n).fill(roundTo(t, [v])[0]), true);
    }
    const nf = out(4, F16, device);
    native().fill({ n: 4, value: -0, out: nf.h, outType: 1 });
    expect(Object.is(read(nf, 4, 'fill -0')[3], -0)).toBe(true);
    const values = [2.5, -3.5, 1e10, -1e10, NaN, 7, -0, 0.5, 1.5, -2147483648, 2147483520];
    const expected = [2, -4, 2147483647, -2147483648, 0, 7, 0, 0, 2, -2147483648, 2147483520];
    const h = int32s(new Int32Array(values.length + 1).fill(99), device);
    values.forEach((value, i) => native().fill({ n: 1, value, out: h, outOffset: i, outType: 3 }));
    expect(Array.from(readInt32(h, values.length + 1))).toEqual([...expected, 99]);
    const z = out(0, F32, device);
    native().fill({ n: 0, value: 1, out: z.h, outType: 0 });
    read(z, 0, 'fill n = 0');
  });
});

describeEachBackend('softmaxCrossEntropy', (device) => {
  type CeCase = {
    B: number; C: number; lt: DType; dt: DType | null; eps: number; lossScale: number; scale?: number; offset?: number;
    withCorrect?: boolean; withLoss?: boolean; gradScale?: number;
  };
  async function runCase(k: CeCase): Promise<void> {
    const { B, C, lt, eps, lossScale } = k;
    const logits = inp(normal(B * C, k.scale ?? 3, k.offset ?? 0), lt, device);
    const labels = Int32Array.from({ length: B }, () => randInt(C));
    const d = k.dt ? out(B * C, k.dt, device) : null;
    const metrics = metricsOut(device);
    // loss in slot 2, correct in slot 1 of the same 4-slot storage; slots 0 and 3 must stay untouched.
    native().softmaxCrossEntropy({
      logits: logits.h, logitsType: dc(lt), labels: labelsOn(labels, device), B, C, smoothing: eps, lossScale,
      ...(d && k.dt ? { dlogits: d.h, dType: dc(k.dt) } : {}),
      ...(k.gradScale !== undefined ? { gradScale: scalarOn(k.gradScale, device) } : {}),
      ...(k.withLoss === false ? {} : { loss: metrics, lossOffset: 2 }),
      ...(k.withCorrect === false ? {} : { correct: metrics, correctOffset: 1 }),
    });
    const what = `CE ${lt}->${k.dt ?? 'none'} B=${B} C=${C} eps=${eps} scale=${lossScale}${k.offset ? ` offset=${k.offset}` : ''}` +
      `${k.gradScale !== undefined ? ` gradScale=${k.gradScale}` : ''}`;
    const ref = crossEntropy64(logits.v, labels, B, C, fround(eps));
    const m = readMetrics(metrics);
    expect(m.i[0]).toBe(NAN_BITS); // untouched slots
    expect(m.i[3]).toBe(NAN_BITS);
    const zmax = maxAbs(logits.v);
    // FP32: lse = max + log(sum) is off by a few ulps of |max|; the terms t_c (lse - z_c) are >= 0 and
    // summed over C classes and B rows, a relative error growing slowly with C and B.
    const lossTol = 4 * EPS32 * (1 + zmax + log(C)) + 8 * EPS32 * abs(ref.loss) * (log2(2 * C) + log2(2 * B));
    if (k.withLoss === false) expect(m.i[2]).toBe(NAN_BITS);
    else expectClose(`${what}: loss`, [m.f[2]], [ref.loss], () => lossTol);
    if (k.withCorrect === false) expect(m.i[1]).toBe(NAN_BITS);
    else if (m.i[1] !== ref.correct) throw new Error(`${what}: correct ${m.i[1]}, expected ${ref.correct}`);
    if (d && k.dt) {
      const dt = k.dt;
      const got = await read(d, B * C, what);
      const kScale = lossScale * fround(k.gradScale ?? 1); // ref.grad already carries 1 / B
      const refD = Array.from(ref.grad, (g) => g * kScale);
      expectClose(`${what}: dlogits`, got, refD, (i) =>
        (abs(kScale) / B) * 8 * EPS32 * (ref.prob[i] * (1 + 2 * zmax) + ref.target[i]) + U[dt] * abs(refD[i]) + TINY[dt]);
    }
  }

  const Bs = [1, 7, 65, 300], Cs = [1, 2, 7, 33, 257, 1000];
  const CONFIGS: [DType, DType][] = [[F32, F32], [F16, F16], [BF16, BF16], [F16, F32], [BF16, F32]];
  test(`loss, correct and fused dlogits for B in ${Bs.join(', ')}, C in ${Cs.join(', ')}, smoothing and loss scale, vs float64`, async () => {
    let k = 0;
    for (const [lt, dt] of CONFIGS) for (const B of Bs) for (const C of Cs) {
      const eps = [0, 0.1, fround(rng() * 0.6)][k % 3];
      const lossScale = [1, 1024, 0.25 + rng() * 4][(k >> 1) % 3];
      await runCase({ B, C, lt, dt, eps, lossScale });
      k++;
    }
  });

  test("GPT-sized vocabularies: C = 1025, 4096 and 50304 (GPT-2's padded vocabulary; the CUDA row kernels' block-per-row range), vs float64", async () => {
    for (const [B, C, lt, dt] of [[3, 1025, F16, F16], [5, 4096, BF16, F32], [4, 50304, F16, F16], [2, 50304, F32, F32]] as [number, number, DType, DType][])
      await runCase({ B, C, lt, dt, eps: 0.1, lossScale: 1024 });
  });

  test('large logits: the softmax is shifted by the row max (no overflow); evaluation without dlogits / correct', async () => {
    await runCase({ B: 7, C: 33, lt: F32, dt: F32, eps: 0.1, lossScale: 1, offset: 200 });
    await runCase({ B: 9, C: 40, lt: BF16, dt: BF16, eps: 0, lossScale: 8, offset: -1000, scale: 20 });
    await runCase({ B: 5, C: 17, lt: F16, dt: F32, eps: 0.2, lossScale: 1, offset: 3e4, scale: 50 });
    await runCase({ B: 65, C: 33, lt: F16, dt: null, eps: 0.3, lossScale: 1 });
    await runCase({ B: 33, C: 7, lt: F32, dt: null, eps: 0, lossScale: 1, withCorrect: false });
  });

  test('hand-worked: logits [0, 0] -> ln 2; smoothing; ties count the first maximum', async () => {
    const run = async (logits: number[], labels: number[], C: number, eps: number, lossScale: number) => {
      const B = labels.length;
      const z = inp(Float32Array.from(logits), F32, device);
      const d = out(B * C, F32, device), metrics = metricsOut(device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 0, labels: labelsOn(labels, device), B, C, smoothing: eps,
        lossScale, dlogits: d.h, dType: 0, loss: metrics, correct: metrics, correctOffset: 1 });
      const m = readMetrics(metrics);
      return { loss: m.f[0], correct: m.i[1], d: await read(d, B * C, 'hand CE') };
    };
    let r = await run([0, 0], [0], 2, 0, 1);
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(1);
    expectClose('dlogits', r.d, [-0.5, 0.5], () => 1e-7);
    r = await run([0, 0], [1], 2, 0, 4); // a tie: argmax is index 0, label 1 is not counted
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(0);
    expectClose('dlogits x4', r.d, [2, -2], () => 1e-6);
    // softmax([ln 3, 0]) = [3/4, 1/4]; label 1, eps = 0.5: target = [0.25, 0.75];
    // loss = -(0.25 ln 0.75 + 0.75 ln 0.25); dlogits = [0.75 - 0.25, 0.25 - 0.75].
    r = await run([log(3), 0], [1], 2, 0.5, 1);
    expect(r.loss).toBeCloseTo(-(0.25 * log(0.75) + 0.75 * log(0.25)), 6);
    expectClose('smoothed dlogits', r.d, [0.5, -0.5], () => 1e-6);
    // Two rows, mean over the batch: row 0 = ln 2 (logits [0, 0]); row 1 = ln(1 + e^-2) (label 0 of [2, 0]).
    r = await run([0, 0, 2, 0], [1, 0], 2, 0, 1);
    expect(r.loss).toBeCloseTo((Math.LN2 + log(1 + exp(-2))) / 2, 6);
    expect(r.correct).toBe(1);
    const p = 1 / (1 + exp(-2));
    expectClose('two rows', r.d, [0.25, -0.25, (p - 1) / 2, (1 - p) / 2], () => 1e-7);
    // Ties: rows [1,1,0] label 1 (no), [1,1,0] label 0 (yes), [0,2,2] label 2 (no), [5,-1,5] label 0 (yes).
    r = await run([1, 1, 0, 1, 1, 0, 0, 2, 2, 5, -1, 5], [1, 0, 2, 0], 3, 0, 1);
    expect(r.correct).toBe(2);
    // A -inf logit off the label (masking): probability 0, finite loss and gradient without smoothing
    // (as PyTorch); with smoothing its share of the target makes the loss +inf.
    r = await run([0, -Infinity, 0], [0], 3, 0, 1);
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(1);
    expectExact('-inf logit', r.d, [-0.5, 0, 0.5]);
    r = await run([0, -Infinity, 0], [0], 3, 0.3, 1);
    expect(r.loss).toBe(Infinity);
    expectClose('-inf logit, smoothed', r.d, [0.5 - (0.7 + 0.1), -0.1, 0.5 - 0.1], () => 1e-6);
    // A +inf logit (an FP16 overflow upstream) makes that row's loss and gradient NaN, which the
    // scaler's overflow check then sees; other rows are unaffected.
    r = await run([1, Infinity, 0, 2, 0, 0], [0, 0], 3, 0, 1);
    expect(Number.isNaN(r.loss)).toBe(true);
    expect(Array.from(r.d.subarray(0, 3)).every(Number.isNaN)).toBe(true);
    const e2 = exp(2) + 2;
    expectClose('finite row', r.d.subarray(3), [(exp(2) / e2 - 1) / 2, 1 / e2 / 2, 1 / e2 / 2], () => 1e-7);
    // C = 1: the only class has probability 1: loss 0, gradient 0 (with or without smoothing).
    r = await run([3.5, -2], [0, 0], 1, 0.3, 1);
    expect(r.loss).toBe(0);
    expect(r.correct).toBe(2);
    expectClose('C=1', r.d, [0, 0], () => 1e-7);
  });

  test('dlogits match central differences of the float64 mean loss', async () => {
    for (const eps of [0, 0.25]) {
      const B = 3, C = 5;
      const z = inp(normal(B * C, 2), F32, device);
      const labels = Int32Array.from({ length: B }, () => randInt(C));
      const d = out(B * C, F32, device), metrics = metricsOut(device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 0, labels: labelsOn(labels, device), B, C, smoothing: eps, lossScale: 1,
        dlogits: d.h, dType: 0, loss: metrics });
      const got = await read(d, B * C, 'CE fd');
      const h = 1e-5, zz = Float64Array.from(z.v);
      const fd = Array.from(zz, (_, i) => {
        const p = Float64Array.from(zz), q = Float64Array.from(zz);
        p[i] += h; q[i] -= h;
        return (crossEntropy64(p, labels, B, C, eps).loss - crossEntropy64(q, labels, B, C, eps).loss) / (2 * h);
      });
      expectClose(`CE dlogits vs finite differences (eps=${eps})`, got, fd, () => 1e-6);
    }
  });

  test('gradScale (the upstream gradient, one FP32 in backend memory) multiplies dlogits; without loss or correct', async () => {
    for (const [lt, dt] of [[F32, F32], [F16, F16], [BF16, F32]] as [DType, DType][]) {
      await runCase({ B: 65, C: 33, lt, dt, eps: 0.1, lossScale: 1, gradScale: fround(0.25 + rng() * 4) });
      await runCase({ B: 7, C: 1000, lt, dt, eps: 0, lossScale: 1024, gradScale: -fround(rng() + 0.5) });
      await runCase({ B: 33, C: 7, lt, dt, eps: 0, lossScale: 2, gradScale: 0.5, withLoss: false });
      await runCase({ B: 33, C: 7, lt, dt, eps: 0.2, lossScale: 1, withLoss: false, withCorrect: false });
    }
    // gradScale 1 gives the same bits as no gradScale; 0 gives zeros
    const z = inp(normal(6 * 9), F16, device), labels = labelsOn(Int32Array.from({ length: 6 }, () => randInt(9)), device);
    const run = (extra: object) => {
      const d = out(54, F32, device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 1, labels, B: 6, C: 9, smoothing: 0.1, lossScale: 8, dlogits: d.h, dType: 0, ...extra });
      return read(d, 54, 'gradScale');
    };
    expectExact('gradScale 1', run({ gradScale: scalarOn(1, device) }), run({}), true);
    expectExact('gradScale 0', run({ gradScale: scalarOn(0, device) }), new Float32Array(54).fill(0));
  });

  test('a label outside [0, C) gives a NaN loss and a NaN dlogits row (never read out of bounds); other rows are unaffected', () => {
    const B = 4, C = 5;
    const z = inp(normal(B * C), F32, device);
    for (const bad of [-1, C, 2147483647, -2147483648]) {
      const labels = [1, bad, 0, 4];
      const d = out(B * C, F32, device), metrics = metricsOut(device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 0, labels: labelsOn(labels, device), B, C, smoothing: 0, lossScale: 1,
        dlogits: d.h, dType: 0, loss: metrics, correct: metrics, correctOffset: 1 });
      const m = readMetrics(metrics);
      expect(Number.isNaN(m.f[0])).toBe(true);
      const ref = crossEntropy64(z.v, Int32Array.from(labels.map((l) => (l === bad ? 0 : l))), B, C, 0);
      const got = read(d, B * C, 'bad label');
      // Both backends poison the bad row's gradient too, so the scaler's overflow check skips the step.
      expect(Array.from(got.subarray(C, 2 * C)).every(Number.isNaN)).toBe(true);
      for (const r of [0, 2, 3])
        expectClose(`bad label ${bad}: row ${r}`, got.subarray(r * C, r * C + C), ref.grad.subarray(r * C, r * C + C), () => 1e-6);
      const okRef = [0, 2, 3].filter((r) => { let a = 0; for (let c = 1; c < C; c++) if (z.v[r * C + c] > z.v[r * C + a]) a = c; return a === labels[r]; }).length;
      expect(m.i[1]).toBe(okRef);
    }
  });
}, { everyCpuIsa: true });

describeEachBackend('mseLoss', (device) => {
  const CONFIGS: [DType, DType, DType][] = [[F32, F32, F32], [F16, F16, F16], [BF16, BF16, BF16], [F16, F32, F32], [BF16, F16, BF16]];
  test(`loss = mean (p - t)^2, dpred = 2 (p - t) / n * lossScale, sizes ${SIZES.join(', ')}, vs float64`, async () => {
    let k = 0;
    for (const [pt, tt, dt] of CONFIGS) for (const n of SIZES) {
      const lossScale = [1, 1024, 0.5 + rng() * 8][k++ % 3];
      const p = inp(normal(n), pt, device), t = inp(normal(n, 0.5, 0.3), tt, device);
      const d = out(n, dt, device), metrics = metricsOut(device);
      native().mseLoss({ pred: p.h, predType: dc(pt), target: t.h, targetType: dc(tt), n, lossScale, dpred: d.h, dType: dc(dt),
        loss: metrics, lossOffset: 1 });
      const what = `MSE ${pt},${tt}->${dt} n=${n} scale=${lossScale}`;
      let s = 0;
      for (let i = 0; i < n; i++) s += (p.v[i] - t.v[i]) ** 2;
      const m = readMetrics(metrics);
      expect([m.i[0], m.i[2], m.i[3]]).toEqual([NAN_BITS, NAN_BITS, NAN_BITS]);
      expectClose(`${what}: loss`, [m.f[1]], [s / n], () => (s / n) * EPS32 * 4 * (8 + sqrt(n)));
      const got = await read(d, n, what);
      const ref = Array.from(p.v, (pv, i) => (2 * (pv - t.v[i])) / n * lossScale);
      expectClose(`${what}: dpred`, got, ref, (i) => U[dt] * abs(ref[i]) + 4 * EPS32 * abs(ref[i]) + TINY[dt]);
    }
  });
  test('hand-worked: p = [1, 2, 3], t = [1, 0, 0] -> 13 / 3, dpred = [0, 4, 6] / 3 * lossScale; evaluation without dpred', async () => {
    const p = inp(new Float32Array([1, 2, 3]), F32, device), t = inp(new Float32Array([1, 0, 0]), F32, device);
    const d = out(3, F32, device), metrics = metricsOut(device);
    native().mseLoss({ pred: p.h, predType: 0, target: t.h, targetType: 0, n: 3, lossScale: 3, dpred: d.h, dType: 0, loss: metrics });
    expect(readMetrics(metrics).f[0]).toBeCloseTo(13 / 3, 6);
    expectClose('dpred', await read(d, 3, 'dpred'), [0, 4, 6], () => 1e-6);
    const m2 = metricsOut(device);
    native().mseLoss({ pred: p.h, predType: 0, target: t.h, targetType: 0, n: 2, lossScale: 1, loss: m2, lossOffset: 3 });
    const r = readMetrics(m2);
    expect(r.f[3]).toBeCloseTo(2, 6);
    expect([r.i[0], r.i[1], r.i[2]]).toEqual([NAN_BITS, NAN_BITS, NAN_BITS]);
  });

  test('gradScale multiplies dpred (after 2 * lossScale / n); without loss only dpred is written; without dpred only the loss', () => {
    for (const [pt, dt] of [[F32, F32], [F16, F16], [BF16, F32]] as [DType, DType][]) for (const n of [1, 257, 40000]) {
      const g = fround((rng() - 0.3) * 4), lossScale = [1, 1024, 3][randInt(3)];
      const p = inp(normal(n), pt, device), t = inp(normal(n), pt, device);
      const d = out(n, dt, device), metrics = metricsOut(device);
      native().mseLoss({ pred: p.h, predType: dc(pt), target: t.h, targetType: dc(pt), n, lossScale, gradScale: scalarOn(g, device), dpred: d.h, dType: dc(dt) });
      const what = `MSE gradScale=${g} ${pt}->${dt} n=${n}`;
      const k = fround(fround(fround(2 * lossScale) / n) * g);
      const ref = Array.from(p.v, (pv, i) => (pv - t.v[i]) * k);
      expectClose(what, read(d, n, what), ref, (i) => U[dt] * abs(ref[i]) + 4 * EPS32 * abs(ref[i]) + TINY[dt]);
      native().mseLoss({ pred: p.h, predType: dc(pt), target: t.h, targetType: dc(pt), n, lossScale, gradScale: scalarOn(g, device), loss: metrics, lossOffset: 2 });
      let s = 0;
      for (let i = 0; i < n; i++) s += (p.v[i] - t.v[i]) ** 2;
      const m = readMetrics(metrics);
      expect([m.i[0], m.i[1], m.i[3]]).toEqual([NAN_BITS, NAN_BITS, NAN_BITS]);
      expectClose(`${what}: loss (gradScale does not scale it)`, [m.f[2]], [s / n], () => (s / n) * EPS32 * 4 * (8 + sqrt(n)));
    }
  });
});

describeEachBackend('layerNorm', (device) => {
  const Ms = [1, 7, 33, 300], Ns = [1, 7, 33, 257];
  const FWD: [DType, DType, DType][] = [[F32, F32, F32], [F16, F32, F16], [BF16, BF16, BF16], [F16, F16, F32]];

  async function forwardCase(M: number, N: number, xt: DType, gt: DType, yt: DType, eps: number, offset = 0) {
    const x = await inp(normal(M * N, 0.5 + rng() * 2, offset || rng() - 0.5), xt, device);
    const gamma = await inp(normal(N, 0.5, 1), gt, device), beta = await inp(normal(N, 0.5), gt, device);
    const y = out(M * N, yt, device), mean = out(M, F32, device), rstd = out(M, F32, device);
    native().layerNormForward({ x: x.h, xType: dc(xt), gamma: gamma.h, beta: beta.h, gType: dc(gt), M, N, eps,
      y: y.h, yType: dc(yt), mean: mean.h, rstd: rstd.h });
    const what = `LN ${xt},${gt}->${yt} ${M}x${N} eps=${eps}${offset ? ` offset=${offset}` : ''}`;
    const ref = layerNorm64(x.v, gamma.v, beta.v, M, N, fround(eps));
    // FP32 statistics: the mean is off by ~sqrt(N) ulps of the row's magnitude; the variance's error
    // is second order in it (two passes).
    const errMean = (m: number) => (4 + sqrt(N)) * 2 * EPS32 * ref.meanAbs[m];
    expectClose(`${what}: mean`, await read(mean, M, what), ref.mean, (m) => errMean(m) + EPS32 * abs(ref.mean[m]));
    expectClose(`${what}: rstd`, await read(rstd, M, what), ref.rstd, (m) =>
      ref.rstd[m] * (8 * EPS32 * (4 + sqrt(N)) + (errMean(m) * ref.rstd[m]) ** 2));
    const got = await read(y, M * N, what);
    expectClose(`${what}: y`, got, ref.y, (i) => {
      const m = floor(i / N), j = i % N;
      const errXhat = errMean(m) * ref.rstd[m] + 16 * EPS32 * (abs(ref.xhat[i]) + 1);
      return abs(gamma.v[j]) * errXhat + 4 * EPS32 * (abs(ref.xhat[i] * gamma.v[j]) + abs(beta.v[j])) + U[yt] * abs(ref.y[i]) + TINY[yt];
    });
  }

  test(`forward: y, mean, rstd for M in ${Ms.join(', ')}, N in ${Ns.join(', ')}, vs float64`, async () => {
    let k = 0;
    for (const [xt, gt, yt] of FWD) for (const M of Ms) for (const N of Ns) await forwardCase(M, N, xt, gt, yt, [1e-5, 1e-3, 0.1][k++ % 3]);
  });
  // Rows wider than 1,024 columns: the CUDA kernels' block-per-row path (a warp per row below).
  const WIDE = [1025, 4100];
  test(`forward: rows of ${WIDE.join(' and ')} columns, vs float64`, async () => {
    for (const N of WIDE) for (const [xt, gt, yt] of FWD.slice(0, 2)) await forwardCase(5, N, xt, gt, yt, 1e-5);
  });
  test('forward: rows offset far from 0 (the variance is taken about the mean, in two passes)', async () => {
    await forwardCase(33, 257, F32, F32, F32, 1e-5, 1000);
    await forwardCase(7, 33, F32, F16, BF16, 1e-5, -300);
  });
  test('forward hand-worked: [1, 2, 3, 4] -> (x - 2.5) / sqrt(1.25) (biased variance); N = 1 -> beta', async () => {
    const x = await inp(new Float32Array([1, 2, 3, 4, 7]), F32, device);
    const g = await inp(new Float32Array([1, 1, 1, 1]), F32, device), b = await inp(new Float32Array([0, 0, 0, 0]), F32, device);
    const y = out(4, F32, device), mean = out(1, F32, device), rstd = out(1, F32, device);
    native().layerNormForward({ x: x.h, xType: 0, gamma: g.h, beta: b.h, gType: 0, M: 1, N: 4, eps: 0, y: y.h, yType: 0, mean: mean.h, rstd: rstd.h });
    const r = 1 / sqrt(1.25);
    expectClose('y', await read(y, 4, 'y'), [-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], () => 4e-7);
    expectExact('mean', await read(mean, 1, 'mean'), [2.5]);
    expectClose('rstd', await read(rstd, 1, 'rstd'), [r], () => 2e-7);
    // N = 1: var = 0, xhat = 0, y = beta; rstd = 1 / sqrt(eps)
    const g1 = await inp(new Float32Array([3]), F32, device), b1 = await inp(new Float32Array([0.625]), F32, device);
    const y1 = out(5, F32, device), mean1 = out(5, F32, device), rstd1 = out(5, F32, device);
    native().layerNormForward({ x: x.h, xType: 0, gamma: g1.h, beta: b1.h, gType: 0, M: 5, N: 1, eps: 0.25, y: y1.h, yType: 0, mean: mean1.h, rstd: rstd1.h });
    expectExact('y N=1', await read(y1, 5, 'y1'), [0.625, 0.625, 0.625, 0.625, 0.625]);
    expectExact('mean N=1', await read(mean1, 5, 'mean1'), [1, 2, 3, 4, 7]);
    expectExact('rstd N=1', await read(rstd1, 5, 'rstd1'), [2, 2, 2, 2, 2]);
  });

  const BMs = [1, 7, 33, 300, 3000];
  const BWD: [DType, DType, DType, DType, DType][] = [
    [F32, F32, F32, F32, F32], [F16, F16, F32, F16, F32], [BF16, BF16, BF16, BF16, BF16], [F16, F32, F16, F32, F16]];
  const backwardCases: [DType[], number, number][] = [];
  for (const types of BWD) for (const M of BMs) for (const N of Ns) backwardCases.push([types, M, N]);
  for (const N of WIDE) for (const types of BWD.slice(0, 2)) backwardCases.push([types, 6, N]);
  test(`backward: dx, dgamma, dbeta for M in ${BMs.join(', ')}, N in ${Ns.join(', ')} and rows of ${WIDE.join(' and ')} (given statistics), vs float64`, async () => {
    for (const [[dyt, xt, gt, dxt, dgt], M, N] of backwardCases) {
      const x = await inp(normal(M * N, 1 + rng(), rng() - 0.5), xt, device);
      const gamma = await inp(normal(N, 0.5, 1), gt, device), dy = await inp(normal(M * N), dyt, device);
      const stats = layerNorm64(x.v, gamma.v, gamma.v, M, N, 1e-5);
      const mean = await inp(Float32Array.from(stats.mean), F32, device), rstd = await inp(Float32Array.from(stats.rstd), F32, device);
      const dx = out(M * N, dxt, device), dgamma = out(N, dgt, device), dbeta = out(N, dgt, device);
      native().layerNormBackward({ dy: dy.h, dyType: dc(dyt), x: x.h, xType: dc(xt), gamma: gamma.h, gType: dc(gt), mean: mean.h, rstd: rstd.h,
        M, N, dx: dx.h, dxType: dc(dxt), dgamma: dgamma.h, dbeta: dbeta.h, dgType: dc(dgt) });
      const what = `LN backward ${dyt},${xt},${gt}->${dxt},${dgt} ${M}x${N}`;
      // The reference uses the FP32 statistics the op was given.
      const ref = layerNormBackward64(dy.v, x.v, gamma.v, mean.v, rstd.v, M, N);
      const c = 8 * EPS32 * (4 + sqrt(N));
      expectClose(`${what}: dx`, await read(dx, M * N, what), ref.dx, (i) => {
        const m = floor(i / N);
        const xhatErr = 4 * EPS32 * (abs(ref.xhat[i]) + abs(mean.v[m]) * rstd.v[m]);
        return rstd.v[m] * (c * (abs(ref.g[i]) + ref.rowA[m] + abs(ref.xhat[i]) * ref.rowB[m]) + xhatErr * ref.rowB[m] * 2) +
          U[dxt] * abs(ref.dx[i]) + TINY[dxt];
      });
      const sDx = new Float64Array(N), sDy = new Float64Array(N);
      for (let m = 0; m < M; m++) for (let j = 0; j < N; j++) {
        const i = m * N + j;
        sDx[j] += abs(dy.v[i]) * (abs(ref.xhat[i]) + 4 * EPS32 * abs(mean.v[m]) * rstd.v[m]);
        sDy[j] += abs(dy.v[i]);
      }
      expectClose(`${what}: dgamma`, await read(dgamma, N, what), ref.dgamma, (j) => U[dgt] * abs(ref.dgamma[j]) + (8 * sqrt(M) + 8) * EPS32 * sDx[j] + TINY[dgt]);
      expectClose(`${what}: dbeta`, await read(dbeta, N, what), ref.dbeta, (j) => U[dgt] * abs(ref.dbeta[j]) + 8 * sqrt(M) * EPS32 * sDy[j] + TINY[dgt]);
    }
  });

  test('backward after forward (saved statistics) matches central differences of the float64 forward', async () => {
    for (const [M, N] of [[3, 7], [2, 1], [4, 33]]) {
      const eps = 1e-5;
      const x = await inp(normal(M * N, 1.5, 0.3), F32, device);
      const gamma = await inp(normal(N, 0.5, 1), F32, device), beta = await inp(normal(N), F32, device);
      const w = await inp(normal(M * N), F32, device); // L = sum w * y, so dy = w
      const y = out(M * N, F32, device), mean = out(M, F32, device), rstd = out(M, F32, device);
      native().layerNormForward({ x: x.h, xType: 0, gamma: gamma.h, beta: beta.h, gType: 0, M, N, eps, y: y.h, yType: 0, mean: mean.h, rstd: rstd.h });
      const dx = out(M * N, F32, device), dgamma = out(N, F32, device), dbeta = out(N, F32, device);
      native().layerNormBackward({ dy: w.h, dyType: 0, x: x.h, xType: 0, gamma: gamma.h, gType: 0, mean: mean.h, rstd: rstd.h,
        M, N, dx: dx.h, dxType: 0, dgamma: dgamma.h, dbeta: dbeta.h, dgType: 0 });
      const L = (xv: Float64Array, gv: Float64Array, bv: Float64Array) => {
        const r = layerNorm64(xv, gv, bv, M, N, fround(eps)).y;
        let s = 0;
        for (let i = 0; i < M * N; i++) s += w.v[i] * r[i];
        return s;
      };
      const X = Float64Array.from(x.v), G = Float64Array.from(gamma.v), Bv = Float64Array.from(beta.v);
      const h = 1e-5;
      const fdOf = (arr: Float64Array) => Array.from(arr, (_, i) => {
        const old = arr[i];
        arr[i] = old + h; const lp = L(X, G, Bv);
        arr[i] = old - h; const lm = L(X, G, Bv);
        arr[i] = old;
        return (lp - lm) / (2 * h);
      });
      const what = `LN fd ${M}x${N}`;
      expectClose(`${what}: dx`, await read(dx, M * N, what), fdOf(X), (i) => 2e-5 * (1 + abs(gamma.v[i % N])));
      expectClose(`${what}: dgamma`, await read(dgamma, N, what), fdOf(G), () => 1e-5 * M);
      expectClose(`${what}: dbeta`, await read(dbeta, N, what), fdOf(Bv), () => 1e-5 * M);
    }
  });

  test('forward without gamma / beta (1 / 0): y = xhat; with only one of them; every dtype', () => {
    for (const [xt, yt] of [[F32, F32], [F16, F16], [BF16, F32]] as [DType, DType][]) for (const [M, N] of [[7, 33], [3, 1000]]) {
      const x = inp(normal(M * N, 2, 0.5), xt, device);
      const gamma = inp(normal(N, 0.5, 1), F32, device), beta = inp(normal(N), F32, device);
      const ones = new Float32Array(N).fill(1), zeros = new Float32Array(N);
      for (const [g, b] of [[null, null], [gamma, null], [null, beta]] as [typeof gamma | null, typeof beta | null][]) {
        const y = out(M * N, yt, device), mean = out(M, F32, device), rstd = out(M, F32, device);
        native().layerNormForward({ x: x.h, xType: dc(xt), M, N, eps: 1e-5, y: y.h, yType: dc(yt), mean: mean.h, rstd: rstd.h,
          ...(g || b ? { gType: 0 as const } : {}), ...(g ? { gamma: g.h } : {}), ...(b ? { beta: b.h } : {}) });
        const what = `LN ${g ? 'gamma' : 'no gamma'} ${b ? 'beta' : 'no beta'} ${xt}->${yt} ${M}x${N}`;
        const ref = layerNorm64(x.v, g ? g.v : ones, b ? b.v : zeros, M, N, fround(1e-5));
        const errMean = (m: number) => (4 + sqrt(N)) * 2 * EPS32 * ref.meanAbs[m];
        const gv = g ? g.v : ones, bv = b ? b.v : zeros;
        expectClose(what, read(y, M * N, what), ref.y, (i) => {
          const m = floor(i / N), j = i % N;
          const errXhat = errMean(m) * ref.rstd[m] + 16 * EPS32 * (abs(ref.xhat[i]) + 1);
          return abs(gv[j]) * errXhat + 4 * EPS32 * (abs(ref.xhat[i] * gv[j]) + abs(bv[j])) + U[yt] * abs(ref.y[i]) + TINY[yt];
        });
        expectClose(`${what}: mean`, read(mean, M, what), ref.mean, (m) => errMean(m) + EPS32 * abs(ref.mean[m]));
      }
    }
  });

  test('backward: without gamma (g = dy), each output optional, accumulate adds into dgamma / dbeta (read first)', () => {
    for (const [M, N] of [[7, 33], [300, 257], [2, 1]]) for (const dgt of [F32, BF16] as DType[]) {
      const x = inp(normal(M * N, 1.3, 0.2), F32, device), dy = inp(normal(M * N), F16, device);
      const stats = layerNorm64(x.v, new Float32Array(N).fill(1), new Float32Array(N), M, N, 1e-5);
      const mean = inp(stats.mean, F32, device), rstd = inp(stats.rstd, F32, device);
      const ref = layerNormBackward64(dy.v, x.v, new Float32Array(N).fill(1), mean.v, rstd.v, M, N);
      const base = { dy: dy.h, dyType: 1 as const, x: x.h, xType: 0 as const, mean: mean.h, rstd: rstd.h, M, N };
      const what = `LN backward no gamma ${M}x${N} dg ${dgt}`;
      // dx only (no gamma)
      const dx = out(M * N, F32, device);
      native().layerNormBackward({ ...base, dx: dx.h, dxType: 0 });
      const c = 8 * EPS32 * (4 + sqrt(N));
      expectClose(`${what}: dx`, read(dx, M * N, what), ref.dx, (i) => {
        const m = floor(i / N);
        const xhatErr = 4 * EPS32 * (abs(ref.xhat[i]) + abs(mean.v[m]) * rstd.v[m]);
        return rstd.v[m] * (c * (abs(ref.g[i]) + ref.rowA[m] + abs(ref.xhat[i]) * ref.rowB[m]) + xhatErr * ref.rowB[m] * 2) + U[F32] * abs(ref.dx[i]) + TINY[F32];
      });
      // dgamma and dbeta accumulated onto existing values; no dx
      const g0 = inp(normal(N), dgt, device), b0 = inp(normal(N), dgt, device);
      native().layerNormBackward({ ...base, dgType: dc(dgt), dgamma: g0.h, dbeta: b0.h, accumulate: true });
      const sDx = new Float64Array(N), sDy = new Float64Array(N);
      for (let m = 0; m < M; m++) for (let j = 0; j < N; j++) {
        const i = m * N + j;
        sDx[j] += abs(dy.v[i]) * (abs(ref.xhat[i]) + 4 * EPS32 * abs(mean.v[m]) * rstd.v[m]);
        sDy[j] += abs(dy.v[i]);
      }
      const rg = Array.from(ref.dgamma, (v, j) => v + g0.v[j]), rb = Array.from(ref.dbeta, (v, j) => v + b0.v[j]);
      expectClose(`${what}: dgamma accumulated`, readAll(g0), rg, (j) => U[dgt] * abs(rg[j]) + (M + 8) * EPS32 * (sDx[j] + abs(g0.v[j])) + TINY[dgt]);
      expectClose(`${what}: dbeta accumulated`, readAll(b0), rb, (j) => U[dgt] * abs(rb[j]) + (M + 8) * EPS32 * (sDy[j] + abs(b0.v[j])) + TINY[dgt]);
      // dbeta alone, overwritten
      const db = out(N, dgt, device);
      native().layerNormBackward({ ...base, dgType: dc(dgt), dbeta: db.h });
      expectClose(`${what}: dbeta alone`, read(db, N, what), ref.dbeta, (j) => U[dgt] * abs(ref.dbeta[j]) + (M + 8) * EPS32 * sDy[j] + TINY[dgt]);
    }
    // M = 0: sums are 0; accumulate leaves the values
    const x = inp([1], F32, device), st = inp([0], F32, device), dgz = out(3, F32, device), acc = inp([1.5, -2, 3], F32, device);
    native().layerNormBackward({ dy: x.h, dyType: 0, x: x.h, xType: 0, mean: st.h, rstd: st.h, M: 0, N: 3, dgType: 0, dgamma: dgz.h });
    expectExact('M = 0 dgamma', read(dgz, 3, 'M=0'), [0, 0, 0]);
    native().layerNormBackward({ dy: x.h, dyType: 0, x: x.h, xType: 0, mean: st.h, rstd: st.h, M: 0, N: 3, dgType: 0, dbeta: acc.h, accumulate: true });
    expectExact('M = 0 accumulate', readAll(acc).slice(0, 3), [1.5, -2, 3]);
  });
}, { everyCpuIsa: true });

describeEachBackend('softmax forward / backward', (device) => {
  /** float64 row softmax of the stored values: probabilities, log-probabilities and the row's error scales. */
  function softmax64(z: ArrayLike<number>, M: number, N: number) {
    const p = new Float64Array(M * N), lp = new Float64Array(M * N);
    const spread = new Float64Array(M), logS = new Float64Array(M);
    for (let m = 0; m < M; m++) {
      let mx = -Infinity;
      for (let j = 0; j < N; j++) mx = max(mx, z[m * N + j]);
      let s = 0;
      for (let j = 0; j < N; j++) s += exp(z[m * N + j] - mx);
      let w = 0;
      for (let j = 0; j < N; j++) {
        const i = m * N + j;
        p[i] = mx === -Infinity ? NaN : exp(z[i] - mx) / s;
        lp[i] = mx === -Infinity ? NaN : z[i] - mx - log(s);
        if (p[i] > 0) w += p[i] * abs(z[i] - mx);
      }
      spread[m] = w; // sum_j p_j |z_j - max|: how much the shifted arguments' rounding moves the sum
      logS[m] = log(s);
    }
    return { p, lp, spread, logS };
  }
  /** expectClose where the reference is finite; elsewhere (±inf, NaN) the same value exactly. */
  function closeOrExact(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: (i: number) => number) {
    const fin: number[] = [];
    for (let i = 0; i < ref.length; i++) {
      if (Number.isFinite(ref[i])) fin.push(i);
      else if (!Object.is(got[i], ref[i])) throw new Error(`${what}: element ${i}: got ${got[i]}, expected exactly ${ref[i]}`);
    }
    expectClose(what, fin.map((i) => got[i]), fin.map((i) => ref[i]), (k) => tol(fin[k]));
  }

  function forward(what: string, zv: Float32Array, M: number, N: number, xt: DType, yt: DType, isLog: boolean) {
    const x = inp(zv, xt, device), y = out(M * N, yt, device);
    native().softmaxForward({ M, N, log: isLog, x: x.h, xType: dc(xt), y: y.h, yType: dc(yt) });
    const got = read(y, M * N, what);
    const r = softmax64(x.v, M, N);
    // exp(z - max): 2 ulps + the rounding of z - max; the sum of N positive terms: N ulps (any order).
    const rowErr = (m: number) => EPS32 * (2 + r.spread[m] + N);
    const rowMax = Array.from({ length: M }, (_, m) => { let a = -Infinity; for (let j = 0; j < N; j++) a = max(a, x.v[m * N + j]); return a; });
    const zmax = (m: number) => rowMax[m];
    if (!isLog) {
      closeOrExact(what, got, r.p, (i) => {
        const m = floor(i / N), d = r.p[i] > 0 ? abs(x.v[i] - zmax(m)) : 0;
        return r.p[i] * (EPS32 * (3 + d) + rowErr(m)) + U[yt] * r.p[i] + TINY[yt];
      });
    } else {
      closeOrExact(what, got, r.lp, (i) => {
        const m = floor(i / N), d = abs(x.v[i] - zmax(m));
        return EPS32 * (2 * d + 2 * abs(r.logS[m]) + 2 * abs(r.lp[i])) + rowErr(m) + U[yt] * abs(r.lp[i]) + TINY[yt];
      });
    }
    return { x, got };
  }

  const Ms = [1, 7, 65], Ns = [1, 7, 33, 1000, 1500, 5000];
  const PAIRS: [DType, DType][] = [[F32, F32], [F16, F16], [BF16, F32], [F32, F16], [F16, BF16]];
  for (const isLog of [false, true]) {
    test(`${isLog ? 'log_softmax' : 'softmax'} forward: M in ${Ms.join(', ')}, N in ${Ns.join(', ')} (rows > 1024 included), vs float64`, () => {
      let k = 0;
      for (const M of Ms) for (const N of Ns) {
        const [xt, yt] = PAIRS[k++ % PAIRS.length];
        forward(`${isLog ? 'log' : ''}softmax ${xt}->${yt} ${M}x${N}`, normal(M * N, 3, rng() * 10 - 5), M, N, xt, yt, isLog);
      }
    });
  }

  test('-inf entries: probability 0 (log: -inf); an all -inf row is NaN; large offsets do not overflow; hand-worked', () => {
    for (const isLog of [false, true]) for (const N of [5, 1500]) {
      const M = 4, zv = normal(M * N, 2, 1000);
      for (let j = 0; j < N; j += 3) zv[j] = -Infinity; // row 0: every third entry masked
      for (let j = 0; j < N; j++) zv[2 * N + j] = -Infinity; // row 2: all masked
      zv[3 * N + 1] = -Infinity;
      const { got } = forward(`${isLog ? 'log' : ''}softmax -inf N=${N}`, zv, M, N, F32, F32, isLog);
      for (let j = 0; j < N; j++) {
        if (!Number.isNaN(got[2 * N + j])) throw new Error(`all -inf row: element ${j} is ${got[2 * N + j]}, expected NaN`);
        if (j % 3 === 0 && !Object.is(got[j], isLog ? -Infinity : 0)) throw new Error(`masked entry ${j}: ${got[j]}`);
      }
    }
    const x = inp([0, Math.log(3), 7, 7], F32, device), y = out(4, F32, device);
    native().softmaxForward({ M: 2, N: 2, x: x.h, xType: 0, y: y.h, yType: 0 });
    expectClose('softmax [0, ln 3], [7, 7]', read(y, 4, 'hand'), [0.25, 0.75, 0.5, 0.5], () => 1e-7);
    native().softmaxForward({ M: 2, N: 2, log: true, x: x.h, xType: 0, y: y.h, yType: 0 });
    expectClose('log_softmax', read(y, 4, 'hand log'), [log(0.25), log(0.75), -Math.LN2, -Math.LN2], () => 2e-7);
    const none = out(0, F32, device);
    native().softmaxForward({ M: 0, N: 3, x: x.h, xType: 0, y: none.h, yType: 0 });
    read(none, 0, 'M = 0');
  });

  /** The backward from stored y and dy against float64 (y's values as stored are the input). */
  function backward(what: string, M: number, N: number, isLog: boolean, yt: DType, dyt: DType, dxt: DType, inPlace = false) {
    const r = softmax64(normal(M * N, 2), M, N);
    const y = inp(isLog ? Float32Array.from(r.lp) : Float32Array.from(r.p), yt, device);
    const dy = inp(normal(M * N), dyt, device);
    const dx = inPlace ? dy : out(M * N, dxt, device);
    const ref = new Float64Array(M * N), tol = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      let red = 0, redAbs = 0;
      for (let j = 0; j < N; j++) {
        const i = m * N + j;
        red += isLog ? dy.v[i] : dy.v[i] * y.v[i];
        redAbs += isLog ? abs(dy.v[i]) : abs(dy.v[i] * y.v[i]);
      }
      const redErr = (N + 2) * EPS32 * redAbs;
      for (let j = 0; j < N; j++) {
        const i = m * N + j;
        if (isLog) {
          const e = exp(y.v[i]);
          ref[i] = dy.v[i] - e * red;
          tol[i] = e * (abs(red) * EPS32 * (4 + abs(y.v[i])) + redErr) + 2 * EPS32 * abs(ref[i]);
        } else {
          ref[i] = y.v[i] * (dy.v[i] - red);
          tol[i] = abs(y.v[i]) * (EPS32 * (abs(dy.v[i]) + abs(red)) + redErr) + 2 * EPS32 * abs(ref[i]);
        }
        tol[i] += U[dxt] * abs(ref[i]) + TINY[dxt];
      }
    }
    native().softmaxBackward({ M, N, log: isLog, y: y.h, yType: dc(yt), dy: dy.h, dyType: dc(dyt), dx: dx.h, dxType: dc(dxt) });
    const got = inPlace ? readAll(dx) : read(dx, M * N, what);
    expectClose(what, got, ref, (i) => tol[i]);
  }

  test('backward: softmax dx = y (dy - sum dy y), log_softmax dx = dy - exp(y) sum dy; dtype triples, rows > 1024, in place (dx = dy)', () => {
    const TRIPLES: [DType, DType, DType][] = [[F32, F32, F32], [F16, F16, F16], [BF16, F32, BF16], [F32, F16, F32]];
    let k = 0;
    for (const isLog of [false, true]) for (const M of [1, 7, 65]) for (const N of [1, 33, 1000, 3000]) {
      const [yt, dyt, dxt] = TRIPLES[k++ % TRIPLES.length];
      backward(`${isLog ? 'log' : ''}softmax backward ${yt},${dyt}->${dxt} ${M}x${N}`, M, N, isLog, yt, dyt, dxt);
    }
    for (const isLog of [false, true]) for (const t of DTYPES) backward(`in place ${isLog ? 'log' : ''} ${t}`, 9, 257, isLog, F32, t, t, true);
  });

  test('forward then backward matches central differences of the float64 softmax / log_softmax', () => {
    for (const isLog of [false, true]) {
      const M = 3, N = 7;
      const x = inp(normal(M * N, 1.5), F32, device), w = inp(normal(M * N), F32, device);
      const y = out(M * N, F32, device), dx = out(M * N, F32, device);
      native().softmaxForward({ M, N, log: isLog, x: x.h, xType: 0, y: y.h, yType: 0 });
      native().softmaxBackward({ M, N, log: isLog, y: y.h, yType: 0, dy: w.h, dyType: 0, dx: dx.h, dxType: 0 });
      const L = (z: Float64Array) => { const r = softmax64(z, M, N); let s = 0; for (let i = 0; i < M * N; i++) s += w.v[i] * (isLog ? r.lp[i] : r.p[i]); return s; };
      const X = Float64Array.from(x.v), h = 1e-5;
      const fd = Array.from(X, (_, i) => { const o = X[i]; X[i] = o + h; const lp = L(X); X[i] = o - h; const lm = L(X); X[i] = o; return (lp - lm) / (2 * h); });
      expectClose(`${isLog ? 'log' : ''}softmax fd`, read(dx, M * N, 'fd'), fd, () => 2e-6);
    }
  });
}, { everyCpuIsa: true });

describeEachBackend('embedding', (device) => {
  const PAIRS = DTYPES.flatMap((a) => DTYPES.map((b) => [a, b] as [DType, DType]));
  const V = 50;
  const randomIds = (n: number) => Int32Array.from({ length: n }, () => (rng() < 0.3 ? randInt(5) : randInt(V))); // repeats

  test('forward: out[i] = weight[ids[i]] (cast with one RNE) for every dtype pair; an id outside [0, V) gives a NaN row', () => {
    let k = 0;
    for (const C of [1, 7, 300]) for (let rep = 0; rep < 3; rep++) {
      const [wt, ot] = PAIRS[k++ % PAIRS.length];
      const n = 200;
      const ids = randomIds(n);
      ids[3] = -1; ids[17] = V; ids[50] = 2147483647; ids[51] = -2147483648;
      const w = inp(normal(V * C, 3), wt, device), o = out(n * C, ot, device);
      native().embeddingForward({ n, V, C, ids: int32s(ids, device), weight: w.h, wType: dc(wt), out: o.h, outType: dc(ot) });
      const what = `embedding ${wt}->${ot} C=${C}`;
      const ref = new Float32Array(n * C);
      for (let i = 0; i < n; i++) for (let j = 0; j < C; j++) ref[i * C + j] = ids[i] >= 0 && ids[i] < V ? w.v[ids[i] * C + j] : NaN;
      expectExact(what, read(o, n * C, what), roundTo(ot, ref), true);
    }
    const w = inp([1], F32, device), none = out(0, F32, device);
    native().embeddingForward({ n: 0, V: 1, C: 1, ids: int32s([], device), weight: w.h, wType: 0, out: none.h, outType: 0 });
    read(none, 0, 'n = 0');
  });

  test('backward: dweight[ids[i]] += dy[i] in FP32, repeated ids accumulate (CPU: in index order, bitwise), bad ids skipped', () => {
    for (const dyt of DTYPES) for (const C of [1, 7, 300]) {
      const n = 400;
      const ids = randomIds(n);
      ids[0] = -1; ids[9] = V; ids[99] = 2147483647;
      const dy = inp(normal(n * C), dyt, device);
      const w0 = normal(V * C);
      const dw = inp([...w0, NaN, NaN, NaN], F32, device);
      native().embeddingBackward({ n, V, C, ids: int32s(ids, device), dy: dy.h, dyType: dc(dyt), dweight: dw.h });
      const what = `embedding backward ${dyt} C=${C}`;
      const got = read({ h: dw.h, dtype: F32, n: V * C + 3 }, V * C, what);
      const seq = Float32Array.from(dw.v.subarray(0, V * C)); // FP32 adds in index order
      const ref = Float64Array.from(seq), scale = Float64Array.from(seq, abs), count = new Float64Array(V * C);
      for (let i = 0; i < n; i++) {
        const id = ids[i];
        if (id < 0 || id >= V) continue;
        for (let j = 0; j < C; j++) {
          const e = id * C + j;
          seq[e] = fround(seq[e] + dy.v[i * C + j]);
          ref[e] += dy.v[i * C + j];
          scale[e] += abs(dy.v[i * C + j]);
          count[e] += 1;
        }
      }
      if (device === 'cpu') expectExact(what, got, seq, true);
      else expectClose(what, got, ref, (e) => (count[e] + 1) * EPS32 * scale[e]); // FP32 atomics: any order
    }
  });
});

describeEachBackend('dropout', (device) => {
  const run = async (x: { h: StorageHandle }, xt: DType, yt: DType, n: number, p: number, seedHi: number, seedLo: number) => {
    const y = out(n, yt, device);
    native().dropout({ x: x.h, xType: dc(xt), y: y.h, yType: dc(yt), n, p, seedHi, seedLo });
    return read(y, n, `dropout n=${n} p=${p}`);
  };
  const nonZero = (n: number) => Float32Array.from(normal(n), (v) => (v < 0 ? -0.5 : 0.5) + v);

  test('the mask is the documented counter hash of (seed, index), whatever the size or dtype', async () => {
    for (const p of [0.5, fround(rng() * 0.98)]) {
      const seedHi = randU32(), seedLo = randU32(), n = 40000; // several element blocks
      const ones = await inp(new Float32Array(n).fill(1), F32, device);
      const got = await run(ones, F32, F32, n, p, seedHi, seedLo);
      const scale = fround(1 / fround(1 - fround(p)));
      expectExact(`mask p=${p}`, got, Array.from(got, (_, i) => (keepRef(seedHi, seedLo, i, p) ? scale : 0)));
      // a prefix of a longer call, in bfloat16, has the same mask
      const got2 = await run(await inp(new Float32Array(70001).fill(1), BF16, device), BF16, F16, 70001, p, seedHi, seedLo);
      for (let i = 0; i < n; i++) if ((got2[i] !== 0) !== (got[i] !== 0)) throw new Error(`mask differs at ${i} between calls`);
    }
  });

  test('kept fraction ~ 1 - p (5 sigma), kept values exactly x * (1 / (1 - p)) in float32, dropped exactly 0', async () => {
    const n = 200000;
    const x = await inp(nonZero(n), F32, device);
    for (const p of [0.1, 0.5, 0.9, fround(rng() * 0.95)]) {
      const got = await run(x, F32, F32, n, p, randU32(), randU32());
      const scale = fround(1 / fround(1 - fround(p)));
      let kept = 0;
      for (let i = 0; i < n; i++) {
        if (got[i] === 0) continue;
        kept++;
        if (got[i] !== fround(x.v[i] * scale)) throw new Error(`p=${p}: element ${i}: ${got[i]} != ${x.v[i]} * ${scale}`);
      }
      const mu = n * (1 - p), sigma = sqrt(n * p * (1 - p));
      if (!(abs(kept - mu) <= 5 * sigma)) throw new Error(`p=${p}: kept ${kept} of ${n}, expected ${mu} ± ${5 * sigma}`);
      // each half separately (the blocks beyond the first are drawn too)
      const half = got.subarray(n / 2).reduce((a, v) => a + (v !== 0 ? 1 : 0), 0);
      if (!(abs(half - mu / 2) <= 5 * sqrt((n / 2) * p * (1 - p)))) throw new Error(`p=${p}: second half kept ${half}`);
    }
    // p = 0.5 and 0.75: the multiplier is exact, so kept = x / (1 - p) exactly
    for (const p of [0.5, 0.75]) {
      const got = await run(x, F32, F32, 1000, p, 7, 9);
      for (let i = 0; i < 1000; i++) if (got[i] !== 0 && got[i] !== fround(x.v[i] / (1 - p))) throw new Error(`p=${p}: ${i}`);
    }
  });

  test('same seed: same output; other seeds (low or high word): other masks; backward = same call on dy', async () => {
    const n = 50000, p = 0.3;
    const x = await inp(nonZero(n), F32, device), dy = await inp(nonZero(n), F32, device);
    const hi = randU32(), lo = randU32();
    const a = await run(x, F32, F32, n, p, hi, lo), b = await run(x, F32, F32, n, p, hi, lo);
    expectExact('same seed', b, a);
    const differ = (u: Float32Array, v: Float32Array) => u.reduce((s, _, i) => s + ((u[i] === 0) !== (v[i] === 0) ? 1 : 0), 0);
    const expected = n * 2 * p * (1 - p); // independent masks disagree with probability 2p(1-p)
    for (const [h2, l2] of [[hi, (lo + 1) >>> 0], [(hi + 1) >>> 0, lo], [(hi ^ 0x80000000) >>> 0, lo]]) {
      const c = await run(x, F32, F32, n, p, h2, l2);
      const dcount = differ(a, c);
      if (!(abs(dcount - expected) < 5 * sqrt(expected))) throw new Error(`seed ${h2}:${l2}: ${dcount} mask differences, expected ~${expected}`);
    }
    const dx = await run(dy, F32, F32, n, p, hi, lo);
    const scale = fround(1 / fround(1 - p));
    expectExact('backward', dx, Array.from(dy.v, (v, i) => (a[i] === 0 ? 0 : fround(v * scale))));
  });

  test('p = 0 is the identity (bitwise); low-precision dtypes round x * scale once', async () => {
    const xs = nonZero(1000);
    xs[3] = -0; xs[4] = 1e-30; xs[5] = -3.4e38;
    const x = await inp(xs, F32, device);
    const got = await run(x, F32, F32, 1000, 0, randU32(), randU32());
    expectExact('p=0', got, x.v);
    expect(Object.is(got[3], -0)).toBe(true);
    for (const [xt, yt] of [[F16, F16], [BF16, BF16], [F32, F16], [BF16, F32]] as [DType, DType][]) {
      const xl = await inp(nonZero(3000), xt, device);
      const hi = randU32(), lo = randU32(), p = 0.4;
      const ref32 = await run(xl, xt, F32, 3000, p, hi, lo);
      const got2 = await run(xl, xt, yt, 3000, p, hi, lo);
      const scale = fround(1 / fround(1 - p));
      expectExact(`dropout ${xt}->${yt} (f32 path)`, ref32, Array.from(xl.v, (v, i) => (keepRef(hi, lo, i, p) ? fround(v * scale) : 0)));
      expectExact(`dropout ${xt}->${yt}`, got2, roundTo(yt, ref32));
    }
  });
});

describeEachBackend('unscaleCheckNorm and accumulate (the mixed-precision step\'s flat passes)', (device) => {
  /** An AmpState in backend memory with the given scale and running sums. */
  function stateOn(scale: number, sumsq: number, foundInf: number) {
    const h = alloc(device, 68);
    const f = new Float32Array(17), i = new Int32Array(f.buffer);
    f[0] = scale; f[1] = sumsq; i[2] = foundInf;
    native().writeBytes(h, new Uint8Array(f.buffer));
    return h;
  }
  test('g32 = g * float32(1 / scale) exactly; sumsq += sum g32^2 (FP32); foundInf |= any inf / NaN; every dtype, several blocks', () => {
    for (const t of DTYPES) for (const n of [1, 9, 16385, 100003]) for (const poison of [null, Infinity, NaN]) {
      const v = normal(n, 300);
      if (poison !== null) v[randInt(n)] = poison;
      const g = inp(v, t, device), o = out(n, F32, device);
      const scale = 2 ** (5 + randInt(12)), prior = fround(rng());
      const st = stateOn(scale, prior, 0);
      native().unscaleCheckNorm({ n, g: g.h, gType: dc(t), state: st, out32: o.h });
      const what = `unscale ${t} n=${n} poison=${poison}`;
      const inv = fround(1 / scale);
      const ref = Float32Array.from(g.v, (x) => fround(x * inv));
      expectExact(what, read(o, n, what), ref, true);
      const m = readSlots(st, 3);
      expect(m.i[2]).toBe(poison === null ? 0 : 1);
      if (poison === null) {
        let s = 0;
        for (const u of ref) s += u * u;
        expectClose(`${what}: sumsq`, [m.f[1]], [prior + s], () => (n + 8) * EPS32 * (s + prior));
      }
      // without out32: the same state update
      const st2 = stateOn(scale, prior, 0);
      native().unscaleCheckNorm({ n, g: g.h, gType: dc(t), state: st2 });
      expect(Buffer.from(native().readBytes(st2, 12)).equals(Buffer.from(native().readBytes(st, 12)))).toBe(true);
    }
  });
  test('accumulate: acc = g (overwrite) or acc += g in FP32, every dtype', () => {
    for (const t of DTYPES) for (const n of [1, 9, 40003]) {
      const g = inp(normal(n), t, device), a0 = normal(n);
      const acc = inp(a0, F32, device);
      native().accumulate({ n, overwrite: false, g: g.h, gType: dc(t), acc: acc.h });
      expectExact(`accumulate ${t} n=${n}`, readAll(acc), Float32Array.from(a0, (x, i) => fround(x + g.v[i])), true);
      native().accumulate({ n, overwrite: true, g: g.h, gType: dc(t), acc: acc.h });
      expectExact(`overwrite ${t} n=${n}`, readAll(acc), g.v, true);
    }
  });
}, { everyCpuIsa: true });

describeEachBackend('bad arguments through the raw binding', (device) => {
  test('buffers too small are E_SHAPE; bad p / smoothing / eps / act are E_ARG; bad dtype E_DTYPE; outputs untouched', () => {
    const b = native();
    const x = inp(normal(12), F32, device);
    const y = out(12, F32, device), small = out(5, F32, device, 0);
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 0, y: small.h, yType: 0, n: 12 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.activationForward({ act: 3 as ActCode, x: x.h, xType: 0, y: y.h, yType: 0, n: 12 }))).toBe('E_ARG');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 5 as 0, y: y.h, yType: 0, n: 12 }))).toBe('E_DTYPE');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 3 as 0, y: y.h, yType: 0, n: 3 }))).toBe('E_DTYPE'); // int32: storage only
    expect(codeOf(() => b.activationBackward({ act: 2, dy: x.h, dyType: 0, z: small.h, zType: 0, dx: y.h, dxType: 0, n: 12 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 0, y: y.h, yType: 0, n: -1 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 0, y: y.h, yType: 0, n: 1.5 }))).toBe('E_SHAPE');
    expect(codeOf(() => (b.activationForward as (a: unknown) => void)(7))).toBe('E_ARG');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xOffset: 1, xType: 0, y: y.h, yType: 0, n: 12 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.reduceSum({ x: x.h, xType: 0, outer: 1, R: 4, inner: 4, alpha: 1, beta: 0, out: y.h, outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.reduceSum({ x: x.h, xType: 0, outer: 1, R: 2, inner: 6, alpha: 1, beta: 0, out: small.h, outType: 0 }))).toBe('E_SHAPE');

    const labels = labelsOn([0, 1, 2], device), metrics = metricsOut(device);
    const ce = { logits: x.h, logitsType: 0 as const, labels, B: 3, C: 4, smoothing: 0, lossScale: 1, dlogits: y.h, dType: 0 as const,
      loss: metrics, correct: metrics, correctOffset: 1 };
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, C: 5 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, B: 4, C: 3 }))).toBe('E_SHAPE'); // labels hold 3
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, dlogits: small.h }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, correctOffset: 4 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, gradScale: metrics, gradScaleOffset: 1 << 20 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, gradScale: metrics, gradScaleOffset: 0.5 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, B: 0 }))).toBe('E_SHAPE');
    for (const s of [1.5, -0.1, NaN]) expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, smoothing: s }))).toBe('E_ARG');
    expect(codeOf(() => b.mseLoss({ pred: x.h, predType: 0, target: small.h, targetType: 0, n: 12, lossScale: 1, loss: metrics }))).toBe('E_SHAPE');
    expect(codeOf(() => b.mseLoss({ pred: x.h, predType: 0, target: x.h, targetType: 0, n: 12, lossScale: 1, dpred: small.h, dType: 0, loss: metrics }))).toBe('E_SHAPE');
    expect(codeOf(() => b.mseLoss({ pred: x.h, predType: 0, target: x.h, targetType: 0, n: 0, lossScale: 1, loss: metrics }))).toBe('E_SHAPE');

    const g = inp(normal(4), F32, device), mean = out(3, F32, device), rstd = out(3, F32, device);
    const ln = { x: x.h, xType: 0 as const, gamma: g.h, beta: g.h, gType: 0 as const, M: 3, N: 4, eps: 1e-5, y: y.h, yType: 0 as const, mean: mean.h, rstd: rstd.h };
    expect(codeOf(() => b.layerNormForward({ ...ln, M: 4 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.layerNormForward({ ...ln, N: 6, M: 2, gamma: g.h }))).toBe('E_SHAPE'); // gamma holds 4
    expect(codeOf(() => b.layerNormForward({ ...ln, eps: -1 }))).toBe('E_ARG');
    const lnb = { dy: x.h, dyType: 0 as const, x: x.h, xType: 0 as const, gamma: g.h, gType: 0 as const, mean: mean.h, rstd: small.h,
      M: 3, N: 4, dx: y.h, dxType: 0 as const, dgamma: small.h, dbeta: small.h, dgType: 0 as const };
    expect(codeOf(() => b.layerNormBackward({ ...lnb, M: 6, N: 2 }))).toBe('E_SHAPE'); // rstd holds 5 < 6
    expect(codeOf(() => b.layerNormBackward({ ...lnb, N: 6, M: 2, gamma: x.h }))).toBe('E_SHAPE'); // dgamma holds 5 < 6
    for (const p of [1, -0.1, NaN, 2]) expect(codeOf(() => b.dropout({ x: x.h, xType: 0, y: y.h, yType: 0, n: 12, p, seedHi: 0, seedLo: 1 }))).toBe('E_ARG');
    expect(codeOf(() => b.dropout({ x: x.h, xType: 0, y: small.h, yType: 0, n: 12, p: 0.5, seedHi: 0, seedLo: 1 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.dropout({ x: x.h, xType: 0, y: y.h, yType: 0, n: 12, p: 0.5, seedHi: 2 ** 32, seedLo: 1 }))).toBe('E_ARG');

    // nothing was written by the rejected calls
    for (const t of [y, small, mean, rstd]) expect(Array.from(readAll(t)).every(Number.isNaN)).toBe(true);
    expect(Array.from(readMetrics(metrics).i)).toEqual([NAN_BITS, NAN_BITS, NAN_BITS, NAN_BITS]);
  });

  test('overflowing sizes, extents past the storage, bad strides and aliasing in the new ops: typed errors, never a crash', () => {
    const b = native();
    const x = inp(normal(64), F32, device), o = out(64, F32, device, 0);
    const ids = labelsOn([0, 1, 2, 3], device);
    const big = 2 ** 40, huge = 2 ** 53;
    // copy
    const cp = { shape: [8, 8], xStrides: [8, 1], outStrides: [8, 1], x: x.h, xType: 0 as const, out: o.h, outType: 0 as const };
    expect(codeOf(() => b.copy({ ...cp, shape: [big, big], xStrides: [big, 1], outStrides: [big, 1] }))).toBe('E_SHAPE'); // (2^40 - 1) * 2^40 overflows
    expect(codeOf(() => b.copy({ ...cp, shape: [huge], xStrides: [1], outStrides: [1] }))).toBe('E_SHAPE'); // not a safe integer
    expect(codeOf(() => b.copy({ ...cp, shape: [65], xStrides: [1], outStrides: [1] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, xOffset: 1 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, xStrides: [9, 1] }))).toBe('E_SHAPE'); // extent 7 * 9 + 8 = 71 > 64
    expect(codeOf(() => b.copy({ ...cp, xStrides: [8] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, xStrides: [8, -1] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, xStrides: [8, 0.5] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, shape: new Array(9).fill(1), xStrides: new Array(9).fill(1), outStrides: new Array(9).fill(1) }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, outStrides: [0, 1] }))).toBe('E_ARG'); // out written twice
    expect(codeOf(() => b.copy({ ...cp, xType: 4 as 0 }))).toBe('E_DTYPE');
    expect(codeOf(() => b.copy({ ...cp, shape: 'x' as never }))).toBe('E_SHAPE');
    expect(codeOf(() => b.copy({ ...cp, out: x.h, outStrides: [1, 8] }))).toBe('E_ARG'); // x and out overlap, another layout
    expect(codeOf(() => b.activationForward({ act: 1, n: 32, x: x.h, xType: 0, y: x.h, yOffset: 1, yType: 0 }))).toBe('E_ARG'); // partial overlap
    expect(codeOf(() => b.softmaxBackward({ M: 4, N: 8, y: x.h, yType: 0, dy: o.h, dyType: 0, dx: x.h, dxType: 0 }))).toBe('E_ARG'); // dx overlaps y
    // binary
    const bin = { op: 0 as const, shape: [8, 8], scalar: 0, a: x.h, aType: 0 as const, aStrides: [8, 1], out: o.h, outType: 0 as const };
    expect(codeOf(() => b.binary({ ...bin, shape: [2 ** 30, 2 ** 30, 2 ** 30], aStrides: [0, 0, 0] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.binary({ ...bin, op: 3 as 0 }))).toBe('E_ARG');
    expect(codeOf(() => b.binary({ ...bin, aStrides: [1] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.binary({ ...bin, b: x.h, bType: 0, bStrides: [9, 1] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.binary({ ...bin, a: o.h, aOffset: 1, shape: [7, 8] }))).toBe('E_ARG'); // out overlaps a, shifted
    expect(codeOf(() => b.binary({ ...bin, a: o.h, aStrides: [1, 8] }))).toBe('E_ARG'); // out is a, walked transposed
    expect(codeOf(() => b.binary({ ...bin, b: o.h, bType: 1, bStrides: [8, 1] }))).toBe('E_ARG'); // the same bytes as another dtype
    expect(codeOf(() => b.binary({ ...bin, outOffset: 1 }))).toBe('E_SHAPE');
    // reduceSum
    const rd = { outer: 1, R: 8, inner: 8, alpha: 1, beta: 0, x: x.h, xType: 0 as const, out: o.h, outType: 0 as const };
    expect(codeOf(() => b.reduceSum({ ...rd, outer: 2 ** 30, R: 2 ** 30, inner: 2 ** 30 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.reduceSum({ ...rd, out: x.h, outOffset: 56 }))).toBe('E_ARG'); // out overlaps x
    expect(codeOf(() => b.reduceSum({ ...rd, R: -1 }))).toBe('E_SHAPE');
    // softmax
    expect(codeOf(() => b.softmaxForward({ M: big, N: big, x: x.h, xType: 0, y: o.h, yType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxForward({ M: 8, N: 0, x: x.h, xType: 0, y: o.h, yType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxBackward({ M: 8, N: 9, y: x.h, yType: 0, dy: x.h, dyType: 0, dx: o.h, dxType: 0 }))).toBe('E_SHAPE');
    // embedding
    expect(codeOf(() => b.embeddingForward({ n: 5, V: 8, C: 8, ids, weight: x.h, wType: 0, out: o.h, outType: 0 }))).toBe('E_SHAPE'); // ids hold 4
    expect(codeOf(() => b.embeddingForward({ n: 4, V: big, C: big, ids, weight: x.h, wType: 0, out: o.h, outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.embeddingForward({ n: 4, V: 9, C: 8, ids, weight: x.h, wType: 0, out: o.h, outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.embeddingBackward({ n: 4, V: 8, C: 16, ids, dy: x.h, dyType: 0, dweight: o.h }))).toBe('E_SHAPE');
    expect(codeOf(() => b.embeddingBackward({ n: 4, V: 8, C: 8, ids, dy: x.h, dyType: 1, dweight: o.h, dweightOffset: 1 }))).toBe('E_SHAPE');
    // fill
    expect(codeOf(() => b.fill({ n: 65, value: 0, out: o.h, outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.fill({ n: huge, value: 0, out: o.h, outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.fill({ n: 1, value: 0, out: o.h, outType: 7 as 0 }))).toBe('E_DTYPE');
    expect(Array.from(readAll(o)).every(Number.isNaN)).toBe(true);
  });
});

// CPU only: the reductions have a fixed order, so the bits do not depend on the thread count.
test('cpu: every op gives the same bits with 1, 2, 3 and 8 threads (fixed reduction order)', () => {
  const root = path.join(__dirname, '..');
  const seed = floor(rng() * 2 ** 32) >>> 0;
  const script = `
    const b = require('bindings')({ bindings: 'mixprec', module_root: ${JSON.stringify(root)} });
    let s = ${seed} >>> 0;
    const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 4294967296) * 2 - 1; };
    const up = (n, dt, k = 1) => { const h = b.alloc('cpu', n * (dt ? 2 : 4)); const v = new Float32Array(n); for (let i = 0; i < n; i++) v[i] = rnd() * k; b.upload(h, v, dt); return h; };
    const ints = (n, m) => { const a = new Int32Array(n); for (let i = 0; i < n; i++) a[i] = Math.floor((rnd() + 1) / 2 * m) % m; const h = b.alloc('cpu', n * 4); b.writeBytes(h, new Uint8Array(a.buffer)); return h; };
    const outs = [];
    const out = (bytes) => { const h = b.alloc('cpu', bytes); outs.push([h, bytes]); return h; };
    const keep = (h, bytes) => { outs.push([h, bytes]); return h; };
    const zeros = (n) => { const h = out(n * 4); b.fill({ n, value: 0, out: h, outType: 0 }); return h; };
    b.reduceSum({ outer: 1, R: 5000, inner: 33, alpha: 1, beta: 0, x: up(5000 * 33, 1), xType: 1, out: out(33 * 4), outType: 0 });
    b.reduceSum({ outer: 1, R: 300, inner: 3000, alpha: 0.5, beta: 0, x: up(300 * 3000, 0), xType: 0, out: out(3000 * 4), outType: 0 });
    b.reduceSum({ outer: 3, R: 70000, inner: 1, alpha: 1, beta: 0, x: up(3 * 70000, 2), xType: 2, out: out(12), outType: 0 });
    b.reduceSum({ outer: 7, R: 3000, inner: 40, alpha: 1, beta: 2, x: up(7 * 3000 * 40, 0), xType: 0, out: keep(up(280, 0), 280 * 4), outType: 0 });
    b.reduceSum({ outer: 2, R: 3000, inner: 40, alpha: 1, beta: 0, x: up(2 * 3000 * 40, 0), xType: 0, out: out(80 * 4), outType: 0 });
    b.softmaxCrossEntropy({ logits: up(300 * 257, 0, 4), logitsType: 0, labels: ints(300, 257), B: 300, C: 257, smoothing: 0.1, lossScale: 1,
      gradScale: up(1, 0), dlogits: out(300 * 257 * 4), dType: 0, loss: out(4), correct: out(4) });
    b.mseLoss({ pred: up(100000, 0), predType: 0, target: up(100000, 2), targetType: 2, n: 100000, lossScale: 2, dpred: out(200000), dType: 1, loss: out(4) });
    const x = up(5000 * 33, 0, 3), g = up(33, 0), mean = out(20000), rstd = out(20000);
    b.layerNormForward({ x, xType: 0, gamma: g, beta: up(33, 0), gType: 0, M: 5000, N: 33, eps: 1e-5, y: out(5000 * 33 * 4), yType: 0, mean, rstd });
    b.layerNormBackward({ dy: up(5000 * 33, 0), dyType: 0, x, xType: 0, gamma: g, gType: 0, mean, rstd, M: 5000, N: 33,
      dx: out(5000 * 33 * 4), dxType: 0, dgamma: out(33 * 4), dbeta: out(33 * 4), dgType: 0 });
    b.layerNormBackward({ dy: up(5000 * 33, 0), dyType: 0, x, xType: 0, mean, rstd, M: 5000, N: 33, accumulate: true,
      dgamma: keep(up(33, 0), 33 * 4), dbeta: keep(up(33, 0), 33 * 4), dgType: 0 });
    b.layerNormForward({ x: up(300 * 257, 1), xType: 1, M: 300, N: 257, eps: 1e-5, y: out(300 * 257 * 2), yType: 1, mean: out(1200), rstd: out(1200) });
    const y = out(65 * 3000 * 4);
    b.softmaxForward({ M: 65, N: 3000, x: up(65 * 3000, 0, 5), xType: 0, y, yType: 0 });
    b.softmaxBackward({ M: 65, N: 3000, y, yType: 0, dy: up(65 * 3000, 1), dyType: 1, dx: out(65 * 3000 * 4), dxType: 0 });
    b.softmaxForward({ M: 65, N: 3000, log: true, x: up(65 * 3000, 2, 5), xType: 2, y: out(65 * 3000 * 2), yType: 1 });
    b.embeddingBackward({ n: 3000, V: 97, C: 64, ids: ints(3000, 97), dy: up(3000 * 64, 1), dyType: 1, dweight: keep(up(97 * 64, 0), 97 * 64 * 4) });
    b.dropout({ x: up(100000, 0), xType: 0, y: out(400000), yType: 0, n: 100000, p: 0.3, seedHi: 1, seedLo: 2 });
    const st = out(68); b.upload(st, new Float32Array([1024, 0.5].concat(new Array(15).fill(0))), 0);
    b.unscaleCheckNorm({ n: 300001, g: up(300001, 1, 100), gType: 1, state: st, out32: out(300001 * 4) });
    b.unscaleCheckNorm({ n: 70001, g: up(70001, 2, 100), gType: 2, state: st });
    b.binary({ op: 0, shape: [300, 700], scalar: 0, a: up(300 * 700, 0), aType: 0, aStrides: [700, 1], b: up(700, 1), bType: 1, bStrides: [0, 1], out: out(300 * 700 * 2), outType: 1 });
    b.copy({ shape: [300, 700], xStrides: [1, 300], outStrides: [700, 1], x: up(300 * 700, 0), xType: 0, out: out(300 * 700 * 2), outType: 2 });
    b.gemm({ M: 20, N: 30, K: 300, batch: 16, strideA: 0, strideB: 9000, ldc: 32, strideC: 20 * 32, a: up(20 * 300, 1), aType: 1, b: up(16 * 9000, 1), bType: 1,
      alpha: 1, beta: 0, act: 0, out: zeros(16 * 20 * 32), outType: 0 }); // ldc > N: the gaps stay 0
    b.gemm({ M: 300, N: 500, K: 700, transA: true, a: up(700 * 300, 0), aType: 0, b: up(700 * 500, 0), bType: 0, alpha: 1, beta: 0, act: 2, out: out(300 * 500 * 2), outType: 1 });
    const hash = require('crypto').createHash('sha256');
    for (const [h, n] of outs) hash.update(b.readBytes(h, n));
    console.log(hash.digest('hex'));`;
  const digests = [1, 2, 3, 8].map((threads) => {
    const r = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, MIXPREC_NUM_THREADS: String(threads) } });
    if (r.status !== 0) throw new Error(`child with ${threads} threads failed: ${r.stderr}`);
    return r.stdout.trim();
  });
  expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
  expect(new Set(digests).size).toBe(1);
});
