// Raw launches of the native ops on Tensors, with no validation beyond what the native reader
// does and no autograd: the building blocks of the public ops (src/ops/*) and their gradients.
import type { ActCode } from '../../binding';
import type { Device } from '../backends';
import { DType, dtypeCode, FloatDType, storageCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { alloc, fillTensor, Tensor } from '../tensor';


/** A new contiguous tensor filled with `value`. */
export function filled(shape: readonly number[], value: number, dtype: DType, device: Device): Tensor {
  return fillTensor(alloc(shape, dtype, device), value);
}

/** Strides of t read as a tensor of `shape` (numpy broadcasting: 0 where t's dim is 1 or missing). */
export function broadcastStrides(t: Tensor, shape: readonly number[]): number[] {
  const n = shape.length, off = n - t.ndim;
  const s = new Array<number>(n).fill(0);
  for (let i = 0; i < t.ndim; i++) s[off + i] = t.shape[i] === 1 && shape[off + i] !== 1 ? 0 : t.strides[i];
  return s;
}

/** out (strided, any dtype of the same kind) <- x (strided), element-wise with conversion; shapes equal. */
export function copyInto(out: Tensor, x: Tensor, xStrides: readonly number[] = x.strides): void {
  if (out.size === 0) return;
  native().copy({
    shape: out.shape as number[], xStrides: xStrides as number[], outStrides: out.strides as number[],
    x: x.handle(), xOffset: x.offset, xType: storageCode(x.dtype),
    out: out.handle(), outOffset: out.offset, outType: storageCode(out.dtype),
  });
}

/** A contiguous copy of x in `dtype`. */
export function copyTo(x: Tensor, dtype: DType): Tensor {
  const out = alloc(x.shape, dtype, x.device);
  copyInto(out, x);
  return out;
}

const BINARY = { add: 0, sub: 1, mul: 2 } as const;
export type BinaryName = keyof typeof BINARY;

/** a op b broadcast to `shape`, computed in FP32, stored as a new contiguous `dtype` tensor (or into out). */
export function binary(op: BinaryName, a: Tensor, b: Tensor | number, shape: readonly number[], dtype: FloatDType, out?: Tensor): Tensor {
  const o = out ?? alloc(shape, dtype, a.device);
  if (o.size === 0) return o;
  const scalar = typeof b === 'number';
  native().binary({
    op: BINARY[op], shape: shape as number[], scalar: scalar ? b : 0,
    a: a.handle(), aOffset: a.offset, aType: dtypeCode(a.dtype), aStrides: broadcastStrides(a, shape),
    b: scalar ? null : b.handle(), bOffset: scalar ? 0 : b.offset, bType: scalar ? undefined : dtypeCode(b.dtype),
    bStrides: scalar ? undefined : broadcastStrides(b, shape),
    out: o.handle(), outOffset: o.offset, outType: dtypeCode(o.dtype),
  });
  return o;
}

/** acc += g in place (acc contiguous; g of acc's shape, any strides / dtype). */
export function addInto(acc: Tensor, g: Tensor): void {
  if (!acc.isContiguous()) throw new MixprecError('E_STATE', 'internal: accumulating into a non-contiguous gradient');
  binary('add', acc, g, acc.shape, acc.dtype as FloatDType, acc);
}

/**
 * out[o, i] = alpha * sum_r x[o, r, i] + beta * out[o, i], x contiguous viewed [outer, R, inner].
 * out: a new tensor of `shape` (outer * inner elements) unless given.
 */
export function reduce3(x: Tensor, outer: number, R: number, inner: number, shape: readonly number[], dtype: FloatDType, alpha = 1, out?: Tensor, beta = 0): Tensor {
  const o = out ?? alloc(shape, dtype, x.device);
  if (outer * inner === 0) return o;
  native().reduceSum({
    outer, R, inner, alpha, beta,
    x: x.handle(), xOffset: x.offset, xType: dtypeCode(x.dtype), out: o.handle(), outOffset: o.offset, outType: dtypeCode(o.dtype),
  });
  return o;
}

/** Sums g (of shape `from`, contiguous) down to `to` (numpy broadcasting in reverse), FP32 sums. */
export function sumTo(g: Tensor, to: readonly number[], dtype: FloatDType): Tensor {
  const from = g.shape;
  if (from.length === to.length && from.every((d, i) => d === to[i])) return g.dtype === dtype ? g : copyTo(g, dtype);
  // Align `to` right, then reduce each maximal run of dims that are broadcast (to 1) in one pass.
  const off = from.length - to.length;
  const target = from.map((_, i) => (i < off ? 1 : to[i - off]));
  let cur = g.isContiguous() ? g : copyTo(g, g.dtype);
  let curShape = [...from];
  let d = 0;
  while (d < curShape.length) {
    if (target[d] !== 1 || curShape[d] === 1) { d++; continue; }
    let e = d;
    while (e < curShape.length && target[e] === 1) e++;
    const outer = curShape.slice(0, d).reduce((a, b) => a * b, 1);
    const R = curShape.slice(d, e).reduce((a, b) => a * b, 1);
    const inner = curShape.slice(e).reduce((a, b) => a * b, 1);
    const nextShape = [...curShape.slice(0, d), ...curShape.slice(d, e).map(() => 1), ...curShape.slice(e)];
    const last = !nextShape.some((n, i) => target[i] === 1 && n !== 1 && i >= e);
    const next = reduce3(cur, outer, R, inner, nextShape, last ? dtype : 'float32');
    if (cur !== g) cur.dispose();
    cur = next;
    curShape = nextShape;
    d = e;
  }
  const result = cur.dtype === dtype ? cur : copyTo(cur, dtype);
  if (result !== cur && cur !== g) cur.dispose();
  // Now curShape equals `target` (contiguous): view it as `to` (dropping the leading 1s).
  const view = new Tensor(result.storage, to, result.dtype, undefined, result.offset);
  if (result !== g) result.dispose();
  return view;
}

export const ACTS = { none: 0, relu: 1, gelu: 2 } as const;
export type Activation = keyof typeof ACTS;
/** One of ACTS' own names ('toString' and other inherited keys are not activations; never throws). */
export function isActivation(v: unknown): v is Activation {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(ACTS, v);
}

export function activation(act: Activation, x: Tensor, dtype: FloatDType): Tensor {
  const y = alloc(x.shape, dtype, x.device);
  if (x.size) native().activationForward({ act: ACTS[act] as ActCode, n: x.size, x: x.handle(), xOffset: x.offset, xType: dtypeCode(x.dtype), y: y.handle(), yType: dtypeCode(dtype) });
  return y;
}

/** dx = dy * act'(z), all contiguous of one shape; dx in dtype. */
export function activationGrad(act: Activation, dy: Tensor, z: Tensor, dtype: FloatDType): Tensor {
  const dx = alloc(dy.shape, dtype, dy.device);
  if (dy.size)
    native().activationBackward({
      act: ACTS[act] as ActCode, n: dy.size, dy: dy.handle(), dyOffset: dy.offset, dyType: dtypeCode(dy.dtype),
      z: z.handle(), zOffset: z.offset, zType: dtypeCode(z.dtype), dx: dx.handle(), dxType: dtypeCode(dtype),
    });
  return dx;
}

/** A contiguous version of t (itself when it already is). */
export function dense(t: Tensor): Tensor {
  return t.isContiguous() ? t : copyTo(t, t.dtype);
}

/**
 * A borrowed view with the last two dims swapped, for use inside one op only (it holds no
 * reference on the storage and is not recorded): a GEMM operand read transposed.
 */
export function transposeView(t: Tensor): Tensor {
  const n = t.ndim, shape = [...t.shape], strides = [...t.strides];
  [shape[n - 2], shape[n - 1]] = [shape[n - 1], shape[n - 2]];
  [strides[n - 2], strides[n - 1]] = [strides[n - 1], strides[n - 2]];
  return new Tensor(t.storage, shape, t.dtype, strides, t.offset, true);
}

/** t (contiguous, or a contiguous copy of it) viewed with `shape`; disposing the result frees the copy. */
export function viewAs(t: Tensor, shape: readonly number[]): Tensor {
  const c = dense(t);
  const v = reshapeView(c, shape);
  if (c !== t) c.dispose();
  return v;
}

/** A view of a contiguous t with another shape (one -1 inferred; not recorded). */
export function reshapeView(t: Tensor, shape: readonly number[]): Tensor {
  if (!t.isContiguous()) throw new MixprecError('E_STATE', 'internal: reshapeView of a non-contiguous tensor');
  const known = shape.reduce((a, b) => (b === -1 ? a : a * b), 1);
  const s = shape.map((d) => (d === -1 ? t.size / Math.max(known, 1) : d));
  return new Tensor(t.storage, s, t.dtype, undefined, t.offset);
}
