import type { ActCode } from '../binding';
import { checkDType, DType, dtypeCode } from './dtype';
import { MixprecError } from './errors';
import { native } from './native';
import { empty, full, Tensor } from './tensor';

export type Activation = 'none' | 'relu' | 'gelu';
const ACTS: Record<Activation, ActCode> = { none: 0, relu: 1, gelu: 2 };

export interface MatmulOptions {
  /** `a` is stored [K, M] (use its transpose). */
  transA?: boolean;
  /** `b` is stored [N, K] (use its transpose), e.g. a Linear weight [out, in]. */
  transB?: boolean;
  /** Scales the product (default 1). */
  alpha?: number;
  /** Scales `c` (default 1 when `c` is given, else 0). */
  beta?: number;
  /** [M, N], added as beta * c; may be the same tensor as `out`. */
  c?: Tensor;
  /** [N], added to every row before the activation. */
  bias?: Tensor;
  activation?: Activation;
  /** Default: the operands' dtype when they agree, else float32. */
  outDtype?: DType;
  /** Write into this [M, N] tensor instead of allocating one. */
  out?: Tensor;
  /** Also store the value before the activation here ([M, N], any dtype): what GELU's backward needs. */
  preAct?: Tensor;
}

const MATMUL_KEYS = new Set(['transA', 'transB', 'alpha', 'beta', 'c', 'bias', 'activation', 'outDtype', 'out', 'preAct']);

function tensorArg(t: unknown, what: string): Tensor {
  if (!(t instanceof Tensor)) throw new MixprecError('E_ARG', `${what} must be a Tensor`);
  t.handle(); // E_DISPOSED early, with the operand named below if it is
  return t;
}

function finiteArg(v: unknown, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new MixprecError('E_ARG', `${what} must be a finite number`);
  return v;
}

function sameShape(t: Tensor, shape: number[], what: string): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
    throw new MixprecError('E_SHAPE', `${what} must have shape [${shape.join(', ')}] (got [${t.shape.join(', ')}])`);
}

/**
 * out[M,N] = activation(alpha * op(a) @ op(b) + beta * c + bias), FP32 accumulation.
 * op(a) = transA ? a^T : a, with a stored [M,K] (or [K,M]); op(b) likewise with b [K,N] (or [N,K]).
 * Operands may be float32, float16 or bfloat16; FP16/BF16 pairs run on Tensor Cores on CUDA.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  if (typeof options !== 'object' || options === null) throw new MixprecError('E_ARG', 'options must be an object');
  for (const k of Object.keys(options)) if (!MATMUL_KEYS.has(k)) throw new MixprecError('E_ARG', `unknown matmul option '${k}'`);
  tensorArg(a, 'a');
  tensorArg(b, 'b');
  if (a.shape.length !== 2 || b.shape.length !== 2)
    throw new MixprecError('E_SHAPE', `matmul needs 2-D operands (got [${a.shape}] and [${b.shape}])`);
  if (a.device !== b.device) throw new MixprecError('E_DEVICE', `a is on ${a.device} but b is on ${b.device}`);
  const transA = Boolean(options.transA), transB = Boolean(options.transB);
  const [M, K] = transA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [Kb, N] = transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (K !== Kb)
    throw new MixprecError('E_SHAPE', `inner dimensions differ: op(a) is [${M}, ${K}], op(b) is [${Kb}, ${N}]`);

  const { c, bias, out, preAct } = options;
  const alpha = finiteArg(options.alpha, 'alpha', 1);
  const beta = finiteArg(options.beta, 'beta', c ? 1 : 0);
  if (beta !== 0 && !c) throw new MixprecError('E_ARG', 'beta != 0 needs c');
  for (const [t, what] of [[c, 'c'], [bias, 'bias'], [out, 'out'], [preAct, 'preAct']] as const) {
    if (t === undefined) continue;
    tensorArg(t, what);
    if (t.device !== a.device) throw new MixprecError('E_DEVICE', `${what} is on ${t.device}, operands on ${a.device}`);
  }
  if (c) sameShape(c, [M, N], 'c');
  if (bias) sameShape(bias, [N], 'bias');
  if (preAct) sameShape(preAct, [M, N], 'preAct');
  const act = options.activation ?? 'none';
  if (!(act in ACTS)) throw new MixprecError('E_ARG', `activation must be 'none', 'relu' or 'gelu' (got ${String(act)})`);
  const outDtype = checkDType(options.outDtype ?? out?.dtype ?? (a.dtype === b.dtype ? a.dtype : 'float32'), 'outDtype');
  if (out) {
    sameShape(out, [M, N], 'out');
    if (out.dtype !== outDtype) throw new MixprecError('E_DTYPE', `out is ${out.dtype} but outDtype is ${outDtype}`);
  }

  const result = out ?? empty([M, N], { dtype: outDtype, device: a.device });
  if (M === 0 || N === 0) return result;
  // K = 0: the product is all zeros; run a K = 1 product of zeros so the epilogue (beta*c, bias,
  // activation) still applies exactly.
  const zeros = K === 0 ? [full([M, 1], 0, { device: a.device }), full([1, N], 0, { device: a.device })] : null;
  try {
    const [A, B] = zeros ?? [a, b];
    native().gemm({
      M, N, K: Math.max(K, 1),
      transA: zeros ? false : transA, transB: zeros ? false : transB,
      a: A.handle(), aType: dtypeCode(A.dtype),
      b: B.handle(), bType: dtypeCode(B.dtype),
      c: c?.handle(), cType: c ? dtypeCode(c.dtype) : undefined,
      bias: bias?.handle(), biasType: bias ? dtypeCode(bias.dtype) : undefined,
      alpha, beta, act: ACTS[act],
      out: result.handle(), outType: dtypeCode(outDtype),
      preAct: preAct?.handle(), preActType: preAct ? dtypeCode(preAct.dtype) : undefined,
    });
  } catch (err) {
    if (!out) result.dispose();
    throw err;
  } finally {
    zeros?.forEach((z) => z.dispose());
  }
  return result;
}
