// Building blocks of the CPU op loops (copy.cpp, elementwise.cpp, softmax.cpp, nn.cpp, amp.cpp):
//
// - Fixed-size blocks over flat ranges. A block is the unit of threading AND of every flat
//   reduction's order, so sums never depend on the thread count (nn.cpp's header states the
//   determinism contract; every reduction here keeps it).
// - 8-lane FP32 sums: lane k takes the elements j with j % 8 == k, the lanes are then added
//   pairwise. A fixed order that the compiler keeps in one vector register.
// - Chunked widening to FP32 / narrowing from FP32 (F16C from the avx2 level up, isa.h;
//   bit-identical to native/shared/half.h), so the FP32 math in between runs on plain float
//   arrays that vectorise: each loop is an MP_ISA_BODY function run through onActiveIsa (isa.h),
//   so it is compiled once per level and runs the active one. No FMA contraction on any level
//   (-ffp-contract=off): the bits are the scalar ones everywhere. The per-element math itself always comes from native/shared/.
// - Walking the rows of a coalesced strided index space (native/core/strided.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <algorithm>

#include "../core/strided.h"
#include "../shared/dtype.h"
#include "isa.h"
#include "parallel.h"

namespace mp {
namespace cpu {

constexpr size_t kBlock = 1 << 14;      // elements per block of element-wise passes and flat reductions
constexpr size_t kCopyBlock = 1 << 16;  // elements per task of a plain copy / fill (memory-bound)
constexpr size_t kChunk = 256;          // elements widened / narrowed at a time (stays in L1)
constexpr size_t kExpBlock = 1 << 11;   // elements per task of row passes with exp / log per element

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// f(block, begin, end) over [0, n) in fixed blocks of `block` elements, the blocks split over
// the threads. The block boundaries depend only on n.
template <typename F>
void forBlocks(size_t n, F&& f, size_t block = kBlock) {
  const int64_t blocks = (int64_t)((n + block - 1) / block);
  if (blocks == 1) { f(0, 0, n); return; }
  parallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const size_t begin = (size_t)b * block, end = std::min(n, begin + block);
      f(b, begin, end);
    }
  });
}

// f(begin, end) over [0, n) in ceil(n / grain) near-equal tasks (inline when there is one).
// For work without a reduction across items, where any split gives the same result.
template <typename F>
void forRange(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  const int64_t tasks = ceilDiv(n, std::max<int64_t>(grain, 1));
  if (tasks == 1) { f((int64_t)0, n); return; }
  const int64_t q = n / tasks, r = n % tasks;  // task t starts at t * q + min(t, r)
  parallelFor(tasks, [&](int64_t t0, int64_t t1) { f(t0 * q + std::min(t0, r), t1 * q + std::min(t1, r)); });
}

// Items per task so that a task holds about `target` elements of `perItem` each (at least 1).
inline int64_t itemsPerTask(int64_t perItem, size_t target = kBlock) {
  return std::max<int64_t>(1, (int64_t)target / std::max<int64_t>(perItem, 1));
}

// An FP32 sum over 8 lanes: element j goes to lane j % 8; the total adds the lanes pairwise.
struct Lanes {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  void add(size_t j, float v) { a[j & 7] += v; }
  float total() const { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }
};
// Lanes over x[0..n), element j to lane j % 8 (the same bits as Lanes::add in index order).
float laneSum(const float* x, size_t n);
// Continues lanes.a over x[0..n) as if x followed the elements already added; every call but
// the last of a sequence must add a multiple of 8 elements.
void laneAdd(Lanes& lanes, const float* x, size_t n);
// Lanes over x[j] * y[j].
float laneDot(const float* x, const float* y, size_t n);

// The active level has F16C (the avx2 level and up); the F16C paths of the loops use it.
bool cpuHasF16C();

// dst[0..n) = elements [i0, i0 + n) of src as FP32 (exact).
void widen(const void* src, DType t, size_t i0, size_t n, float* dst);
// Elements [i0, i0 + n) of dst = src[0..n) rounded to t (RNE, native/shared/half.h's bits).
void narrow(const float* src, void* dst, DType t, size_t i0, size_t n);
// dst[j] = element off + j * stride of src as FP32, j < n (stride 0 broadcasts one element).
void widenStrided(const void* src, DType t, int64_t off, int64_t stride, size_t n, float* dst);
// src[0..n) as FP32 without a copy when it already is FP32 and contiguous, else widened into buf.
inline const float* floatsOf(const void* src, DType t, int64_t off, int64_t stride, size_t n, float* buf) {
  if (t == DType::F32 && stride == 1) return static_cast<const float*>(src) + off;
  widenStrided(src, t, off, stride, n, buf);
  return buf;
}
// Contiguous elements [i0, i0 + n) of src (type st) converted into the same elements of dst
// (type dt), through FP32 with RNE; raw bytes when st == dt. src and dst do not overlap.
void convert(const void* src, DType st, void* dst, DType dt, size_t i0, size_t n);

// The rows of a coalesced index space (every dim but the last), in row-major order, with each
// operand's element offset. Start at any row, then step with next().
struct RowWalker {
  const StridedSpace& s;
  int64_t idx[kMaxDims] = {};
  int64_t off[3] = {0, 0, 0};
  RowWalker(const StridedSpace& space, int64_t row) : s(space) {
    for (int d = s.ndim - 2; d >= 0; --d) {
      const int64_t q = row / s.shape[d];
      idx[d] = row - q * s.shape[d];
      row = q;
      for (int k = 0; k < s.operands; ++k) off[k] += idx[d] * s.strides[k][d];
    }
  }
  void next() {
    for (int d = s.ndim - 2; d >= 0; --d) {
      for (int k = 0; k < s.operands; ++k) off[k] += s.strides[k][d];
      if (++idx[d] < s.shape[d]) return;
      for (int k = 0; k < s.operands; ++k) off[k] -= s.shape[d] * s.strides[k][d];
      idx[d] = 0;
    }
  }
};

// Calls f(rowBegin, rowEnd, c0, c1) over a `rows` x `inner` index space in tasks of about
// kBlock elements: whole rows per task when rows are short, else column ranges of one row.
template <typename F>
void forRowSegments(int64_t rows, int64_t inner, F&& f, size_t block = kBlock) {
  if (rows <= 0 || inner <= 0) return;
  if (inner >= (int64_t)block) {
    const int64_t b = (int64_t)block, perRow = ceilDiv(inner, b);
    forRange(rows * perRow, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r = t / perRow, c = t % perRow;
        f(r, r + 1, c * b, std::min(inner, (c + 1) * b));
      }
    });
    return;
  }
  forRange(rows, itemsPerTask(inner, block), [&](int64_t r0, int64_t r1) { f(r0, r1, (int64_t)0, inner); });
}

}  // namespace cpu
}  // namespace mp
