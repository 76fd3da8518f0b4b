// softmax and logSoftmax along a dim, FP32 inside (and a float32 result under autocast). The
// kernels take contiguous rows (the last dim): another dim is transposed to the end and copied
// first, and the result is a transposed view back.
import { resultDtype } from '../amp/autocast';
import { dtypeCode, FloatDType } from '../dtype';
import { native } from '../native';
import { record } from '../autograd/tape';
import { alloc, Tensor } from '../tensor';
import { floatArg, normDim, options } from './check';
import * as k from './kernels';

/** x with dim d moved last (swapped with it) as contiguous rows; x itself when it already is. */
function rows(x: Tensor, d: number): Tensor {
  if (d === x.ndim - 1 || x.ndim <= 1) return k.dense(x);
  const v = swap(x, d);
  const c = k.dense(v);
  if (c !== v) v.dispose();
  return c;
}

function swap(x: Tensor, d: number): Tensor {
  const n = x.ndim - 1, shape = [...x.shape], strides = [...x.strides];
  [shape[d], shape[n]] = [shape[n], shape[d]];
  [strides[d], strides[n]] = [strides[n], strides[d]];
  return new Tensor(x.storage, shape, x.dtype, strides, x.offset);
}

function softmaxOp(op: 'softmax' | 'logSoftmax', x: Tensor, opts?: { dim?: number }): Tensor {
  floatArg(x, op, 'x');
  const o = options<{ dim: number }>(opts, op, ['dim']);
  const d = normDim(o.dim ?? -1, x.ndim, op);
  const log = op === 'logSoftmax';
  const dtype = resultDtype(op, x.dtype as FloatDType);
  const xr = rows(x, d);
  const N = x.ndim === 0 ? 1 : xr.shape[xr.ndim - 1], M = x.size / Math.max(N, 1);
  const yr = alloc(xr.shape, dtype, x.device);
  if (x.size)
    native().softmaxForward({ M, N, log, x: xr.handle(), xOffset: xr.offset, xType: dtypeCode(xr.dtype), y: yr.handle(), yType: dtypeCode(dtype) });
  if (xr !== x && !(xr.storage === x.storage)) xr.dispose();
  const moved = x.ndim > 1 && d !== x.ndim - 1;
  const y = moved ? swap(yr, d) : yr;
  // The backward reads the output rows: keep them (yr) with the node when y is a view of them.
  return record(op, y, [x], (g) => {
    const gr = rows(g, d);
    const dxr = alloc(yr.shape, x.dtype, x.device);
    if (x.size)
      native().softmaxBackward({
        M, N, log, y: yr.handle(), yOffset: yr.offset, yType: dtypeCode(yr.dtype), dy: gr.handle(), dyOffset: gr.offset, dyType: dtypeCode(gr.dtype),
        dx: dxr.handle(), dxType: dtypeCode(dxr.dtype),
      });
    if (gr !== g) gr.dispose();
    if (!moved) return [dxr];
    const dx = swap(dxr, d);
    dxr.dispose();
    return [dx];
  }, moved ? [yr] : []);
}

/** exp(x - max) / sum exp(x - max) along dim (default -1), in FP32. */
export function softmax(x: Tensor, opts?: { dim?: number }): Tensor { return softmaxOp('softmax', x, opts); }
/** x - max - log(sum exp(x - max)) along dim (default -1), in FP32. */
export function logSoftmax(x: Tensor, opts?: { dim?: number }): Tensor { return softmaxOp('logSoftmax', x, opts); }
