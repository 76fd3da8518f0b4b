// The GEMM micro-kernels that live outside gemm.cpp (its driver packs the panels they read).
#pragma once
#include <stdint.h>

namespace mp {
namespace cpu {

// AVX-512F FP32: a kc x 14 A panel times a kc x 32 B panel (both FP32, k-major) into a 14 x 32
// tile of c (rows ldc apart), added to it when `accumulate`.
constexpr int kAvx512MR = 14;
constexpr int kAvx512NR = 32;
void microKernelAvx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                       bool accumulate);

// AVX512-BF16: the same tile from BF16 panels packed in K-pairs: for each pair q, A holds
// (a[i][2q], a[i][2q+1]) for the 14 rows i, B holds (b[2q][j], b[2q+1][j]) for the 32 columns j.
// vdpbf16ps adds both products of a pair into the FP32 sums (second, then first) with
// round-to-nearest-even, treating BF16 subnormal inputs as zero and flushing subnormal sums.
void microKernelAvx512Bf16(int64_t pairs, const uint16_t* a, const uint16_t* b, float* c,
                           int64_t ldc, bool accumulate);

}  // namespace cpu
}  // namespace mp
