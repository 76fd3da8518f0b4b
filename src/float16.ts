// Public conversion entry points (a contract: tests outside the repo use them). They call the
// same native definition (native/shared/half.h) that both backends use.
import { types } from 'node:util';
import { MixprecError } from './errors';
import { native } from './native';

function f32(x: unknown): Float32Array {
  if (!types.isFloat32Array(x)) throw new MixprecError('E_ARG', 'expected a Float32Array');
  return x as Float32Array;
}
function u16(x: unknown): Uint16Array {
  if (!types.isUint16Array(x)) throw new MixprecError('E_ARG', 'expected a Uint16Array of bit patterns');
  return x as Uint16Array;
}

/** IEEE binary16: FP32 -> bits with round-to-nearest-even (overflow -> inf, NaN stays NaN, -0 kept). */
export const float16 = {
  fromFloat32: (values: Float32Array): Uint16Array => native().f16FromF32(f32(values)),
  toFloat32: (bits: Uint16Array): Float32Array => native().f16ToF32(u16(bits)),
};

/** bfloat16 (FP32's top 16 bits): FP32 -> bits with round-to-nearest-even. */
export const bfloat16 = {
  fromFloat32: (values: Float32Array): Uint16Array => native().bf16FromF32(f32(values)),
  toFloat32: (bits: Uint16Array): Float32Array => native().bf16ToF32(u16(bits)),
};
