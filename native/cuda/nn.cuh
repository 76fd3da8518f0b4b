// Internal to the CUDA backend: the layers' and losses' kernels (native/cuda/nn.cu), called by the
// corresponding methods of CudaBackend. All of them enqueue on `stream` and return at once (no
// host synchronisation); a failed launch throws E_CUDA. Scalars the ops produce (loss, correct
// count) are written by the device into the caller's device memory. `multiprocessors` is the
// device's SM count (sizes the grids of the kernels without a cross-block reduction; the
// reductions use grids that depend only on the sizes, so their results do not depend on the GPU).
// Semantics: native/core/backend.h; per-element math: native/shared/nn.h.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/backend.h"

namespace mp {

// n == 0 launches nothing.
void launchActivationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n,
                             cudaStream_t stream, int multiprocessors);
void launchActivationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx,
                              DType dxType, size_t n, cudaStream_t stream, int multiprocessors);
void launchDropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed,
                   cudaStream_t stream, int multiprocessors);
// N <= 0 launches nothing; M <= 0 writes zeros.
void launchColumnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType, cudaStream_t stream);
void launchSoftmaxCrossEntropy(const CrossEntropyArgs& args, cudaStream_t stream);
void launchMseLoss(const MseArgs& args, cudaStream_t stream);
void launchLayerNormForward(const LayerNormArgs& args, cudaStream_t stream, int multiprocessors);
void launchLayerNormBackward(const LayerNormBackwardArgs& args, cudaStream_t stream, int multiprocessors);

}  // namespace mp
