// layerNorm (last dim, FP32 statistics, the input's dtype out) and embedding (a row gather; the
// backward scatter-adds in FP32). Both kernels take contiguous inputs (a strided x is copied).
import { dtypeCode, FloatDType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { BackwardContext, record, WRITTEN } from '../autograd/tape';
import { resultDtype } from '../amp/autocast';
import { alloc, Tensor, tensor } from '../tensor';
import { finite, floatArg, fmt, options, sameDevice, tensorArg } from './check';
import * as k from './kernels';

/**
 * (x - mean) / sqrt(var + eps) * weight + bias over the last dim (F.layer_norm with
 * normalized_shape = [x.shape[-1]]); weight / bias may be null. Statistics in FP32 (biased
 * variance); the result has x's dtype.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, opts?: { eps?: number }): Tensor {
  floatArg(x, 'layerNorm', 'x');
  if (x.ndim < 1) throw new MixprecError('E_SHAPE', 'layerNorm: x needs at least one dimension');
  const N = x.shape[x.ndim - 1], M = x.size / Math.max(N, 1);
  for (const [t, what] of [[weight, 'weight'], [bias, 'bias']] as const) {
    if (t === null || t === undefined) continue;
    floatArg(t, 'layerNorm', what);
    if (t.ndim !== 1 || t.shape[0] !== N) throw new MixprecError('E_SHAPE', `layerNorm: ${what} must be [${N}] for x ${fmt(x.shape)} (got ${fmt(t.shape)})`);
  }
  if (weight && bias && weight.dtype !== bias.dtype) throw new MixprecError('E_DTYPE', `layerNorm: weight is ${weight.dtype} but bias is ${bias.dtype}`);
  sameDevice('layerNorm', x, weight, bias);
  const o = options<{ eps: number }>(opts, 'layerNorm', ['eps']);
  const eps = finite(o.eps, 'layerNorm', 'eps', 1e-5);
  if (eps < 0) throw new MixprecError('E_ARG', 'layerNorm: eps must be >= 0');
  // The kernels read x as [M, N] rows and gamma / beta as N contiguous elements: strided views are copied.
  const w = weight ? k.dense(weight) : undefined, b = bias ? k.dense(bias) : undefined;
  const xc = k.dense(x);
  const y = alloc(x.shape, resultDtype('layerNorm', x.dtype as FloatDType), x.device);
  const mean = alloc([M], 'float32', x.device), rstd = alloc([M], 'float32', x.device);
  const gType = w ? dtypeCode(w.dtype) : b ? dtypeCode(b.dtype) : undefined;
  if (N > 0)
    native().layerNormForward({
      M, N, eps, x: xc.handle(), xOffset: xc.offset, xType: dtypeCode(xc.dtype), gType,
      gamma: w?.handle() ?? null, gammaOffset: w?.offset, beta: b?.handle() ?? null, betaOffset: b?.offset,
      y: y.handle(), yType: dtypeCode(y.dtype), mean: mean.handle(), rstd: rstd.handle(),
    });
  const owned = [mean, rstd, ...(xc !== x ? [xc] : []), ...(w && w !== weight ? [w] : []), ...(b && b !== bias ? [b] : [])];
  const [wIn, bIn] = [weight ?? undefined, bias ?? undefined];
  return record('layerNorm', y, [x, wIn, bIn], (g: Tensor, ctx: BackwardContext) => {
    const needW = wIn?.requiresGrad ?? false, needB = bIn?.requiresGrad ?? false;
    // Write dgamma / dbeta straight into the parameters' gradient views when both can be (one
    // accumulate flag and dtype for the pair), else into fresh tensors.
    const dw = needW ? ctx.into(1) : null, db = needB ? ctx.into(2) : null;
    const direct = (!needW || dw) && (!needB || db) && (!dw || !db || (dw.beta === db.beta && dw.out.dtype === db.out.dtype));
    const dgDtype = (direct ? (dw ?? db)?.out.dtype : (w ?? b)?.dtype) as FloatDType | undefined;
    const dgamma = needW ? (direct ? dw!.out : alloc([N], dgDtype!, x.device)) : null;
    const dbeta = needB ? (direct ? db!.out : alloc([N], dgDtype!, x.device)) : null;
    const dx = x.requiresGrad ? alloc(x.shape, x.dtype, x.device) : null;
    if (N > 0)
      native().layerNormBackward({
        M, N, accumulate: direct ? ((dw ?? db)?.beta ?? 0) === 1 : false,
        dy: g.handle(), dyOffset: g.offset, dyType: dtypeCode(g.dtype), x: xc.handle(), xOffset: xc.offset, xType: dtypeCode(xc.dtype),
        gType: w ? dtypeCode(w.dtype) : undefined, gamma: w?.handle() ?? null, gammaOffset: w?.offset,
        mean: mean.handle(), rstd: rstd.handle(),
        dx: dx?.handle() ?? null, dxType: dx ? dtypeCode(dx.dtype) : undefined,
        dgType: dgDtype ? dtypeCode(dgDtype) : undefined,
        dgamma: dgamma?.handle() ?? null, dgammaOffset: dgamma?.offset, dbeta: dbeta?.handle() ?? null, dbetaOffset: dbeta?.offset,
      });
    return [dx, needW ? (direct ? WRITTEN : dgamma) : null, needB ? (direct ? WRITTEN : dbeta) : null];
  }, owned);
}

/** Validated int32 ids (a tensor, or an Int32Array uploaded for the call) with their known range. */
export function idsArg(ids: unknown, op: string, what: string, device: Tensor['device']): { t: Tensor; temp: boolean } {
  if (Object.prototype.toString.call(ids) === '[object Int32Array]') {
    const a = ids as Int32Array;
    return { t: tensor(a, [a.length], { dtype: 'int32', device }), temp: true };
  }
  const t = tensorArg(ids, op, what);
  if (t.dtype !== 'int32') throw new MixprecError('E_DTYPE', `${op}: ${what} must be int32 (got ${t.dtype})`);
  if (t.device !== device) throw new MixprecError('E_DEVICE', `${op}: ${what} is on ${t.device}, expected ${device}`);
  return { t, temp: false };
}

/** Checks that every id lies in [0, n) (from the tensor's known range; E_ARG naming the rule). */
export function checkRange(ids: Tensor, n: number, op: string, what: string): void {
  const r = ids.intRange;
  if (ids.size === 0) return;
  if (!r) throw new MixprecError('E_ARG', `${op}: ${what} has unknown values (make it with mixprec.tensor)`);
  if (r[0] < 0 || r[1] >= n) throw new MixprecError('E_ARG', `${op}: ${what} must lie in [0, ${n}) (they span [${r[0]}, ${r[1]}])`);
}

/**
 * weight[ids] (F.embedding): ids int32 of any shape, weight [V, C] -> [...ids.shape, C] in
 * weight's dtype. The backward scatter-adds the rows' gradients in FP32 (repeated ids sum).
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  floatArg(weight, 'embedding', 'weight');
  if (weight.ndim !== 2) throw new MixprecError('E_SHAPE', `embedding: weight must be [V, C] (got ${fmt(weight.shape)})`);
  const { t: idt, temp } = idsArg(ids, 'embedding', 'ids', weight.device);
  const [V, C] = weight.shape;
  checkRange(idt, V, 'embedding', 'ids');
  const idc = k.dense(idt);
  const wc = k.dense(weight);
  const n = idt.size;
  const out = alloc([...idt.shape, C], weight.dtype, weight.device);
  if (n && C) // (C = 0: an empty result; the kernel takes rows of C >= 1)
    native().embeddingForward({
      n, V, C, ids: idc.handle(), idsOffset: idc.offset, weight: wc.handle(), weightOffset: wc.offset, wType: dtypeCode(wc.dtype),
      out: out.handle(), outType: dtypeCode(out.dtype),
    });
  if (wc !== weight) wc.dispose();
  const keepIds = idc !== idt ? idc : temp ? idt : null;
  if (idc !== idt && temp) idt.dispose();
  return record('embedding', out, [null, weight], (g: Tensor, ctx: BackwardContext) => {
    const dw = k.filled([V, C], 0, 'float32', weight.device);
    if (n && C) native().embeddingBackward({ n, V, C, ids: idc.handle(), idsOffset: idc.offset, dy: g.handle(), dyOffset: g.offset, dyType: dtypeCode(g.dtype), dweight: dw.handle() });
    const dst = ctx.into(1);
    if (!dst) return [null, dw];
    if (dst.beta) k.addInto(dst.out, dw);
    else k.copyInto(dst.out, dw);
    dw.dispose();
    return [null, WRITTEN];
  }, keepIds ? [keepIds] : []);
}
