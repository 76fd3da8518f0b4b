// Internal to the CUDA backend: the GEMM entry point cuda_backend.cu calls.
#pragma once
#include <cuda_runtime.h>
#include <string>
#include "../core/backend.h"

namespace mp {

// Which kernel a GemmArgs goes to on a device of compute capability ccMajor.ccMinor.
enum class GemmPath { TensorCoreF16, TensorCoreBf16, SimtF32 };
GemmPath chooseGemmPath(const GemmArgs& args, int ccMajor, int ccMinor);
const char* gemmPathName(GemmPath path);

// Enqueues out = act(alpha * op(A) @ op(B) + beta * C + bias) on `stream` (asynchronous).
// Throws E_CUDA if the launch fails, E_ARG for shapes beyond the kernels' grid limits.
void launchGemm(const GemmArgs& args, cudaStream_t stream, int ccMajor, int ccMinor);

// One line for BackendInfo::features: which GEMM kernels this device runs.
std::string gemmFeatures(int ccMajor, int ccMinor);

}  // namespace mp
