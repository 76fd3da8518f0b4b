// matmul (torch.matmul: 1-D and N-D operands, broadcast batch dims) and linear, on the backend's
// strided-batched GEMM. Operands are read in place whenever their last two dims are a row- or
// column-major matrix (a transposed view is the GEMM's transA / transB with its leading
// dimension) and their batch dims collapse to one stride; otherwise that operand is copied to a
// contiguous block first. A batched `x @ W` with a shared W folds the batch into the rows (one
// GEMM). Backward: dA = g @ B^T and dB = A^T @ g on the same GEMM (written straight into a
// parameter's gradient view when the tape offers one), summed over broadcast batch dims.
import type { Activation } from './kernels';
import { lowDtypeFor } from '../amp/autocast';
import { checkFloatDType, dtypeCode, FloatDType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { BackwardContext, needsGrad, record, WRITTEN } from '../autograd/tape';
import { alloc, Tensor } from '../tensor';
import { broadcastShapes, finite, floatArg, fmt, options, sameDevice, show } from './check';
import * as k from './kernels';
import { castForAutocast, releaseCast } from './autocast_cast';

export type { Activation };

export interface MatmulOptions {
  /** 2-D only: use a's transpose (a stored [K, M]). */
  transA?: boolean;
  /** 2-D only: use b's transpose (b stored [N, K]), e.g. a Linear weight [out, in]. */
  transB?: boolean;
  /** 2-D only: scales the product (default 1). */
  alpha?: number;
  /** 2-D only: scales `c` (default 1 when `c` is given, else 0). */
  beta?: number;
  /** 2-D only: [M, N], added as beta * c; may be the same tensor as `out`. */
  c?: Tensor;
  /** [N], added to every row before the activation. */
  bias?: Tensor;
  activation?: Activation;
  /** Default: the operands' dtype when they agree, else float32 (under autocast: the autocast dtype). */
  outDtype?: FloatDType;
  /** 2-D only: write into this [M, N] tensor (rows contiguous) instead of allocating; not with autograd. */
  out?: Tensor;
  /** 2-D only: also store the value before the activation here ([M, N]). */
  preAct?: Tensor;
}

const KEYS = ['transA', 'transB', 'alpha', 'beta', 'c', 'bias', 'activation', 'outDtype', 'out', 'preAct'] as const;
const TWO_D_ONLY = ['transA', 'transB', 'alpha', 'beta', 'c', 'out', 'preAct'];

interface Epilogue {
  alpha: number; beta: number; c?: Tensor; bias?: Tensor; act: Activation; outDtype: FloatDType; out?: Tensor; preAct?: Tensor;
}

/** How a [.., R, C] view's last two dims sit in memory: rows (trans false) or columns, `ld` apart. */
function matrixLayout(t: Tensor): { trans: boolean; ld: number } | null {
  const n = t.ndim, R = t.shape[n - 2], C = t.shape[n - 1], sR = t.strides[n - 2], sC = t.strides[n - 1];
  if ((C === 1 || sC === 1) && (R === 1 || sR >= C)) return { trans: false, ld: R === 1 ? C : sR };
  if ((R === 1 || sR === 1) && (C === 1 || sC >= R)) return { trans: true, ld: C === 1 ? R : sC };
  return null;
}

/** One stride that walks the (broadcast) batch dims in row-major order, or null. */
function collapseBatch(shape: readonly number[], strides: readonly number[]): number | null {
  let stride: number | null = null, expect = 0;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 1) continue;
    if (stride === null) { stride = strides[i]; expect = strides[i] * shape[i]; continue; }
    if (strides[i] !== expect) return null;
    expect = strides[i] * shape[i];
  }
  return stride ?? 0;
}

/** out[..., M, N] = act(alpha * a @ b + beta * c + bias) for logical a [..., M, K], b [..., K, N]. */
function gemm(a: Tensor, b: Tensor, e: Epilogue): Tensor {
  const M = a.shape[a.ndim - 2], K = a.shape[a.ndim - 1], N = b.shape[b.ndim - 1];
  const batchShape = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul');
  const batch = batchShape.reduce((x, y) => x * y, 1);
  const outShape = [...batchShape, M, N];
  const out = e.out ?? alloc(outShape, e.outDtype, a.device);
  if (batch === 0 || M === 0 || N === 0) return out;
  const temps: Tensor[] = [];
  try {
    if (K === 0) {
      // The product is all zeros: a K = 1 product of zeros keeps the epilogue (beta*c, bias, act) exact.
      const za = k.filled([...batchShape, M, 1], 0, 'float32', a.device), zb = k.filled([1, N], 0, 'float32', a.device);
      temps.push(za, zb);
      return gemm(za, zb, e);
    }
    // Each operand: its matrix layout and one batch stride, else a contiguous copy of the broadcast operand.
    const prep = (t: Tensor) => {
      const bs = k.broadcastStrides(t, [...batchShape, t.shape[t.ndim - 2], t.shape[t.ndim - 1]]).slice(0, -2);
      const layout = matrixLayout(t), stride = collapseBatch(batchShape, bs);
      if (layout && stride !== null) return { t, layout, stride };
      const full = alloc([...batchShape, t.shape[t.ndim - 2], t.shape[t.ndim - 1]], t.dtype, t.device);
      k.copyInto(full, t, k.broadcastStrides(t, full.shape));
      temps.push(full);
      return { t: full, layout: { trans: false, ld: full.shape[full.ndim - 1] }, stride: batch > 1 ? full.shape[full.ndim - 1] * full.shape[full.ndim - 2] : 0 };
    };
    let A = prep(a);
    const B = prep(b);
    let gM = M, gBatch = batch, strideA = A.stride;
    // x [..., M, K] @ W [K, N]: the batch folds into the rows when the rows of all items are evenly spaced.
    if (batch > 1 && B.stride === 0 && !A.layout.trans && A.stride === M * A.layout.ld) {
      gM = M * batch;
      gBatch = 1;
      strideA = 0;
    }
    const ol = matrixLayout(out);
    const oStride = collapseBatch(batchShape, out.strides.slice(0, -2));
    if (!ol || ol.trans || oStride === null) throw new MixprecError('E_ARG', `matmul: out must have contiguous rows (strides ${fmt(out.strides)})`);
    if (gBatch === 1 && gM > M && oStride !== M * ol.ld) throw new MixprecError('E_ARG', 'matmul: out rows must be evenly spaced across the batch');
    let c = e.c;
    if (c && c !== e.out) {
      // C shares out's layout in the GEMM: stage it in out, then read it back as C (= out).
      k.copyInto(out, c, k.broadcastStrides(c, out.shape));
      c = out;
    }
    // The bias is read as N contiguous elements: a strided [N] view is copied first.
    const bias = e.bias ? k.dense(e.bias) : undefined;
    if (bias && bias !== e.bias) temps.push(bias);
    // preAct is written with out's layout (ldc, strideC): any other layout goes through a buffer of
    // out's layout, then is copied into the caller's view (never written past the view's elements).
    let preAct = e.preAct;
    if (preAct && !sameLayout(preAct, out)) {
      preAct = withLayoutOf(out, preAct.dtype as FloatDType);
      temps.push(preAct);
    }
    native().gemm({
      M: gM, N, K, batch: gBatch,
      transA: A.layout.trans, transB: B.layout.trans, lda: A.layout.ld, ldb: B.layout.ld, ldc: ol.ld,
      strideA, strideB: B.stride, strideC: gBatch > 1 ? oStride : 0,
      alpha: e.alpha, beta: e.beta, act: k.ACTS[e.act],
      a: A.t.handle(), aOffset: A.t.offset, aType: dtypeCode(A.t.dtype),
      b: B.t.handle(), bOffset: B.t.offset, bType: dtypeCode(B.t.dtype),
      out: out.handle(), outOffset: out.offset, outType: dtypeCode(out.dtype),
      c: c ? out.handle() : null, cOffset: out.offset, cType: dtypeCode(out.dtype),
      bias: bias?.handle() ?? null, biasOffset: bias?.offset, biasType: bias ? dtypeCode(bias.dtype) : undefined,
      preAct: preAct?.handle() ?? null, preActOffset: preAct?.offset, preActType: preAct ? dtypeCode(preAct.dtype) : undefined,
    });
    if (preAct && e.preAct && preAct !== e.preAct) k.copyInto(e.preAct, preAct);
    return out;
  } catch (err) {
    if (!e.out) out.dispose();
    throw err;
  } finally {
    for (const t of temps) t.dispose();
  }
}

const T = (t: Tensor) => k.transposeView(t);

/** Same shape and the same strides over every dim of size > 1: one GEMM layout serves both. */
function sameLayout(a: Tensor, b: Tensor): boolean {
  return a.ndim === b.ndim && a.shape.every((d, i) => d === b.shape[i] && (d <= 1 || a.strides[i] === b.strides[i]));
}

/** A new tensor of `like`'s shape and strides (offset 0 in a buffer of its extent), in `dtype`. */
function withLayoutOf(like: Tensor, dtype: FloatDType): Tensor {
  const extent = like.size === 0 ? 0 : 1 + like.shape.reduce((acc, d, i) => acc + (d - 1) * like.strides[i], 0);
  const buf = alloc([extent], dtype, like.device);
  const t = new Tensor(buf.storage, like.shape, dtype, like.strides, buf.offset);
  buf.dispose();
  return t;
}

/** dz = g * act'(z) of the fused epilogue (ReLU's from the output y, GELU's from the stored pre-activation). */
function epilogueGrad(g: Tensor, act: Activation, y: Tensor, pre: Tensor | undefined): Tensor {
  return act === 'none' ? g : k.activationGrad(act, g, act === 'relu' ? y : pre!, g.dtype as FloatDType);
}

type Dst = { out: Tensor; beta: 0 | 1 } | null;

/** x @ y into the tape's destination when it has the result's shape, else a new tensor summed to `like`. */
function product(x: Tensor, y: Tensor, like: Tensor, dst: Dst, alpha: number): Tensor | typeof WRITTEN {
  const dtype = like.dtype as FloatDType;
  if (dst && dst.out.ndim === 2 && x.ndim === 2 && y.ndim === 2) {
    gemm(x, y, { alpha, beta: dst.beta, c: dst.beta ? dst.out : undefined, act: 'none', outDtype: dst.out.dtype as FloatDType, out: dst.out });
    return WRITTEN;
  }
  const full = gemm(x, y, { alpha, beta: 0, act: 'none', outDtype: dtype });
  if (full.ndim === like.ndim && full.shape.every((d, i) => d === like.shape[i])) return full;
  const r = k.sumTo(full, like.shape, dtype);
  if (r !== full) full.dispose();
  return r;
}

/** Rows of a contiguous [..., R, C] as one [rows, C] matrix (the batch folded into the rows). */
function rows2d(t: Tensor): Tensor {
  return k.viewAs(t, [-1, t.shape[t.ndim - 1]]);
}

/**
 * Gradients of z = alpha * A @ B (+ bias) for A = op(a), B = op(b) (op: the stored transpose),
 * in a's and b's stored layouts: dA = alpha dz B^T, dB = alpha A^T dz; when b is one matrix
 * shared by a batch of A, the batch folds into the K of dB's product.
 */
function productGrads(dz: Tensor, a: Tensor, transA: boolean, needA: boolean, b: Tensor, transB: boolean, needB: boolean, alpha: number, ctx: BackwardContext): (Tensor | typeof WRITTEN | null)[] {
  const A = transA ? T(a) : a, B = transB ? T(b) : b;
  const out: (Tensor | typeof WRITTEN | null)[] = [null, null];
  if (needA) out[0] = transA ? product(B, T(dz), a, ctx.into(0), alpha) : product(dz, T(B), a, ctx.into(0), alpha);
  if (needB) {
    const fold = b.ndim === 2 && dz.ndim > 2;
    const A2 = fold ? rows2d(A) : A, dz2 = fold ? rows2d(dz) : dz;
    out[1] = transB ? product(T(dz2), A2, b, ctx.into(1), alpha) : product(T(A2), dz2, b, ctx.into(1), alpha);
    if (fold) { A2.dispose(); dz2.dispose(); }
  }
  return out;
}

/** The bias gradient: the column sums of dz over all rows (into the tape's destination when offered). */
function biasGrad(dz: Tensor, bias: Tensor, dst: Dst): Tensor | typeof WRITTEN {
  const N = bias.shape[0], rows = dz.size / Math.max(N, 1);
  if (dst) {
    k.reduce3(dz, 1, rows, N, bias.shape, dst.out.dtype as FloatDType, 1, dst.out, dst.beta);
    return WRITTEN;
  }
  return k.reduce3(dz, 1, rows, N, bias.shape, bias.dtype as FloatDType);
}

function checkInner(a: Tensor, b: Tensor, K: number, Kb: number): void {
  if (K !== Kb) throw new MixprecError('E_SHAPE', `matmul: ${fmt(a.shape)} @ ${fmt(b.shape)}: inner dimensions ${K} and ${Kb} differ`);
}

/**
 * torch.matmul: 1-D operands are vectors (a dot product for two), N-D operands are batches of
 * matrices with broadcast batch dims; FP32 accumulation; FP16 / BF16 pairs on Tensor Cores
 * (CUDA) or packed kernels (CPU). With the 2-D options (transA, transB, alpha, beta, c, out,
 * preAct): out[M,N] = activation(alpha * op(a) @ op(b) + beta * c + bias).
 */
export function matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor {
  floatArg(a, 'matmul', 'a');
  floatArg(b, 'matmul', 'b');
  const o = options<MatmulOptions>(opts, 'matmul', KEYS);
  sameDevice('matmul', a, b, o.c, o.bias, o.out, o.preAct);
  if (a.ndim === 0 || b.ndim === 0) throw new MixprecError('E_SHAPE', `matmul: ${fmt(a.shape)} @ ${fmt(b.shape)}: both operands need at least one dimension`);
  const twoD = TWO_D_ONLY.some((key) => (o as Record<string, unknown>)[key] !== undefined);
  if (twoD && (a.ndim !== 2 || b.ndim !== 2))
    throw new MixprecError('E_SHAPE', `matmul: ${fmt(a.shape)} @ ${fmt(b.shape)}: the options ${TWO_D_ONLY.join(', ')} need 2-D operands`);
  const low = lowDtypeFor('matmul');
  const [a0, b0] = [a, b];
  if (low) {
    a = castForAutocast(a, low);
    b = castForAutocast(b, low);
  }
  const transA = o.transA === true, transB = o.transB === true;
  // 1-D operands as matrices: a [K] -> [1, K], b [K] -> [K, 1] (views; the result drops those dims).
  const a2 = a.ndim === 1 ? k.viewAs(a, [1, a.shape[0]]) : a;
  const b2 = b.ndim === 1 ? k.viewAs(b, [b.shape[0], 1]) : b;
  const A = transA ? T(a2) : a2, B = transB ? T(b2) : b2;
  const M = A.shape[A.ndim - 2], K = A.shape[A.ndim - 1], N = B.shape[B.ndim - 1];
  checkInner(a, b, K, B.shape[B.ndim - 2]);
  const batchShape = broadcastShapes(A.shape.slice(0, -2), B.shape.slice(0, -2), 'matmul');
  const alpha = finite(o.alpha, 'matmul', 'alpha', 1);
  const beta = finite(o.beta, 'matmul', 'beta', o.c ? 1 : 0);
  if (beta !== 0 && !o.c) throw new MixprecError('E_ARG', 'matmul: beta != 0 needs c');
  const act = o.activation ?? 'none';
  if (!k.isActivation(act)) throw new MixprecError('E_ARG', `matmul: activation must be 'none', 'relu' or 'gelu' (got ${show(act)})`);
  const outDtype = checkFloatDType(o.outDtype ?? o.out?.dtype ?? low ?? (a.dtype === b.dtype ? a.dtype : 'float32'), 'matmul: outDtype');
  const shapeOf = (t: Tensor | undefined, shape: number[], what: string) => {
    if (t && (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i])))
      throw new MixprecError('E_SHAPE', `matmul: ${what} must have shape ${fmt(shape)} (got ${fmt(t.shape)})`);
  };
  shapeOf(o.c, [M, N], 'c');
  if (o.bias) floatArg(o.bias, 'matmul', 'bias');
  shapeOf(o.bias, [N], 'bias');
  shapeOf(o.preAct, [M, N], 'preAct');
  if (o.out) {
    floatArg(o.out, 'matmul', 'out');
    shapeOf(o.out, [M, N], 'out');
    if (o.out.dtype !== outDtype) throw new MixprecError('E_DTYPE', `matmul: out is ${o.out.dtype} but outDtype is ${outDtype}`);
  }
  const bias = o.bias, c = o.c;
  if (c) floatArg(c, 'matmul', 'c');
  const grad = needsGrad(a, b, bias, c);
  if (grad && (o.out || o.preAct))
    throw new MixprecError('E_ARG', 'matmul: out and preAct do not support autograd (an input requires grad); use noGrad or drop them');
  const pre = grad && act === 'gelu' ? alloc([...batchShape, M, N], outDtype, a.device) : o.preAct;
  const y = gemm(A, B, { alpha, beta, c: o.c, bias, act, outDtype, out: o.out, preAct: pre });
  const outShape = [...batchShape, ...(a.ndim === 1 ? [] : [M]), ...(b.ndim === 1 ? [] : [N])];
  const result = outShape.length === y.ndim ? y : k.reshapeView(y, outShape);
  if (a2 !== a) a2.dispose();
  if (b2 !== b) b2.dispose();
  if (!grad) {
    if (result !== y) y.dispose();
    releaseCast(a, a0);
    releaseCast(b, b0);
    return result;
  }
  return record('matmul', result, [a, b, bias, c], (g, ctx) => {
    const gz = g.ndim === y.ndim ? g : k.reshapeView(g, y.shape);
    const dz = epilogueGrad(gz, act, y, pre);
    const ga2 = a.ndim === 1 ? k.viewAs(a, [1, a.shape[0]]) : a;
    const gb2 = b.ndim === 1 ? k.viewAs(b, [b.shape[0], 1]) : b;
    // With a 1-D operand its gradient comes back as a matrix: no destination, reshaped below.
    const c2: BackwardContext = { into: (i) => ((i === 0 && a.ndim === 1) || (i === 1 && b.ndim === 1) ? null : ctx.into(i)) };
    const [da, db] = productGrads(dz, ga2, transA, a.requiresGrad, gb2, transB, b.requiresGrad, alpha, c2);
    const dbias = bias?.requiresGrad ? biasGrad(dz, bias, ctx.into(2)) : null;
    // z = alpha AB + beta c + bias: dc = beta dz.
    const dc = c?.requiresGrad ? k.binary('mul', dz, beta, dz.shape, c.dtype as FloatDType) : null;
    if (ga2 !== a) ga2.dispose();
    if (gb2 !== b) gb2.dispose();
    if (dz !== gz) dz.dispose();
    if (gz !== g) gz.dispose();
    const back = (t: Tensor | typeof WRITTEN | null, like: Tensor) => (t instanceof Tensor && t.ndim !== like.ndim ? reshaped(t, like.shape) : t);
    return [back(da, a), back(db, b), dbias, dc];
  }, [y !== result ? y : null, pre && pre !== o.preAct ? pre : null].filter((t): t is Tensor => t !== null));
}

function reshaped(t: Tensor, shape: readonly number[]): Tensor {
  const v = k.viewAs(t, shape);
  t.dispose();
  return v;
}

/**
 * y = activation(x @ weight^T + bias) (F.linear): x [..., in], weight [out, in], bias [out];
 * bias and ReLU / GELU fused into the GEMM's epilogue; the weight's gradient dz^T x is one GEMM
 * over all rows, written straight into a bound parameter's gradient view.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts?: { activation?: Activation }): Tensor {
  floatArg(x, 'linear', 'x');
  floatArg(weight, 'linear', 'weight');
  if (bias !== undefined && bias !== null) floatArg(bias, 'linear', 'bias');
  const o = options<{ activation: Activation }>(opts, 'linear', ['activation']);
  sameDevice('linear', x, weight, bias);
  if (weight.ndim !== 2) throw new MixprecError('E_SHAPE', `linear: weight must be [out, in] (got ${fmt(weight.shape)})`);
  const [fout, fin] = weight.shape;
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== fin)
    throw new MixprecError('E_SHAPE', `linear: ${fmt(x.shape)} @ weight^T ${fmt([fin, fout])}: inner dimensions ${x.shape[x.ndim - 1] ?? 0} and ${fin} differ`);
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== fout)) throw new MixprecError('E_SHAPE', `linear: bias must be [${fout}] (got ${fmt(bias.shape)})`);
  const act = o.activation ?? 'none';
  if (!k.isActivation(act)) throw new MixprecError('E_ARG', `linear: activation must be 'none', 'relu' or 'gelu' (got ${show(act)})`);
  const low = lowDtypeFor('linear');
  const [x0, w0] = [x, weight];
  if (low) {
    x = castForAutocast(x, low);
    weight = castForAutocast(weight, low);
  }
  const b = bias ?? undefined;
  const outDtype: FloatDType = low ?? (x.dtype === weight.dtype ? (x.dtype as FloatDType) : 'float32');
  const X = x.ndim === 1 ? k.viewAs(x, [1, fin]) : x;
  const grad = needsGrad(x, weight, b);
  const pre = grad && act === 'gelu' ? alloc([...X.shape.slice(0, -1), fout], outDtype, x.device) : undefined;
  const y = gemm(X, T(weight), { alpha: 1, beta: 0, bias: b, act, outDtype, preAct: pre });
  const result = x.ndim === 1 ? k.reshapeView(y, [fout]) : y;
  if (X !== x) X.dispose();
  if (!grad) {
    if (result !== y) y.dispose();
    releaseCast(x, x0);
    releaseCast(weight, w0);
    return result;
  }
  return record('linear', result, [x, weight, b], (g, ctx) => {
    const gz = g.ndim === y.ndim ? g : k.reshapeView(g, y.shape);
    const dz = epilogueGrad(gz, act, y, pre);
    const Xg = x.ndim === 1 ? k.viewAs(x, [1, fin]) : x;
    // weight is b stored [N, K] (transB): dW = dz^T X over all rows, into the weight's gradient view.
    const c2: BackwardContext = { into: (i) => (i === 0 && x.ndim === 1 ? null : ctx.into(i)) };
    const [dx, dw] = productGrads(dz, Xg, false, x.requiresGrad, weight, true, weight.requiresGrad, 1, c2);
    const dbias = b?.requiresGrad ? biasGrad(dz, b, ctx.into(2)) : null;
    if (Xg !== x) Xg.dispose();
    if (dz !== gz) dz.dispose();
    if (gz !== g) gz.dispose();
    return [dx instanceof Tensor && x.ndim === 1 ? reshaped(dx, [fin]) : dx, dw, dbias];
  }, [y !== result ? y : null, pre ?? null].filter((t): t is Tensor => t !== null));
}
