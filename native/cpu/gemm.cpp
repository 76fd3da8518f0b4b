// The CPU GEMM, in the BLIS / GotoBLAS structure:
//
//   for jc over N in NC-column blocks
//     for pc over K in KC-deep blocks
//       threads share packing op(B)[pc, jc] into NR-column panels (KC x NC block, in L3)
//       threads claim row x column items of the M x NC block; for each item:
//         pack op(A)[rows, pc] into MR-row panels (MC x KC block, in L2, per thread)
//         for each NR panel (in L1), for each MR panel: MR x NR micro-kernel over KC
//
// Packing converts F16 / BF16 operands to FP32 once per block, so the micro-kernel is a pure
// FP32 FMA loop whatever the operand types, and it absorbs all four transpose combinations. The
// one exception: with AVX512-BF16, two BF16 operands are packed as they are, in K-pairs, for
// vdpbf16ps (F16 operands stay FP32 math: rounding them to BF16 would lose 3 mantissa bits).
// Raw sums of products of the K blocks before the last are kept in FP32 (in `out` itself when
// it is F32, else in a workspace); the epilogue (alpha, beta*C, bias, activation, rounding to
// outType) runs once, on the last K block, while the tile is still in cache.
//
// Operands are read through element strides (Operand), so leading dimensions larger than a row
// and all four transposes cost nothing extra: packing absorbs them. A batch is a loop over items
// (each item a 2-D GEMM with the threads sharing its blocks), or, when the items are too small to
// keep every thread busy, items claimed by the threads one at a time (each run single-threaded).
// Either way an item's sums are taken in the same order (K blocks in order, k in order within a
// block), so results never depend on the thread count.
//
// Kernels per ISA level (isa.h), chosen at run time: scalar and AVX2 (6 x 16 tiles), AVX-512 and
// AVX512-BF16 (14 x 32, gemm_avx512.cpp). The packers and the epilogue are AVX2 code for all
// vector levels. Cache blocks come from the cache sizes read at run time. This file is
// compiled for baseline x86-64 (or any other architecture, where only the scalar path exists).
#include <stdint.h>
#include <string.h>
#include <algorithm>
#include <atomic>
#include <limits>
#include <new>
#include <string>
#include <thread>

#include "cpu_backend.h"
#include "gemm_kernels.h"
#include "isa.h"
#include "parallel.h"

#if MP_X86
#include <immintrin.h>
#define MP_GEMM_CPU_RELAX() _mm_pause()
#else
#define MP_GEMM_CPU_RELAX() ((void)0)
#endif

namespace mp {
namespace {

using namespace cpu;  // isa.h, gemm_kernels.h

// The scalar and AVX2 register tile: 6x16 floats = 12 ymm accumulators, plus 2 for B and 1 for
// the broadcast A value, out of 16. Two FMA pipes with 4-cycle latency need >= 8 chains.
constexpr int kMR = 6;
constexpr int kNR = 16;
// Below this many multiply-adds a second thread costs more to wake than it saves.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 17;
// Caps the FP32 partial-sum workspace (only used when out is not F32, or C aliases an F32 out);
// beyond it the column block shrinks instead.
constexpr size_t kMaxWorkspaceBytes = size_t(64) << 20;
constexpr size_t kKeepWorkspaceBytes = size_t(16) << 20;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t roundUp(int64_t a, int64_t b) { return ceilDiv(a, b) * b; }

// Splits `total` into ceil(total / maxBlock) near-equal blocks rounded up to `unit`, so e.g.
// K = 300 gives 152 + 148 rather than 256 + 44 (a short last block wastes a pass over C).
int64_t balancedBlock(int64_t total, int64_t maxBlock, int64_t unit) {
  const int64_t blocks = ceilDiv(total, maxBlock);
  return std::min(maxBlock, roundUp(ceilDiv(total, blocks), unit));
}

// 64-byte aligned, grown on demand and reused across calls, so steady-state training does not
// allocate in the GEMM.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { release(); }

  void* reserve(size_t bytes) {
    if (bytes > capacity_) {
      release();
      const size_t rounded = (size_t)roundUp((int64_t)std::max<size_t>(bytes, 1), 64);
      data_ = ::operator new(rounded, std::align_val_t(64), std::nothrow);
      if (!data_) fail("E_OOM", "CPU GEMM: cannot allocate " + std::to_string(rounded) +
                                    " bytes of packing buffer");
      capacity_ = bytes;
    }
    return data_;
  }
  void releaseIfLargerThan(size_t bytes) {
    if (capacity_ > bytes) release();
  }

 private:
  void release() {
    if (data_) ::operator delete(data_, std::align_val_t(64));
    data_ = nullptr;
    capacity_ = 0;
  }
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// A matrix operand read as elements (p, k): p indexes rows of op(A) or columns of op(B), k the
// shared dimension. The storage order decides which packing loop applies.
struct Operand {
  const void* data;
  DType type;
  int64_t pStride, kStride;  // element (p, k) is at p * pStride + k * kStride
  int64_t pExtent;           // p < pExtent: bounds the vector loads along p (a stored row may be shorter than its ld)
};

// A is stored [M,K] (rows lda apart) or, transposed, [K,M]; B is stored [K,N] (rows ldb apart) or,
// transposed, [N,K] (as PyTorch's Linear weight).
Operand operandA(const GemmArgs& g, const void* A) {
  return g.transA ? Operand{A, g.aType, 1, g.lda, g.M} : Operand{A, g.aType, g.lda, 1, g.M};
}
Operand operandB(const GemmArgs& g, const void* B) {
  return g.transB ? Operand{B, g.bType, g.ldb, 1, g.N} : Operand{B, g.bType, 1, g.ldb, g.N};
}

struct Epilogue {
  float alpha, beta;
  const void* C; DType cType;
  const void* bias; DType biasType;
  Act act;
  void* out; DType outType;
  int64_t ldc;  // row stride of C, out and preAct
  bool identity;  // alpha 1, no C, no bias, no activation, FP32 out: sums are the result
  void* preAct; DType preActType;  // optional: the value before the activation (GELU's backward)
};

// One claimed item of a (jc, pc) block: a row range (its packed A) times a column range.
struct TileJob {
  int64_t kc;
  bool firstK, lastK;
  const void* packedA;   // panels for rows [rowBegin, rowEnd)
  const void* packedB;   // panels for block columns [colOrigin, colOrigin + nc)
  int64_t rowBegin, rowEnd, colBegin, colEnd, colOrigin;
  float* partial;        // FP32 raw sums for block column colOrigin (null if K fits one block)
  int64_t ldPartial;
  const Epilogue* epilogue;
};

// ----------------------------------------------------------------------------------------------
// Scalar path: portable, also the reference for the vector path's semantics.

void epilogueRowScalar(const Epilogue& e, const float* sums, int64_t m, int64_t n, int count) {
  const size_t base = (size_t)(m * e.ldc + n);
  for (int j = 0; j < count; ++j) {
    float v = e.alpha * sums[j];
    if (e.beta != 0.0f) v += e.beta * load_f32(e.C, e.cType, base + j);  // C read before out
    if (e.bias) v += load_f32(e.bias, e.biasType, (size_t)(n + j));
    if (e.preAct) store_f32(e.preAct, e.preActType, base + j, v);
    store_f32(e.out, e.outType, base + j, apply_act(e.act, v));
  }
}

// Zero-pads the panel beyond `valid` rows so edge tiles can run the full-size micro-kernel.
void packPanelScalar(const Operand& op, int64_t p0, int valid, int64_t k0, int64_t kc, int width,
                     float* out) {
  for (int64_t k = 0; k < kc; ++k) {
    float* dst = out + k * width;
    const int64_t kOffset = (k0 + k) * op.kStride;
    for (int p = 0; p < width; ++p)
      dst[p] = p < valid ? load_f32(op.data, op.type, (size_t)(kOffset + (p0 + p) * op.pStride))
                         : 0.0f;
  }
}

void packPanelsScalar(const Operand& op, int64_t p0, int64_t count, int64_t k0, int64_t kc,
                      int width, float* out) {
  for (int64_t p = 0; p < count; p += width, out += width * kc)
    packPanelScalar(op, p0 + p, (int)std::min<int64_t>(width, count - p), k0, kc, width, out);
}

// Portable C++ the compiler vectorises (SSE2 on baseline x86-64, NEON on arm64): three rows of
// 16 accumulators at a time, two passes over the panel. All six rows at once is 24 vector
// accumulators, which spills, and GCC then vectorises across rows instead (10x slower).
constexpr int kScalarRows = 3;
static_assert(kMR % kScalarRows == 0, "the portable kernel walks MR in groups of three rows");

void microKernelScalar(int64_t kc, const float* __restrict a, const float* __restrict b,
                       float* __restrict c, int64_t ldc, bool accumulate) {
  for (int i0 = 0; i0 < kMR; i0 += kScalarRows) {
    float acc0[kNR] = {}, acc1[kNR] = {}, acc2[kNR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      const float* bk = b + k * kNR;
      const float a0 = a[k * kMR + i0], a1 = a[k * kMR + i0 + 1], a2 = a[k * kMR + i0 + 2];
      for (int j = 0; j < kNR; ++j) {
        acc0[j] += a0 * bk[j];
        acc1[j] += a1 * bk[j];
        acc2[j] += a2 * bk[j];
      }
    }
    const float* rows[kScalarRows] = {acc0, acc1, acc2};
    for (int r = 0; r < kScalarRows; ++r) {
      float* dst = c + (i0 + r) * ldc;
      for (int j = 0; j < kNR; ++j) dst[j] = (accumulate ? dst[j] : 0.0f) + rows[r][j];
    }
  }
}

// What macroKernel needs of a level: its tile, the packed element and how many k values one
// packed element step holds (2 for BF16 pairs), the micro-kernel and the epilogue.
struct ScalarIsa {
  static constexpr int MR = kMR, NR = kNR, kPerStep = 1;
  using Elem = float;
  static void micro(int64_t steps, const float* a, const float* b, float* c, int64_t ldc, bool acc) {
    microKernelScalar(steps, a, b, c, ldc, acc);
  }
  static void epilogueRow(const Epilogue& e, const float* sums, int64_t m, int64_t n, int count) {
    epilogueRowScalar(e, sums, m, n, count);
  }
};

// ----------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C path.
#if MP_X86

// F16C widening is exact and BF16 widening is a shift, so these match load_f32 bit for bit.
MP_TARGET_AVX2 inline __m256 load8(const void* base, DType t, size_t index) {
  switch (t) {
    case DType::F16:
      return _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + index)));
    case DType::BF16: {
      const __m128i h =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + index));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default:
      return _mm256_loadu_ps(static_cast<const float*>(base) + index);
  }
}

// Same bits as f32_to_bf16_bits: round half to even by integer add, NaN quieted.
MP_TARGET_AVX2 inline __m128i floatsToBf16(__m256 v) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quietNan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  const __m256i isNan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
  const __m256i halves = _mm256_blendv_epi8(rounded, quietNan, isNan);
  // packus works within 128-bit lanes; gather the two lanes' low halves into one register.
  const __m256i packed = _mm256_packus_epi32(halves, halves);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

// F16C with round-to-nearest-even gives the same bits as f32_to_f16_bits (tested).
MP_TARGET_AVX2 inline void store8(void* base, DType t, size_t index, __m256 v) {
  switch (t) {
    case DType::F16:
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(base) + index),
                       _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      break;
    case DType::BF16:
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(base) + index),
                       floatsToBf16(v));
      break;
    default:
      _mm256_storeu_ps(static_cast<float*>(base) + index, v);
  }
}

MP_TARGET_AVX2 inline __m256 applyActAvx2(Act act, __m256 v) {
  // max(0, v) returns its second operand for NaN and for -0, exactly like `v < 0 ? 0 : v`.
  if (act == Act::Relu) return _mm256_max_ps(_mm256_setzero_ps(), v);
  if (act == Act::Gelu) {  // the shared scalar gelu (branch-free: the compiler vectorises the 8 lanes)
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    for (float& x : lanes) x = gelu(x);
    return _mm256_load_ps(lanes);
  }
  return v;
}

MP_TARGET_AVX2 void epilogueRowAvx2(const Epilogue& e, const float* sums, int64_t m, int64_t n,
                                    int count) {
  const size_t base = (size_t)(m * e.ldc + n);
  const __m256 alpha = _mm256_set1_ps(e.alpha), beta = _mm256_set1_ps(e.beta);
  int j = 0;
  for (; j + 8 <= count; j += 8) {
    __m256 v = _mm256_mul_ps(alpha, _mm256_loadu_ps(sums + j));
    if (e.beta != 0.0f) v = _mm256_add_ps(v, _mm256_mul_ps(beta, load8(e.C, e.cType, base + j)));
    if (e.bias) v = _mm256_add_ps(v, load8(e.bias, e.biasType, (size_t)(n + j)));
    if (e.preAct) store8(e.preAct, e.preActType, base + j, v);
    store8(e.out, e.outType, base + j, applyActAvx2(e.act, v));
  }
  if (j < count) epilogueRowScalar(e, sums + j, m, n + j, count - j);
}

MP_TARGET_AVX2 inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

MP_TARGET_AVX2 inline void storeFirst6(float* dst, __m256 v) {
  _mm_storeu_ps(dst, _mm256_castps256_ps128(v));
  _mm_storel_pi(reinterpret_cast<__m64*>(dst + 4), _mm256_extractf128_ps(v, 1));
}

// Storage is contiguous along k (A not transposed, B transposed): read 8 k-values from each of
// 8 p-rows and transpose in registers, instead of a strided gather per element.
template <int W>
MP_TARGET_AVX2 void packPanelAlongKAvx2(const Operand& op, int64_t p0, int valid, int64_t k0,
                                        int64_t kc, float* out) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    for (int g = 0; g < W; g += 8) {
      __m256 rows[8];
      for (int t = 0; t < 8; ++t) {
        const int p = g + t;
        rows[t] = p < valid && p < W
                      ? load8(op.data, op.type, (size_t)((p0 + p) * op.pStride + k0 + k))
                      : _mm256_setzero_ps();
      }
      transpose8x8(rows);
      for (int t = 0; t < 8; ++t) {
        float* dst = out + (k + t) * W + g;
        if (W - g >= 8) _mm256_storeu_ps(dst, rows[t]);
        else storeFirst6(dst, rows[t]);
      }
    }
  }
  if (k < kc) packPanelScalar(op, p0, valid, k0 + k, kc - k, W, out + k * W);
}

// Storage is contiguous along p (A transposed, B not): each k is a run of consecutive values
// across all the panels. Walking k in the outer loop reads every stored row segment once,
// front to back, instead of one 64-byte piece per row and panel (a TLB and prefetcher miss each).
template <int W>
MP_TARGET_AVX2 void packPanelsAlongPAvx2(const Operand& op, int64_t p0, int64_t count,
                                         int64_t k0, int64_t kc, float* out) {
  static_assert(W % 8 == 0 || W % 8 == 6, "a panel is 8-wide stores and at most one 6-wide one");
  const int64_t rowLength = op.pExtent;  // the stored row holds all p for one k (op.kStride apart)
  const int64_t readWidth = roundUp(W, 8);
  // Full panels whose 8-wide loads stay inside the stored row; the rest go through scalar code.
  const int64_t fitting = rowLength - p0 >= readWidth ? (rowLength - p0 - readWidth) / W + 1 : 0;
  const int64_t vectorPanels = std::min(count / W, fitting);
  for (int64_t k = 0; k < kc; ++k) {
    const size_t src = (size_t)((k0 + k) * op.kStride + p0);
    for (int64_t q = 0; q < vectorPanels; ++q) {
      float* dst = out + q * W * kc + k * W;
      for (int v = 0; v < W; v += 8) {
        const __m256 x = load8(op.data, op.type, src + q * W + v);
        if (W - v >= 8) _mm256_storeu_ps(dst + v, x);
        else storeFirst6(dst + v, x);
      }
    }
  }
  for (int64_t p = vectorPanels * W; p < count; p += W)
    packPanelScalar(op, p0 + p, (int)std::min<int64_t>(W, count - p), k0, kc, W, out + p * kc);
}

template <int W>
MP_TARGET_AVX2 void packPanelsAvx2W(const Operand& op, int64_t p0, int64_t count, int64_t k0,
                                    int64_t kc, float* out) {
  if (op.kStride != 1) return packPanelsAlongPAvx2<W>(op, p0, count, k0, kc, out);
  for (int64_t p = 0; p < count; p += W)
    packPanelAlongKAvx2<W>(op, p0 + p, (int)std::min<int64_t>(W, count - p), k0, kc, out + p * kc);
}

void packPanelsAvx2(const Operand& op, int64_t p0, int64_t count, int64_t k0, int64_t kc,
                    int width, void* out) {
  float* o = static_cast<float*>(out);
  switch (width) {
    case kMR: return packPanelsAvx2W<kMR>(op, p0, count, k0, kc, o);
    case kNR: return packPanelsAvx2W<kNR>(op, p0, count, k0, kc, o);
    case kAvx512MR: return packPanelsAvx2W<kAvx512MR>(op, p0, count, k0, kc, o);
    default: return packPanelsAvx2W<kAvx512NR>(op, p0, count, k0, kc, o);
  }
}

// BF16 panels in K-pairs (gemm_kernels.h), packed from BF16 storage without conversion. Pair q
// of element p holds k = k0 + 2q and k0 + 2q + 1, the second 0 past the end of an odd kc; rows
// past `valid` are 0.
void packPairsScalar(const Operand& op, int64_t p0, int valid, int64_t k0, int64_t kc, int64_t q0,
                     int width, uint16_t* out) {
  const uint16_t* x = static_cast<const uint16_t*>(op.data);
  for (int64_t q = q0; q < ceilDiv(kc, 2); ++q) {
    uint16_t* dst = out + q * 2 * width;
    const int64_t k = k0 + 2 * q;
    const bool second = 2 * q + 1 < kc;
    for (int p = 0; p < width; ++p) {
      const size_t base = (size_t)((p0 + p) * op.pStride);
      dst[2 * p] = p < valid ? x[base + k * op.kStride] : 0;
      dst[2 * p + 1] = p < valid && second ? x[base + (k + 1) * op.kStride] : 0;
    }
  }
}

// Storage contiguous along k: a pair is one 32-bit word of the stored row, so this is the FP32
// along-k packing (8 x 8 transposes) on words.
template <int W>
MP_TARGET_AVX2 void packPairsAlongKAvx2(const Operand& op, int64_t p0, int valid, int64_t k0,
                                        int64_t kc, uint16_t* out) {
  const uint16_t* x = static_cast<const uint16_t*>(op.data);
  int64_t q = 0;
  for (; 2 * (q + 8) <= kc; q += 8) {
    for (int g = 0; g < W; g += 8) {
      __m256 rows[8];
      for (int t = 0; t < 8; ++t) {
        const int p = g + t;
        rows[t] = p < valid && p < W
                      ? _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                            x + (p0 + p) * op.pStride + k0 + 2 * q)))
                      : _mm256_setzero_ps();
      }
      transpose8x8(rows);
      for (int t = 0; t < 8; ++t) {
        float* dst = reinterpret_cast<float*>(out + (q + t) * 2 * W + 2 * g);
        if (W - g >= 8) _mm256_storeu_ps(dst, rows[t]);
        else storeFirst6(dst, rows[t]);
      }
    }
  }
  packPairsScalar(op, p0, valid, k0, kc, q, W, out);
}

// Storage contiguous along p: interleave the two stored rows of a pair, 16 elements at a time.
template <int W>
MP_TARGET_AVX2 void packPairsAlongPAvx2(const Operand& op, int64_t p0, int64_t count, int64_t k0,
                                        int64_t kc, uint16_t* out) {
  static_assert(W % 16 == 0 || W % 16 == 14, "a panel is 16-wide steps and at most one 14-wide one");
  const uint16_t* x = static_cast<const uint16_t*>(op.data);
  const int64_t pairs = ceilDiv(kc, 2), panelElems = 2 * W * pairs;
  const int64_t readWidth = roundUp(W, 16);
  const int64_t fitting = op.pExtent - p0 >= readWidth ? (op.pExtent - p0 - readWidth) / W + 1 : 0;
  const int64_t vectorPanels = std::min(count / W, fitting);
  for (int64_t q = 0; q < pairs; ++q) {
    const uint16_t* r0 = x + (k0 + 2 * q) * op.kStride + p0;
    const uint16_t* r1 = 2 * q + 1 < kc ? r0 + op.kStride : nullptr;
    for (int64_t panel = 0; panel < vectorPanels; ++panel) {
      float* dst = reinterpret_cast<float*>(out + panel * panelElems + q * 2 * W);
      for (int v = 0; v < W; v += 16) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + panel * W + v));
        const __m256i b = r1 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + panel * W + v))
                             : _mm256_setzero_si256();
        const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
        _mm256_storeu_ps(dst + v, _mm256_castsi256_ps(_mm256_permute2x128_si256(lo, hi, 0x20)));
        const __m256 upper = _mm256_castsi256_ps(_mm256_permute2x128_si256(lo, hi, 0x31));
        if (W - v >= 16) _mm256_storeu_ps(dst + v + 8, upper);
        else storeFirst6(dst + v + 8, upper);
      }
    }
  }
  for (int64_t p = vectorPanels * W; p < count; p += W)
    packPairsScalar(op, p0 + p, (int)std::min<int64_t>(W, count - p), k0, kc, 0, W,
                    out + (p / W) * panelElems);
}

template <int W>
void packPairsW(const Operand& op, int64_t p0, int64_t count, int64_t k0, int64_t kc, uint16_t* out) {
  if (op.kStride != 1) return packPairsAlongPAvx2<W>(op, p0, count, k0, kc, out);
  const int64_t panelElems = 2 * W * ceilDiv(kc, 2);
  for (int64_t p = 0; p < count; p += W)
    packPairsAlongKAvx2<W>(op, p0 + p, (int)std::min<int64_t>(W, count - p), k0, kc,
                           out + (p / W) * panelElems);
}

void packPairs(const Operand& op, int64_t p0, int64_t count, int64_t k0, int64_t kc, int width,
               void* out) {
  uint16_t* o = static_cast<uint16_t*>(out);
  if (width == kAvx512MR) packPairsW<kAvx512MR>(op, p0, count, k0, kc, o);
  else packPairsW<kAvx512NR>(op, p0, count, k0, kc, o);
}

// a: kc x 6 panel, b: kc x 16 panel (64-byte aligned). The 12 accumulators stay in registers for
// the whole k loop; each k step is 2 B loads, 6 broadcasts and 12 FMAs.
MP_TARGET_AVX2 void microKernelAvx2(int64_t kc, const float* __restrict a,
                                    const float* __restrict b, float* c, int64_t ldc,
                                    bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int i = 0; i < kMR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kNR - 1), _MM_HINT_T0);
  }

#define MP_GEMM_K_STEP(off)                                                    \
  {                                                                           \
    const __m256 b0 = _mm256_load_ps(b + (off) * kNR);                         \
    const __m256 b1 = _mm256_load_ps(b + (off) * kNR + 8);                     \
    __m256 ai = _mm256_broadcast_ss(a + (off) * kMR + 0);                      \
    c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);    \
    ai = _mm256_broadcast_ss(a + (off) * kMR + 1);                             \
    c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);    \
    ai = _mm256_broadcast_ss(a + (off) * kMR + 2);                             \
    c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);    \
    ai = _mm256_broadcast_ss(a + (off) * kMR + 3);                             \
    c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);    \
    ai = _mm256_broadcast_ss(a + (off) * kMR + 4);                             \
    c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);    \
    ai = _mm256_broadcast_ss(a + (off) * kMR + 5);                             \
    c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);    \
  }

  int64_t k = 0;
  for (; k + 4 <= kc; k += 4, a += 4 * kMR, b += 4 * kNR) {
    _mm_prefetch(reinterpret_cast<const char*>(a + 4 * 4 * kMR), _MM_HINT_T0);
    MP_GEMM_K_STEP(0)
    MP_GEMM_K_STEP(1)
    MP_GEMM_K_STEP(2)
    MP_GEMM_K_STEP(3)
  }
  for (; k < kc; ++k, a += kMR, b += kNR) MP_GEMM_K_STEP(0)
#undef MP_GEMM_K_STEP

  const __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < kMR; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), acc[i][0]));
      _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), acc[i][1]));
    } else {
      _mm256_storeu_ps(row, acc[i][0]);
      _mm256_storeu_ps(row + 8, acc[i][1]);
    }
  }
}

// A vector level: its tile, packed element and micro-kernel, with the AVX2 epilogue.
template <int TileM, int TileN, int PerStep, class E,
          void (*Micro)(int64_t, const E*, const E*, float*, int64_t, bool)>
struct VectorIsa {
  static constexpr int MR = TileM, NR = TileN, kPerStep = PerStep;
  using Elem = E;
  static void micro(int64_t steps, const E* a, const E* b, float* c, int64_t ldc, bool acc) {
    Micro(steps, a, b, c, ldc, acc);
  }
  static void epilogueRow(const Epilogue& e, const float* sums, int64_t m, int64_t n, int count) {
    epilogueRowAvx2(e, sums, m, n, count);
  }
};
using Avx2Isa = VectorIsa<kMR, kNR, 1, float, microKernelAvx2>;
using Avx512Isa = VectorIsa<kAvx512MR, kAvx512NR, 1, float, microKernelAvx512>;
using Avx512Bf16Isa = VectorIsa<kAvx512MR, kAvx512NR, 2, uint16_t, microKernelAvx512Bf16>;

#endif  // MP_X86

// ----------------------------------------------------------------------------------------------
// Macro-kernel: the jr / ir loops over one packed A block and the thread's part of a packed B
// block. Edge tiles run the full micro-kernel on zero-padded panels into a local tile and copy
// out only the valid part.

template <class Isa>
void runTile(const TileJob& job, const typename Isa::Elem* aPanel, const typename Isa::Elem* bPanel,
             int64_t row, int64_t col, int mr, int nr) {
  constexpr int MR = Isa::MR, NR = Isa::NR;
  const int64_t steps = ceilDiv(job.kc, Isa::kPerStep);
  const Epilogue& e = *job.epilogue;
  // Full tiles write their raw sums straight to the FP32 partial sums, or to out when there is
  // nothing to apply; edge tiles go through a local tile so padding never touches memory.
  float* direct = nullptr;
  int64_t ldDirect = 0;
  if (job.partial) {
    direct = job.partial + row * job.ldPartial + (col - job.colOrigin);
    ldDirect = job.ldPartial;
  } else if (e.identity) {
    direct = static_cast<float*>(e.out) + row * e.ldc + col;
    ldDirect = e.ldc;
  }
  const bool accumulate = job.partial && !job.firstK;

  if (direct && mr == MR && nr == NR) {
    Isa::micro(steps, aPanel, bPanel, direct, ldDirect, accumulate);
    if (!job.lastK || e.identity) return;  // identity: partial sums live in out, already final
    for (int i = 0; i < mr; ++i) Isa::epilogueRow(e, direct + i * ldDirect, row + i, col, nr);
    return;
  }

  alignas(64) float local[MR * NR];
  Isa::micro(steps, aPanel, bPanel, local, NR, false);
  if (accumulate)
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) local[i * NR + j] += direct[i * ldDirect + j];
  if (!job.lastK) {
    for (int i = 0; i < mr; ++i) memcpy(direct + i * ldDirect, local + i * NR, nr * sizeof(float));
    return;
  }
  for (int i = 0; i < mr; ++i) Isa::epilogueRow(e, local + i * NR, row + i, col, nr);
}

template <class Isa>
void macroKernel(const TileJob& job) {
  using Elem = typename Isa::Elem;
  const int64_t panelK = roundUp(job.kc, Isa::kPerStep);  // packed k values per panel row
  const Elem* packedA = static_cast<const Elem*>(job.packedA);
  const Elem* packedB = static_cast<const Elem*>(job.packedB);
  for (int64_t col = job.colBegin; col < job.colEnd; col += Isa::NR) {
    const Elem* bPanel = packedB + (col - job.colOrigin) * panelK;
    const int nr = (int)std::min<int64_t>(Isa::NR, job.colEnd - col);
    for (int64_t row = job.rowBegin; row < job.rowEnd; row += Isa::MR) {
      const Elem* aPanel = packedA + (row - job.rowBegin) * panelK;
      const int mr = (int)std::min<int64_t>(Isa::MR, job.rowEnd - row);
      runTile<Isa>(job, aPanel, bPanel, row, col, mr, nr);
    }
  }
}

void packPanelsScalarFloat(const Operand& op, int64_t p0, int64_t count, int64_t k0, int64_t kc,
                           int width, void* out) {
  packPanelsScalar(op, p0, count, k0, kc, width, static_cast<float*>(out));
}

// One level's GEMM: its tile, its packed panels, and its kernels.
struct Kernels {
  const char* name;
  int mr, nr;
  int kPerStep;   // k values per packed step: 1, or 2 for BF16 K-pairs
  int elemBytes;  // bytes per packed value
  void (*packPanels)(const Operand&, int64_t p0, int64_t count, int64_t k0, int64_t kc, int width,
                     void* out);
  void (*macroKernel)(const TileJob&);
  // Bytes of `width`-wide panels for `count` values of p over kc values of k.
  size_t panelBytes(int64_t count, int width, int64_t kc) const {
    return (size_t)(roundUp(count, width) * roundUp(kc, kPerStep) * elemBytes);
  }
};

template <class Isa>
constexpr Kernels kernelsOf(const char* name,
                            void (*pack)(const Operand&, int64_t, int64_t, int64_t, int64_t, int, void*)) {
  return {name, Isa::MR, Isa::NR, Isa::kPerStep, (int)sizeof(typename Isa::Elem), pack, macroKernel<Isa>};
}

const Kernels kScalarKernels = kernelsOf<ScalarIsa>("scalar 6x16", packPanelsScalarFloat);
#if MP_X86
const Kernels kAvx2Kernels = kernelsOf<Avx2Isa>("avx2+fma 6x16", packPanelsAvx2);
const Kernels kAvx512Kernels = kernelsOf<Avx512Isa>("avx512f 14x32", packPanelsAvx2);
const Kernels kAvx512Bf16Kernels = kernelsOf<Avx512Bf16Isa>("avx512bf16 vdpbf16ps 14x32", packPairs);
#endif

// ----------------------------------------------------------------------------------------------
// Dispatch: the active level (isa.h), and for AVX512-BF16 the operand types.

const Kernels& fp32KernelsOf(Isa isa) {
#if MP_X86
  if (isa >= Isa::Avx512) return kAvx512Kernels;
  if (isa == Isa::Avx2) return kAvx2Kernels;
#endif
  return kScalarKernels;
}

const Kernels& kernelsFor(const GemmArgs& g) {
  const Isa isa = activeIsa();
#if MP_X86
  if (isa == Isa::Avx512Bf16 && g.aType == DType::BF16 && g.bType == DType::BF16)
    return kAvx512Bf16Kernels;
#endif
  return fp32KernelsOf(isa);
}

// Cache blocks from the cache sizes (isa.h): a kc x nr B panel in half of L1d, an mc x kc A
// block in about 28% of L2 and a kc x nc B block in an eighth of the L3 a core shares. On Zen 3
// (32 KiB, 512 KiB, 32 MiB) with the 6 x 16 FP32 tile that is the tuned 256 / 144 / 4096.
struct Blocking {
  int64_t mc, kc, nc;
};
Blocking blockingFor(const Kernels& k) {
  const CacheSizes& c = cacheSizes();
  Blocking b;
  b.kc = std::clamp<int64_t>((int64_t)(c.l1d / 2) / (k.nr * k.elemBytes) / 8 * 8, 64, 1024);
  const int64_t kBytes = b.kc * k.elemBytes;
  b.mc = std::max<int64_t>(k.mr, (int64_t)(c.l2 * 9 / 32) / kBytes / k.mr * k.mr);
  b.nc = std::clamp<int64_t>((int64_t)(c.l3 / 8) / kBytes / k.nr * k.nr, 4 * k.nr, 16384);
  return b;
}

// ----------------------------------------------------------------------------------------------
// Driver.

// How one column block's work is cut into rowItems x colItems rectangles that threads claim
// dynamically: if another process takes a core for a while, the other threads pick up its share
// instead of waiting for a fixed half. Items are near-equal in whole micro-tiles.
struct WorkPlan {
  int64_t rowItems, colItems;
  int64_t maxItemRows;
  int64_t items() const { return rowItems * colItems; }
};

WorkPlan makePlan(const Kernels& k, int64_t M, int64_t nc, int64_t wantRowItems,
                  int64_t wantColItems) {
  const int64_t mUnits = ceilDiv(M, k.mr), nUnits = ceilDiv(nc, k.nr);
  WorkPlan p;
  p.rowItems = std::max<int64_t>(1, std::min(wantRowItems, mUnits));
  p.colItems = std::max<int64_t>(1, std::min(wantColItems, nUnits));
  p.maxItemRows = ceilDiv(mUnits, p.rowItems) * k.mr;
  return p;
}

// Splitting rows shares one packed B block between threads; splitting columns (for few rows)
// makes each thread pack the same A rows. Pick the one that finishes first by a tile-count
// estimate, where packing MR rows of A costs about a quarter of a micro-tile.
WorkPlan planBlock(const Kernels& k, int64_t mc, int64_t M, int64_t nc, int threads) {
  const int64_t minRowItems = ceilDiv(M, mc);  // an A block must fit in L2
  auto finishTime = [&](const WorkPlan& p) {
    const int64_t rowUnits = ceilDiv(ceilDiv(M, k.mr), p.rowItems);
    const int64_t colUnits = ceilDiv(ceilDiv(nc, k.nr), p.colItems);
    return ceilDiv(p.items(), threads) * rowUnits * (4 * colUnits + 1);
  };
  const WorkPlan splitRows = makePlan(k, M, nc, roundUp(minRowItems, threads), 1);
  const WorkPlan splitCols = makePlan(k, M, nc, minRowItems, threads);
  return finishTime(splitCols) < finishTime(splitRows) ? splitCols : splitRows;
}

int chooseThreadCount(const Kernels& k, const GemmArgs& g) {
  const double work = (double)g.M * (double)g.N * (double)g.K;
  const int64_t byWork = (int64_t)std::min<double>(work / (double)kMinWorkPerThread, 1 << 20);
  const int64_t tiles = ceilDiv(g.M, k.mr) * ceilDiv(g.N, k.nr);
  return (int)std::max<int64_t>(1, std::min<int64_t>({(int64_t)numThreads(), byWork, tiles}));
}

// Part `index` of `parts` near-equal parts of [0, total), cut at multiples of `unit`.
void splitRange(int64_t total, int64_t unit, int64_t parts, int64_t index, int64_t& begin,
                int64_t& end) {
  const int64_t units = ceilDiv(total, unit);
  begin = std::min(total, units * index / parts * unit);
  end = std::min(total, units * (index + 1) / parts * unit);
}

void waitUntilAtLeast(const std::atomic<int64_t>& counter, int64_t target) {
  for (uint32_t spins = 0; counter.load(std::memory_order_acquire) < target; ++spins) {
    if (spins < 4096) MP_GEMM_CPU_RELAX();
    else std::this_thread::yield();  // the packer was preempted: let it run
  }
}

thread_local AlignedBuffer tlsPackedA;
thread_local AlignedBuffer tlsPackedB;
thread_local AlignedBuffer tlsPartialSums;

// B panels per claim when threads share the packing of a B block.
constexpr int64_t kPanelsPerPackChunk = 4;

// Everything about one GEMM call that stays fixed across its (jc, pc) blocks.
struct GemmPlan {
  const Kernels* kernels;
  Operand a, b;
  Epilogue epilogue;
  int64_t M, N, K, ldc, kc, ncBlock, mc;
  bool multiK, partialInOut;
  float* workspace;  // FP32 partial sums when they cannot live in out
  char* packedB;
  int threads;
};

// One (jc, pc) block: the threads first share packing B (claiming chunks of panels), wait until
// all of it is packed, then claim row x column items. Waiting on a count of packed chunks rather
// than on a barrier of threads keeps this correct when parallelFor runs it on fewer threads.
void runBlock(const GemmPlan& plan, int64_t jc, int64_t nc, int64_t pc, const WorkPlan& work) {
  const int64_t kc = std::min(plan.kc, plan.K - pc);
  const Kernels& k = *plan.kernels;
  const int64_t panels = ceilDiv(nc, k.nr);
  const int64_t packChunks = ceilDiv(panels, kPanelsPerPackChunk);
  // Separate cache lines: every claim would otherwise bounce the line holding all three.
  alignas(64) std::atomic<int64_t> nextPackChunk{0};
  alignas(64) std::atomic<int64_t> packedChunks{0};
  alignas(64) std::atomic<int64_t> nextItem{0};

  TileJob base{};
  base.kc = kc;
  base.firstK = pc == 0;
  base.lastK = pc + kc == plan.K;
  base.packedB = plan.packedB;
  base.colOrigin = jc;
  if (plan.multiK) {
    base.partial = plan.partialInOut ? static_cast<float*>(plan.epilogue.out) + jc : plan.workspace;
    base.ldPartial = plan.partialInOut ? plan.ldc : plan.ncBlock;
  }
  base.epilogue = &plan.epilogue;

  auto doShare = [&](int64_t, int64_t) {
    void* packedA = tlsPackedA.reserve(k.panelBytes(work.maxItemRows, k.mr, kc));  // may throw E_OOM
    for (int64_t chunk; (chunk = nextPackChunk.fetch_add(1)) < packChunks;) {
      const int64_t col0 = chunk * kPanelsPerPackChunk * k.nr;
      const int64_t cols = std::min(col0 + kPanelsPerPackChunk * k.nr, nc) - col0;
      k.packPanels(plan.b, jc + col0, cols, pc, kc, k.nr, plan.packedB + k.panelBytes(col0, k.nr, kc));
      packedChunks.fetch_add(1, std::memory_order_release);
    }
    waitUntilAtLeast(packedChunks, packChunks);

    int64_t packedRowItem = -1;  // consecutive items of the same rows reuse the packed A
    for (int64_t item; (item = nextItem.fetch_add(1)) < work.items();) {
      const int64_t rowItem = item / work.colItems, colItem = item % work.colItems;
      TileJob job = base;
      splitRange(plan.M, k.mr, work.rowItems, rowItem, job.rowBegin, job.rowEnd);
      splitRange(nc, k.nr, work.colItems, colItem, job.colBegin, job.colEnd);
      job.colBegin += jc;
      job.colEnd += jc;
      if (rowItem != packedRowItem) {
        k.packPanels(plan.a, job.rowBegin, job.rowEnd - job.rowBegin, pc, kc, k.mr, packedA);
        packedRowItem = rowItem;
      }
      job.packedA = packedA;
      k.macroKernel(job);
    }
  };
  if (plan.threads > 1) parallelFor(plan.threads, doShare);
  else doShare(0, 1);
}

// The operands of one batch item.
struct GemmItem {
  const void* A;
  const void* B;
  const void* C;
  void* out;
  void* preAct;
};

void runGemm(const Kernels& kernels, const GemmArgs& g, const GemmItem& item, int threads) {
  GemmPlan plan{};
  plan.kernels = &kernels;
  plan.M = g.M;
  plan.N = g.N;
  plan.K = g.K;
  plan.ldc = g.ldc;
  plan.a = operandA(g, item.A);
  plan.b = operandB(g, item.B);
  plan.epilogue = {g.alpha, g.beta, item.C, g.cType, g.bias, g.biasType, g.act, item.out, g.outType, g.ldc,
                   g.alpha == 1.0f && g.beta == 0.0f && !g.bias && g.act == Act::None &&
                       g.outType == DType::F32 && !g.preAct,
                   item.preAct, g.preActType};

  // The epilogue reads C element by element just before writing out there, so C may be out
  // itself (GemmArgs::check() rejects every other overlap); the partial sums of the earlier K
  // blocks then must not live in out.
  const size_t extent = matrixExtent(g.M, g.N, g.ldc);
  const bool cOverlapsOut =
      g.beta != 0.0f && bytesOverlap(item.C, extent * dtype_size(g.cType), item.out, extent * dtype_size(g.outType));

  const Blocking blocks = blockingFor(kernels);
  plan.kc = balancedBlock(g.K, blocks.kc, kernels.kPerStep);  // K-pairs never straddle blocks
  plan.mc = blocks.mc;
  plan.multiK = plan.kc < g.K;
  // Partial sums of the earlier K blocks go straight into out when it is FP32, unless that
  // would overwrite C (same array) before the epilogue reads it.
  plan.partialInOut = plan.multiK && g.outType == DType::F32 && !cOverlapsOut;
  const bool partialInWorkspace = plan.multiK && !plan.partialInOut;
  const int64_t nr = kernels.nr;
  int64_t ncMax = blocks.nc;
  if (partialInWorkspace) {
    const int64_t budgetCols = (int64_t)(kMaxWorkspaceBytes / sizeof(float)) / g.M / nr * nr;
    ncMax = std::max<int64_t>(nr, std::min(ncMax, budgetCols));
  }
  plan.ncBlock = balancedBlock(g.N, ncMax, nr);
  plan.workspace = partialInWorkspace
                       ? static_cast<float*>(tlsPartialSums.reserve((size_t)(g.M * plan.ncBlock) * sizeof(float)))
                       : nullptr;
  plan.packedB = static_cast<char*>(tlsPackedB.reserve(kernels.panelBytes(plan.ncBlock, nr, plan.kc)));
  plan.threads = threads;

  for (int64_t jc = 0; jc < g.N; jc += plan.ncBlock) {
    const int64_t nc = std::min(plan.ncBlock, g.N - jc);
    const WorkPlan work = planBlock(kernels, plan.mc, g.M, nc, plan.threads);
    for (int64_t pc = 0; pc < g.K; pc += plan.kc) runBlock(plan, jc, nc, pc, work);
  }
  tlsPartialSums.releaseIfLargerThan(kKeepWorkspaceBytes);
}

GemmItem batchItem(const GemmArgs& g, int64_t b) {
  auto at = [](const void* p, DType t, int64_t stride, int64_t b) -> const char* {
    return p ? static_cast<const char*>(p) + (size_t)(b * stride) * dtype_size(t) : nullptr;
  };
  GemmItem it;
  it.A = at(g.A, g.aType, g.strideA, b);
  it.B = at(g.B, g.bType, g.strideB, b);
  it.C = g.beta != 0.0f ? at(g.C, g.cType, g.strideC, b) : nullptr;
  it.out = const_cast<char*>(at(g.out, g.outType, g.strideC, b));
  it.preAct = const_cast<char*>(at(g.preAct, g.preActType, g.strideC, b));
  return it;
}

void runBatched(const Kernels& kernels, const GemmArgs& g) {
  const int itemThreads = chooseThreadCount(kernels, g);
  const int64_t across = std::min<int64_t>(g.batch, numThreads());
  if (g.batch == 1 || across <= itemThreads) {
    for (int64_t b = 0; b < g.batch; ++b) runGemm(kernels, g, batchItem(g, b), itemThreads);
    return;
  }
  // Small items: the threads claim whole items (dynamically, so a thread that lost its core for
  // a while simply claims fewer), each item run on one thread with that thread's own buffers.
  alignas(64) std::atomic<int64_t> next{0};
  parallelFor(across, [&](int64_t, int64_t) {
    for (int64_t b; (b = next.fetch_add(1)) < g.batch;) runGemm(kernels, g, batchItem(g, b), 1);
  });
}

}  // namespace

std::string cpuFeatures() {
  const Isa isa = activeIsa();
  std::string s = std::string(isaName(isa)) + ": fp32 " + fp32KernelsOf(isa).name;
#if MP_X86
  if (isa == Isa::Avx512Bf16) s += std::string(", bf16 x bf16 ") + kAvx512Bf16Kernels.name;
#endif
  return s;
}

namespace cpu {
void gemm(const GemmArgs& args) {
  try {
    runBatched(kernelsFor(args), args);
  } catch (const std::bad_alloc&) {
    fail("E_OOM", "CPU GEMM: out of memory");
  }
}
}  // namespace cpu

}  // namespace mp
