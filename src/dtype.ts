import type { DTypeCode } from '../binding';
import { MixprecError } from './errors';
import { show } from './util/show';

/** Element types. int32 is for indices (token ids, class labels): ops do no arithmetic on it. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32';
export type FloatDType = Exclude<DType, 'int32'>;
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int32'];
export const FLOAT_DTYPES: readonly FloatDType[] = ['float32', 'float16', 'bfloat16'];

const CODES: Record<DType, DTypeCode | 3> = { float32: 0, float16: 1, bfloat16: 2, int32: 3 };

export function checkDType(d: unknown, what = 'dtype'): DType {
  if (typeof d === 'string' && (DTYPES as readonly string[]).includes(d)) return d as DType;
  throw new MixprecError('E_DTYPE', `${what} must be one of ${DTYPES.join(', ')} (got ${show(d)})`);
}
export function checkFloatDType(d: unknown, what = 'dtype'): FloatDType {
  if (typeof d === 'string' && (FLOAT_DTYPES as readonly string[]).includes(d)) return d as FloatDType;
  throw new MixprecError('E_DTYPE', `${what} must be one of ${FLOAT_DTYPES.join(', ')} (got ${show(d)})`);
}
/** The native code of a float dtype (the ops' xType fields). */
export function dtypeCode(d: DType): DTypeCode {
  if (d === 'int32') throw new MixprecError('E_DTYPE', 'this operation needs a float tensor, not int32');
  return CODES[d] as DTypeCode;
}
/** The native code of any dtype (storage ops: fill, copy). */
export function storageCode(d: DType): DTypeCode | 3 {
  return CODES[d];
}
export function dtypeBytes(d: DType): number {
  return d === 'float16' || d === 'bfloat16' ? 2 : 4;
}
/** PyTorch's promotion for two floats: the same dtype, else float32 (float16 with bfloat16 too). */
export function promote(a: FloatDType, b: FloatDType): FloatDType {
  return a === b ? a : 'float32';
}
