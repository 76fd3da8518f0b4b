// The narrow backend interface: memory (alloc / free / copy in / copy out / fill) plus the op
// table. The N-API layer talks only to this; CPU and CUDA implement it. Pointers returned by
// alloc() belong to the backend's address space (host memory for CPU, device memory for CUDA).
// Ops are called with arguments already validated by the caller (shapes, dtypes, sizes);
// backends still throw mp::Error (never abort) on what only they can detect (OOM, CUDA errors).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <memory>
#include <string>
#include <vector>
#include "../shared/activation.h"
#include "../shared/amp.h"
#include "../shared/dtype.h"
#include "error.h"

namespace mp {

// out[M,N] = act(alpha * op(A) @ op(B) + beta * C + bias), row-major, FP32 accumulation.
// op(A) is [M,K]: A is stored [M,K], or [K,M] when transA. op(B) is [K,N]: B is stored [K,N],
// or [N,K] when transB (as in BLAS / PyTorch's Linear weight). C (if beta != 0) is [M,N] of
// cType, read before out is written (it may alias out). bias (optional) is [N] of biasType,
// broadcast over rows. M, N, K >= 1.
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  bool transA = false, transB = false;
  const void* A = nullptr; DType aType = DType::F32;
  const void* B = nullptr; DType bType = DType::F32;
  const void* C = nullptr; DType cType = DType::F32;
  const void* bias = nullptr; DType biasType = DType::F32;
  float alpha = 1.0f, beta = 0.0f;
  Act act = Act::None;
  void* out = nullptr; DType outType = DType::F32;
};

// The fused optimizer over one flat parameter buffer (see native/shared/amp.h).
struct OptimStepArgs {
  size_t n = 0;
  float* master = nullptr;                           // FP32 master weights, updated
  void* working = nullptr; DType workingType = DType::F16;  // low-precision copy, written (may be null)
  const void* grad = nullptr; DType gradType = DType::F16;  // scaled gradients, read
  float* m = nullptr;                                // first moment / momentum (null when unused)
  float* v = nullptr;                                // second moment (Adam/AdamW only)
  const AmpState* state = nullptr;                   // after ampFinalize; backend memory
  OptimConfig config;
};

struct DeviceInfo {
  std::string name;
  int ccMajor = 0, ccMinor = 0;
  uint64_t totalMemory = 0, freeMemory = 0;
  int multiprocessors = 0;
};

struct BackendInfo {
  std::string name;        // "cpu" | "cuda"
  bool compiled = false;   // built into this addon
  bool available = false;  // usable on this machine now
  std::string reason;      // why not, when !available (or !compiled)
  bool hasDevice = false;
  DeviceInfo device;       // CUDA only
  std::string features;    // e.g. CPU ISA the GEMM dispatched to ("avx2+fma+f16c" | "scalar")
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual void* alloc(size_t bytes) = 0;  // throws E_OOM; bytes may be 0 (returns a valid token)
  virtual void release(void* p) = 0;
  virtual void copyIn(void* dst, const void* hostSrc, size_t bytes) = 0;
  virtual void copyOut(void* hostDst, const void* src, size_t bytes) = 0;  // synchronous
  virtual void fill(void* dst, DType t, size_t n, float value) = 0;
  virtual void cast(const void* src, DType srcType, void* dst, DType dstType, size_t n) = 0;
  virtual void gemm(const GemmArgs& args) = 0;
  // --- the mixed-precision step (state lives in backend memory; no host round trip) ---
  // One pass over n scaled gradients: g32 = g * inv_scale(state->scale); state->foundInf |= any
  // non-finite g32; state->sumsq += sum g32^2 (FP32; fixed reduction order on the CPU). When
  // out32 is not null, g32 is also written there.
  virtual void unscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32) = 0;
  // amp_finalize on the state, once per step, where the state lives.
  virtual void ampFinalize(AmpState* state, const ScalerConfig& c, const OptimConfig& o, bool updateScale) = 0;
  // The fused optimizer: a no-op when state->skipped; else master/moments updated and the working
  // copy written, with g = grad * inv_scale(scale used) * clipCoef.
  virtual void optimizerStep(const OptimStepArgs& args) = 0;
  // Gradient accumulation over micro-batches: acc = g (overwrite) or acc += g, in FP32.
  virtual void accumulate(const void* g, DType t, float* acc, size_t n, bool overwrite) = 0;
  virtual void synchronize() {}
};

// Registry (native/core/registry.cpp): the only place that knows whether CUDA is compiled in.
std::vector<BackendInfo> backendInfos();
Backend* getBackend(const std::string& name);  // throws E_NO_CUDA / E_ARG; returns a singleton

}  // namespace mp
