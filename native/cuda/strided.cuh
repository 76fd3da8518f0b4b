// Internal to the CUDA backend: one kernel over a strided N-D index space (copy, binary).
//
// The host coalesces the space first (native/core/strided.h), so most calls arrive here with one
// or two dims. The space is cut into rows (all dims but the last) and each row into segments of
// at most 4 x 256 elements; a "unit" is one segment, processed by a power-of-two group of
// threads (as many as the row is long, up to the block), so short rows pack several units into a
// block and long rows spread over several blocks. A thread decomposes its unit's row index into
// per-operand offsets once (32-bit division where the sizes allow), then walks the segment with
// the last dim's strides: consecutive threads touch consecutive elements of the last dim.
// Shapes and strides travel by value in the __grid_constant__ parameter block.
#pragma once
#include <string>
#include "../core/strided.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {

struct StridedParams {
  int ndim;                          // >= 1
  int operands;                      // 1..3
  int64_t shape[kMaxDims];
  int64_t strides[3][kMaxDims];      // element strides per operand
  int64_t rows;                      // product of shape[0 .. ndim - 2]
  int64_t inner;                     // shape[ndim - 1]
  int64_t segLen, segs;              // a row = segs segments of segLen elements (the last shorter)
  int64_t units;                     // rows * segs
  int groupThreads;                  // threads per unit: a power of two <= kThreads
  int groupShift;                    // log2(groupThreads)
};

// F: __device__ void operator()(int64_t off0, int64_t off1, int64_t off2) const, the element
// offsets of one index in each operand (unused operands get 0).
template <class F>
__global__ void __launch_bounds__(kThreads) stridedKernel(const __grid_constant__ StridedParams p, const F f) {
  const int unitsPerBlock = kThreads >> p.groupShift;
  const int lane = (int)threadIdx.x & (p.groupThreads - 1);
  const int last = p.ndim - 1;
  const int64_t s0 = p.strides[0][last], s1 = p.strides[1][last], s2 = p.strides[2][last];
  for (int64_t u = (int64_t)blockIdx.x * unitsPerBlock + (threadIdx.x >> p.groupShift); u < p.units;
       u += (int64_t)gridDim.x * unitsPerBlock) {
    const int64_t row = divIndex(u, p.segs), seg = u - row * p.segs;
    int64_t o0 = 0, o1 = 0, o2 = 0, r = row;
    for (int d = last - 1; d >= 0; --d) {
      const int64_t q = divIndex(r, p.shape[d]), idx = r - q * p.shape[d];
      o0 += idx * p.strides[0][d];
      o1 += idx * p.strides[1][d];
      o2 += idx * p.strides[2][d];
      r = q;
    }
    const int64_t j0 = seg * p.segLen;
    const int64_t j1 = p.inner - j0 < p.segLen ? p.inner : j0 + p.segLen;
    for (int64_t j = j0 + lane; j < j1; j += p.groupThreads) f(o0 + j * s0, o1 + j * s1, o2 + j * s2);
  }
}

inline StridedParams planStrided(const StridedSpace& s) {
  StridedParams p{};
  p.ndim = s.ndim;
  p.operands = s.operands;
  for (int d = 0; d < s.ndim; ++d) {
    p.shape[d] = s.shape[d];
    for (int k = 0; k < s.operands; ++k) p.strides[k][d] = s.strides[k][d];
  }
  p.inner = s.shape[s.ndim - 1];
  p.rows = 1;
  for (int d = 0; d < s.ndim - 1; ++d) p.rows *= s.shape[d];
  int shift = 0;
  while ((1 << shift) < kThreads && (int64_t)(1 << shift) < p.inner) ++shift;
  p.groupShift = shift;
  p.groupThreads = 1 << shift;
  p.segLen = std::min<int64_t>(p.inner, 4 * (int64_t)p.groupThreads);
  p.segs = std::max<int64_t>(1, ceilDiv(p.inner, std::max<int64_t>(p.segLen, 1)));
  p.units = p.rows * p.segs;
  return p;
}

// Runs f over the space (size > 0). Results never depend on the grid: each element is one call.
template <class F>
void launchStrided(const StridedSpace& s, const F& f, const CudaContext& ctx, const char* name) {
  const StridedParams p = planStrided(s);
  if (p.units <= 0 || p.inner <= 0) return;
  const uint64_t unitsPerBlock = (uint64_t)(kThreads >> p.groupShift);
  const uint64_t cap = 4 * oneWave(ctx.multiprocessors, residentBlocks<stridedKernel<F>, kThreads>());
  stridedKernel<F><<<blocksFor((uint64_t)p.units, unitsPerBlock, cap), kThreads, 0, ctx.stream>>>(p, f);
  checkLaunch(name);
}

}  // namespace cuda
}  // namespace mp
