// CPU side of the mixed-precision step: loops over flat buffers calling the shared per-element
// math (native/shared/amp.h). Semantics at UnscaleArgs ... AccumulateArgs (native/core/op_args.h).
// Work is split into fixed-size blocks (loops.h), so the reduction order (and therefore the FP32
// sum of squares) does not depend on the thread count.
//
// Speed: each block is processed in small chunks, widened / narrowed with F16C where the CPU has
// it (loops.h; exact, and bit-identical to half.h's RNE, NaNs included), so the FP32 math in
// between runs on plain float arrays that the compiler vectorises. No FMA contraction is allowed
// here (see CMakeLists.txt), so results are bitwise those of the scalar definition.
#include <string.h>

#include <vector>

#include "cpu_backend.h"
#include "loops.h"

#if MP_X86
#include <immintrin.h>
#endif

namespace mp {
namespace cpu {
namespace {

// Calls f(i0, len) over [begin, end) in chunks of at most kChunk.
template <typename F>
void forChunks(size_t begin, size_t end, F&& f) {
  for (size_t i0 = begin; i0 < end; i0 += kChunk) f(i0, end - i0 < kChunk ? end - i0 : kChunk);
}

// x = x * invScale in place; 8-lane FP32 sum of squares (lane k takes elements j with j % 8 == k,
// a fixed order); bad |= any non-finite. GCC vector extensions keep the 8 lanes explicit.
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

MP_ISA_BODY inline void unscaleChunkLoop(float* x, size_t len, float invScale, float acc[8], int& bad) {
  F8 sum;
  memcpy(&sum, acc, sizeof sum);
  I8 nonFinite = {0, 0, 0, 0, 0, 0, 0, 0};
  const I8 expMask = {0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000};
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    F8 u;
    memcpy(&u, x + j, sizeof u);
    u = u * invScale;  // = unscale_element, lane-wise
    memcpy(x + j, &u, sizeof u);
    I8 bits;
    memcpy(&bits, &u, sizeof bits);
    nonFinite |= (bits & expMask) == expMask;
    sum += u * u;
  }
  memcpy(acc, &sum, sizeof sum);
  for (int k = 0; k < 8; ++k) bad |= nonFinite[k] != 0;
  for (; j < len; ++j) {
    const float u = unscale_element(x, DType::F32, j, invScale);
    x[j] = u;
    bad |= !is_finite_f32(u);
    acc[j & 7] += u * u;
  }
}
void unscaleChunk(float* x, size_t len, float invScale, float acc[8], int& bad) {
  return onActiveIsa([&]() MP_ISA_BODY { return unscaleChunkLoop(x, len, invScale, acc, bad); });
}

#if MP_X86
// unscaleChunk fused with the F16C widening, over a whole block of FP16 gradients: each 8-wide
// load is widened in registers (exact) and unscaled, so there is no round trip through a chunk
// buffer (whose stack placement made the streaming pass up to 30% slower). The same operations
// per lane as unscaleChunk (lane k takes the elements j with j % 8 == k; mul, then add: no FMA in
// this target), so the same bits.
MP_TARGET_AVX2 void unscaleF16Avx(const uint16_t* g, size_t len, float invScale, float* out32,
                                                      float acc[8], int& bad) {
  __m256 sum = _mm256_loadu_ps(acc);
  __m256i nonFinite = _mm256_setzero_si256();
  const __m256 scale = _mm256_set1_ps(invScale);
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const __m256 u = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + j))), scale);
    if (out32) _mm256_storeu_ps(out32 + j, u);
    const __m256i bits = _mm256_and_si256(_mm256_castps_si256(u), expMask);
    nonFinite = _mm256_or_si256(nonFinite, _mm256_cmpeq_epi32(bits, expMask));
    sum = _mm256_add_ps(sum, _mm256_mul_ps(u, u));
  }
  _mm256_storeu_ps(acc, sum);
  bad |= !_mm256_testz_si256(nonFinite, nonFinite);
  for (; j < len; ++j) {
    const float u = unscale_element(g, DType::F16, j, invScale);
    if (out32) out32[j] = u;
    bad |= !is_finite_f32(u);
    acc[j & 7] += u * u;
  }
}

// acc[j] += widened g[j] for an FP16 block, widened in registers (the same FP32 adds as the
// chunked path, without the round trip through a chunk buffer).
MP_TARGET_AVX2 void accumulateF16Avx(const uint16_t* g, float* acc, size_t len) {
  size_t j = 0;
  for (; j + 8 <= len; j += 8)
    _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j),
                                            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + j)))));
  for (; j < len; ++j) acc[j] += f16_bits_to_f32(g[j]);
}
#endif

void unscaleBlock(const void* g, DType t, size_t begin, size_t end, float invScale, float* out32, float& sumsq, int& inf) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int bad = 0;
#if MP_X86
  if (t == DType::F16 && cpuHasF16C()) {
    unscaleF16Avx(static_cast<const uint16_t*>(g) + begin, end - begin, invScale, out32 ? out32 + begin : nullptr, acc, bad);
    sumsq = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    inf = bad;
    return;
  }
#endif
  alignas(64) float x[kChunk];
  forChunks(begin, end, [&](size_t i0, size_t len) {
    widen(g, t, i0, len, x);
    unscaleChunk(x, len, invScale, acc, bad);
    if (out32) memcpy(out32 + i0, x, len * 4);
  });
  sumsq = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  inf = bad;
}

// One chunk of the update. The kind and which moments exist are template parameters, so the
// option tests fold away and the loop body is straight-line selects, which vectorise.
template <int32_t Kind, bool HasM, bool HasV>
MP_ISA_BODY inline void updateChunkLoop(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g,
                           size_t len, const OptimConfig& oc, const AmpState& sc) {
  OptimConfig o = oc;
  o.kind = Kind;
  const AmpState s = sc;
  for (size_t j = 0; j < len; ++j) {
    float mj = HasM ? m[j] : 0.0f, vj = HasV ? v[j] : 0.0f;
    optimizer_update(p[j], mj, vj, optimizer_grad(g, DType::F32, j, s), o, s);
    if (HasM) m[j] = mj;
    if (HasV) v[j] = vj;
  }
}
template <int32_t Kind, bool HasM, bool HasV>
void updateChunk(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g,
                           size_t len, const OptimConfig& oc, const AmpState& sc) {
  return onActiveIsa([&]() MP_ISA_BODY { return updateChunkLoop<Kind, HasM, HasV>(p, m, v, g, len, oc, sc); });
}

void optimizerBlock(const OptimStepArgs& a, size_t begin, size_t end) {
  alignas(64) float g[kChunk];
  forChunks(begin, end, [&](size_t i0, size_t len) {
    widen(a.grad, a.gradType, i0, len, g);
    float* p = a.master + i0;
    float* m = a.m ? a.m + i0 : nullptr;
    float* v = a.v ? a.v + i0 : nullptr;
    constexpr int32_t SGD = (int32_t)OptimKind::SGD, Adam = (int32_t)OptimKind::Adam, AdamW = (int32_t)OptimKind::AdamW;
    if (a.config.kind == SGD && m) updateChunk<SGD, true, false>(p, m, v, g, len, a.config, *a.state);
    else if (a.config.kind == SGD) updateChunk<SGD, false, false>(p, m, v, g, len, a.config, *a.state);
    else if (a.config.kind == Adam) updateChunk<Adam, true, true>(p, m, v, g, len, a.config, *a.state);
    else updateChunk<AdamW, true, true>(p, m, v, g, len, a.config, *a.state);
    if (a.working) narrow(p, a.working, a.workingType, i0, len);
  });
}

}  // namespace

void unscaleCheckNorm(const UnscaleArgs& a) {
  const void* g = a.g;
  const DType t = a.gType;
  const size_t n = a.n;
  AmpState* state = a.state;
  float* out32 = a.out32;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> sums(blocks);
  std::vector<int> infs(blocks);
  const float invScale = inv_scale(state->scale);
  forBlocks(n, [&](int64_t b, size_t begin, size_t end) {
    unscaleBlock(g, t, begin, end, invScale, out32, sums[b], infs[b]);
  });
  float total = 0.0f;
  int inf = 0;
  for (size_t b = 0; b < blocks; ++b) { total += sums[b]; inf |= infs[b]; }
  state->sumsq += total;
  state->foundInf |= inf;
}

void ampFinalize(const AmpFinalizeArgs& a) { amp_finalize(*a.state, a.scaler, a.optim, a.updateScale); }

void optimizerStep(const OptimStepArgs& a) {
  if (a.state->skipped) return;  // overflow: everything stays bitwise unchanged
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) { optimizerBlock(a, begin, end); });
}

void accumulate(const AccumulateArgs& a) {
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) {
    if (a.overwrite && a.gType == DType::F32 && a.g == a.acc) return;  // acc = acc
    if (a.overwrite) return widen(a.g, a.gType, begin, end - begin, a.acc + begin);
#if MP_X86
    if (a.gType == DType::F16 && cpuHasF16C())
      return accumulateF16Avx(static_cast<const uint16_t*>(a.g) + begin, a.acc + begin, end - begin);
#endif
    alignas(64) float x[kChunk];
    forChunks(begin, end, [&](size_t i0, size_t len) {
      widen(a.g, a.gType, i0, len, x);
      float* d = a.acc + i0;
      for (size_t j = 0; j < len; ++j) d[j] += x[j];
    });
  });
}

}  // namespace cpu
}  // namespace mp
