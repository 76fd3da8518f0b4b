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
#include "../shared/nn.h"
#include "error.h"

namespace mp {

// out[M,N] = act(alpha * op(A) @ op(B) + beta * C + bias), row-major, FP32 accumulation.
// op(A) is [M,K]: A is stored [M,K], or [K,M] when transA. op(B) is [K,N]: B is stored [K,N],
// or [N,K] when transB (as in BLAS / PyTorch's Linear weight). C (if beta != 0) is [M,N] of
// cType, read before out is written (it may alias out). bias (optional) is [N] of biasType,
// broadcast over rows. M, N, K >= 1. When preAct is set, the value before the activation
// (alpha * AB + beta * C + bias) is also stored there, [M,N] of preActType (what GELU's backward needs).
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
  void* preAct = nullptr; DType preActType = DType::F32;
};

// Softmax cross-entropy over logits [B, C], in FP32, mean over the batch, label smoothing eps
// (PyTorch's CrossEntropyLoss(label_smoothing=eps)). Fused backward: when dlogits is set,
// dlogits = (softmax - target) * (lossScale / B), in dType — the loss scale is applied here.
// *loss = the mean loss (FP32), *correct = rows whose argmax (first max) equals the label.
// Labels are pre-validated to lie in [0, C).
struct CrossEntropyArgs {
  const void* logits = nullptr; DType logitsType = DType::F32;
  const int32_t* labels = nullptr;
  int64_t B = 0, C = 0;
  float smoothing = 0.0f, lossScale = 1.0f;
  void* dlogits = nullptr; DType dType = DType::F32;
  float* loss = nullptr;      // backend memory, one float
  int32_t* correct = nullptr; // backend memory, one int32 (may be null)
};

// Mean squared error over n elements: *loss = mean((p - t)^2); dp = 2 (p - t) / n * lossScale.
struct MseArgs {
  const void* pred = nullptr; DType predType = DType::F32;
  const void* target = nullptr; DType targetType = DType::F32;
  size_t n = 0;
  float lossScale = 1.0f;
  void* dpred = nullptr; DType dType = DType::F32;  // may be null (evaluation)
  float* loss = nullptr;
};

// LayerNorm over the last dimension N of x [M, N] with FP32 statistics (biased variance, as
// PyTorch): y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps). gamma / beta [N]
// of gType. mean / rstd [M] FP32 are saved for the backward.
struct LayerNormArgs {
  const void* x = nullptr; DType xType = DType::F32;
  const void* gamma = nullptr; const void* beta = nullptr; DType gType = DType::F32;
  int64_t M = 0, N = 0;
  float eps = 1e-5f;
  void* y = nullptr; DType yType = DType::F32;
  float* mean = nullptr; float* rstd = nullptr;
};

// Backward of LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma and
// xhat = (x - mean) * rstd; dgamma = sum_m dy * xhat, dbeta = sum_m dy (FP32 sums, stored in dgType).
struct LayerNormBackwardArgs {
  const void* dy = nullptr; DType dyType = DType::F32;
  const void* x = nullptr; DType xType = DType::F32;
  const void* gamma = nullptr; DType gType = DType::F32;
  const float* mean = nullptr; const float* rstd = nullptr;
  int64_t M = 0, N = 0;
  void* dx = nullptr; DType dxType = DType::F32;
  void* dgamma = nullptr; void* dbeta = nullptr; DType dgType = DType::F32;
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
  // --- layers and losses (per-element math in native/shared/nn.h) ---
  // y = act(x) elementwise (a separate pass, for activations not fused into a GEMM).
  virtual void activationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n) = 0;
  // dx = dy * act'(z); z is the pre-activation (GELU) or either it or the output (ReLU).
  virtual void activationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx,
                                  DType dxType, size_t n) = 0;
  // out[n] = sum over m of x[m, n], FP32 accumulation, stored in outType (bias gradients).
  virtual void columnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType) = 0;
  virtual void softmaxCrossEntropy(const CrossEntropyArgs& args) = 0;
  virtual void mseLoss(const MseArgs& args) = 0;
  virtual void layerNormForward(const LayerNormArgs& args) = 0;
  virtual void layerNormBackward(const LayerNormBackwardArgs& args) = 0;
  // y = dropout_keep(seed, i, p) ? x / (1 - p) : 0 for i in [0, n). The backward is the same call
  // on dy with the same seed (the mask is regenerated, never stored). p in [0, 1).
  virtual void dropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed) = 0;
  virtual void synchronize() {}
};

// Registry (native/core/registry.cpp): the only place that knows whether CUDA is compiled in.
std::vector<BackendInfo> backendInfos();
Backend* getBackend(const std::string& name);  // throws E_NO_CUDA / E_ARG; returns a singleton

}  // namespace mp
