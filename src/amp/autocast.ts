// THE precision policy: which ops run in the low dtype under autocast and which in FP32, as
// PyTorch's autocast op lists. The Trainer's `precision` and mixprec.autocast() both use it; the
// README's precision table is checked against it (test/autocast.test.ts).
import { MixprecError } from '../errors';
import type { FloatDType } from '../dtype';
import type { Tensor } from '../tensor';
import { show } from '../util/show';

export type AutocastPrecision = 'fp16' | 'bf16';

/**
 * - low: inputs cast to the autocast dtype (FP16 / BF16), Tensor Core / packed GEMMs with FP32
 *   accumulation, output in the low dtype.
 * - fp32: computed in FP32 (statistics, exponentials, sums) and returned as float32.
 * - fp32Stats: FP32 statistics inside the kernel, output in the input's dtype (deviation from
 *   PyTorch, whose autocast layer_norm returns float32: the next op is a low-precision GEMM, so a
 *   float32 output would only add a cast pass).
 * - promote: the widest input dtype (float16 with bfloat16 gives float32), as PyTorch.
 * - keep: the input's dtype (no cast; FP32 math inside).
 */
export const AUTOCAST_POLICY = {
  low: ['matmul', 'linear', 'scaledDotProductAttention'],
  fp32: ['softmax', 'logSoftmax', 'sum', 'mean', 'crossEntropy', 'mseLoss'],
  fp32Stats: ['layerNorm'],
  promote: ['add', 'sub', 'mul', 'cat'],
  keep: ['relu', 'gelu', 'dropout', 'embedding', 'reshape', 'view', 'transpose', 'permute', 'narrow', 'contiguous'],
} as const;

export type PolicyClass = keyof typeof AUTOCAST_POLICY;

const LOW: Record<AutocastPrecision, FloatDType> = { fp16: 'float16', bf16: 'bfloat16' };
let active: FloatDType | null = null;
let cache: Map<Tensor, Tensor> | null = null;

/** @internal The current region's cast cache (weights cast once per region), or null outside autocast. */
export function autocastCache(): Map<Tensor, Tensor> | null {
  return cache;
}

/** The dtype autocast casts `low` ops to, or null outside autocast. */
export function autocastDtype(): FloatDType | null {
  return active;
}

/** Under autocast, the dtype a `low` op computes in (null outside autocast or for other ops). */
export function lowDtypeFor(op: string): FloatDType | null {
  return active && policyOf(op) === 'low' ? active : null;
}

/** The result dtype of op on inputs of `dtype` (already promoted) under the current autocast state. */
export function resultDtype(op: string, dtype: FloatDType): FloatDType {
  if (!active) return dtype;
  const cls = policyOf(op);
  return cls === 'fp32' ? 'float32' : cls === 'low' ? active : dtype;
}

/** The policy class of an op (throws for an op the table does not list: every op must be in it). */
export function policyOf(op: string): PolicyClass {
  for (const [cls, ops] of Object.entries(AUTOCAST_POLICY)) if ((ops as readonly string[]).includes(op)) return cls as PolicyClass;
  throw new MixprecError('E_STATE', `internal: op '${op}' has no autocast policy`);
}

/**
 * Runs fn with autocast on (as torch.autocast): matmul / linear in FP16 or BF16 with FP32
 * accumulation, softmax / logSoftmax / sums / losses in FP32, layerNorm with FP32 statistics.
 * 'fp32' runs fn with autocast off. fn must be synchronous.
 */
export function autocast<T>(precision: AutocastPrecision | 'fp32', fn: () => T): T {
  if (precision !== 'fp16' && precision !== 'bf16' && precision !== 'fp32') throw new MixprecError('E_ARG', `autocast: precision must be 'fp16', 'bf16' or 'fp32' (got ${show(precision)})`);
  if (typeof fn !== 'function') throw new MixprecError('E_ARG', 'autocast(precision, fn) needs a function');
  const [prev, prevCache] = [active, cache];
  active = precision === 'fp32' ? null : LOW[precision];
  cache = active ? new Map() : null;
  try {
    const r = fn();
    if (r instanceof Promise) {
      r.catch(() => undefined); // refused: its rejection must not become an unhandled one
      throw new MixprecError('E_ARG', 'autocast(fn): fn must be synchronous');
    }
    return r;
  } finally {
    [active, cache] = [prev, prevCache];
  }
}

const CLASS_TEXT: Record<PolicyClass, string> = {
  low: 'the autocast dtype (FP16 / BF16), FP32 accumulation',
  fp32: 'FP32 math, float32 result',
  fp32Stats: 'FP32 statistics, the input dtype out',
  promote: 'the widest input dtype',
  keep: 'the input dtype (FP32 math inside)',
};

/** The policy as the README's markdown table (test/autocast.test.ts checks the README holds exactly this). */
export function policyTable(): string {
  const rows = (Object.keys(AUTOCAST_POLICY) as PolicyClass[]).map((c) => `| ${AUTOCAST_POLICY[c].map((op) => '`' + op + '`').join(', ')} | ${CLASS_TEXT[c]} |`);
  return ['| ops under autocast (fp16 / bf16) | run in |', '| --- | --- |', ...rows].join('\n');
}
