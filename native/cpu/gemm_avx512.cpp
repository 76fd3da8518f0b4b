// The AVX-512 GEMM micro-kernels (gemm_kernels.h). Each keeps its 14 x 32 tile in 28 ZMM
// accumulators for the whole k loop; a k step (a k pair for BF16) is 2 B loads, 14 broadcasts
// and 28 FMAs (vdpbf16ps: 2 multiply-adds per lane each), 31 of the 32 registers.
#include "gemm_kernels.h"

#include <string.h>

#include "isa.h"

#if MP_X86
#include <immintrin.h>

namespace mp {
namespace cpu {
namespace {

constexpr int MR = kAvx512MR;

template <class Acc>
MP_TARGET_AVX512 inline void storeTile(const Acc& acc, float* c, int64_t ldc, bool accumulate) {
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    __m512 lo = acc[i][0], hi = acc[i][1];
    if (accumulate) {
      lo = _mm512_add_ps(_mm512_loadu_ps(row), lo);
      hi = _mm512_add_ps(_mm512_loadu_ps(row + 16), hi);
    }
    _mm512_storeu_ps(row, lo);
    _mm512_storeu_ps(row + 16, hi);
  }
}

MP_TARGET_AVX512 inline void prefetchTile(const float* c, int64_t ldc) {
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kAvx512NR - 1), _MM_HINT_T0);
  }
}

}  // namespace

MP_TARGET_AVX512 void microKernelAvx512(int64_t kc, const float* __restrict a,
                                        const float* __restrict b, float* c, int64_t ldc,
                                        bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  prefetchTile(c, ldc);
  for (int64_t k = 0; k < kc; ++k, a += MR, b += kAvx512NR) {
    if ((k & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(a + 8 * MR), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  storeTile(acc, c, ldc, accumulate);
}

#if MP_HAVE_AVX512BF16
MP_TARGET_AVX512BF16 void microKernelAvx512Bf16(int64_t pairs, const uint16_t* __restrict a,
                                                const uint16_t* __restrict b, float* c,
                                                int64_t ldc, bool accumulate) {
  __m512 acc[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  prefetchTile(c, ldc);
  for (int64_t q = 0; q < pairs; ++q, a += 2 * MR, b += 2 * kAvx512NR) {
    if ((q & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(a + 16 * MR), _MM_HINT_T0);
    // memcpy reinterprets the bits (the BF16 vector type differs between compiler versions).
    __m512bh b0, b1;
    memcpy(&b0, b, sizeof b0);
    memcpy(&b1, b + 32, sizeof b1);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      memcpy(&pair, a + 2 * i, sizeof pair);
      const __m512i wide = _mm512_set1_epi32(pair);
      __m512bh ai;
      memcpy(&ai, &wide, sizeof ai);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  storeTile(acc, c, ldc, accumulate);
}
#else
void microKernelAvx512Bf16(int64_t, const uint16_t*, const uint16_t*, float*, int64_t, bool) {}  // never chosen
#endif

}  // namespace cpu
}  // namespace mp

#endif  // MP_X86
