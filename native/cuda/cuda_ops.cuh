// Internal to the CUDA backend: what every op function sees (CudaContext), the per-op device
// workspace, and one declaration per line of native/core/ops.def:
//   void mp::cuda::<name>(const <Args>& args, const CudaContext& ctx);
// defined by family: copy.cu (fill, copy), gemm.cu (gemm), elementwise.cu (binary, activations,
// dropout), reduce.cu (reduceSum), softmax.cu (softmax*, losses), layernorm.cu, embedding.cu,
// attention.cu (attention*), amp.cu (the step). Semantics: the Args struct's comment in
// native/core/op_args.h. Every op enqueues on ctx.stream and returns without synchronising the
// host; a failed launch throws E_CUDA.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include "../core/backend.h"

namespace mp {
namespace cuda {

struct CudaContext {
  cudaStream_t stream = nullptr;  // every kernel and copy of the backend runs on this one stream
  int multiprocessors = 1;        // sizes the grids of kernels whose results do not depend on them
  int ccMajor = 0, ccMinor = 0;   // picks the GEMM path
  Backend* memory = nullptr;      // the backend's caching allocator (workspaces)
};

// Device memory for one op's intermediate results (partial sums, a staged operand), taken from
// the backend's caching allocator and handed back when the op function returns, right after its
// kernels were enqueued. No host synchronisation is needed: every kernel runs on the one stream,
// so the block can only be handed out again to work queued after the kernels that use it. (A
// second stream would need the allocator to record the stream of each release.)
class Workspace {
 public:
  Workspace() = default;
  Workspace(const CudaContext& ctx, size_t bytes) { reset(ctx, bytes); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    try {
      if (p_) memory_->release(p_);
    } catch (...) {  // release() only updates the cache's maps; never let a destructor throw
    }
  }
  void reset(const CudaContext& ctx, size_t bytes) {
    if (p_) memory_->release(p_);
    p_ = nullptr;
    memory_ = ctx.memory;
    p_ = bytes ? memory_->alloc(bytes) : nullptr;
  }
  template <class T> T* as() const { return static_cast<T*>(p_); }

 private:
  Backend* memory_ = nullptr;
  void* p_ = nullptr;
};

#define MP_OP(name, Args) void name(const Args& args, const CudaContext& ctx);
#include "../core/ops.def"
#undef MP_OP

}  // namespace cuda
}  // namespace mp
