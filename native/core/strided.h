// Host-side helpers for strided N-D index spaces, shared by the CPU loops and the CUDA launchers:
// coalescing merges adjacent dims that every operand walks contiguously (so a contiguous copy is
// one flat loop and a bias-like broadcast is a 2-D one), as PyTorch's TensorIterator does.
#pragma once
#include <stdint.h>
#include "op_args.h"

namespace mp {

// An index space of up to kMaxDims dims with the element strides of up to 3 operands.
struct StridedSpace {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[3][kMaxDims] = {};
  int operands = 0;

  int64_t size() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  // Offset of the linear (row-major) index `i` in operand k.
  int64_t offset(int k, int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t q = i / shape[d];
      off += (i - q * shape[d]) * strides[k][d];
      i = q;
    }
    return off;
  }
};

// Builds the space from a shape and the operands' strides, dropping size-1 dims and merging
// dim d into d+1 whenever stride_k[d] == shape[d+1] * stride_k[d+1] for every operand k.
// A space with no dims left (a scalar, or all size-1) has ndim 1, shape [1].
inline StridedSpace coalesce(int ndim, const int64_t* shape, const int64_t* const* strides, int operands) {
  StridedSpace s;
  s.operands = operands;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    if (s.ndim > 0) {
      const int last = s.ndim - 1;
      bool merge = true;
      for (int k = 0; k < operands; ++k)
        if (s.strides[k][last] != shape[d] * strides[k][d]) { merge = false; break; }
      if (merge) {
        s.shape[last] *= shape[d];
        for (int k = 0; k < operands; ++k) s.strides[k][last] = strides[k][d];
        continue;
      }
    }
    s.shape[s.ndim] = shape[d];
    for (int k = 0; k < operands; ++k) s.strides[k][s.ndim] = strides[k][d];
    s.ndim += 1;
  }
  if (s.ndim == 0) {
    s.ndim = 1;
    s.shape[0] = 1;
    for (int k = 0; k < operands; ++k) s.strides[k][0] = 1;
  }
  return s;
}

// Row-major contiguous strides of a shape.
inline void contiguousStrides(int ndim, const int64_t* shape, int64_t* out) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) { out[d] = s; s *= shape[d]; }
}

}  // namespace mp
