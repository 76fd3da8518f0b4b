// Elementary functions without library calls or branches, shared by the CPU loops (which
// vectorise them: -ffp-contract=off keeps the scalar bits) and the CUDA kernels, so both backends
// compute the same values.
#pragma once
#include <math.h>
#include <stdint.h>
#include "half.h"

namespace mp {

// exp(x) without a library call or a branch, so that CPU loops over it vectorise (the one exp of
// the softmaxes, the losses, attention and GELU): Cody-Waite reduction x = n ln2 + r (|r| <= ln2 / 2,
// n = round(x / ln2) by the 1.5 * 2^23 shifter, read from the shifter's low bits, so no float -> int
// conversion), Cephes' degree-6 polynomial for e^r, then 2^n as 2^(n - n/2) * 2^(n/2): two exact
// scalings while the result is normal, and one rounding into the subnormals below 2^-126 (as expf;
// softmax tails in FP32 / BF16 keep them). Within 1 ulp of exp for normal results; 0 below -104
// (e^x < 2^-150), inf above 88.73; NaN stays NaN; -inf gives 0.
MP_HD float exp_poly(float x) {
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;  // ln 2 = 0.693359375 - 2.12194440e-4 (the first part times n is exact)
  r = r - n * -2.12194440e-4f;
  const float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
                    1.6666665459e-1f) * r + 5.0000001201e-1f) * (r * r) + r + 1.0f;
  const int32_t ni = (int32_t)(f32_bits(t) - 0x4B400000u);  // bits(t) = 0x4B400000 + n
  const int32_t n1 = ni >> 1, n2 = ni - n1;                  // both in [-52, 64] on the kept range
  const float y = (p * bits_f32((uint32_t)(n1 + 127) << 23)) * bits_f32((uint32_t)(n2 + 127) << 23);
  // Out of range as integer masks (no && / ?: that the compiler would turn into branches); NaN
  // compares false both ways and stays y (NaN).
  const uint32_t under = (uint32_t)(x < -104.0f), over = (uint32_t)(x > 88.7228394f);
  return bits_f32((f32_bits(y) & ((under | over) - 1u)) | (over * 0x7f800000u));
}

// c ? a : b through bit masks: both sides are computed, so CPU loops over it vectorise.
MP_HD float select_f32(bool c, float a, float b) {
  const uint32_t m = 0u - (uint32_t)c;
  return bits_f32((f32_bits(a) & m) | (f32_bits(b) & ~m));
}

// erfc(x), branch-free (a select): the Chebyshev fit of Numerical Recipes' erfcc on |x| (fractional
// error < 1.2e-7 everywhere, so no cancellation in the tail), reflected as erfc(-x) = 2 - erfc(x).
MP_HD float erfc_poly(float x) {
  const float z = fabsf(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f +
                  t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float r = t * exp_poly(p - z * z);
  return select_f32(x < 0.0f, 2.0f - r, r);
}

// The standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2.
MP_HD float normal_cdf(float x) { return 0.5f * erfc_poly(x * -0.70710678118654752f); }

}  // namespace mp
