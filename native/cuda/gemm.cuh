// Internal to the CUDA backend: which GEMM kernel a call goes to (gemm.cu). The op itself is
// mp::cuda::gemm (cuda_ops.cuh).
#pragma once
#include <string>
#include "../core/backend.h"

namespace mp {

// Which kernel a GemmArgs goes to on a device of compute capability ccMajor.ccMinor.
enum class GemmPath { TensorCoreF16, TensorCoreBf16, SimtF32 };
GemmPath chooseGemmPath(const GemmArgs& args, int ccMajor, int ccMinor);
const char* gemmPathName(GemmPath path);

// One line for BackendInfo::features: which GEMM kernels this device runs.
std::string gemmFeatures(int ccMajor, int ccMinor);

}  // namespace mp
