// Internal to the CUDA backend: the mixed-precision step's kernels (native/cuda/amp.cu), called
// by the four AMP methods of CudaBackend. All of them enqueue on `stream` and return at once (no
// host synchronisation); a failed launch throws E_CUDA. `multiprocessors` is the device's SM
// count (sizes the grids). Semantics: native/core/backend.h; math: native/shared/amp.h.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include "../core/backend.h"

namespace mp {

// n == 0 launches nothing. state and out32 (optional) are device pointers.
void launchUnscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32, cudaStream_t stream,
                            int multiprocessors);
// One thread: amp_finalize(*state, c, o, updateScale) where the state lives.
void launchAmpFinalize(AmpState* state, const ScalerConfig& c, const OptimConfig& o, bool updateScale,
                       cudaStream_t stream);
// A no-op on the device when state->skipped (read there: no host round trip).
void launchOptimizerStep(const OptimStepArgs& args, cudaStream_t stream, int multiprocessors);
void launchAccumulate(const void* g, DType t, float* acc, size_t n, bool overwrite, cudaStream_t stream,
                      int multiprocessors);

}  // namespace mp
