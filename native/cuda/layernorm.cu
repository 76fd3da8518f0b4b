// CUDA layer norm, forward and backward. Semantics at LayerNormArgs / LayerNormBackwardArgs
// (native/core/op_args.h); per-element math native/shared/nn.h (ln_rstd, ln_xhat, ln_affine,
// ln_dx), the gradient sums' output through reduce_output (elementwise.h), as the CPU does.
//
//  * layerNormForwardKernel<kGroup> / layerNormBackwardKernel<kGroup> (dx): one row per group
//    of kGroup threads (a warp up to 1024 columns, else the block), grid-stride over rows, one
//    wave of blocks. Statistics in FP32, two passes (mean, then the variance about it; biased);
//    passes walk chunks of 4 (vector accesses where the row is aligned) and end in a group
//    reduction that leaves the same bits in every thread of the group (reduce.cuh). Absent
//    gamma / beta read as 1 / 0.
//  * dgamma / dbeta: a column reduction over the M rows (columnReduceKernel, reduce.cuh) of
//    (dy * xhat, dy), xhat recomputed from x and the saved mean / rstd; with accumulate the sums
//    are added to the values already there (read in the same thread that writes them). They run
//    before dx, so an in-place dx (over dy) cannot change what they read.
#include "../shared/elementwise.h"
#include "../shared/nn.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {



// Chunk j0 of an optional [N] vector (gamma, beta): `absent` where there is none.
__device__ __forceinline__ void vectorChunk(const RowIn& v, int64_t j0, int count, float absent, float (&out)[4]) {
  if (v.p != nullptr) {
    v.chunk(j0, count, out);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = absent;
  }
}

__device__ __forceinline__ RowIn optionalRow(const void* p, DType t) {
  return p != nullptr ? rowIn(p, t, 0) : RowIn{nullptr, t, false};
}

struct LnForwardParams {
  const void* x; DType xType;
  const void* gamma; const void* beta; DType gType;  // each may be null
  int64_t M, N;  // N >= 1
  float eps;
  void* y; DType yType;
  float* mean; float* rstd;
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) layerNormForwardKernel(const __grid_constant__ LnForwardParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N, chunks = ceilDiv(N, 4);
  const RowIn gamma = optionalRow(p.gamma, p.gType), beta = optionalRow(p.beta, p.gType);
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)(row * N);
    const RowIn x = rowIn(p.x, p.xType, off);
    float s = 0.0f;
    forRowChunks<kGroup>(x, N, rank, [&](float e, int64_t) { s += e; });
    s = groupSum<kGroup>(s, scratch);
    const float mean = s / (float)N;
    float var = 0.0f;
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float v[4];
      x.chunk(4 * q, count, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float d = v[k] - mean;
        if (k < count) var += d * d;
      }
    }
    var = groupSum<kGroup>(var, scratch);
    const float rstd = ln_rstd(var / (float)N, p.eps);
    const RowOut y = rowOut(p.y, p.yType, off);
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float v[4], g[4], b[4];
      x.chunk(4 * q, count, v);
      vectorChunk(gamma, 4 * q, count, 1.0f, g);
      vectorChunk(beta, 4 * q, count, 0.0f, b);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = ln_affine(ln_xhat(v[k], mean, rstd), g[k], b[k]);
      y.chunk(4 * q, count, v);
    }
    if (rank == 0) {
      p.mean[row] = mean;
      p.rstd[row] = rstd;
    }
  }
}

struct LnBackwardParams {
  const void* dy; DType dyType;
  const void* x; DType xType;
  const void* gamma; DType gType;  // may be null
  const float* mean; const float* rstd;
  int64_t M, N;  // N >= 1
  void* dx; DType dxType;
};

// dx only.
template <int kGroup>
__global__ void __launch_bounds__(kThreads) layerNormBackwardKernel(const __grid_constant__ LnBackwardParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[2 * kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N, chunks = ceilDiv(N, 4);
  const RowIn gamma = optionalRow(p.gamma, p.gType);
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)(row * N);
    const RowIn x = rowIn(p.x, p.xType, off), dy = rowIn(p.dy, p.dyType, off);
    const float mean = p.mean[row], rstd = p.rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float xv[4], dv[4], gv[4];
      x.chunk(4 * q, count, xv);
      dy.chunk(4 * q, count, dv);
      vectorChunk(gamma, 4 * q, count, 1.0f, gv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float xhat = ln_xhat(xv[k], mean, rstd);
        const float g = dv[k] * gv[k];
        if (k < count) {
          sg += g;
          sgx += g * xhat;
        }
      }
    }
    groupSum2<kGroup>(sg, sgx, scratch);
    const float mg = sg / (float)N, mgx = sgx / (float)N;
    const RowOut dx = rowOut(p.dx, p.dxType, off);
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float xv[4], dv[4], gv[4];
      x.chunk(4 * q, count, xv);
      dy.chunk(4 * q, count, dv);
      vectorChunk(gamma, 4 * q, count, 1.0f, gv);
#pragma unroll
      for (int k = 0; k < 4; ++k) dv[k] = ln_dx(dv[k] * gv[k], ln_xhat(xv[k], mean, rstd), mg, mgx, rstd);
      dx.chunk(4 * q, count, dv);
    }
  }
}

// Element (row m, column j) of the dgamma / dbeta sums: (dy * xhat, dy).
struct LnGradElement {
  const void* dy; DType dyType;
  const void* x; DType xType;
  const float* mean; const float* rstd;
  int64_t N;
  __device__ __forceinline__ void operator()(int64_t, int64_t m, int64_t j, float (&v)[2]) const {
    const size_t i = (size_t)(m * N + j);
    const float d = load_f32(dy, dyType, i);
    v[0] = d * ln_xhat(load_f32(x, xType, i), mean[m], rstd[m]);
    v[1] = d;
  }
};

struct LnGradOutput {
  void* dgamma; void* dbeta; DType t;  // each may be null
  bool accumulate;
  __device__ __forceinline__ void store(void* out, int64_t j, float sum) const {
    const float beta = accumulate ? 1.0f : 0.0f;
    const float old = accumulate ? load_f32(out, t, (size_t)j) : 0.0f;
    store_f32(out, t, (size_t)j, reduce_output(1.0f, sum, beta, old));
  }
  __device__ __forceinline__ void operator()(int64_t j, const float (&s)[2]) const {
    if (dgamma != nullptr) store(dgamma, j, s[0]);
    if (dbeta != nullptr) store(dbeta, j, s[1]);
  }
};

}  // namespace

void layerNormForward(const LayerNormArgs& a, const CudaContext& ctx) {
  if (a.M == 0) return;
  const LnForwardParams p{a.x, a.xType, a.gamma, a.beta, a.gType, a.M, a.N, a.eps, a.y, a.yType, a.mean, a.rstd};
  byRowWidth(a.N, "layerNormForwardKernel", [&](auto group) {
    constexpr int G = decltype(group)::value;
    layerNormForwardKernel<G><<<rowBlocks<G, layerNormForwardKernel<G>>(a.M, ctx), kThreads, 0, ctx.stream>>>(p);
  });
}

void layerNormBackward(const LayerNormBackwardArgs& a, const CudaContext& ctx) {
  if (a.dgamma != nullptr || a.dbeta != nullptr) {
    const LnGradElement elem{a.dy, a.dyType, a.x, a.xType, a.mean, a.rstd, a.N};
    const LnGradOutput out{a.dgamma, a.dbeta, a.dgType, a.accumulate};
    launchColumnReduce<2>(1, a.M, a.N, elem, out, ctx);  // M == 0: sums of nothing (0)
  }
  if (a.dx == nullptr || a.M == 0) return;
  const LnBackwardParams p{a.dy, a.dyType, a.x, a.xType, a.gamma, a.gType, a.mean, a.rstd, a.M, a.N, a.dx, a.dxType};
  byRowWidth(a.N, "layerNormBackwardKernel", [&](auto group) {
    constexpr int G = decltype(group)::value;
    layerNormBackwardKernel<G><<<rowBlocks<G, layerNormBackwardKernel<G>>(a.M, ctx), kThreads, 0, ctx.stream>>>(p);
  });
}

}  // namespace cuda
}  // namespace mp
