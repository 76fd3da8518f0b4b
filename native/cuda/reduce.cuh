// Internal to the CUDA backend: the reductions' building blocks, shared by reduce.cu, softmax.cu,
// layernorm.cu and amp.cu.
//
// Every reduction here has an order fixed by the sizes alone (never by the SM count, the buffer
// addresses or timing; no float atomics), so a result is bitwise repeatable on a device:
//  * warp: a butterfly (shfl_xor 16, 8, 4, 2, 1); every lane ends with the same bits;
//  * row group (kGroup = 32: a warp, kGroup = kThreads: the block): each thread's elements in
//    index order, the warp butterfly, then the block's 8 warp results in warp order;
//  * column reduction (columnReduceKernel): a strip of 32 columns (one per lane), warp w adding
//    rows w, w + 8, ... of a row chunk in order, the 8 warps in warp order; with several row
//    chunks, their partials go to a workspace and sumPartsKernel adds them in chunk order;
//  * a sequence of partials (blockSumOrdered): thread t adds t, t + 256, ... in order, then the
//    block tree.
// The order differs from the CPU backend's, so sums can differ from the CPU's in the last bits.
#pragma once
#include <limits.h>
#include <string>
#include <type_traits>
#include "check.cuh"
#include "cuda_ops.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {

// Row kernels come in two widths, the template parameter kGroup: a warp per row for rows up to
// kWarpRowMax elements, a block (kThreads) per row above; grids of at most one wave.
constexpr int64_t kWarpRowMax = 1024;

template <int kGroup, auto Kernel>
unsigned rowBlocks(int64_t rows, const CudaContext& ctx) {
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<Kernel, kThreads>());
  return blocksFor((uint64_t)rows, kThreads / kGroup, cap);
}

// Calls launch(group) with group a std::integral_constant<int, kGroup> for rows of rowLength,
// and the kernel's name for the launch check: "<name><warp>" or "<name><block>".
template <class Launch>
void byRowWidth(int64_t rowLength, const char* name, Launch&& launch) {
  if (rowLength <= kWarpRowMax) launch(std::integral_constant<int, 32>{});
  else launch(std::integral_constant<int, kThreads>{});
  checkLaunch((std::string(name) + (rowLength <= kWarpRowMax ? "<warp>" : "<block>")).c_str());
}

// ---- warp and row-group sums --------------------------------------------------------------

__device__ __forceinline__ float warpAllSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
__device__ __forceinline__ int warpAllSumInt(int v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
// fmaxf ignores a NaN operand; a NaN in a softmax row still makes the row's sum (so the whole
// row) NaN, as PyTorch.
__device__ __forceinline__ float warpAllMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over a row group, the same bits in every thread of the group. For the block, every thread
// must call it (it has barriers); scratch is kWarps floats of shared memory, reusable by the next
// call (its first barrier waits for this call's readers).
template <int kGroup>
__device__ __forceinline__ float groupSum(float v, float* scratch) {
  v = warpAllSum(v);
  if constexpr (kGroup == 32) {
    return v;
  } else {
    static_assert(kGroup == kThreads, "a row group is a warp or the block");
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = scratch[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) s = __fadd_rn(s, scratch[w]);
    return s;
  }
}

// Two sums at once (scratch: 2 * kWarps floats).
template <int kGroup>
__device__ __forceinline__ void groupSum2(float& a, float& b, float* scratch) {
  a = warpAllSum(a);
  b = warpAllSum(b);
  if constexpr (kGroup == kThreads) {
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) {
      scratch[threadIdx.x >> 5] = a;
      scratch[kWarps + (threadIdx.x >> 5)] = b;
    }
    __syncthreads();
    float sa = scratch[0], sb = scratch[kWarps];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      sa = __fadd_rn(sa, scratch[w]);
      sb = __fadd_rn(sb, scratch[kWarps + w]);
    }
    a = sa;
    b = sb;
  }
}

template <int kGroup>
__device__ __forceinline__ float groupMax(float v, float* scratch) {
  v = warpAllMax(v);
  if constexpr (kGroup == 32) {
    return v;
  } else {
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = scratch[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
    return m;
  }
}

// The row maximum and its first index, as a sequential scan (mx = z[0]; z[c] > mx replaces)
// finds them: a NaN at index 0 wins outright (the scan's mx then stays NaN); NaNs elsewhere
// never win; among equal values the lowest index. Candidates are (value, index); index < 0 is
// "none". A total order on the candidates, so any reduction tree picks the same one.
__device__ __forceinline__ bool betterMax(float bv, long long bi, float av, long long ai) {
  if (bi < 0) return false;
  if (ai < 0) return true;
  if (ai == 0 && av != av) return false;
  if (bi == 0 && bv != bv) return true;
  return bv > av || (bv == av && bi < ai);
}
// Offers element c with value z to a thread's running (mx, arg).
__device__ __forceinline__ void offerMax(float z, long long c, float& mx, long long& arg) {
  if ((z == z || c == 0) && betterMax(z, c, mx, arg)) { mx = z; arg = c; }
}

template <int kGroup>
__device__ __forceinline__ void groupArgMax(float& mx, long long& arg, float* scratchV, long long* scratchI) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, mx, offset);
    const long long oi = __shfl_xor_sync(0xffffffffu, arg, offset);
    if (betterMax(ov, oi, mx, arg)) { mx = ov; arg = oi; }
  }
  if constexpr (kGroup == kThreads) {
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) {
      scratchV[threadIdx.x >> 5] = mx;
      scratchI[threadIdx.x >> 5] = arg;
    }
    __syncthreads();
    mx = scratchV[0];
    arg = scratchI[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w)
      if (betterMax(scratchV[w], scratchI[w], mx, arg)) { mx = scratchV[w]; arg = scratchI[w]; }
  }
}

// ---- a sequence of partials, summed by one block -------------------------------------------

// values[0 .. count) summed in a fixed order; the result in every thread. Every thread of the
// block must call it (launched with kThreads threads). `values` was written by an earlier kernel.
__device__ __forceinline__ float blockSumOrdered(const float* values, size_t count, float* scratch) {
  float s = 0.0f;
  for (size_t k = threadIdx.x; k < count; k += kThreads) s = __fadd_rn(s, values[k]);
  return groupSum<kThreads>(s, scratch);
}
// Integer sums are exact in any order; once per kernel.
__device__ __forceinline__ int blockSumOrderedInt(const int* values, size_t count) {
  __shared__ int si[kWarps];
  int s = 0;
  for (size_t k = threadIdx.x; k < count; k += kThreads) s += values[k];
  s = warpAllSumInt(s);
  if ((threadIdx.x & 31u) == 0) si[threadIdx.x >> 5] = s;
  __syncthreads();
  int total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += si[w];
  return total;
}

// ---- column reductions: out[o, i] = epilogue(sum over r of elem(o, r, i)) -------------------

// The cut of a column reduction over [outer, R, inner] into blocks: blockIdx.x a strip of 32
// columns of one outer index, blockIdx.y a chunk of rows. A function of the sizes only.
struct ColumnPlan {
  int64_t outer, R, inner;
  int64_t stripsPerOuter;  // ceil(inner / 32)
  int64_t rowsPerChunk;
  unsigned chunks;         // >= 1; > 1: partials in `part`, added by sumPartsKernel
  int64_t count;           // outputs: outer * inner
  float* part;             // [kSums][chunks][count] when chunks > 1
};

constexpr int kColumnStrip = 32;
constexpr int64_t kColumnTargetBlocks = 2048;  // split rows until the grid has about this many blocks
constexpr int64_t kColumnMinRows = 64;         // ... with at least this many rows per chunk

inline ColumnPlan planColumns(int64_t outer, int64_t R, int64_t inner) {
  ColumnPlan g{};
  g.outer = outer; g.R = R; g.inner = inner;
  g.stripsPerOuter = ceilDiv(inner, kColumnStrip);
  g.count = outer * inner;
  const int64_t strips = outer * g.stripsPerOuter;
  if (strips > INT_MAX) fail("E_ARG", "reduction: " + std::to_string(strips) + " column strips exceed the CUDA grid");
  int64_t chunks = std::max<int64_t>(1, kColumnTargetBlocks / strips);
  chunks = std::min({chunks, std::max<int64_t>(1, ceilDiv(R, kColumnMinRows)), (int64_t)65535});
  g.rowsPerChunk = std::max<int64_t>(1, ceilDiv(R, chunks));
  g.chunks = (unsigned)std::max<int64_t>(1, ceilDiv(R, g.rowsPerChunk));  // no empty chunk
  return g;
}

// Elem: __device__ void operator()(int64_t o, int64_t r, int64_t i, float (&v)[kSums]) const
//       (the values element (o, r, i) adds to each sum);
// Epi:  __device__ void operator()(int64_t j, const float (&s)[kSums]) const
//       (stores output j = o * inner + i from its sums).
// Each output is written by one thread after all its rows were read: outputs may alias inputs.
template <int kSums, class Elem, class Epi>
__global__ void __launch_bounds__(kThreads) columnReduceKernel(const __grid_constant__ ColumnPlan g, const Elem elem,
                                                                 const Epi epi) {
  __shared__ float part[kSums][kWarps][kColumnStrip];
  const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
  const int64_t o = divIndex((int64_t)blockIdx.x, g.stripsPerOuter);
  const int64_t i = ((int64_t)blockIdx.x - o * g.stripsPerOuter) * kColumnStrip + lane;
  const bool active = i < g.inner;
  const int64_t r0 = (int64_t)blockIdx.y * g.rowsPerChunk;
  const int64_t r1 = g.R - r0 < g.rowsPerChunk ? g.R : r0 + g.rowsPerChunk;
  float acc[kSums];
#pragma unroll
  for (int s = 0; s < kSums; ++s) acc[s] = 0.0f;
  if (active) {
#pragma unroll 4
    for (int64_t r = r0 + warp; r < r1; r += kWarps) {
      float v[kSums];
      elem(o, r, i, v);
#pragma unroll
      for (int s = 0; s < kSums; ++s) acc[s] = __fadd_rn(acc[s], v[s]);
    }
  }
#pragma unroll
  for (int s = 0; s < kSums; ++s) part[s][warp][lane] = acc[s];
  __syncthreads();
  if (warp != 0 || !active) return;
  float total[kSums];
#pragma unroll
  for (int s = 0; s < kSums; ++s) {
    total[s] = part[s][0][lane];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) total[s] = __fadd_rn(total[s], part[s][w][lane]);
  }
  const int64_t j = o * g.inner + i;
  if (g.chunks == 1) {
    epi(j, total);
  } else {
#pragma unroll
    for (int s = 0; s < kSums; ++s)
      g.part[((size_t)s * g.chunks + blockIdx.y) * (size_t)g.count + (size_t)j] = total[s];
  }
}

// out j = epi(sum over c < chunks of part[s][c][j]), chunks in order; chunks may be 0 (sums 0).
template <int kSums, class Epi>
__global__ void __launch_bounds__(kThreads) sumPartsKernel(const float* part, unsigned chunks, int64_t count,
                                                             const Epi epi) {
  for (size_t j = globalThread(); j < (size_t)count; j += gridThreads()) {
    float s[kSums];
#pragma unroll
    for (int k = 0; k < kSums; ++k) {
      s[k] = 0.0f;
      for (unsigned c = 0; c < chunks; ++c) s[k] = __fadd_rn(s[k], part[((size_t)k * chunks + c) * (size_t)count + j]);
    }
    epi((int64_t)j, s);
  }
}

template <int kSums, class Epi>
void launchSumParts(const float* part, unsigned chunks, int64_t count, const Epi& epi, const CudaContext& ctx) {
  if (count <= 0) return;
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<sumPartsKernel<kSums, Epi>, kThreads>());
  sumPartsKernel<kSums, Epi><<<blocksFor((uint64_t)count, kThreads, cap), kThreads, 0, ctx.stream>>>(part, chunks, count, epi);
  checkLaunch("sumPartsKernel");
}

// The whole column reduction: one kernel, plus sumPartsKernel over a workspace when the rows are
// cut into chunks. R == 0 writes epi(j, 0) for every output. count == 0 launches nothing.
template <int kSums, class Elem, class Epi>
void launchColumnReduce(int64_t outer, int64_t R, int64_t inner, const Elem& elem, const Epi& epi,
                        const CudaContext& ctx) {
  if (outer <= 0 || inner <= 0) return;
  if (R <= 0) {
    launchSumParts<kSums>(nullptr, 0, outer * inner, epi, ctx);
    return;
  }
  ColumnPlan g = planColumns(outer, R, inner);
  Workspace ws;
  if (g.chunks > 1) {
    ws.reset(ctx, (size_t)kSums * g.chunks * (size_t)g.count * sizeof(float));
    g.part = ws.as<float>();
  }
  const dim3 grid((unsigned)(g.outer * g.stripsPerOuter), g.chunks);
  columnReduceKernel<kSums, Elem, Epi><<<grid, kThreads, 0, ctx.stream>>>(g, elem, epi);
  checkLaunch("columnReduceKernel");
  if (g.chunks > 1) launchSumParts<kSums>(g.part, g.chunks, g.count, epi, ctx);
}

}  // namespace cuda
}  // namespace mp
