// CUDA reduceSum: out[o, i] = alpha * sum_r x[o, r, i] + beta * out[o, i] (ReduceArgs,
// native/core/op_args.h), FP32 sums, the output through the shared reduce_output. The order of
// every sum is fixed by (outer, R, inner) alone, so results are bitwise repeatable on a device
// (they may differ from the CPU backend's in the last bits: its order is another one).
//
//  * inner >= 32 (columns: bias gradients, sums over a middle dim): columnReduceKernel
//    (reduce.cuh): a strip of 32 columns per block, rows in chunks, partials in a workspace
//    when there are several chunks.
//  * inner < 32 (rows; inner == 1 is the contiguous case: means over the last dim, global sums):
//    rowReduceKernel<kGroup>: one row (o, i) per group of kGroup threads, a warp for R <= 1024,
//    else the block; a long row of a few rows is cut into segments (their partials added in
//    segment order by sumPartsKernel). Within a segment, thread t adds chunks of 4 elements
//    t, t + kGroup, ... in order (one 16- or 8-byte load per chunk where the row is contiguous
//    and aligned, the same elements one by one where not), then the group tree.
//  * R == 0: out = reduce_output(alpha, 0, beta, out).
#include "../shared/elementwise.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

// kWarpRowMax (reduce.cuh): rows up to this long go to one warp each
constexpr int64_t kRowTargetBlocks = 2048;  // cut long rows until the grid has about this many units
constexpr int64_t kMinSegment = 4096;       // ... with at least this many elements per segment

struct ReduceOutput {
  float alpha, beta;
  void* out; DType outType;
  __device__ __forceinline__ void operator()(int64_t j, const float (&s)[1]) const {
    const float old = beta != 0.0f ? load_f32(out, outType, (size_t)j) : 0.0f;
    store_f32(out, outType, (size_t)j, reduce_output(alpha, s[0], beta, old));
  }
};

struct ReduceElement {
  const void* x; DType xType;
  int64_t R, inner;
  __device__ __forceinline__ void operator()(int64_t o, int64_t r, int64_t i, float (&v)[1]) const {
    v[0] = load_f32(x, xType, (size_t)((o * R + r) * inner + i));
  }
};

struct RowReduceParams {
  const void* x; DType xType;
  int64_t rows, R, inner;  // row (o, i) = o * inner + i: elements x[o, r, i], r < R
  int64_t segLen, segs;    // segLen a multiple of 4
  ReduceOutput output;     // segs == 1
  float* part;             // segs > 1: [segs][rows]
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) rowReduceKernel(const __grid_constant__ RowReduceParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t units = p.rows * p.segs;
  for (int64_t u = (int64_t)blockIdx.x * kGroups + group; u < units; u += (int64_t)gridDim.x * kGroups) {
    const int64_t row = divIndex(u, p.segs), seg = u - row * p.segs;
    const int64_t o = divIndex(row, p.inner), i = row - o * p.inner;
    const int64_t r0 = seg * p.segLen, len = p.R - r0 < p.segLen ? p.R - r0 : p.segLen;
    const int64_t chunks = ceilDiv(len, 4);
    float s = 0.0f;
    if (p.inner == 1) {
      const RowIn x = rowIn(p.x, p.xType, (size_t)(o * p.R + r0));
      for (int64_t q = rank; q < chunks; q += kGroup) {
        const int64_t j0 = 4 * q;
        const int count = chunkCount(j0, len);
        float v[4];
        x.chunk(j0, count, v);
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (k < count) s = __fadd_rn(s, v[k]);
      }
    } else {
      const size_t base = (size_t)((o * p.R + r0) * p.inner + i);
      for (int64_t q = rank; q < chunks; q += kGroup) {
        const int64_t j0 = 4 * q;
        const int count = chunkCount(j0, len);
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (k < count) s = __fadd_rn(s, load_f32(p.x, p.xType, base + (size_t)(j0 + k) * (size_t)p.inner));
      }
    }
    s = groupSum<kGroup>(s, scratch);
    if (rank == 0) {
      if (p.segs == 1) {
        const float total[1] = {s};
        p.output(row, total);
      } else {
        p.part[(size_t)seg * (size_t)p.rows + (size_t)row] = s;
      }
    }
  }
}

}  // namespace

void reduceSum(const ReduceArgs& a, const CudaContext& ctx) {
  if (a.outer == 0 || a.inner == 0) return;
  const ReduceOutput output{a.alpha, a.beta, a.out, a.outType};
  if (a.R == 0) {
    launchSumParts<1>(nullptr, 0, a.outer * a.inner, output, ctx);
    return;
  }
  if (a.inner >= kColumnStrip) {
    launchColumnReduce<1>(a.outer, a.R, a.inner, ReduceElement{a.x, a.xType, a.R, a.inner}, output, ctx);
    return;
  }
  RowReduceParams p{};
  p.x = a.x; p.xType = a.xType;
  p.rows = a.outer * a.inner;
  p.R = a.R;
  p.inner = a.inner;
  p.output = output;
  p.segs = 1;
  p.segLen = a.R;
  if (a.R > kWarpRowMax && p.rows < kRowTargetBlocks) {
    const int64_t segs = std::min(ceilDiv(kRowTargetBlocks, p.rows), std::max<int64_t>(1, a.R / kMinSegment));
    p.segLen = ceilDiv(ceilDiv(a.R, segs), 4) * 4;
    p.segs = ceilDiv(a.R, p.segLen);
  }
  Workspace ws;
  if (p.segs > 1) {
    ws.reset(ctx, (size_t)p.segs * (size_t)p.rows * sizeof(float));
    p.part = ws.as<float>();
  }
  const uint64_t units = (uint64_t)(p.rows * p.segs);
  if (a.R <= kWarpRowMax) {
    const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<rowReduceKernel<32>, kThreads>());
    rowReduceKernel<32><<<blocksFor(units, kThreads / 32, cap), kThreads, 0, ctx.stream>>>(p);
    checkLaunch("rowReduceKernel<warp>");
  } else {
    const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<rowReduceKernel<kThreads>, kThreads>());
    rowReduceKernel<kThreads><<<blocksFor(units, 1, cap), kThreads, 0, ctx.stream>>>(p);
    checkLaunch("rowReduceKernel<block>");
  }
  if (p.segs > 1) launchSumParts<1>(p.part, (unsigned)p.segs, p.rows, output, ctx);
}

}  // namespace cuda
}  // namespace mp
