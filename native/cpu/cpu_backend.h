#pragma once
#include "../core/backend.h"

namespace mp {
Backend* cpuBackend();     // process-wide singleton
std::string cpuFeatures(); // what the GEMM dispatched to at run time, e.g. "avx2+fma+f16c"
// The CPU GEMM (native/cpu/gemm.cpp): packed panels, AVX2/FMA micro-kernel or scalar fallback.
void cpuGemm(const GemmArgs& args);
// Test hook: "scalar" forces the portable fallback, "auto" restores run-time dispatch.
void setCpuGemmIsa(const std::string& isa);
// The mixed-precision step's loops (native/cpu/amp.cpp); semantics in native/core/backend.h.
void cpuUnscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32);
void cpuOptimizerStep(const OptimStepArgs& args);
void cpuAccumulate(const void* g, DType t, float* acc, size_t n, bool overwrite);
// The layers' and losses' loops (native/cpu/nn.cpp); semantics in native/core/backend.h.
void cpuActivationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n);
void cpuActivationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx, DType dxType,
                           size_t n);
void cpuColumnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType);
void cpuSoftmaxCrossEntropy(const CrossEntropyArgs& args);
void cpuMseLoss(const MseArgs& args);
void cpuLayerNormForward(const LayerNormArgs& args);
void cpuLayerNormBackward(const LayerNormBackwardArgs& args);
void cpuDropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed);
}  // namespace mp
