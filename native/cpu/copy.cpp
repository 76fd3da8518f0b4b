// Memory-shaped ops: fill and copy (strided N-D, with cast). No reductions, so how the work is
// split over threads never changes a bit of the result. Semantics at FillArgs / CopyArgs
// (native/core/op_args.h).
//
// copy first coalesces the index space (native/core/strided.h): dims every operand walks
// contiguously merge, size-1 dims drop. Then, fastest first:
//   1. one contiguous run on both sides: memcpy (same dtype) or a chunked cast, split over threads;
//   2. a transpose (out contiguous along the last dim, x contiguous along another): 32 x 32 tiles,
//      so both sides touch whole cache lines;
//   3. anything else: row by row over the last dim, contiguous rows as in 1, strided rows per element.
// Same-dtype copies move raw elements (bit-exact, NaN payloads included; the only way int32 moves);
// casts go through FP32 with the shared RNE (native/shared/half.h).
#include <string.h>

#include "../shared/elementwise.h"
#include "cpu_backend.h"
#include "loops.h"

namespace mp {
namespace cpu {
namespace {

constexpr int64_t kTile = 32;

// One element of a strided copy: raw when the dtypes match, else through FP32.
inline void copyElement(const void* x, DType xt, int64_t xo, void* out, DType ot, int64_t oo) {
  if (xt == ot) {
    if (dtype_size(xt) == 4) static_cast<uint32_t*>(out)[oo] = static_cast<const uint32_t*>(x)[xo];
    else static_cast<uint16_t*>(out)[oo] = static_cast<const uint16_t*>(x)[xo];
  } else {
    store_f32(out, ot, (size_t)oo, load_f32(x, xt, (size_t)xo));
  }
}

// A row of `n` elements, out at oo with stride so, x at xo with stride sx.
template <typename T>
void rawRow(const T* x, int64_t sx, T* out, int64_t so, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j * so] = x[j * sx];
}
void copyRow(const void* x, DType xt, int64_t xo, int64_t sx, void* out, DType ot, int64_t oo, int64_t so, int64_t n) {
  if (sx == 1 && so == 1) {
    // convert() works on equal element indices; shift the bases so both runs start at index 0.
    const void* xb = static_cast<const char*>(x) + xo * (int64_t)dtype_size(xt);
    void* ob = static_cast<char*>(out) + oo * (int64_t)dtype_size(ot);
    convert(xb, xt, ob, ot, 0, (size_t)n);
    return;
  }
  if (xt == ot && dtype_size(xt) == 4) return rawRow(static_cast<const uint32_t*>(x) + xo, sx, static_cast<uint32_t*>(out) + oo, so, n);
  if (xt == ot) return rawRow(static_cast<const uint16_t*>(x) + xo, sx, static_cast<uint16_t*>(out) + oo, so, n);
  for (int64_t j = 0; j < n; ++j) store_f32(out, ot, (size_t)(oo + j * so), load_f32(x, xt, (size_t)(xo + j * sx)));
}

// The transpose path: dims `jd` (x stride 1) and the last (out stride 1) tiled, the remaining dims
// walked as "planes". s is the coalesced space with operand 0 = out, 1 = x.
void copyTransposed(const CopyArgs& a, const StridedSpace& s, int jd) {
  const int last = s.ndim - 1;
  // The plane space: every dim but jd and last, as its own coalesced-style space for the walker.
  StridedSpace planes;
  planes.operands = 2;
  for (int d = 0; d < s.ndim; ++d) {
    if (d == jd || d == last) continue;
    planes.shape[planes.ndim] = s.shape[d];
    for (int k = 0; k < 2; ++k) planes.strides[k][planes.ndim] = s.strides[k][d];
    planes.ndim += 1;
  }
  // A trailing dummy dim so RowWalker (which walks all dims but the last) walks every plane dim.
  planes.shape[planes.ndim] = 1;
  planes.ndim += 1;
  const int64_t planeCount = planes.size();
  const int64_t J = s.shape[jd], L = s.shape[last];
  const int64_t soJ = s.strides[0][jd], sxL = s.strides[1][last];
  const int64_t strips = ceilDiv(J, kTile);
  forRange(planeCount * strips, itemsPerTask(kTile * L, kCopyBlock), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t plane = t / strips, j0 = (t % strips) * kTile, j1 = std::min(J, j0 + kTile);
      const RowWalker w(planes, plane);
      for (int64_t l0 = 0; l0 < L; l0 += kTile) {
        const int64_t l1 = std::min(L, l0 + kTile);
        for (int64_t j = j0; j < j1; ++j) {
          const int64_t oo = w.off[0] + j * soJ, xo = w.off[1] + j;
          for (int64_t l = l0; l < l1; ++l) copyElement(a.x, a.xType, xo + l * sxL, a.out, a.outType, oo + l);
        }
      }
    }
  });
}

}  // namespace

void fill(const FillArgs& a) {
  if (a.n == 0) return;
  if (dtype_size(a.outType) == 4) {
    uint32_t bits;
    if (a.outType == DType::I32) {
      const int32_t v = f32_to_i32_rne(a.value);
      memcpy(&bits, &v, 4);
    } else {
      memcpy(&bits, &a.value, 4);
    }
    uint32_t* d = static_cast<uint32_t*>(a.out);
    forBlocks(a.n, [&](int64_t, size_t begin, size_t end) { std::fill(d + begin, d + end, bits); }, kCopyBlock);
    return;
  }
  const uint16_t bits = a.outType == DType::F16 ? f32_to_f16_bits(a.value) : f32_to_bf16_bits(a.value);
  uint16_t* d = static_cast<uint16_t*>(a.out);
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) { std::fill(d + begin, d + end, bits); }, kCopyBlock);
}

void copy(const CopyArgs& a) {
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] == 0) return;
  const int64_t* strides[2] = {a.outStrides, a.xStrides};
  const StridedSpace s = coalesce(a.ndim, a.shape, strides, 2);
  if (a.x == a.out && a.xType == a.outType) {  // the same array walked the same way: nothing moves
    bool same = true;
    for (int d = 0; d < s.ndim; ++d) same = same && s.strides[0][d] == s.strides[1][d];
    if (same) return;
  }
  const int last = s.ndim - 1;

  // 1. One contiguous run on both sides.
  if (s.ndim == 1 && s.strides[0][0] == 1 && s.strides[1][0] == 1) {
    const size_t n = (size_t)s.shape[0];
    forBlocks(n, [&](int64_t, size_t begin, size_t end) { convert(a.x, a.xType, a.out, a.outType, begin, end - begin); },
              kCopyBlock);
    return;
  }

  // 2. A transpose: out contiguous along the last dim, x along another dim (of a few tiles).
  if (s.ndim >= 2 && s.strides[0][last] == 1 && s.strides[1][last] != 1 && s.shape[last] >= 8) {
    for (int d = last - 1; d >= 0; --d)
      if (s.strides[1][d] == 1 && s.shape[d] >= 8) return copyTransposed(a, s, d);
  }

  // 3. Row by row over the last dim.
  const int64_t inner = s.shape[last], rows = s.size() / inner;
  forRowSegments(rows, inner, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    RowWalker w(s, r0);
    for (int64_t r = r0; r < r1; ++r, w.next())
      copyRow(a.x, a.xType, w.off[1] + c0 * s.strides[1][last], s.strides[1][last], a.out, a.outType,
              w.off[0] + c0 * s.strides[0][last], s.strides[0][last], c1 - c0);
  }, kCopyBlock);
}

}  // namespace cpu
}  // namespace mp
