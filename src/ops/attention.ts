// scaledDotProductAttention (torch's F.scaled_dot_product_attention) on the backend's attention
// kernels: the scores, softmax and products in FP32, never a stored T x T matrix on the CPU (an
// online softmax; the backward recomputes the probabilities from the rows' log-sum-exp). q / k / v
// are read through their strides (heads split from one packed QKV projection need no copy), and
// the output and the gradients are laid out [B, T, H, D] in memory, so the [B, H, T, D] results
// transpose back to [B, T, C] rows for free.
import { lowDtypeFor } from '../amp/autocast';
import { dtypeCode, FloatDType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { nextSeed } from '../random';
import { record } from '../autograd/tape';
import { alloc, Tensor } from '../tensor';
import { finite, floatArg, fmt, options, sameDevice } from './check';
import { castForAutocast, releaseCast } from './autocast_cast';
import * as k from './kernels';

export interface AttentionOptions {
  /** Mask key j for query i when j > i (torch's is_causal: top-left aligned). Default false. */
  causal?: boolean;
  /** Dropout on the attention probabilities (applied whenever > 0, as torch's dropout_p). Default 0. */
  dropoutP?: number;
  /** The scores' scale. Default 1 / sqrt(D). */
  scale?: number;
}

/** A [B, H, T, D] tensor (a 3-D [B, T, D] one reads as H = 1) whose last dim is contiguous. */
function heads(t: Tensor, what: string): Tensor {
  if (t.ndim !== 3 && t.ndim !== 4) throw new MixprecError('E_SHAPE', `scaledDotProductAttention: ${what} must be [B, H, T, D] or [B, T, D] (got ${fmt(t.shape)})`);
  const c = t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] !== 1 ? t.contiguous() : t;
  if (c.ndim === 4) return c;
  return new Tensor(c.storage, [c.shape[0], 1, c.shape[1], c.shape[2]], c.dtype, [c.strides[0], 0, c.strides[1], 1], c.offset);
}

const hs = (t: Tensor): number[] => [t.strides[0], t.strides[1], t.strides[2]];

/** [B, H, T, D] in memory order [B, T, H, D] (contiguous there). */
function headsMajor(B: number, H: number, T: number, D: number, dtype: FloatDType, device: Tensor['device']): Tensor {
  const buf = alloc([B, T, H, D], dtype, device);
  const t = new Tensor(buf.storage, [B, H, T, D], dtype, [T * H * D, D, H * D, 1], buf.offset);
  buf.dispose();
  return t;
}

/**
 * softmax(q k^T * scale [+ causal mask]) v, with optional dropout on the probabilities (torch's
 * F.scaled_dot_product_attention): q [B, H, Tq, D], k and v [B, H, Tk, D] (or 3-D [B, T, D]),
 * result [B, H, Tq, D] in q's dtype (under autocast: the autocast dtype). All math in FP32.
 */
export function scaledDotProductAttention(q: Tensor, kk: Tensor, v: Tensor, opts?: AttentionOptions): Tensor {
  const op = 'scaledDotProductAttention';
  floatArg(q, op, 'q'); floatArg(kk, op, 'k'); floatArg(v, op, 'v');
  sameDevice(op, q, kk, v);
  const o = options<AttentionOptions>(opts, op, ['causal', 'dropoutP', 'scale']);
  const causal = o.causal ?? false;
  if (typeof causal !== 'boolean') throw new MixprecError('E_ARG', `${op}: causal must be a boolean`);
  const p = finite(o.dropoutP, op, 'dropoutP', 0);
  // The kernels take it as a float32: 1 - 1e-9 would round to 1 there.
  if (!(p >= 0 && Math.fround(p) < 1)) throw new MixprecError('E_ARG', `${op}: dropoutP must be in [0, 1) as a float32 (got ${p})`);
  if (q.ndim !== kk.ndim || q.ndim !== v.ndim) throw new MixprecError('E_SHAPE', `${op}: q ${fmt(q.shape)}, k ${fmt(kk.shape)} and v ${fmt(v.shape)} must have the same number of dims`);
  const n = q.ndim;
  const D = q.shape[n - 1], Tq = q.shape[n - 2], Tk = kk.shape[n - 2];
  const same = (a: Tensor, b: Tensor, dims: number[]) => dims.every((d) => a.shape[d] === b.shape[d]);
  const lead = Array.from({ length: n - 2 }, (_, i) => i);
  if (!same(q, kk, [...lead, n - 1]) || !same(kk, v, [...lead, n - 2]) || v.shape[n - 1] !== D)
    throw new MixprecError('E_SHAPE', `${op}: q ${fmt(q.shape)}, k ${fmt(kk.shape)}, v ${fmt(v.shape)}: need q [.., Tq, D], k and v [.., Tk, D] with equal batch dims`);
  const scale = finite(o.scale, op, 'scale', 1 / Math.sqrt(Math.max(D, 1)));
  // The kernels' bound (native/core/op_args.h checkAttentionScalars), on the float32 they receive.
  const SCALE_MAX = Math.fround(3e38);
  if (!(Math.abs(Math.fround(scale)) < SCALE_MAX)) throw new MixprecError('E_ARG', `${op}: |scale| must be below 3e38 as a float32 (got ${scale})`);
  const low = lowDtypeFor(op);
  const [qc, kc, vc] = low ? [castForAutocast(q, low), castForAutocast(kk, low), castForAutocast(v, low)] : [q, kk, v];
  if (qc.dtype !== kc.dtype || qc.dtype !== vc.dtype) throw new MixprecError('E_DTYPE', `${op}: q, k and v must have one dtype (got ${q.dtype}, ${kk.dtype}, ${v.dtype})`);
  const dtype = qc.dtype as FloatDType;
  const Q = heads(qc, 'q'), K = heads(kc, 'k'), V = heads(vc, 'v');
  const [B, H] = [Q.shape[0], Q.shape[1]];
  const out = headsMajor(B, H, Tq, D, dtype, q.device);
  const grad = [q, kk, v].some((t) => t.requiresGrad);
  const lse = grad ? alloc([B, H, Tq], 'float32', q.device) : null;
  const seed = p > 0 ? nextSeed() : { seedHi: 0, seedLo: 0 };
  const common = { B, H, Tq, Tk, D, scale, causal, dropoutP: p, ...seed, type: dtypeCode(dtype), qStrides: hs(Q), kStrides: hs(K), vStrides: hs(V), outStrides: hs(out) };
  const tensors = { q: Q.handle(), qOffset: Q.offset, k: K.handle(), kOffset: K.offset, v: V.handle(), vOffset: V.offset };
  if (out.size) native().attentionForward({ ...common, ...tensors, out: out.handle(), outOffset: out.offset, lse: lse?.handle() ?? null });
  const result = n === 4 ? out : new Tensor(out.storage, [B, Tq, D], dtype, [out.strides[0], out.strides[2], 1], out.offset);
  const saved = [Q, K, V].filter((t, i) => t !== [qc, kc, vc][i]);
  if (!grad) {
    for (const t of saved) t.dispose();
    for (const [c, orig] of [[qc, q], [kc, kk], [vc, v]] as const) releaseCast(c, orig);
    if (result !== out) out.dispose();
    return result;
  }
  return record(op, result, [q, kk, v], (g: Tensor) => {
    const gin = g.dtype === dtype ? g : g.cast(dtype);
    const G = heads(gin, 'the gradient');
    const [dq, dk, dv] = [Tq, Tk, Tk].map((T) => headsMajor(B, H, T, D, dtype, q.device));
    if (out.size)
      native().attentionBackward({
        ...common, ...tensors, dType: dtypeCode(dtype), out: out.handle(), outOffset: out.offset,
        doutStrides: hs(G), dout: G.handle(), doutOffset: G.offset, lse: lse!.handle(),
        dqStrides: hs(dq), dkStrides: hs(dk), dvStrides: hs(dv),
        dq: dq.handle(), dqOffset: dq.offset, dk: dk.handle(), dkOffset: dk.offset, dv: dv.handle(), dvOffset: dv.offset,
      });
    if (G !== gin) G.dispose();
    if (gin !== g) gin.dispose();
    const shaped = (t: Tensor, T: number, like: Tensor) => {
      const r = n === 4 ? t : new Tensor(t.storage, [B, T, D], dtype, [t.strides[0], t.strides[2], 1], t.offset);
      if (r !== t) t.dispose();
      if (like.dtype === dtype) return r;
      const c = k.copyTo(r, like.dtype);
      r.dispose();
      return c;
    };
    return [shaped(dq, Tq, q), shaped(dk, Tk, kk), shaped(dv, Tk, v)];
  }, [...saved, ...(result !== out ? [out] : []), lse!]);
}
