// The CPU backend: host memory, synchronous ops. Also the oracle the CUDA backend is tested against.
#include "cpu_backend.h"

#include <algorithm>

#include "parallel.h"

#include <stdlib.h>
#include <string.h>

namespace mp {
namespace {

constexpr size_t kCopyBlock = 1 << 16;  // elements per copy task

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void* alloc(size_t bytes) override {
    // 64-byte alignment: vector loads and cache lines; size rounded up as aligned_alloc needs.
    const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    void* p = aligned_alloc(64, rounded);
    if (!p) fail("E_OOM", "cpu: out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void release(void* p) override { free(p); }
  void copyIn(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }
  void copyOut(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }

  void fill(void* dst, DType t, size_t n, float value) override {
    if (t == DType::F32) {
      float* d = static_cast<float*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = value;
      return;
    }
    uint16_t bits = t == DType::F16 ? f32_to_f16_bits(value) : f32_to_bf16_bits(value);
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = bits;
  }

  void cast(const void* src, DType st, void* dst, DType dt, size_t n) override {
    const size_t size = dtype_size(st);
    if (st == dt) {  // a plain copy, split over the threads like every other pass
      parallelFor((int64_t)((n + kCopyBlock - 1) / kCopyBlock), [&](int64_t b0, int64_t b1) {
        const size_t i0 = (size_t)b0 * kCopyBlock, i1 = std::min(n, (size_t)b1 * kCopyBlock);
        memcpy(static_cast<char*>(dst) + i0 * size, static_cast<const char*>(src) + i0 * size, (i1 - i0) * size);
      });
      return;
    }
    // Element-wise through FP32 with the shared RNE definition. src and dst do not overlap.
    for (size_t i = 0; i < n; ++i) store_f32(dst, dt, i, load_f32(src, st, i));
  }

  void gemm(const GemmArgs& a) override { cpuGemm(a); }
  void unscaleCheckNorm(const void* g, DType t, size_t n, AmpState* s, float* out32) override {
    cpuUnscaleCheckNorm(g, t, n, s, out32);
  }
  void ampFinalize(AmpState* s, const ScalerConfig& c, const OptimConfig& o, bool updateScale) override {
    amp_finalize(*s, c, o, updateScale);
  }
  void optimizerStep(const OptimStepArgs& a) override { cpuOptimizerStep(a); }
  void accumulate(const void* g, DType t, float* acc, size_t n, bool overwrite) override {
    cpuAccumulate(g, t, acc, n, overwrite);
  }
  void activationForward(Act act, const void* x, DType xt, void* y, DType yt, size_t n) override {
    cpuActivationForward(act, x, xt, y, yt, n);
  }
  void activationBackward(Act act, const void* dy, DType dyt, const void* z, DType zt, void* dx, DType dxt,
                          size_t n) override {
    cpuActivationBackward(act, dy, dyt, z, zt, dx, dxt, n);
  }
  void columnSum(const void* x, DType xt, int64_t M, int64_t N, void* out, DType ot) override {
    cpuColumnSum(x, xt, M, N, out, ot);
  }
  void softmaxCrossEntropy(const CrossEntropyArgs& a) override { cpuSoftmaxCrossEntropy(a); }
  void mseLoss(const MseArgs& a) override { cpuMseLoss(a); }
  void layerNormForward(const LayerNormArgs& a) override { cpuLayerNormForward(a); }
  void layerNormBackward(const LayerNormBackwardArgs& a) override { cpuLayerNormBackward(a); }
  void dropout(const void* x, DType xt, void* y, DType yt, size_t n, float p, uint64_t seed) override {
    cpuDropout(x, xt, y, yt, n, p, seed);
  }
};

}  // namespace

Backend* cpuBackend() {
  static CpuBackend backend;
  return &backend;
}

}  // namespace mp
