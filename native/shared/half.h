// FP32 <-> FP16 / BF16 conversion, IEEE round-to-nearest-even, bit-exact.
// ONE definition used by the CPU backend, the CUDA kernels and the N-API helpers, so both
// backends produce the same bits. Pure integer arithmetic: no dependence on the FPU's
// rounding mode, F16C or CUDA intrinsics (those are allowed only where they are proven to give
// identical bits, e.g. the F16C packing path on the CPU, which the tests compare against this).
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define MP_HD __host__ __device__ __forceinline__
#else
#define MP_HD inline
#endif

namespace mp {

MP_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; memcpy(&u, &f, 4); return u;
#endif
}
MP_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; memcpy(&f, &u, 4); return f;
#endif
}

// float -> half bits. Ties to even; >= 65520 -> inf; below 2^-25 (and exactly 2^-25) -> 0;
// subnormals rounded; -0 kept; NaN stays NaN (quiet bit set, sign and top payload bits kept,
// as x86 F16C does).
MP_HD uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 (and inf) -> inf
  if (ax < 0x38800000u) {                                     // below 2^-14: subnormal half
    if (ax <= 0x33000000u) return sign;                       // <= 2^-25 rounds to 0 (tie -> even)
    const uint32_t e = ax >> 23;                              // 102..112
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;                          // 14..24
    uint32_t m = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    m += (rem > half || (rem == half && (m & 1u))) ? 1u : 0u;  // may carry into 0x400: min normal
    return (uint16_t)(sign | m);
  }
  uint32_t h = (ax - 0x38000000u) >> 13;  // rebias exponent 127 -> 15, keep 10 mantissa bits
  const uint32_t rem = ax & 0x1fffu;
  h += (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ? 1u : 0u;  // carry may reach inf: right
  return (uint16_t)(sign | h);
}

// half bits -> float (exact). NaN payload kept, quiet bit set (as F16C does).
MP_HD float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
  if (e != 0) return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
  if (m == 0) return bits_f32(sign);
  // subnormal: m * 2^-24, normalise
  uint32_t exp = 113u, mm = m;
  while (!(mm & 0x400u)) { mm <<= 1; --exp; }
  return bits_f32(sign | (exp << 23) | ((mm & 0x3ffu) << 13));
}

// float -> bfloat16 bits: ties to even, overflow to inf by carry, NaN quieted (sign kept).
MP_HD uint16_t f32_to_bf16_bits(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
MP_HD float bf16_bits_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

}  // namespace mp
