// Views (no copy: a new shape / strides / offset over the same storage) and the copies that make
// or combine layouts: reshape, view, transpose, permute, narrow, contiguous, cast, cat. Each
// records its gradient (the inverse view, or a scatter into zeros for narrow).
import { checkDType, DType } from '../dtype';
import { MixprecError } from '../errors';
import { record, needsGrad } from '../autograd/tape';
import { checkShape, contiguousStrides, Tensor } from '../tensor';
import { fmt, normDim, sameDevice, show, tensorArg } from './check';
import * as k from './kernels';

function viewOf(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  const v = new Tensor(x.storage, shape, x.dtype, strides, offset);
  v.intRange = x.intRange;
  return v;
}

/** shape with one -1 inferred from x's size. */
function inferShape(x: Tensor, shape: unknown, op: string): number[] {
  if (!Array.isArray(shape)) throw new MixprecError('E_SHAPE', `${op}: shape must be an array of integers`);
  let infer = -1, known = 1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new MixprecError('E_SHAPE', `${op}: only one dimension can be -1 (got ${fmt(shape)})`);
      infer = i;
    } else if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
      throw new MixprecError('E_SHAPE', `${op}: shape must hold non-negative integers or one -1 (got ${fmt(shape)})`);
    else known *= d;
  });
  const out = [...shape] as number[];
  if (infer >= 0) {
    if (known === 0 || x.size % known !== 0) throw new MixprecError('E_SHAPE', `${op}: cannot infer -1 in ${fmt(shape)} for ${x.size} elements ${fmt(x.shape)}`);
    out[infer] = x.size / known;
  }
  const size = out.reduce((a, b) => a * b, 1);
  if (size !== x.size) throw new MixprecError('E_SHAPE', `${op}: shape ${fmt(out)} holds ${size} elements, the tensor ${fmt(x.shape)} has ${x.size}`);
  return checkShape(out);
}

function recordView(op: string, x: Tensor, out: Tensor, grad: (g: Tensor) => Tensor): Tensor {
  return record(op, out, [x], (g) => [grad(g)]);
}

/**
 * The strides that show x's elements with `shape` in row-major order without a copy, or null
 * (PyTorch's computeStride): each run of x's dims that is contiguous in memory may be split or
 * merged freely; dims across a gap may not be merged.
 */
function viewStrides(x: Tensor, shape: readonly number[]): number[] | null {
  if (x.size === 0 || x.ndim === 0) return contiguousStrides(shape);
  const out = new Array<number>(shape.length);
  let viewD = shape.length - 1;
  let chunkBase = x.strides[x.ndim - 1], tensorNumel = 1, viewNumel = 1;
  for (let d = x.ndim - 1; d >= 0; d--) {
    tensorNumel *= x.shape[d];
    if (d === 0 || (x.shape[d - 1] !== 1 && x.strides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || shape[viewD] === 1)) {
        out[viewD] = viewNumel * chunkBase;
        viewNumel *= shape[viewD];
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = x.strides[d - 1];
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  return viewD === -1 ? out : null;
}

/** A view of x with another shape (-1 inferred); E_SHAPE when x's strides do not allow one (use reshape). */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  tensorArg(x, 'view', 'x');
  const s = inferShape(x, shape, 'view');
  const strides = viewStrides(x, s);
  if (!strides) throw new MixprecError('E_SHAPE', `view: a ${fmt(x.shape)} tensor with strides ${fmt(x.strides)} cannot be viewed as ${fmt(s)} (its dims are not contiguous in memory); use reshape (which copies) or contiguous() first`);
  return recordView('view', x, viewOf(x, s, strides, x.offset), (g) => viewOf(g, x.shape, contiguousStrides(x.shape), g.offset));
}

/** The same values with another shape (-1 inferred): a view when the strides allow, else a copy. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  tensorArg(x, 'reshape', 'x');
  const s = inferShape(x, shape, 'reshape');
  if (viewStrides(x, s)) return view(x, s);
  const c = contiguous(x);
  const out = view(c, s);
  if (!c.requiresGrad) c.dispose(); // the view holds the storage; a recorded copy stays for its node
  return out;
}

/** Swaps two dims (a view). */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  tensorArg(x, 'transpose', 'x');
  const a = normDim(dim0, x.ndim, 'transpose', 'dim0'), b = normDim(dim1, x.ndim, 'transpose', 'dim1');
  if (x.ndim === 0) return recordView('transpose', x, viewOf(x, [], [], x.offset), (g) => g);
  const shape = [...x.shape], strides = [...x.strides];
  [shape[a], shape[b]] = [shape[b], shape[a]];
  [strides[a], strides[b]] = [strides[b], strides[a]];
  return recordView('transpose', x, viewOf(x, shape, strides, x.offset), (g) => transposeRaw(g, a, b));
}

function transposeRaw(g: Tensor, a: number, b: number): Tensor {
  const shape = [...g.shape], strides = [...g.strides];
  [shape[a], shape[b]] = [shape[b], shape[a]];
  [strides[a], strides[b]] = [strides[b], strides[a]];
  return viewOf(g, shape, strides, g.offset);
}

/** Reorders the dims (a view): out.shape[i] = x.shape[dims[i]]. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  tensorArg(x, 'permute', 'x');
  if (!Array.isArray(dims) || dims.length !== x.ndim)
    throw new MixprecError('E_SHAPE', `permute: dims must list each of the ${x.ndim} dims of ${fmt(x.shape)} once (got ${show(dims)})`);
  const p = dims.map((d) => normDim(d, x.ndim, 'permute'));
  if (new Set(p).size !== p.length) throw new MixprecError('E_SHAPE', `permute: dims ${fmt(dims)} repeat a dimension`);
  const inverse = new Array<number>(p.length);
  p.forEach((d, i) => (inverse[d] = i));
  const out = viewOf(x, p.map((d) => x.shape[d]), p.map((d) => x.strides[d]), x.offset);
  return recordView('permute', x, out, (g) => viewOf(g, inverse.map((d) => g.shape[d]), inverse.map((d) => g.strides[d]), g.offset));
}

/** Elements [start, start + length) along dim (a view). */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  tensorArg(x, 'narrow', 'x');
  if (x.ndim === 0) throw new MixprecError('E_SHAPE', 'narrow: needs a tensor with at least one dimension');
  const d = normDim(dim, x.ndim, 'narrow');
  for (const [v, what] of [[start, 'start'], [length, 'length']] as const)
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new MixprecError('E_ARG', `narrow: ${what} must be an integer`);
  const s = start < 0 ? start + x.shape[d] : start;
  if (s < 0 || length < 0 || s + length > x.shape[d])
    throw new MixprecError('E_SHAPE', `narrow: [${start}, ${start + length}) is outside dim ${dim} of ${fmt(x.shape)} (size ${x.shape[d]})`);
  const shape = [...x.shape];
  shape[d] = length;
  const out = viewOf(x, shape, x.strides, x.offset + s * x.strides[d]);
  return record('narrow', out, [x], (g) => {
    const dx = k.filled(x.shape, 0, x.dtype, x.device);
    const part = viewOf(dx, shape, dx.strides, dx.offset + s * dx.strides[d]);
    k.copyInto(part, g);
    part.dispose();
    return [dx];
  });
}

/** @internal A contiguous copy, not recorded (reading values out). */
export function contiguousCopy(x: Tensor): Tensor {
  return k.copyTo(x, x.dtype);
}

/** A contiguous copy of x (recorded: the gradient passes through). */
export function contiguous(x: Tensor): Tensor {
  tensorArg(x, 'contiguous', 'x');
  return record('contiguous', k.copyTo(x, x.dtype), [x], (g) => [g]);
}

/** x converted to dtype (IEEE RNE); the gradient is converted back to x's dtype. */
export function cast(x: Tensor, dtype: DType): Tensor {
  tensorArg(x, 'cast', 'x');
  checkDType(dtype);
  if ((x.dtype === 'int32') !== (dtype === 'int32')) throw new MixprecError('E_DTYPE', `cast: ${x.dtype} to ${dtype} is not supported (int32 holds indices, not values)`);
  const out = k.copyTo(x, dtype);
  out.intRange = x.intRange;
  return record('cast', out, [x], (g) => [k.copyTo(g, x.dtype)]);
}

/** Concatenates tensors of one dtype along dim (all other dims equal). */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw new MixprecError('E_ARG', 'cat: needs a non-empty array of tensors');
  tensors.forEach((t, i) => tensorArg(t, 'cat', `tensors[${i}]`));
  const list = tensors as readonly Tensor[];
  const first = list[0];
  const d = normDim(dim, first.ndim, 'cat');
  if (first.ndim === 0) throw new MixprecError('E_SHAPE', 'cat: zero-dimensional tensors cannot be concatenated');
  const device = sameDevice('cat', ...list);
  let total = 0;
  for (const t of list) {
    if (t.dtype !== first.dtype) throw new MixprecError('E_DTYPE', `cat: tensors of ${first.dtype} and ${t.dtype}; cast them to one dtype first`);
    if (t.ndim !== first.ndim || t.shape.some((n, i) => i !== d && n !== first.shape[i]))
      throw new MixprecError('E_SHAPE', `cat: ${list.map((x) => fmt(x.shape)).join(' and ')} differ outside dim ${dim}`);
    total += t.shape[d];
  }
  const shape = [...first.shape];
  shape[d] = total;
  const out = k.filled(shape, 0, first.dtype, device);
  let at = 0;
  const starts: number[] = [];
  for (const t of list) {
    const partShape = [...shape];
    partShape[d] = t.shape[d];
    const part = viewOf(out, partShape, out.strides, out.offset + at * out.strides[d]);
    k.copyInto(part, t);
    part.dispose();
    starts.push(at);
    at += t.shape[d];
  }
  if (first.dtype === 'int32') {
    const ranges = list.map((t) => t.intRange);
    out.intRange = ranges.every((r) => r) ? [Math.min(...ranges.map((r) => r![0])), Math.max(...ranges.map((r) => r![1]))] : null;
  }
  if (!needsGrad(...list)) return out;
  return record('cat', out, list, (g) => list.map((t, i) => {
    if (!t.requiresGrad) return null;
    const partShape = [...shape];
    partShape[d] = t.shape[d];
    return viewOf(g, partShape, g.strides, g.offset + starts[i] * g.strides[d]);
  }));
}
