// The CPU backend: host memory, synchronous ops; the oracle the CUDA backend is tested against.
#pragma once
#include "../core/backend.h"

namespace mp {
Backend* cpuBackend();     // process-wide singleton
// The GEMM kernels the active ISA level (isa.h) runs, e.g. "avx2: fp32 6x16 (fma)".
std::string cpuFeatures();

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
