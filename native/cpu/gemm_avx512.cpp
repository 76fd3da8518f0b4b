// The AVX-512 GEMM micro-kernels (gemm_kernels.h). Each keeps its 14 x 32 tile in 28 ZMM
// accumulators for the whole k loop; a k step (a k pair for BF16) is 2 B loads and 28 FMAs
// (vdpbf16ps: 2 multiply-adds per lane each), 30 of the 32 registers.
//
// Each FMA reads its A element as an embedded broadcast (m32{1to16}) rather than from a
// vbroadcastss / vpbroadcastd shared by two FMAs: a 512-bit broadcast from memory takes an FP
// pipe slot on Zen 4 (LLVM's znver4 model: 42 cycles a k step instead of the FMA-bound 28), an
// embedded one only a load. Intel's models cost the two forms within 4%; scripts/mca-kernels.sh
// prints these numbers.
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

#if MP_HAVE_AVX512BF16
// acc += the BF16 pair at a (broadcast to all 16 lanes) dotted with the 32 BF16 values at b.
// GCC 12 does not fold a broadcast into vdpbf16ps, so the real build says it in assembly; the
// emulation build (isa.h) has no AVX-512 to run it on and takes the intrinsics.
MP_TARGET_AVX512BF16 inline void dpbf16Broadcast(__m512& acc, const uint16_t* a, const uint16_t* b) {
  __m512i pairs;
  memcpy(&pairs, b, sizeof pairs);
#ifdef MP_EMULATE_AVX512
  int32_t pair;
  memcpy(&pair, a, sizeof pair);
  const __m512i wide = _mm512_set1_epi32(pair);
  __m512bh x, y;  // memcpy reinterprets the bits (the BF16 vector type differs between compilers)
  memcpy(&x, &wide, sizeof x);
  memcpy(&y, &pairs, sizeof y);
  acc = _mm512_dpbf16_ps(acc, x, y);
#else
  typedef int32_t __attribute__((may_alias)) Pair;
  __asm__("vdpbf16ps %[pair]%{1to16%}, %[b], %[acc]"
          : [acc] "+v"(acc)
          : [b] "v"(pairs), [pair] "m"(*reinterpret_cast<const Pair*>(a)));
#endif
}
#endif

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
    // The same A panel through a pointer the compiler cannot see is `a`, so each broadcast has
    // one use and folds into its FMA (one shared broadcast register otherwise).
    const float* a2 = a;
    __asm__("" : "+r"(a2));
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = _mm512_fmadd_ps(_mm512_set1_ps(a[i]), b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_set1_ps(a2[i]), b1, acc[i][1]);
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
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      dpbf16Broadcast(acc[i][0], a + 2 * i, b);
      dpbf16Broadcast(acc[i][1], a + 2 * i, b + 32);
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
