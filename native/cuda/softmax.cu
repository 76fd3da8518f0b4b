// CUDA row softmax (forward / backward, plain and log) and the losses (softmax cross-entropy,
// MSE). Semantics at SoftmaxArgs ... MseArgs (native/core/op_args.h); per-element math in
// native/shared/elementwise.h and nn.h, called as the CPU loops call it (-fmad=false).
//
//  * Row kernels (softmax*, cross-entropy) <kGroup>: one row per group of kGroup threads, a warp
//    for rows of up to 1024 columns, else the whole block (256 threads; rows of any length),
//    grid-stride over rows, one wave of blocks (no value depends on the grid). Each pass over a
//    row walks chunks of 4 (thread r: chunks r, r + kGroup, ...; one 16- / 8-byte access per
//    chunk where the row is aligned), then a group reduction (reduce.cuh) that leaves the same
//    bits in every thread of the group. Every element is read and written by the thread that
//    owns its chunk, after the row's reductions, so dx may be dy.
//  * Cross-entropy: row max and first arg-max, shifted sum, then the loss terms and dlogits in
//    one more pass. Each row's loss and correct flag go to a workspace; ceFinalizeKernel (one
//    block) adds them in a fixed order and writes *loss = sum / B and *correct. A label outside
//    [0, C) is never used as an index: its row's loss and dlogits are NaN (as the CPU backend).
//  * MSE: grid-stride over chunks of 4 with a grid sized from n alone; per-block partials in a
//    workspace, added in block order by mseFinalizeKernel into *loss = sum / n.
//  * gradScale (the loss's upstream gradient, one FP32 on the device) is read by the kernels, so
//    the backward needs no host round trip: factor = loss_grad_factor(lossScale / B or
//    2 lossScale / n, *gradScale).
#include <math.h>

#include "../shared/elementwise.h"
#include "../shared/nn.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

constexpr unsigned kMseMaxBlocks = 1024;  // MSE's grid (and partials) cap: a function of n only


// ---- softmax ------------------------------------------------------------------------------

struct SoftmaxParams {
  int64_t M, N;
  bool log;
  const void* x; DType xType;  // forward: x; backward: y
  const void* dy; DType dyType;  // backward
  void* y; DType yType;        // forward: y; backward: dx
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) softmaxForwardKernel(const __grid_constant__ SoftmaxParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N, chunks = ceilDiv(N, 4);
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const RowIn x = rowIn(p.x, p.xType, (size_t)(row * N));
    // An all -inf row: mx = -inf, every x - mx is NaN, so the row is NaN (as PyTorch).
    float mx = -INFINITY;
    forRowChunks<kGroup>(x, N, rank, [&](float e, int64_t) { mx = fmaxf(mx, e); });
    mx = groupMax<kGroup>(mx, scratch);
    float s = 0.0f;
    forRowChunks<kGroup>(x, N, rank, [&](float e, int64_t) { s += softmax_exp(e, mx); });
    s = groupSum<kGroup>(s, scratch);
    const RowOut y = rowOut(p.y, p.yType, (size_t)(row * N));
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float v[4];
      x.chunk(4 * q, count, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = p.log ? log_softmax_value(v[k], mx, s) : softmax_value(v[k], mx, s);
      y.chunk(4 * q, count, v);
    }
  }
}

template <int kGroup>
__global__ void __launch_bounds__(kThreads) softmaxBackwardKernel(const __grid_constant__ SoftmaxParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N, chunks = ceilDiv(N, 4);
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)(row * N);
    const RowIn y = rowIn(p.x, p.xType, off), dy = rowIn(p.dy, p.dyType, off);
    // log: sum_j dy_j; else dot = sum_j dy_j y_j.
    float s = 0.0f;
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float yv[4], g[4];
      dy.chunk(4 * q, count, g);
      if (!p.log) y.chunk(4 * q, count, yv);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k < count) s += p.log ? g[k] : g[k] * yv[k];
    }
    s = groupSum<kGroup>(s, scratch);
    const RowOut dx = rowOut(p.y, p.yType, off);
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, N);
      float yv[4], g[4];
      y.chunk(4 * q, count, yv);
      dy.chunk(4 * q, count, g);
#pragma unroll
      for (int k = 0; k < 4; ++k) g[k] = p.log ? log_softmax_grad(yv[k], g[k], s) : softmax_grad(yv[k], g[k], s);
      dx.chunk(4 * q, count, g);
    }
  }
}

// ---- softmax cross-entropy ----------------------------------------------------------------

struct CeParams {
  const void* logits; DType logitsType;
  const int32_t* labels;
  int64_t B, C;  // both >= 1
  float smoothing;
  float gscale;              // ce_grad_scale(lossScale, B)
  const float* gradScale;    // may be null
  void* dlogits; DType dType;  // may be null
  float* rowLoss;            // workspace [B], may be null (no loss asked)
  int* rowCorrect;           // workspace [B], may be null (no count asked)
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) softmaxCrossEntropyKernel(const __grid_constant__ CeParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratchV[kWarps];
  __shared__ long long scratchI[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t C = p.C, chunks = ceilDiv(C, 4);
  const float gscale = p.gradScale != nullptr ? loss_grad_factor(p.gscale, *p.gradScale) : p.gscale;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.B; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)(row * C);
    const RowIn z = rowIn(p.logits, p.logitsType, off);
    // Pass 1: the row max and its first index.
    float mx = 0.0f;
    long long arg = -1;
    forRowChunks<kGroup>(z, C, rank, [&](float e, int64_t j) { offerMax(e, j, mx, arg); });
    groupArgMax<kGroup>(mx, arg, scratchV, scratchI);
    const int32_t label = p.labels[row];
    const bool valid = label >= 0 && (int64_t)label < C;  // callers validate; never an index
    // Pass 2: the shifted sum.
    float s = 0.0f;
    forRowChunks<kGroup>(z, C, rank, [&](float e, int64_t) { s += softmax_exp(e, mx); });
    s = groupSum<kGroup>(s, scratchV);
    const float lse = log_sum_exp(mx, s);
    // Pass 3: the loss terms and the gradient.
    float l = 0.0f;
    const RowOut d = p.dlogits != nullptr ? rowOut(p.dlogits, p.dType, off) : RowOut{nullptr, p.dType, false};
    if (p.rowLoss != nullptr || d.p != nullptr) {
      for (int64_t q = rank; q < chunks; q += kGroup) {
        const int count = chunkCount(4 * q, C);
        float v[4], g[4];
        z.chunk(4 * q, count, v);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float t = ce_target(4 * q + k, label, C, p.smoothing);
          if (k < count) l += ce_loss_term(v[k], lse, t);
          g[k] = valid ? ce_dlogit(v[k], mx, s, t, gscale) : NAN;
        }
        if (d.p != nullptr) d.chunk(4 * q, count, g);
      }
      l = groupSum<kGroup>(l, scratchV);
    }
    if (rank == 0) {
      if (p.rowLoss != nullptr) p.rowLoss[row] = valid ? l : NAN;
      if (p.rowCorrect != nullptr) p.rowCorrect[row] = arg == (long long)label ? 1 : 0;
    }
  }
}

__global__ void __launch_bounds__(kThreads) ceFinalizeKernel(const float* rowLoss, const int* rowCorrect, int64_t B,
                                                               float* loss, int32_t* correct) {
  __shared__ float scratch[kWarps];
  if (loss != nullptr) {
    const float s = blockSumOrdered(rowLoss, (size_t)B, scratch);
    if (threadIdx.x == 0) *loss = s / (float)B;
  }
  if (correct != nullptr) {
    const int k = blockSumOrderedInt(rowCorrect, (size_t)B);
    if (threadIdx.x == 0) *correct = (int32_t)k;
  }
}

// ---- mean squared error -------------------------------------------------------------------

struct MseParams {
  const void* pred; DType predType;
  const void* target; DType targetType;
  size_t n;                  // >= 1
  float k;                   // mse_grad_scale(lossScale, n)
  const float* gradScale;    // may be null
  void* dpred; DType dType;  // may be null
  float* part;               // workspace [gridDim.x], null when no loss is asked
};

__global__ void __launch_bounds__(kThreads) mseKernel(const __grid_constant__ MseParams p) {
  __shared__ float scratch[kWarps];
  const float k = p.gradScale != nullptr ? loss_grad_factor(p.k, *p.gradScale) : p.k;
  const RowIn pred = rowIn(p.pred, p.predType, 0), target = rowIn(p.target, p.targetType, 0);
  const RowOut d = p.dpred != nullptr ? rowOut(p.dpred, p.dType, 0) : RowOut{nullptr, p.dType, false};
  const int64_t n = (int64_t)p.n, chunks = ceilDiv(n, 4);
  float s = 0.0f;
  for (int64_t q = (int64_t)globalThread(); q < chunks; q += (int64_t)gridThreads()) {
    const int count = chunkCount(4 * q, n);
    float pv[4], tv[4], g[4];
    pred.chunk(4 * q, count, pv);
    target.chunk(4 * q, count, tv);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < count) s += mse_term(pv[j], tv[j]);
      g[j] = mse_grad(pv[j], tv[j], k);
    }
    if (d.p != nullptr) d.chunk(4 * q, count, g);
  }
  if (p.part == nullptr) return;  // uniform over the grid: no barrier follows
  s = groupSum<kThreads>(s, scratch);
  if (threadIdx.x == 0) p.part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kThreads) mseFinalizeKernel(const float* part, unsigned blocks, float denom, float* loss) {
  __shared__ float scratch[kWarps];
  const float s = blockSumOrdered(part, blocks, scratch);
  if (threadIdx.x == 0) *loss = s / denom;
}

}  // namespace

void softmaxForward(const SoftmaxArgs& a, const CudaContext& ctx) {
  if (a.M == 0) return;
  const SoftmaxParams p{a.M, a.N, a.log, a.x, a.xType, nullptr, DType::F32, a.y, a.yType};
  byRowWidth(a.N, "softmaxForwardKernel", [&](auto group) {
    constexpr int G = decltype(group)::value;
    softmaxForwardKernel<G><<<rowBlocks<G, softmaxForwardKernel<G>>(a.M, ctx), kThreads, 0, ctx.stream>>>(p);
  });
}

void softmaxBackward(const SoftmaxBackwardArgs& a, const CudaContext& ctx) {
  if (a.M == 0) return;
  const SoftmaxParams p{a.M, a.N, a.log, a.y, a.yType, a.dy, a.dyType, a.dx, a.dxType};
  byRowWidth(a.N, "softmaxBackwardKernel", [&](auto group) {
    constexpr int G = decltype(group)::value;
    softmaxBackwardKernel<G><<<rowBlocks<G, softmaxBackwardKernel<G>>(a.M, ctx), kThreads, 0, ctx.stream>>>(p);
  });
}

void softmaxCrossEntropy(const CrossEntropyArgs& a, const CudaContext& ctx) {
  if (!a.loss && !a.correct && !a.dlogits) return;
  const int64_t B = a.B;
  // One workspace: B floats (row losses), then B ints (row correct flags).
  Workspace ws(ctx, (size_t)B * (a.loss ? 4 : 0) + (size_t)B * (a.correct ? 4 : 0));
  CeParams p{};
  p.logits = a.logits; p.logitsType = a.logitsType;
  p.labels = a.labels;
  p.B = B; p.C = a.C;
  p.smoothing = a.smoothing;
  p.gscale = ce_grad_scale(a.lossScale, B);
  p.gradScale = a.gradScale;
  p.dlogits = a.dlogits; p.dType = a.dType;
  p.rowLoss = a.loss ? ws.as<float>() : nullptr;
  p.rowCorrect = a.correct ? reinterpret_cast<int*>(ws.as<char>() + (a.loss ? (size_t)B * 4 : 0)) : nullptr;
  byRowWidth(a.C, "softmaxCrossEntropyKernel", [&](auto group) {
    constexpr int G = decltype(group)::value;
    softmaxCrossEntropyKernel<G><<<rowBlocks<G, softmaxCrossEntropyKernel<G>>(B, ctx), kThreads, 0, ctx.stream>>>(p);
  });
  if (a.loss || a.correct) {
    ceFinalizeKernel<<<1, kThreads, 0, ctx.stream>>>(p.rowLoss, p.rowCorrect, B, a.loss, a.correct);
    checkLaunch("ceFinalizeKernel");
  }
}

void mseLoss(const MseArgs& a, const CudaContext& ctx) {
  if (!a.loss && !a.dpred) return;
  const unsigned blocks = blocksFor(ceilDiv((int64_t)a.n, 4), kThreads, kMseMaxBlocks);
  Workspace ws(ctx, a.loss ? (size_t)blocks * sizeof(float) : 0);
  MseParams p{};
  p.pred = a.pred; p.predType = a.predType;
  p.target = a.target; p.targetType = a.targetType;
  p.n = a.n;
  p.k = mse_grad_scale(a.lossScale, a.n);
  p.gradScale = a.gradScale;
  p.dpred = a.dpred; p.dType = a.dType;
  p.part = ws.as<float>();
  mseKernel<<<blocks, kThreads, 0, ctx.stream>>>(p);
  checkLaunch("mseKernel");
  if (a.loss) {
    mseFinalizeKernel<<<1, kThreads, 0, ctx.stream>>>(p.part, blocks, (float)a.n, a.loss);
    checkLaunch("mseFinalizeKernel");
  }
}

}  // namespace cuda
}  // namespace mp
