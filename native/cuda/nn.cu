// CUDA kernels of the layers and losses: activation forward / backward, dropout, column sums,
// softmax cross-entropy, MSE, LayerNorm forward / backward. The per-element math is the shared
// definition (native/shared/nn.h, activation.h, dtype.h), called per element exactly as the CPU
// backend (native/cpu/nn.cpp) does; nothing here re-derives a formula. Everything is enqueued on
// the backend's one stream; the loss and the correct count are written by the device.
//
// Kernels (256 threads per block everywhere):
//  * elementwiseKernel (activation forward / backward, dropout): a grid-stride loop over a scalar
//    head (until the output is aligned), 4-element vectors (16-byte loads / stores for F32, 8-byte
//    for F16 / BF16) when every operand is aligned there, and a scalar tail; else all scalar.
//    One wave of blocks (SMs x resident blocks per SM). Dropout's element index is the global one,
//    so the mask depends only on (seed, i), never on the launch shape.
//  * columnSumKernel<kLayerNorm> (columnSum; dgamma / dbeta): a 2-D grid: blockIdx.x owns a strip
//    of 32 columns (one per lane), blockIdx.y a chunk of rows; warp w sums rows w, w + 8, ... of
//    the chunk in order, the 8 warp sums are added in warp order. With one chunk the block stores
//    the result; with several, each block stores its chunk's sums in a static buffer and the last
//    block of the strip to finish adds them in chunk order.
//  * softmaxCrossEntropyKernel<kGroup> / layerNorm*Kernel<kGroup>: one row per group of kGroup
//    threads, a warp (32) up to 1024 columns, else the whole block (256); grid-stride over rows.
//    Each pass over a row is a strided loop (thread r takes columns r, r + kGroup, ...), the row
//    reductions a shuffle tree (plus the block's 8 warp results in warp order for kGroup = 256),
//    giving the same bits in every thread of the group.
//  * mseKernel: a grid-stride loop, per-thread sums.
// Every element of a row / buffer is read and written only by the thread that owns it, after the
// row's reductions, so outputs may alias inputs of the same dtype (in-place use).
//
// Determinism: every reduction has a fixed order that depends only on the sizes (the grids of the
// reducing kernels are functions of the sizes alone, not of the SM count): a thread's elements in
// index order, then a fixed shuffle / shared-memory tree, then (loss, columns) the per-block
// partials in block order, added by the last block to finish (no float atomics). Repeated runs
// give the same bits on any GPU; the order differs from the CPU's, so sums may differ from the
// CPU backend's in the last bits (and the device's expf / logf / erff are not glibc's).
// CMake compiles this file with -fmad=false, so the shared formulas round like the CPU's.
#include "nn.cuh"

#include <limits.h>
#include <stdint.h>
#include <algorithm>
#include <initializer_list>
#include <string>
#include "check.cuh"

namespace mp {
namespace {

constexpr int kThreads = 256;  // every kernel here is launched with this block size
constexpr int kWarps = kThreads / 32;
// Rows up to this many columns go to one warp each; longer rows to one block each.
constexpr int64_t kWarpRowMaxColumns = 1024;
// Grid cap of the loss kernels: their per-block partials live in static buffers of this size.
constexpr unsigned kMaxLossBlocks = 1024;
// Column reductions: a strip of 32 columns per block; rows split into chunks of at least
// kColumnMinRows until the grid reaches about kColumnTargetBlocks blocks.
constexpr int kColumnStrip = 32;
constexpr int64_t kColumnMinRows = 32;
constexpr int64_t kColumnTargetBlocks = 1024;
// With chunks x strips <= kColumnTargetBlocks and N <= 32 x strips, chunks x N <= 32768; two sums.
constexpr size_t kColumnPartialCapacity = 2 * (size_t)kColumnTargetBlocks * kColumnStrip;
// Several chunks only when strips <= kColumnTargetBlocks / 2: one counter per such strip.
constexpr unsigned kMaxStripCounters = (unsigned)(kColumnTargetBlocks / 2);

// ---- static device buffers ----------------------------------------------------------------
// Only the kernels below touch them, only on the backend's one stream, so launches never
// overlap; the last block of each launch resets its counter to 0 for the next launch.
__device__ float gLossPartials[kMaxLossBlocks];
__device__ int gCorrectPartials[kMaxLossBlocks];
__device__ unsigned int gLossBlocksDone;
__device__ float gColumnPartials[kColumnPartialCapacity];
__device__ unsigned int gStripDone[kMaxStripCounters];

// ---- device helpers -----------------------------------------------------------------------

__device__ __forceinline__ size_t globalThread() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gridThreads() { return (size_t)gridDim.x * blockDim.x; }

// Butterfly sums: every lane ends with the same bits (each step adds the same two values).
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

// Sum over a row group (kGroup = 32: the warp; kGroup = kThreads: the block), the same bits in
// every thread of the group. For the block, every thread must call it (it has barriers); scratch
// is kWarps floats of shared memory, free for reuse once the next call's first barrier is passed.
template <int kGroup>
__device__ __forceinline__ float groupSum(float v, float* scratch) {
  v = warpAllSum(v);
  if constexpr (kGroup == 32) {
    return v;
  } else {
    static_assert(kGroup == kThreads, "a row group is a warp or the block");
    __syncthreads();  // the previous reduction's readers are done with scratch
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

// The row maximum and its first index, as the CPU's scan (mx = z[0]; z[c] > mx replaces) finds
// them: a NaN at index 0 wins outright (the CPU's mx then stays NaN); NaNs elsewhere never win;
// among equal values the lowest index. Candidates are (value, index); index < 0 is "none".
// This is a total order on the candidates, so any reduction tree picks the same one.
__device__ __forceinline__ bool betterMax(float bv, long long bi, float av, long long ai) {
  if (bi < 0) return false;
  if (ai < 0) return true;
  if (ai == 0 && av != av) return false;
  if (bi == 0 && bv != bv) return true;
  return bv > av || (bv == av && bi < ai);
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

// Sum over the block of a per-thread value; the result is valid in thread 0 only. Every thread
// must call it.
__device__ __forceinline__ float blockSumToThread0(float v, float* scratch) {
  v = warpAllSum(v);
  if ((threadIdx.x & 31u) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.0f;
  if (threadIdx.x == 0) {
    s = scratch[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) s = __fadd_rn(s, scratch[w]);
  }
  return s;
}

// Commits this block's loss partial (and correct count), held by thread 0; the last block of the
// launch to finish adds all of them in block order and writes *loss = total / denom (and
// *correct when set), once. Every thread must call it; gridDim.x <= kMaxLossBlocks.
__device__ void commitLoss(float blockLoss, int blockCorrect, float denom, float* loss, int32_t* correct) {
  __shared__ bool lastBlock;
  if (threadIdx.x == 0) {
    gLossPartials[blockIdx.x] = blockLoss;
    gCorrectPartials[blockIdx.x] = blockCorrect;
    __threadfence();  // the partials are visible device-wide before the count says so
    const bool last = atomicAdd(&gLossBlocksDone, 1u) == gridDim.x - 1;
    if (last) __threadfence();
    lastBlock = last;
  }
  __syncthreads();
  if (!lastBlock || threadIdx.x >= 32) return;  // no barrier follows
  __threadfence();  // every other block's partials (fenced before its increment) are visible now
  const unsigned lane = threadIdx.x;
  float s = 0.0f;
  int k = 0;
  for (unsigned b = lane; b < gridDim.x; b += 32) {
    s = __fadd_rn(s, __ldcg(&gLossPartials[b]));  // L2, not a stale L1 line
    k += __ldcg(&gCorrectPartials[b]);
  }
  s = warpAllSum(s);
  k = warpAllSumInt(k);
  if (lane == 0) {
    *loss = s / denom;
    if (correct != nullptr) *correct = (int32_t)k;
    gLossBlocksDone = 0;
  }
}

// ---- element-wise: activation forward / backward, dropout ---------------------------------

enum class ElementOp : int { ActForward = 0, ActBackward = 1, Dropout = 2 };

struct ElementwiseParams {
  ElementOp op;
  Act act;
  const void* a; DType aType;  // x (forward, dropout) or dy (backward)
  const void* b; DType bType;  // z (backward only)
  void* out; DType outType;
  size_t n;
  size_t head, nvec;  // [0, head) scalar, nvec vectors of 4, [head + 4 nvec, n) scalar
  float p, scale;     // dropout
  uint64_t seed;
};

__device__ __forceinline__ float elementValue(const ElementwiseParams& e, size_t i, float a, float b) {
  switch (e.op) {
    case ElementOp::ActForward: return apply_act(e.act, a);
    case ElementOp::ActBackward: return act_backward(e.act, a, b);
    default: return dropout_apply(a, dropout_keep(e.seed, (uint64_t)i, e.p), e.scale);
  }
}

// Four elements i0 .. i0 + 3 at an aligned address (16 bytes for F32, 8 for F16 / BF16).
// Little-endian: element k of a packed word sits in its low bits first.
__device__ __forceinline__ void load4(const void* p, DType t, size_t i0, float (&v)[4]) {
  if (t == DType::F32) {
    const float4 q = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i0);
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + i0);
    const uint16_t h[4] = {(uint16_t)(q.x & 0xffffu), (uint16_t)(q.x >> 16), (uint16_t)(q.y & 0xffffu),
                           (uint16_t)(q.y >> 16)};
    // load_f32's conversions, without its pointer (a dynamically typed local array would live
    // in local memory).
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = t == DType::F16 ? f16_bits_to_f32(h[k]) : bf16_bits_to_f32(h[k]);
  }
}
__device__ __forceinline__ void store4(void* p, DType t, size_t i0, const float (&v)[4]) {
  if (t == DType::F32) {
    *reinterpret_cast<float4*>(static_cast<float*>(p) + i0) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    uint16_t h[4];  // store_f32's conversions, as in load4
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = t == DType::F16 ? f32_to_f16_bits(v[k]) : f32_to_bf16_bits(v[k]);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + i0) =
        make_uint2((uint32_t)h[0] | ((uint32_t)h[1] << 16), (uint32_t)h[2] | ((uint32_t)h[3] << 16));
  }
}

__global__ void __launch_bounds__(kThreads) elementwiseKernel(const __grid_constant__ ElementwiseParams e) {
  const size_t tid = globalThread(), stride = gridThreads();
  const bool twoInputs = e.op == ElementOp::ActBackward;
  auto scalar = [&](size_t i) {
    const float a = load_f32(e.a, e.aType, i);
    const float b = twoInputs ? load_f32(e.b, e.bType, i) : 0.0f;
    store_f32(e.out, e.outType, i, elementValue(e, i, a, b));
  };
  for (size_t i = tid; i < e.head; i += stride) scalar(i);
  for (size_t i = e.head + 4 * e.nvec + tid; i < e.n; i += stride) scalar(i);
  for (size_t q = tid; q < e.nvec; q += stride) {
    const size_t i0 = e.head + 4 * q;
    float a[4], b[4] = {0.0f, 0.0f, 0.0f, 0.0f}, y[4];
    load4(e.a, e.aType, i0, a);
    if (twoInputs) load4(e.b, e.bType, i0, b);
#pragma unroll
    for (int k = 0; k < 4; ++k) y[k] = elementValue(e, i0 + (size_t)k, a[k], b[k]);
    store4(e.out, e.outType, i0, y);
  }
}

// ---- column sums: columnSum, and LayerNorm's dgamma / dbeta -------------------------------

struct ColumnParams {
  const void* x; DType xType;    // columnSum: x; LayerNorm: dy
  const void* x2; DType x2Type;  // LayerNorm: x
  const float* mean;             // LayerNorm
  const float* rstd;             // LayerNorm
  int64_t M, N;
  int64_t rowsPerChunk;          // >= 1; chunk c is rows [c * rowsPerChunk, (c + 1) * rowsPerChunk) within M
  unsigned chunks;               // == gridDim.y
  void* out; void* out2; DType outType;  // columnSum: out; LayerNorm: out = dgamma, out2 = dbeta
};

// kLayerNorm: sums dy * xhat (dgamma) and dy (dbeta), with xhat = ln_xhat(x, mean[m], rstd[m]),
// as the CPU's backward accumulates them; else sums x.
template <bool kLayerNorm>
__global__ void __launch_bounds__(kThreads) columnSumKernel(const __grid_constant__ ColumnParams p) {
  constexpr int kSums = kLayerNorm ? 2 : 1;
  __shared__ float part[kSums][kWarps][kColumnStrip];
  __shared__ bool lastBlock;
  const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
  const int64_t col = (int64_t)blockIdx.x * kColumnStrip + lane;
  const bool active = col < p.N;
  const unsigned chunk = blockIdx.y;
  const int64_t rowBegin = (int64_t)chunk * p.rowsPerChunk;
  const int64_t rowEnd = p.M - rowBegin < p.rowsPerChunk ? p.M : rowBegin + p.rowsPerChunk;

  float acc[kSums];
#pragma unroll
  for (int s = 0; s < kSums; ++s) acc[s] = 0.0f;
  if (active) {
#pragma unroll 4
    for (int64_t m = rowBegin + warp; m < rowEnd; m += kWarps) {
      const size_t i = (size_t)m * (size_t)p.N + (size_t)col;
      if constexpr (kLayerNorm) {
        const float dy = load_f32(p.x, p.xType, i);
        const float xhat = ln_xhat(load_f32(p.x2, p.x2Type, i), p.mean[m], p.rstd[m]);
        acc[0] += dy * xhat;
        acc[1] += dy;
      } else {
        acc[0] += load_f32(p.x, p.xType, i);
      }
    }
  }
#pragma unroll
  for (int s = 0; s < kSums; ++s) part[s][warp][lane] = acc[s];
  __syncthreads();

  const size_t sumStride = (size_t)p.chunks * (size_t)p.N;  // between the two sums' partials
  if (warp == 0 && active) {
#pragma unroll
    for (int s = 0; s < kSums; ++s) {
      float total = part[s][0][lane];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) total += part[s][w][lane];
      if (p.chunks == 1) store_f32(s == 0 ? p.out : p.out2, p.outType, (size_t)col, total);
      else gColumnPartials[(size_t)s * sumStride + (size_t)chunk * (size_t)p.N + (size_t)col] = total;
    }
    if (p.chunks > 1) __threadfence();  // this lane's partials are visible device-wide before the count says so
  }
  if (p.chunks == 1) return;  // uniform over the grid: no barrier follows
  __syncthreads();  // also: warp 0 is done reading part[], which the last block reuses below
  if (threadIdx.x == 0) {
    const bool last = atomicAdd(&gStripDone[blockIdx.x], 1u) == p.chunks - 1;
    if (last) __threadfence();
    lastBlock = last;
  }
  __syncthreads();
  if (!lastBlock) return;  // uniform over the block
  __threadfence();  // the other chunks' partials (fenced before their increments) are visible now

  // Warp w adds chunks w, w + 8, ... in order; then the warp sums in warp order.
#pragma unroll
  for (int s = 0; s < kSums; ++s) acc[s] = 0.0f;
  if (active)
    for (unsigned c = (unsigned)warp; c < p.chunks; c += kWarps)
#pragma unroll
      for (int s = 0; s < kSums; ++s)
        acc[s] += __ldcg(&gColumnPartials[(size_t)s * sumStride + (size_t)c * (size_t)p.N + (size_t)col]);
#pragma unroll
  for (int s = 0; s < kSums; ++s) part[s][warp][lane] = acc[s];
  __syncthreads();
  if (warp == 0) {
    if (active) {
#pragma unroll
      for (int s = 0; s < kSums; ++s) {
        float total = part[s][0][lane];
#pragma unroll
        for (int w = 1; w < kWarps; ++w) total += part[s][w][lane];
        store_f32(s == 0 ? p.out : p.out2, p.outType, (size_t)col, total);
      }
    }
    if (lane == 0) gStripDone[blockIdx.x] = 0;
  }
}

// ---- softmax cross-entropy ----------------------------------------------------------------

struct CeParams {
  const void* logits; DType logitsType;
  const int32_t* labels;
  int64_t B, C;  // both >= 1
  float smoothing, gscale, denom;  // gscale = ce_grad_scale(lossScale, B); denom = (float)B
  void* dlogits; DType dType;      // may be null
  float* loss;
  int32_t* correct;  // may be null
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) softmaxCrossEntropyKernel(const __grid_constant__ CeParams p) {
  constexpr int kGroups = kThreads / kGroup;  // rows in flight per block
  __shared__ float scratchV[kWarps];
  __shared__ long long scratchI[kWarps];
  __shared__ float groupLoss[kGroups];
  __shared__ int groupCorrect[kGroups];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t C = p.C;
  float lossSum = 0.0f;  // this group's rows, in order
  int correctCount = 0;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.B; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)row * (size_t)C;
    // Pass 1: the row max and its first index.
    float mx = 0.0f;
    long long arg = -1;
    for (int64_t c = rank; c < C; c += kGroup) {
      const float z = load_f32(p.logits, p.logitsType, off + (size_t)c);
      if ((z == z || c == 0) && betterMax(z, c, mx, arg)) { mx = z; arg = c; }
    }
    groupArgMax<kGroup>(mx, arg, scratchV, scratchI);
    // Pass 2: the shifted sum.
    float s = 0.0f;
    for (int64_t c = rank; c < C; c += kGroup) s += softmax_exp(load_f32(p.logits, p.logitsType, off + (size_t)c), mx);
    s = groupSum<kGroup>(s, scratchV);
    const float lse = log_sum_exp(mx, s);
    const int32_t label = p.labels[row];
    // Pass 3: the loss terms and the gradient.
    float l = 0.0f;
    for (int64_t c = rank; c < C; c += kGroup) {
      const float z = load_f32(p.logits, p.logitsType, off + (size_t)c);
      const float t = ce_target(c, label, C, p.smoothing);
      l += ce_loss_term(z, lse, t);
      if (p.dlogits != nullptr) store_f32(p.dlogits, p.dType, off + (size_t)c, ce_dlogit(z, mx, s, t, p.gscale));
    }
    l = groupSum<kGroup>(l, scratchV);
    lossSum += l;
    correctCount += arg == (long long)label ? 1 : 0;
  }
  if (rank == 0) {
    groupLoss[group] = lossSum;
    groupCorrect[group] = correctCount;
  }
  __syncthreads();
  float blockLoss = 0.0f;
  int blockCorrect = 0;
  if (threadIdx.x == 0) {
    blockLoss = groupLoss[0];
    blockCorrect = groupCorrect[0];
#pragma unroll
    for (int g = 1; g < kGroups; ++g) {
      blockLoss = __fadd_rn(blockLoss, groupLoss[g]);
      blockCorrect += groupCorrect[g];
    }
  }
  commitLoss(blockLoss, blockCorrect, p.denom, p.loss, p.correct);
}

// ---- mean squared error -------------------------------------------------------------------

struct MseParams {
  const void* pred; DType predType;
  const void* target; DType targetType;
  size_t n;      // >= 1
  float k;       // mse_grad_scale(lossScale, n)
  float denom;   // (float)n
  void* dpred; DType dType;  // may be null
  float* loss;
};

__global__ void __launch_bounds__(kThreads) mseKernel(const __grid_constant__ MseParams p) {
  __shared__ float scratch[kWarps];
  float s = 0.0f;
  for (size_t i = globalThread(); i < p.n; i += gridThreads()) {
    const float pv = load_f32(p.pred, p.predType, i), tv = load_f32(p.target, p.targetType, i);
    s += mse_term(pv, tv);
    if (p.dpred != nullptr) store_f32(p.dpred, p.dType, i, mse_grad(pv, tv, p.k));
  }
  commitLoss(blockSumToThread0(s, scratch), 0, p.denom, p.loss, nullptr);
}

// ---- layer norm ---------------------------------------------------------------------------

struct LnForwardParams {
  const void* x; DType xType;
  const void* gamma; const void* beta; DType gType;
  int64_t M, N;
  float eps;
  void* y; DType yType;
  float* mean; float* rstd;
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) layerNormForwardKernel(const __grid_constant__ LnForwardParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)row * (size_t)N;
    float s = 0.0f;
    for (int64_t j = rank; j < N; j += kGroup) s += load_f32(p.x, p.xType, off + (size_t)j);
    s = groupSum<kGroup>(s, scratch);
    const float mean = N > 0 ? s / (float)N : 0.0f;
    float v = 0.0f;
    for (int64_t j = rank; j < N; j += kGroup) {
      const float d = load_f32(p.x, p.xType, off + (size_t)j) - mean;
      v += d * d;
    }
    v = groupSum<kGroup>(v, scratch);
    const float rstd = ln_rstd(N > 0 ? v / (float)N : 0.0f, p.eps);
    for (int64_t j = rank; j < N; j += kGroup) {
      const float xhat = ln_xhat(load_f32(p.x, p.xType, off + (size_t)j), mean, rstd);
      const float g = load_f32(p.gamma, p.gType, (size_t)j), b = load_f32(p.beta, p.gType, (size_t)j);
      store_f32(p.y, p.yType, off + (size_t)j, ln_affine(xhat, g, b));
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
  const void* gamma; DType gType;
  const float* mean; const float* rstd;
  int64_t M, N;  // N >= 1
  void* dx; DType dxType;
};

// dx only; dgamma / dbeta come from columnSumKernel<true>.
template <int kGroup>
__global__ void __launch_bounds__(kThreads) layerNormBackwardKernel(const __grid_constant__ LnBackwardParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[2 * kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t N = p.N;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.M; row += (int64_t)gridDim.x * kGroups) {
    const size_t off = (size_t)row * (size_t)N;
    const float mean = p.mean[row], rstd = p.rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = rank; j < N; j += kGroup) {
      const float xhat = ln_xhat(load_f32(p.x, p.xType, off + (size_t)j), mean, rstd);
      const float g = load_f32(p.dy, p.dyType, off + (size_t)j) * load_f32(p.gamma, p.gType, (size_t)j);
      sg += g;
      sgx += g * xhat;
    }
    groupSum2<kGroup>(sg, sgx, scratch);
    const float mg = sg / (float)N, mgx = sgx / (float)N;
    for (int64_t j = rank; j < N; j += kGroup) {
      const float xhat = ln_xhat(load_f32(p.x, p.xType, off + (size_t)j), mean, rstd);
      const float g = load_f32(p.dy, p.dyType, off + (size_t)j) * load_f32(p.gamma, p.gType, (size_t)j);
      store_f32(p.dx, p.dxType, off + (size_t)j, ln_dx(g, xhat, mg, mgx, rstd));
    }
  }
}

// ---- host side ----------------------------------------------------------------------------

struct Operand {
  const void* p;  // null: not used (no constraint)
  DType type;
};

// Splits n elements for vectors of 4. The first operand decides the head (elements until it is
// aligned to 4 elements); every other operand must then be aligned at element head too, else
// there are no vectors and every element takes the scalar path.
void splitForVectors(size_t n, std::initializer_list<Operand> operands, size_t& head, size_t& nvec) {
  head = 0;
  nvec = 0;
  size_t h = 0;
  bool first = true;
  for (const Operand& o : operands) {
    if (o.p == nullptr) continue;
    const uintptr_t address = reinterpret_cast<uintptr_t>(o.p);
    const size_t bytes = dtype_size(o.type), align = 4 * bytes;
    if (first) {
      first = false;
      if (address % bytes != 0) return;
      h = ((align - address % align) % align) / bytes;
      if (h >= n) return;
    } else if ((address + h * bytes) % align != 0) {
      return;
    }
  }
  if (first) return;
  head = h;
  nvec = (n - h) / 4;
}


// Enough blocks for `work` units of `perBlock` each, at most `cap`, at least 1.
unsigned blocksFor(uint64_t work, uint64_t perBlock, uint64_t cap) {
  const uint64_t needed = std::max<uint64_t>(1, (work + perBlock - 1) / perBlock);
  return (unsigned)std::min(needed, std::max<uint64_t>(cap, 1));
}

uint64_t oneWave(int multiprocessors, int residentPerSm) {
  return (uint64_t)std::max(multiprocessors, 1) * (uint64_t)std::max(residentPerSm, 1);
}

void launchElementwise(ElementwiseParams& e, cudaStream_t stream, int multiprocessors) {
  if (e.n == 0) return;
  splitForVectors(e.n, {{e.out, e.outType}, {e.a, e.aType}, {e.b, e.bType}}, e.head, e.nvec);
  const size_t tail = e.n - (e.head + 4 * e.nvec);
  const uint64_t threads = std::max({(uint64_t)e.nvec, (uint64_t)e.head, (uint64_t)tail});
  const unsigned blocks = blocksFor(threads, kThreads, oneWave(multiprocessors, residentBlocks<elementwiseKernel, kThreads>()));
  elementwiseKernel<<<blocks, kThreads, 0, stream>>>(e);
  checkLaunch("elementwiseKernel");
}

// How a column reduction over M rows and N columns is cut: 32-column strips x row chunks. A
// function of M and N only (so is the summation order).
struct ColumnGrid {
  int64_t strips, chunks, rowsPerChunk;
};
ColumnGrid columnGrid(int64_t M, int64_t N) {
  ColumnGrid g;
  g.strips = (N + kColumnStrip - 1) / kColumnStrip;
  int64_t chunks = 1;
  if (g.strips <= kColumnTargetBlocks / 2) {
    chunks = std::min(kColumnTargetBlocks / g.strips, (M + kColumnMinRows - 1) / kColumnMinRows);
    chunks = std::max<int64_t>(chunks, 1);
  }
  g.rowsPerChunk = std::max<int64_t>(1, (M + chunks - 1) / chunks);
  g.chunks = std::max<int64_t>(1, (M + g.rowsPerChunk - 1) / g.rowsPerChunk);  // no empty chunk
  return g;
}

void launchColumnReduce(ColumnParams& p, bool layerNorm, cudaStream_t stream) {
  const ColumnGrid g = columnGrid(p.M, p.N);
  if (g.strips > INT_MAX)
    fail("E_ARG", "columnSum: N = " + std::to_string(p.N) + " is beyond the CUDA grid's limit");
  // Invariants of columnGrid (static buffer sizes); a violation is a bug here, not bad input.
  if (g.chunks > 1 && (g.strips > (int64_t)kMaxStripCounters || g.chunks > 65535 ||
                       (uint64_t)g.chunks * (uint64_t)p.N * 2 > kColumnPartialCapacity))
    fail("E_CUDA", "columnSum: internal error: column grid exceeds its buffers");
  p.rowsPerChunk = g.rowsPerChunk;
  p.chunks = (unsigned)g.chunks;
  const dim3 grid((unsigned)g.strips, (unsigned)g.chunks);
  if (layerNorm) {
    columnSumKernel<true><<<grid, kThreads, 0, stream>>>(p);
    checkLaunch("columnSumKernel<layerNorm>");
  } else {
    columnSumKernel<false><<<grid, kThreads, 0, stream>>>(p);
    checkLaunch("columnSumKernel");
  }
}

// Blocks for a row kernel: groups of kGroup threads per row, at most `cap` blocks.
template <int kGroup>
unsigned rowBlocks(int64_t rows, uint64_t cap) {
  return blocksFor((uint64_t)std::max<int64_t>(rows, 0), kThreads / kGroup, cap);
}

}  // namespace

void launchActivationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n,
                             cudaStream_t stream, int multiprocessors) {
  ElementwiseParams e{};
  e.op = ElementOp::ActForward;
  e.act = act;
  e.a = x; e.aType = xType;
  e.b = nullptr; e.bType = DType::F32;
  e.out = y; e.outType = yType;
  e.n = n;
  launchElementwise(e, stream, multiprocessors);
}

void launchActivationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx,
                              DType dxType, size_t n, cudaStream_t stream, int multiprocessors) {
  ElementwiseParams e{};
  e.op = ElementOp::ActBackward;
  e.act = act;
  e.a = dy; e.aType = dyType;
  e.b = z; e.bType = zType;
  e.out = dx; e.outType = dxType;
  e.n = n;
  launchElementwise(e, stream, multiprocessors);
}

void launchDropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed,
                   cudaStream_t stream, int multiprocessors) {
  ElementwiseParams e{};
  e.op = ElementOp::Dropout;
  e.act = Act::None;
  e.a = x; e.aType = xType;
  e.b = nullptr; e.bType = DType::F32;
  e.out = y; e.outType = yType;
  e.n = n;
  e.p = p;
  e.scale = dropout_scale(p);  // once per call, on the host, as the CPU backend
  e.seed = seed;
  launchElementwise(e, stream, multiprocessors);
}

void launchColumnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType, cudaStream_t stream) {
  if (N <= 0) return;
  ColumnParams p{};
  p.x = x; p.xType = xType;
  p.x2 = nullptr; p.x2Type = DType::F32;
  p.mean = nullptr; p.rstd = nullptr;
  p.M = std::max<int64_t>(M, 0);
  p.N = N;
  p.out = out; p.out2 = nullptr; p.outType = outType;
  launchColumnReduce(p, false, stream);
}

void launchSoftmaxCrossEntropy(const CrossEntropyArgs& a, cudaStream_t stream) {
  if (a.B <= 0 || a.C <= 0) {  // nothing to average: loss 0, correct 0 (as the CPU backend)
    MP_CUDA_CHECK(cudaMemsetAsync(a.loss, 0, sizeof(float), stream));
    if (a.correct != nullptr) MP_CUDA_CHECK(cudaMemsetAsync(a.correct, 0, sizeof(int32_t), stream));
    return;
  }
  CeParams p{};
  p.logits = a.logits; p.logitsType = a.logitsType;
  p.labels = a.labels;
  p.B = a.B; p.C = a.C;
  p.smoothing = a.smoothing;
  p.gscale = ce_grad_scale(a.lossScale, a.B);
  p.denom = (float)a.B;
  p.dlogits = a.dlogits; p.dType = a.dType;
  p.loss = a.loss;
  p.correct = a.correct;
  if (a.C <= kWarpRowMaxColumns) {
    softmaxCrossEntropyKernel<32><<<rowBlocks<32>(a.B, kMaxLossBlocks), kThreads, 0, stream>>>(p);
    checkLaunch("softmaxCrossEntropyKernel<warp>");
  } else {
    softmaxCrossEntropyKernel<kThreads><<<rowBlocks<kThreads>(a.B, kMaxLossBlocks), kThreads, 0, stream>>>(p);
    checkLaunch("softmaxCrossEntropyKernel<block>");
  }
}

void launchMseLoss(const MseArgs& a, cudaStream_t stream) {
  if (a.n == 0) {
    MP_CUDA_CHECK(cudaMemsetAsync(a.loss, 0, sizeof(float), stream));
    return;
  }
  MseParams p{};
  p.pred = a.pred; p.predType = a.predType;
  p.target = a.target; p.targetType = a.targetType;
  p.n = a.n;
  p.k = mse_grad_scale(a.lossScale, a.n);
  p.denom = (float)a.n;
  p.dpred = a.dpred; p.dType = a.dType;
  p.loss = a.loss;
  mseKernel<<<blocksFor(a.n, kThreads, kMaxLossBlocks), kThreads, 0, stream>>>(p);
  checkLaunch("mseKernel");
}

void launchLayerNormForward(const LayerNormArgs& a, cudaStream_t stream, int multiprocessors) {
  if (a.M <= 0) return;
  LnForwardParams p{};
  p.x = a.x; p.xType = a.xType;
  p.gamma = a.gamma; p.beta = a.beta; p.gType = a.gType;
  p.M = a.M; p.N = std::max<int64_t>(a.N, 0);
  p.eps = a.eps;
  p.y = a.y; p.yType = a.yType;
  p.mean = a.mean; p.rstd = a.rstd;
  if (p.N <= kWarpRowMaxColumns) {
    const uint64_t cap = oneWave(multiprocessors, residentBlocks<layerNormForwardKernel<32>, kThreads>());
    layerNormForwardKernel<32><<<rowBlocks<32>(a.M, cap), kThreads, 0, stream>>>(p);
    checkLaunch("layerNormForwardKernel<warp>");
  } else {
    const uint64_t cap = oneWave(multiprocessors, residentBlocks<layerNormForwardKernel<kThreads>, kThreads>());
    layerNormForwardKernel<kThreads><<<rowBlocks<kThreads>(a.M, cap), kThreads, 0, stream>>>(p);
    checkLaunch("layerNormForwardKernel<block>");
  }
}

void launchLayerNormBackward(const LayerNormBackwardArgs& a, cudaStream_t stream, int multiprocessors) {
  if (a.N <= 0) return;
  const int64_t M = std::max<int64_t>(a.M, 0);
  // dgamma / dbeta first: they read dy and x, which dx may overwrite (in-place backward).
  ColumnParams c{};
  c.x = a.dy; c.xType = a.dyType;
  c.x2 = a.x; c.x2Type = a.xType;
  c.mean = a.mean; c.rstd = a.rstd;
  c.M = M; c.N = a.N;
  c.out = a.dgamma; c.out2 = a.dbeta; c.outType = a.dgType;
  launchColumnReduce(c, true, stream);
  if (M == 0) return;

  LnBackwardParams p{};
  p.dy = a.dy; p.dyType = a.dyType;
  p.x = a.x; p.xType = a.xType;
  p.gamma = a.gamma; p.gType = a.gType;
  p.mean = a.mean; p.rstd = a.rstd;
  p.M = M; p.N = a.N;
  p.dx = a.dx; p.dxType = a.dxType;
  if (a.N <= kWarpRowMaxColumns) {
    const uint64_t cap = oneWave(multiprocessors, residentBlocks<layerNormBackwardKernel<32>, kThreads>());
    layerNormBackwardKernel<32><<<rowBlocks<32>(M, cap), kThreads, 0, stream>>>(p);
    checkLaunch("layerNormBackwardKernel<warp>");
  } else {
    const uint64_t cap = oneWave(multiprocessors, residentBlocks<layerNormBackwardKernel<kThreads>, kThreads>());
    layerNormBackwardKernel<kThreads><<<rowBlocks<kThreads>(M, cap), kThreads, 0, stream>>>(p);
    checkLaunch("layerNormBackwardKernel<block>");
  }
}

}  // namespace mp
