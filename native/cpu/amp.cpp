// CPU side of the mixed-precision step: loops over flat buffers calling the shared per-element
// math (native/shared/amp.h). Work is split into fixed-size blocks, so the reduction order (and
// therefore the FP32 sum of squares) does not depend on the thread count.
//
// Speed: each block is processed in small chunks. FP16 chunks are widened / narrowed with F16C
// when the CPU has it (exact, and bit-identical to half.h's RNE, NaNs included), so the FP32
// math in between runs on plain float arrays that the compiler vectorises. No FMA contraction is
// allowed here (see CMakeLists.txt), so results are bitwise those of the scalar definition.
#include <string.h>

#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define MP_X86 1
#endif

namespace mp {
namespace {

constexpr size_t kBlock = 1 << 14;  // elements per reduction block (fixed: determinism)
constexpr size_t kChunk = 256;      // elements converted at a time (stays in L1)

#ifdef MP_X86
bool hasF16C() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return ok;
}
__attribute__((target("avx2,f16c"))) void f16ToF32Avx(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = f16_bits_to_f32(src[i]);
}
__attribute__((target("avx2,f16c"))) void f32ToF16Avx(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = f32_to_f16_bits(src[i]);
}
#endif

// dst[0..n) = element i0.. of src as FP32 (exact).
void widen(const void* src, DType t, size_t i0, size_t n, float* dst) {
  if (t == DType::F32) { memcpy(dst, static_cast<const float*>(src) + i0, n * 4); return; }
  const uint16_t* s = static_cast<const uint16_t*>(src) + i0;
#ifdef MP_X86
  if (t == DType::F16 && hasF16C()) return f16ToF32Avx(s, dst, n);
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = t == DType::F16 ? f16_bits_to_f32(s[i]) : bf16_bits_to_f32(s[i]);
}

// Elements i0.. of dst = src[0..n) rounded to t (RNE).
void narrow(const float* src, void* dst, DType t, size_t i0, size_t n) {
  if (t == DType::F32) { memcpy(static_cast<float*>(dst) + i0, src, n * 4); return; }
  uint16_t* d = static_cast<uint16_t*>(dst) + i0;
#ifdef MP_X86
  if (t == DType::F16 && hasF16C()) return f32ToF16Avx(src, d, n);
#endif
  for (size_t i = 0; i < n; ++i) d[i] = t == DType::F16 ? f32_to_f16_bits(src[i]) : f32_to_bf16_bits(src[i]);
}

template <typename F>
void forBlocks(size_t n, F&& f) {
  const int64_t blocks = (int64_t)((n + kBlock - 1) / kBlock);
  parallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const size_t begin = (size_t)b * kBlock, end = begin + kBlock < n ? begin + kBlock : n;
      f(b, begin, end);
    }
  });
}

// Calls f(i0, len) over [begin, end) in chunks of at most kChunk.
template <typename F>
void forChunks(size_t begin, size_t end, F&& f) {
  for (size_t i0 = begin; i0 < end; i0 += kChunk) f(i0, end - i0 < kChunk ? end - i0 : kChunk);
}

// Compiled twice (AVX2 and baseline) and chosen at load time, so the plain loops below vectorise
// 8-wide where the CPU allows. No FMA in either clone: results stay bitwise the scalar ones.
#define MP_CLONES __attribute__((target_clones("avx2", "default")))

// x = x * invScale in place; 8-lane FP32 sum of squares (lane k takes elements j with j % 8 == k,
// a fixed order); bad |= any non-finite. GCC vector extensions keep the 8 lanes explicit.
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

MP_CLONES void unscaleChunk(float* x, size_t len, float invScale, float acc[8], int& bad) {
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

void unscaleBlock(const void* g, DType t, size_t begin, size_t end, float invScale, float* out32, float& sumsq, int& inf) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int bad = 0;
  float x[kChunk];
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
MP_CLONES void updateChunk(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g,
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

void optimizerBlock(const OptimStepArgs& a, size_t begin, size_t end) {
  float g[kChunk];
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

void cpuUnscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32) {
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

void cpuOptimizerStep(const OptimStepArgs& a) {
  if (a.state->skipped) return;  // overflow: everything stays bitwise unchanged
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) { optimizerBlock(a, begin, end); });
}

void cpuAccumulate(const void* g, DType t, float* acc, size_t n, bool overwrite) {
  forBlocks(n, [&](int64_t, size_t begin, size_t end) {
    float x[kChunk];
    forChunks(begin, end, [&](size_t i0, size_t len) {
      widen(g, t, i0, len, x);
      float* d = acc + i0;
      if (overwrite) memcpy(d, x, len * 4);
      else for (size_t j = 0; j < len; ++j) d[j] += x[j];
    });
  });
}

}  // namespace mp
