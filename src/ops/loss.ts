// Losses in FP32, returning a float32 scalar (shape []): crossEntropy (softmax cross-entropy with
// label smoothing, mean over rows) and mseLoss (mean). The backward kernels take the upstream
// gradient as a device scalar (gradScale), so the loss scale a Trainer seeds backward() with is
// applied inside the kernel that writes the low-precision logits' gradient: small gradients are
// scaled before they are rounded to FP16, with no host round trip.
import { dtypeCode, FloatDType, promote } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { record } from '../autograd/tape';
import { alloc, Tensor } from '../tensor';
import { floatArg, fmt, options, sameDevice } from './check';
import * as k from './kernels';
import { checkRange, idsArg } from './nn';
import { cast } from './views';
import { resultDtype } from '../amp/autocast';

/** @internal Where a Trainer wants the loss (and the correct count) written: slots of its metrics buffer. */
export interface MetricsSlot { tensor: Tensor; lossOffset: number; correctOffset?: number }

/** The loss in the input's dtype, as PyTorch outside autocast (FP32 inside; float32 under autocast). */
function inInputDtype(op: 'crossEntropy' | 'mseLoss', loss: Tensor, dtype: FloatDType): Tensor {
  const want = resultDtype(op, dtype);
  if (want === 'float32') return loss;
  const out = cast(loss, want);
  if (!loss.requiresGrad) loss.dispose();
  return out;
}

/**
 * Softmax cross-entropy (F.cross_entropy): logits [N, C], targets int32 [N] (a tensor or an
 * Int32Array) in [0, C); mean over the N rows; labelSmoothing as PyTorch's label_smoothing.
 * Computed in FP32; the result has the logits' dtype (float32 under autocast).
 */
export function crossEntropy(logits: Tensor, targets: Tensor | Int32Array, opts?: { labelSmoothing?: number }): Tensor {
  return inInputDtype('crossEntropy', crossEntropyInto(logits, targets, opts), logits.dtype as FloatDType);
}

/** @internal crossEntropy writing its loss (and correct count) into a Trainer's metrics slot. */
export function crossEntropyInto(logits: Tensor, targets: Tensor | Int32Array, opts?: { labelSmoothing?: number }, slot?: MetricsSlot): Tensor {
  floatArg(logits, 'crossEntropy', 'logits');
  const o = options<{ labelSmoothing: number }>(opts, 'crossEntropy', ['labelSmoothing']);
  const smoothing = o.labelSmoothing ?? 0;
  if (typeof smoothing !== 'number' || !(smoothing >= 0 && smoothing <= 1)) throw new MixprecError('E_ARG', 'crossEntropy: labelSmoothing must be in [0, 1]');
  if (logits.ndim !== 2) throw new MixprecError('E_SHAPE', `crossEntropy: logits must be [N, C] (got ${fmt(logits.shape)}); reshape [..., C] to [-1, C]`);
  const [N, C] = logits.shape;
  const { t: tt, temp } = idsArg(targets, 'crossEntropy', 'targets', logits.device);
  if (tt.ndim !== 1 || tt.shape[0] !== N) throw new MixprecError('E_SHAPE', `crossEntropy: targets must be [${N}] for logits ${fmt(logits.shape)} (got ${fmt(tt.shape)})`);
  if (N === 0) throw new MixprecError('E_SHAPE', 'crossEntropy: logits has no rows');
  checkRange(tt, C, 'crossEntropy', 'targets');
  const lc = k.dense(logits), labels = k.dense(tt);
  if (labels !== tt && temp) tt.dispose();
  const loss = slot ? new Tensor(slot.tensor.storage, [], 'float32', [], slot.lossOffset) : alloc([], 'float32', logits.device);
  native().softmaxCrossEntropy({
    B: N, C, smoothing, lossScale: 1, logits: lc.handle(), logitsOffset: lc.offset, logitsType: dtypeCode(lc.dtype),
    labels: labels.handle(), labelsOffset: labels.offset, loss: loss.handle(), lossOffset: loss.offset,
    correct: slot?.correctOffset !== undefined ? slot.tensor.handle() : null, correctOffset: slot?.correctOffset,
  });
  const owned = [...(lc !== logits ? [lc] : []), ...(labels !== tt || temp ? [labels] : [])];
  return record('crossEntropy', loss, [logits], (g) => {
    const d = alloc(logits.shape, logits.dtype, logits.device);
    native().softmaxCrossEntropy({
      B: N, C, smoothing, lossScale: 1, logits: lc.handle(), logitsOffset: lc.offset, logitsType: dtypeCode(lc.dtype),
      labels: labels.handle(), labelsOffset: labels.offset, gradScale: g.handle(), gradScaleOffset: g.offset,
      dlogits: d.handle(), dType: dtypeCode(d.dtype),
    });
    return [d];
  }, owned);
}

/** Mean squared error (F.mse_loss): pred and target of one shape; FP32, the result in the inputs' promoted dtype (float32 under autocast). */
export function mseLoss(pred: Tensor, target: Tensor): Tensor {
  const loss = mseLossInto(pred, target);
  return inInputDtype('mseLoss', loss, promote(pred.dtype as FloatDType, target.dtype as FloatDType));
}

/** @internal mseLoss writing its loss into a Trainer's metrics slot. */
export function mseLossInto(pred: Tensor, target: Tensor, slot?: MetricsSlot): Tensor {
  floatArg(pred, 'mseLoss', 'pred');
  floatArg(target, 'mseLoss', 'target');
  sameDevice('mseLoss', pred, target);
  if (pred.ndim !== target.ndim || pred.shape.some((d, i) => d !== target.shape[i]))
    throw new MixprecError('E_SHAPE', `mseLoss: pred ${fmt(pred.shape)} and target ${fmt(target.shape)} must have one shape`);
  if (pred.size === 0) throw new MixprecError('E_SHAPE', 'mseLoss: no elements');
  const p = k.dense(pred), t = k.dense(target);
  const loss = slot ? new Tensor(slot.tensor.storage, [], 'float32', [], slot.lossOffset) : alloc([], 'float32', pred.device);
  const n = pred.size;
  native().mseLoss({
    n, lossScale: 1, pred: p.handle(), predOffset: p.offset, predType: dtypeCode(p.dtype), target: t.handle(), targetOffset: t.offset,
    targetType: dtypeCode(t.dtype), loss: loss.handle(), lossOffset: loss.offset,
  });
  const owned = [...(p !== pred ? [p] : []), ...(t !== target ? [t] : [])];
  return record('mseLoss', loss, [pred, target], (g) => {
    const d = alloc(pred.shape, pred.dtype, pred.device);
    native().mseLoss({
      n, lossScale: 1, pred: p.handle(), predOffset: p.offset, predType: dtypeCode(p.dtype), target: t.handle(), targetOffset: t.offset,
      targetType: dtypeCode(t.dtype), gradScale: g.handle(), gradScaleOffset: g.offset, dpred: d.handle(), dType: dtypeCode(d.dtype),
    });
    // d/dtarget = -d/dpred
    const dt = target.requiresGrad ? k.binary('mul', d, -1, d.shape, target.dtype as never) : null;
    if (!pred.requiresGrad) { d.dispose(); return [null, dt]; }
    return [d, dt];
  }, owned);
}
