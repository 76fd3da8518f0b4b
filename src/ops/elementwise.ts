// Element-wise ops: add, sub, mul (numpy broadcasting; b may be a number), relu, gelu, dropout.
// The kernels read their operands through strides (broadcast dims have stride 0), so no operand
// is expanded or copied; the math is FP32, rounded once to the result dtype.
import { native } from '../native';
import { nextSeed } from '../random';
import { DType, dtypeCode, FloatDType, promote } from '../dtype';
import { MixprecError } from '../errors';
import { needsGrad, record } from '../autograd/tape';
import { resultDtype } from '../amp/autocast';
import type { Tensor } from '../tensor';
import { alloc } from '../tensor';
import { broadcastShapes, floatArg, options, sameDevice, show } from './check';
import * as k from './kernels';

function binaryOp(op: k.BinaryName, a: Tensor, b: Tensor | number): Tensor {
  floatArg(a, op, 'a');
  if (typeof b === 'number') {
    const out = k.binary(op, a, b, a.shape, a.dtype as FloatDType);
    return record(op, out, [a], (g) => [op === 'mul' ? k.binary('mul', g, b, g.shape, a.dtype as FloatDType) : g]);
  }
  floatArg(b, op, 'b');
  sameDevice(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const dtype = resultDtype(op, promote(a.dtype as FloatDType, b.dtype as FloatDType));
  const out = k.binary(op, a, b, shape, dtype);
  if (!needsGrad(a, b)) return out;
  return record(op, out, [a, b], (g) => {
    const da = !a.requiresGrad ? null : op === 'mul' ? gradOfProduct(g, b, a) : k.sumTo(g, a.shape, a.dtype as FloatDType);
    let db: Tensor | null = null;
    if (b.requiresGrad) {
      if (op === 'mul') db = gradOfProduct(g, a, b);
      else if (op === 'add') db = k.sumTo(g, b.shape, b.dtype as FloatDType);
      else {
        const s = k.sumTo(g, b.shape, b.dtype as FloatDType);
        db = k.binary('mul', s, -1, s.shape, b.dtype as FloatDType);
        if (s !== g) s.dispose();
      }
    }
    return [da, db];
  });
}

/** d(x * other)/dx = sumTo(g * other, x.shape). */
function gradOfProduct(g: Tensor, other: Tensor, x: Tensor): Tensor {
  const prod = k.binary('mul', g, other, g.shape, 'float32');
  const r = k.sumTo(prod, x.shape, x.dtype as FloatDType);
  if (r !== prod) prod.dispose();
  return r;
}

/** a + b (numpy broadcasting; b may be a number). */
export function add(a: Tensor, b: Tensor | number): Tensor { return binaryOp('add', a, b); }
/** a - b (numpy broadcasting; b may be a number). */
export function sub(a: Tensor, b: Tensor | number): Tensor { return binaryOp('sub', a, b); }
/** a * b (numpy broadcasting; b may be a number). */
export function mul(a: Tensor, b: Tensor | number): Tensor { return binaryOp('mul', a, b); }

function activationOp(act: 'relu' | 'gelu', x: Tensor): Tensor {
  floatArg(x, act, 'x');
  const xc = k.dense(x);
  const y = k.activation(act, xc, x.dtype as FloatDType);
  // ReLU's derivative is read from its output (y > 0 iff x > 0); GELU's from the input.
  const z = act === 'relu' ? y : xc;
  const copied = xc !== x;
  const out = record(act, y, [x], (g) => [k.activationGrad(act, g, z, x.dtype as FloatDType)], copied && act === 'gelu' ? [xc] : []);
  if (copied && act === 'relu') xc.dispose();
  return out;
}

/** max(x, 0); NaN propagates (torch.relu). */
export function relu(x: Tensor): Tensor { return activationOp('relu', x); }
/** x * Phi(x), the erf form (torch's approximate='none'). */
export function gelu(x: Tensor): Tensor { return activationOp('gelu', x); }

/**
 * Zeroes each element with probability p and scales the rest by 1 / (1 - p) (F.dropout); the
 * identity when training is false or p is 0. The mask comes from mixprec.manualSeed's generator
 * and is regenerated (not stored) for the backward.
 */
export function dropout(x: Tensor, p: number, opts?: { training?: boolean }): Tensor {
  floatArg(x, 'dropout', 'x');
  const o = options<{ training: boolean }>(opts, 'dropout', ['training']);
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new MixprecError('E_ARG', `dropout: p must be in [0, 1] (got ${show(p)})`);
  const training = o.training ?? true;
  if (typeof training !== 'boolean') throw new MixprecError('E_ARG', 'dropout: training must be a boolean');
  if (!training || p === 0) return x;
  // Everything dropped (F.dropout's p = 1): zeros, and zero gradients. The kernel takes p as a
  // float32, where a p within 2^-25 of 1 is 1.
  if (Math.fround(p) === 1) return mul(x, 0);
  const seed = nextSeed();
  const apply = (t: Tensor, dtype: DType) => {
    const tc = k.dense(t);
    const y = alloc(t.shape, dtype, t.device);
    if (t.size) native().dropout({ n: t.size, p, ...seed, x: tc.handle(), xOffset: tc.offset, xType: dtypeCode(tc.dtype), y: y.handle(), yType: dtypeCode(dtype) });
    if (tc !== t) tc.dispose();
    return y;
  };
  return record('dropout', apply(x, x.dtype), [x], (g) => [apply(g, x.dtype)]);
}
