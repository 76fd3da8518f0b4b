// sum and mean over dims (all by default), FP32 accumulation in a fixed order. The kernel
// reduces a contiguous [outer, R, inner] block: a contiguous run of dims reduces in place;
// other dim sets are first permuted to the end (one copy), as the kernel's comment says.
import { resultDtype } from '../amp/autocast';
import { FloatDType } from '../dtype';
import { MixprecError } from '../errors';
import { record } from '../autograd/tape';
import { Tensor } from '../tensor';
import { floatArg, normDim, options } from './check';
import * as k from './kernels';
import { permute } from './views';
import { noGrad } from '../autograd/scope';

interface ReduceOptions { dim?: number | readonly number[]; keepdim?: boolean }

function reduceOp(op: 'sum' | 'mean', x: Tensor, opts?: ReduceOptions): Tensor {
  floatArg(x, op, 'x');
  const o = options<ReduceOptions>(opts, op, ['dim', 'keepdim']);
  const keepdim = o.keepdim ?? false;
  if (typeof keepdim !== 'boolean') throw new MixprecError('E_ARG', `${op}: keepdim must be a boolean`);
  const all = o.dim === undefined || o.dim === null;
  const list = all ? x.shape.map((_, i) => i) : (Array.isArray(o.dim) ? o.dim : [o.dim]).map((d) => normDim(d, x.ndim, op));
  if (new Set(list).size !== list.length) throw new MixprecError('E_ARG', `${op}: dim lists a dimension twice`);
  const dims = [...list].sort((a, b) => a - b);
  const reduced = new Set(x.ndim === 0 ? [] : dims);
  const R = x.shape.reduce((acc, n, i) => (reduced.has(i) ? acc * n : acc), 1);
  const keptShape = x.shape.map((n, i) => (reduced.has(i) ? 1 : n));
  const outShape = keepdim ? keptShape : x.shape.filter((_, i) => !reduced.has(i));
  const dtype = resultDtype(op, x.dtype as FloatDType);
  const scale = op === 'mean' ? 1 / R : 1;

  // A contiguous x whose reduced dims are one run reduces in place; else move them last.
  const run = dims.length === 0 || dims[dims.length - 1] - dims[0] === dims.length - 1;
  let src = x, outer: number, inner: number;
  if (x.isContiguous() && run) {
    const first = dims.length ? dims[0] : x.ndim, last = dims.length ? dims[dims.length - 1] : x.ndim - 1;
    outer = x.shape.slice(0, first).reduce((a, b) => a * b, 1);
    inner = x.shape.slice(last + 1).reduce((a, b) => a * b, 1);
  } else {
    const order = [...x.shape.keys()].filter((i) => !reduced.has(i)).concat(dims);
    const v = noGrad(() => permute(x, order));
    src = k.dense(v);
    if (src !== v) v.dispose();
    outer = keptShape.reduce((a, b) => a * b, 1);
    inner = 1;
  }
  const out = k.reduce3(src, outer, R, inner, outShape, dtype, scale);
  if (src !== x) src.dispose();
  return record(op, out, [x], (g) => {
    // Every element of x receives its output's gradient (times 1/R for mean): a broadcast read.
    const gk = new Tensor(g.storage, keptShape, g.dtype, undefined, g.offset);
    const dx = k.binary('mul', gk, scale, x.shape, x.dtype as FloatDType);
    gk.dispose();
    return [dx];
  });
}

/** Sum over dim(s) (all elements by default), FP32 accumulation (torch.sum). */
export function sum(x: Tensor, opts?: ReduceOptions): Tensor { return reduceOp('sum', x, opts); }
/** Mean over dim(s) (all elements by default), FP32 accumulation (torch.mean). */
export function mean(x: Tensor, opts?: ReduceOptions): Tensor { return reduceOp('mean', x, opts); }
