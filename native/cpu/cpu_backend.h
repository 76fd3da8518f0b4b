// The CPU backend: host memory, synchronous ops; the oracle the CUDA backend is tested against.
#pragma once
#include "../core/backend.h"

namespace mp {
Backend* cpuBackend();     // process-wide singleton
std::string cpuFeatures(); // what the GEMM dispatched to at run time, e.g. "avx2+fma+f16c"
// Test hook: "scalar" forces the GEMM's portable fallback, "auto" restores run-time dispatch.
void setCpuGemmIsa(const std::string& isa);

// One function per op of native/core/ops.def (semantics at its Args struct), defined by family:
// gemm.cpp (gemm), copy.cpp (fill, copy), elementwise.cpp (binary, reduceSum, activations,
// dropout), softmax.cpp (softmax*, losses), nn.cpp (layer norm, embedding), amp.cpp (the step).
// loops.h / loops.cpp hold what their loops share (blocks, lanes, FP32 widening / narrowing);
// nn.cpp's header states the determinism contract all of them keep.
namespace cpu {
#define MP_OP(name, Args) void name(const Args& args);
#include "../core/ops.def"
#undef MP_OP
}  // namespace cpu
}  // namespace mp
