import type { DTypeCode } from '../binding';
import { MixprecError } from './errors';

export type DType = 'float32' | 'float16' | 'bfloat16';
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16'];

const CODES: Record<DType, DTypeCode> = { float32: 0, float16: 1, bfloat16: 2 };

export function checkDType(d: unknown, what = 'dtype'): DType {
  if (typeof d === 'string' && (DTYPES as readonly string[]).includes(d)) return d as DType;
  throw new MixprecError('E_DTYPE', `${what} must be one of ${DTYPES.join(', ')} (got ${String(d)})`);
}
export function dtypeCode(d: DType): DTypeCode {
  return CODES[d];
}
export function dtypeBytes(d: DType): number {
  return d === 'float32' ? 4 : 2;
}
