// Epilogue activations shared by the CPU and CUDA GEMMs (and later the layers' backward).
#pragma once
#include <math.h>
#include "fastmath.h"

namespace mp {

// Values match src/ops.ts.
enum class Act : int { None = 0, Relu = 1, Gelu = 2 };

// GELU as PyTorch's default (approximate='none'): x * Phi(x) in FP32, Phi from erfc_poly (within
// ~2e-7 relative of the erf form, and better for x < 0, where 1 + erf(x) cancels).
MP_HD float gelu(float x) { return x * normal_cdf(x); }

MP_HD float apply_act(Act a, float x) {
  if (a == Act::Relu) return x < 0.0f ? 0.0f : x;  // NaN propagates, as torch.relu
  if (a == Act::Gelu) return gelu(x);
  return x;
}

}  // namespace mp
