// Epilogue activations shared by the CPU and CUDA GEMMs (and later the layers' backward).
#pragma once
#include <math.h>
#include "half.h"

namespace mp {

// Values match src/ops.ts.
enum class Act : int { None = 0, Relu = 1, Gelu = 2 };

// GELU as PyTorch's default (approximate='none'): x * Phi(x), computed with erf in FP32.
MP_HD float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

MP_HD float apply_act(Act a, float x) {
  if (a == Act::Relu) return x < 0.0f ? 0.0f : x;  // NaN propagates, as torch.relu
  if (a == Act::Gelu) return gelu(x);
  return x;
}

}  // namespace mp
