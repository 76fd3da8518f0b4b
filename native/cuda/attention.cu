// CUDA scaled dot-product attention, forward and backward. Semantics at AttentionArgs /
// AttentionBackwardArgs (native/core/op_args.h); the per-element steps come from
// native/shared/nn.h, as the CPU twin (native/cpu/attention.cpp) calls them: attention_key_end
// (the keys a query sees), attention_score (scale and mask), attention_prob (exp_poly(s - m),
// masked -> 0), attention_inv_sum, attention_lse, attention_drop_index / dropout_keep,
// keep_or_zero / dropout_apply and attention_ds. (Compiled with -fmad=false, CMakeLists.txt, so
// those formulas round as on the CPU.)
//
// Built from the batched GEMM of gemm.cu (mp::cuda::gemm: Tensor Cores for FP16 / BF16 operands,
// FP32 accumulation, any leading dimension and batch stride) and two row kernels:
//
//  * The B*H heads are the GEMM's batch: head z = b*H + h at z * stride. A q / k / v / dout view
//    whose heads are not one stride apart (stride_b != H * stride_h, e.g. [B, T, H, D] or a packed
//    QKV buffer) is first copied packed ([B*H, T, D]) into a workspace with mp::cuda::copy; an
//    output view (out, dq, dk, dv) of that kind is written packed and then copied into place.
//  * Heads are processed in chunks of at most kChunkBytes of score workspace (at least one head):
//    the dot products q k^T in FP32 [heads, Tq, ldS] (ldS = Tk rounded up to 8, so the Tensor Core
//    kernel reads its rows with 16-byte copies), then the row kernel, then the products. The
//    row kernels turn a dot product into a score with attention_score (scale * dot, -inf where
//    masked), as the CPU does (the GEMM's alpha would round the same product the same way).
//  * Forward, attnSoftmaxKernel: one row (b, h, i) per group (a warp up to kWarpRowMax keys, else
//    the block: any Tk), grid-stride over rows, one wave. Row i uses the keys
//    j < attention_key_end(causal, i, Tk) (the rest is 0). FP32 max m and sum l of
//    attention_prob(s, m) (reduce.cuh's group reductions), lse = attention_lse(m, l),
//    P = attention_prob(s, m) * attention_inv_sum(l), times the dropout keep mask (keep_or_zero),
//    stored in the compute dtype (FP16 / BF16: rounded, and the P v product runs on Tensor Cores;
//    FP32: written over S in place). out = dropout_scale * P v.
//  * Backward: the dot products again (the same GEMM, so the same bits), dP = dout v^T (FP32),
//    then attnGradKernel per row: Di = sum_d dout * out (FP32), P = attention_prob(s, lse)
//    (masked: 0), Pd = keep_or_zero(keep, P), dS = attention_ds(P, dropout_apply(dP), Di) (masked:
//    0), both in the compute dtype (FP16 / BF16: rounded; FP32: over S and dP in place).
//    dv = dropout_scale * Pd^T dout, dq = scale * dS k, dk = scale * dS^T q, each a batched GEMM
//    (transA / transB) storing dType through the output's strides.
// The dropout scale and `scale` of the gradients ride in the GEMMs' alpha, so what is stored in
// FP16 is a probability (<= 1) or dS itself, never a value multiplied by 1 / (1 - p).
// Every reduction has an order fixed by the sizes alone: results are bitwise repeatable.
#include <math.h>
#include <stdint.h>
#include <algorithm>
#include <string>

#include "../shared/nn.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

// Score workspace per chunk of heads (S, and dP / P / dS where they have their own buffers).
constexpr size_t kChunkBytes = size_t(512) << 20;

// ---- row kernels ----------------------------------------------------------------------------

struct AttnSoftmaxParams {
  const float* s;        // this chunk's dot products q.k: local row r at r * ld
  void* p; DType pType;  // P * keep (may be s itself when F32: each element read, then written, by one thread)
  int64_t ld, rows;      // rows = heads in the chunk * Tq
  int64_t firstRow;      // global row (z * Tq + i) of local row 0
  int64_t Tq, Tk, H;
  float scale;
  bool causal;
  float dropoutP;
  uint64_t seed;
  float* lse;            // [B*H*Tq] by global row, or null
};

// The (b, h, i) of score row zi = (b * H + h) * Tq + i, the global row both row kernels walk.
__device__ __forceinline__ void headOfRow(int64_t zi, int64_t Tq, int64_t H, int64_t& b, int64_t& h, int64_t& i) {
  const int64_t z = divIndex(zi, Tq);
  i = zi - z * Tq;
  b = divIndex(z, H);
  h = z - b * H;
}

template <int kGroup>
__global__ void __launch_bounds__(kThreads) attnSoftmaxKernel(const __grid_constant__ AttnSoftmaxParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t Tk = p.Tk, chunks = ceilDiv(Tk, 4);
  const float scale = p.scale;
  const bool drop = p.dropoutP > 0.0f;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.rows; row += (int64_t)gridDim.x * kGroups) {
    const int64_t zi = p.firstRow + row;
    int64_t b, h, i;
    headOfRow(zi, p.Tq, p.H, b, h, i);
    const int64_t keys = attention_key_end(p.causal, i, Tk);  // >= 1
    const RowIn s = rowIn(p.s, DType::F32, (size_t)(row * p.ld));
    // The max and the sum run over the visible keys j < keys only (none of them masked).
    float mx = -INFINITY;
    forRowChunks<kGroup>(s, keys, rank, [&](float e, int64_t) { mx = fmaxf(mx, attention_score(e, scale, false)); });
    mx = groupMax<kGroup>(mx, scratch);
    float sum = 0.0f;
    forRowChunks<kGroup>(s, keys, rank, [&](float e, int64_t) { sum += attention_prob(attention_score(e, scale, false), mx); });
    sum = groupSum<kGroup>(sum, scratch);
    if (p.lse != nullptr && rank == 0) p.lse[zi] = attention_lse(mx, sum);
    const float inv = attention_inv_sum(sum);
    const RowOut out = rowOut(p.p, p.pType, (size_t)(row * p.ld));
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, Tk);
      float v[4];
      s.chunk(4 * q, count, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t j = 4 * q + k;
        const bool masked = j >= keys;
        const float prob = attention_prob(attention_score(v[k], scale, masked), mx) * inv;
        const bool keep = masked || !drop || dropout_keep(p.seed, attention_drop_index(b, h, i, j, p.H, p.Tq, Tk), p.dropoutP);
        v[k] = keep_or_zero(keep, prob);  // the dropout scale rides in the P v GEMM's alpha
      }
      out.chunk(4 * q, count, v);
    }
  }
}

struct AttnGradParams {
  const float* s;   // this chunk's dot products q.k, local row r at r * ld
  const float* dp;  // dout v^T, same layout
  void* pd;         // P * keep (F32: may be s itself)
  void* ds;         // attention_ds(P, dropout_apply(dP), Di) (F32: may be dp itself)
  DType type;       // of pd, ds, out, dout
  int64_t ld, rows, firstRow;
  int64_t Tq, Tk, H, D;
  float scale;
  bool causal;
  float dropoutP, dropScale;
  uint64_t seed;
  const float* lse;  // [B*H*Tq] by global row
  const void* out; int64_t outStrides[3];
  const void* dout; int64_t doutStrides[3];
};

template <int kGroup>
__global__ void __launch_bounds__(kThreads) attnGradKernel(const __grid_constant__ AttnGradParams p) {
  constexpr int kGroups = kThreads / kGroup;
  __shared__ float scratch[kWarps];
  const int rank = (int)(threadIdx.x % kGroup), group = (int)(threadIdx.x / kGroup);
  const int64_t Tk = p.Tk, D = p.D, chunks = ceilDiv(Tk, 4), dChunks = ceilDiv(D, 4);
  const float scale = p.scale;
  const bool drop = p.dropoutP > 0.0f;
  for (int64_t row = (int64_t)blockIdx.x * kGroups + group; row < p.rows; row += (int64_t)gridDim.x * kGroups) {
    const int64_t zi = p.firstRow + row;
    int64_t b, h, i;
    headOfRow(zi, p.Tq, p.H, b, h, i);
    // Di = sum_d dout[b, h, i, d] * out[b, h, i, d].
    const RowIn o = rowIn(p.out, p.type, (size_t)(b * p.outStrides[0] + h * p.outStrides[1] + i * p.outStrides[2]));
    const RowIn g = rowIn(p.dout, p.type, (size_t)(b * p.doutStrides[0] + h * p.doutStrides[1] + i * p.doutStrides[2]));
    float di = 0.0f;
    for (int64_t q = rank; q < dChunks; q += kGroup) {
      const int count = chunkCount(4 * q, D);
      float ov[4], gv[4];
      o.chunk(4 * q, count, ov);
      g.chunk(4 * q, count, gv);
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k < count) di = fmaf(gv[k], ov[k], di);
    }
    di = groupSum<kGroup>(di, scratch);
    const float lse = p.lse[zi];
    const int64_t keys = attention_key_end(p.causal, i, Tk);
    const size_t off = (size_t)(row * p.ld);
    const RowIn s = rowIn(p.s, DType::F32, off), dp = rowIn(p.dp, DType::F32, off);
    const RowOut pd = rowOut(p.pd, p.type, off), ds = rowOut(p.ds, p.type, off);
    for (int64_t q = rank; q < chunks; q += kGroup) {
      const int count = chunkCount(4 * q, Tk);
      float sv[4], dv[4];
      s.chunk(4 * q, count, sv);
      dp.chunk(4 * q, count, dv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t j = 4 * q + k;
        const bool masked = j >= keys;
        const float prob = attention_prob(attention_score(sv[k], scale, masked), lse);  // masked: 0
        const bool keep = masked || !drop || dropout_keep(p.seed, attention_drop_index(b, h, i, j, p.H, p.Tq, Tk), p.dropoutP);
        sv[k] = keep_or_zero(keep, prob);  // Pd / dropout_scale: the scale rides in dv's alpha
        // dS, exactly 0 where masked (whatever dP holds there)
        dv[k] = keep_or_zero(!masked, attention_ds(prob, dropout_apply(dv[k], keep, p.dropScale), di));
      }
      pd.chunk(4 * q, count, sv);
      ds.chunk(4 * q, count, dv);
    }
  }
}

// ---- host side ------------------------------------------------------------------------------

int64_t mul64(int64_t a, int64_t b, const char* op) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("E_SHAPE", std::string(op) + ": sizes overflow int64");
  return r;
}

int64_t roundUp8(int64_t n) { return (n + 7) / 8 * 8; }

// A [B, H, T, D] tensor as the GEMM's batch of B*H [T, D] matrices: head z at p + z * stride
// elements, rows ld apart.
struct Heads {
  const void* p;
  int64_t ld, stride;
};
struct HeadsOut {
  void* p;
  int64_t ld, stride;
  bool packed;  // written to a workspace [B*H, T, D], copied into place by finishOutput
};

// Whether the heads of a {b, h, t} view lie one stride apart (head z = b*H + h at z * stride).
// Strides of size-1 dims do not matter.
bool uniformHeads(int64_t B, int64_t H, const int64_t* s, int64_t& stride) {
  if (B == 1) { stride = H == 1 ? 0 : s[1]; return true; }
  if (H == 1) { stride = s[0]; return true; }
  if (s[1] <= INT64_MAX / H && s[0] == H * s[1]) { stride = s[1]; return true; }
  return false;
}
// The row stride of a view with T rows (a single row: any ld reads the same; a multiple of 8
// keeps the Tensor Core kernel's 16-byte copies).
int64_t rowStride(int64_t T, int64_t D, const int64_t* s) { return T > 1 ? s[2] : roundUp8(D); }

CopyArgs headsCopy(int64_t B, int64_t H, int64_t T, int64_t D, DType t) {
  CopyArgs c;
  c.ndim = 4;
  c.shape[0] = B; c.shape[1] = H; c.shape[2] = T; c.shape[3] = D;
  c.xType = c.outType = t;
  return c;
}
void setStrides(int64_t (&dst)[kMaxDims], const int64_t* s) { dst[0] = s[0]; dst[1] = s[1]; dst[2] = s[2]; dst[3] = 1; }
void setPacked(int64_t (&dst)[kMaxDims], int64_t H, int64_t T, int64_t D) {
  dst[0] = H * T * D; dst[1] = T * D; dst[2] = D; dst[3] = 1;
}

// A GEMM input: the view itself when its heads are one stride apart, else a packed copy in ws.
Heads stageInput(const void* p, DType t, int64_t B, int64_t H, int64_t T, int64_t D, const int64_t* s, Workspace& ws,
                 const CudaContext& ctx) {
  int64_t stride = 0;
  if (uniformHeads(B, H, s, stride)) return {p, rowStride(T, D, s), stride};
  ws.reset(ctx, checkedMul(checkedMul(elems(B, H, T), (size_t)D), dtype_size(t)));
  CopyArgs c = headsCopy(B, H, T, D, t);
  setStrides(c.xStrides, s);
  setPacked(c.outStrides, H, T, D);
  c.x = p;
  c.out = ws.as<void>();
  copy(c, ctx);
  return {ws.as<void>(), D, T * D};
}

// A GEMM output: the view itself when its heads are one stride apart, else a packed workspace.
HeadsOut outputTarget(void* p, DType t, int64_t B, int64_t H, int64_t T, int64_t D, const int64_t* s, Workspace& ws,
                      const CudaContext& ctx) {
  int64_t stride = 0;
  if (uniformHeads(B, H, s, stride)) return {p, rowStride(T, D, s), stride, false};
  ws.reset(ctx, checkedMul(checkedMul(elems(B, H, T), (size_t)D), dtype_size(t)));
  return {ws.as<void>(), D, T * D, true};
}

void finishOutput(const HeadsOut& o, void* dst, DType t, int64_t B, int64_t H, int64_t T, int64_t D, const int64_t* s,
                  const CudaContext& ctx) {
  if (!o.packed) return;
  CopyArgs c = headsCopy(B, H, T, D, t);
  setPacked(c.xStrides, H, T, D);
  setStrides(c.outStrides, s);
  c.x = o.p;
  c.out = dst;
  copy(c, ctx);
}

const void* at(const void* p, DType t, int64_t elements) {
  return static_cast<const char*>(p) + elements * (int64_t)dtype_size(t);
}
void* at(void* p, DType t, int64_t elements) { return static_cast<char*>(p) + elements * (int64_t)dtype_size(t); }

// out_z[M, N] = alpha * op(A_z) op(B_z) for z < batch (pointers already at this chunk's first head).
struct Operand {
  const void* p;
  DType t;
  int64_t ld, stride;
};
void batchedGemm(int64_t batch, int64_t M, int64_t N, int64_t K, bool transA, const Operand& A, bool transB,
                 const Operand& B, float alpha, void* out, DType outType, int64_t ldc, int64_t strideC,
                 const CudaContext& ctx) {
  GemmArgs g;
  g.M = M; g.N = N; g.K = K; g.batch = batch;
  g.transA = transA; g.transB = transB;
  g.lda = A.ld; g.ldb = B.ld; g.ldc = ldc;
  g.strideA = batch > 1 ? A.stride : 0;
  g.strideB = batch > 1 ? B.stride : 0;
  g.strideC = batch > 1 ? strideC : 0;
  g.A = A.p; g.aType = A.t;
  g.B = B.p; g.bType = B.t;
  g.alpha = alpha; g.beta = 0.0f;
  g.out = out; g.outType = outType;
  gemm(g, ctx);  // no preAct: straight to gemm.cu's kernel choice and launch
}

// Heads per chunk: as many as fit kChunkBytes at bytesPerHead each, at least 1, at most BH.
int64_t headsPerChunk(int64_t BH, int64_t bytesPerHead) {
  const int64_t fit = (int64_t)(kChunkBytes / (size_t)std::max<int64_t>(bytesPerHead, 1));
  return std::min(BH, std::max<int64_t>(fit, 1));
}

}  // namespace

void attentionForward(const AttentionArgs& a, const CudaContext& ctx) {
  const char* op = "attentionForward";
  if (a.B < 1 || a.H < 1 || a.Tq < 1 || a.Tk < 1 || a.D < 1) return;  // the reader requires >= 1
  const int64_t B = a.B, H = a.H, Tq = a.Tq, Tk = a.Tk, D = a.D;
  const int64_t BH = mul64(B, H, op);
  mul64(mul64(BH, Tq, op), Tk, op);  // the dropout index space fits (ldS below >= Tk)
  const DType t = a.type;
  const size_t es = dtype_size(t);
  const int64_t ldS = roundUp8(Tk), scoreElems = mul64(Tq, ldS, op);
  const bool pInPlace = t == DType::F32;  // P over S

  Workspace wq, wk, wv, wo, wS, wP;
  const Heads q = stageInput(a.q, t, B, H, Tq, D, a.qStrides, wq, ctx);
  const Heads k = stageInput(a.k, t, B, H, Tk, D, a.kStrides, wk, ctx);
  const Heads v = stageInput(a.v, t, B, H, Tk, D, a.vStrides, wv, ctx);
  const HeadsOut o = outputTarget(a.out, t, B, H, Tq, D, a.outStrides, wo, ctx);

  const int64_t perHead = mul64(scoreElems, (int64_t)(4 + (pInPlace ? 0 : es)), op);
  const int64_t nz = headsPerChunk(BH, perHead);
  wS.reset(ctx, checkedMul((size_t)nz, (size_t)scoreElems * 4));
  if (!pInPlace) wP.reset(ctx, checkedMul((size_t)nz, (size_t)scoreElems * es));
  float* S = wS.as<float>();
  void* P = pInPlace ? static_cast<void*>(S) : wP.as<void>();
  const float dropScale = dropout_scale(a.dropoutP);

  for (int64_t z0 = 0; z0 < BH; z0 += nz) {
    const int64_t n = std::min(nz, BH - z0);
    // S = q k^T  [Tq, Tk] per head, FP32 (the row kernel applies attention_score).
    batchedGemm(n, Tq, Tk, D, false, {at(q.p, t, z0 * q.stride), t, q.ld, q.stride}, true,
                {at(k.p, t, z0 * k.stride), t, k.ld, k.stride}, 1.0f, S, DType::F32, ldS, scoreElems, ctx);
    AttnSoftmaxParams p{};
    p.s = S;
    p.p = P; p.pType = t;
    p.ld = ldS;
    p.rows = n * Tq;
    p.firstRow = z0 * Tq;
    p.Tq = Tq; p.Tk = Tk; p.H = H;
    p.scale = a.scale;
    p.causal = a.causal;
    p.dropoutP = a.dropoutP;
    p.seed = a.seed;
    p.lse = a.lse;
    byRowWidth(Tk, "attnSoftmaxKernel", [&](auto group) {
      constexpr int G = decltype(group)::value;
      attnSoftmaxKernel<G><<<rowBlocks<G, attnSoftmaxKernel<G>>(p.rows, ctx), kThreads, 0, ctx.stream>>>(p);
    });
    // out = dropout_scale * (P * keep) v  [Tq, D] per head, in `type`.
    batchedGemm(n, Tq, D, Tk, false, {P, t, ldS, scoreElems}, false, {at(v.p, t, z0 * v.stride), t, v.ld, v.stride},
                dropScale, at(o.p, t, z0 * o.stride), t, o.ld, o.stride, ctx);
  }
  finishOutput(o, a.out, t, B, H, Tq, D, a.outStrides, ctx);
}

void attentionBackward(const AttentionBackwardArgs& a, const CudaContext& ctx) {
  const char* op = "attentionBackward";
  if (a.B < 1 || a.H < 1 || a.Tq < 1 || a.Tk < 1 || a.D < 1) return;  // the reader requires >= 1
  const int64_t B = a.B, H = a.H, Tq = a.Tq, Tk = a.Tk, D = a.D;
  const int64_t BH = mul64(B, H, op);
  mul64(mul64(BH, Tq, op), Tk, op);
  const DType t = a.type, gt = a.dType;
  const size_t es = dtype_size(t);
  const int64_t ldS = roundUp8(Tk), scoreElems = mul64(Tq, ldS, op);
  const bool inPlace = t == DType::F32;  // Pd over S, dS over dP

  Workspace wq, wk, wv, wdo, wdq, wdk, wdv, wS, wdP, wPd, wdS;
  const Heads q = stageInput(a.q, t, B, H, Tq, D, a.qStrides, wq, ctx);
  const Heads k = stageInput(a.k, t, B, H, Tk, D, a.kStrides, wk, ctx);
  const Heads v = stageInput(a.v, t, B, H, Tk, D, a.vStrides, wv, ctx);
  const Heads dout = stageInput(a.dout, t, B, H, Tq, D, a.doutStrides, wdo, ctx);
  const HeadsOut dq = outputTarget(a.dq, gt, B, H, Tq, D, a.dqStrides, wdq, ctx);
  const HeadsOut dk = outputTarget(a.dk, gt, B, H, Tk, D, a.dkStrides, wdk, ctx);
  const HeadsOut dv = outputTarget(a.dv, gt, B, H, Tk, D, a.dvStrides, wdv, ctx);

  const int64_t perHead = mul64(scoreElems, (int64_t)(8 + (inPlace ? 0 : 2 * es)), op);
  const int64_t nz = headsPerChunk(BH, perHead);
  const size_t chunkElems = checkedMul((size_t)nz, (size_t)scoreElems);
  wS.reset(ctx, checkedMul(chunkElems, 4));
  wdP.reset(ctx, checkedMul(chunkElems, 4));
  if (!inPlace) {
    wPd.reset(ctx, checkedMul(chunkElems, es));
    wdS.reset(ctx, checkedMul(chunkElems, es));
  }
  float* S = wS.as<float>();
  float* dP = wdP.as<float>();
  void* Pd = inPlace ? static_cast<void*>(S) : wPd.as<void>();
  void* dS = inPlace ? static_cast<void*>(dP) : wdS.as<void>();
  const float dropScale = dropout_scale(a.dropoutP);

  for (int64_t z0 = 0; z0 < BH; z0 += nz) {
    const int64_t n = std::min(nz, BH - z0);
    const Operand qz{at(q.p, t, z0 * q.stride), t, q.ld, q.stride};
    const Operand kz{at(k.p, t, z0 * k.stride), t, k.ld, k.stride};
    const Operand vz{at(v.p, t, z0 * v.stride), t, v.ld, v.stride};
    const Operand gz{at(dout.p, t, z0 * dout.stride), t, dout.ld, dout.stride};
    // S = q k^T (the forward's GEMM: the same bits), dP = dout v^T, both FP32.
    batchedGemm(n, Tq, Tk, D, false, qz, true, kz, 1.0f, S, DType::F32, ldS, scoreElems, ctx);
    batchedGemm(n, Tq, Tk, D, false, gz, true, vz, 1.0f, dP, DType::F32, ldS, scoreElems, ctx);
    AttnGradParams p{};
    p.s = S; p.dp = dP;
    p.pd = Pd; p.ds = dS; p.type = t;
    p.ld = ldS;
    p.rows = n * Tq;
    p.firstRow = z0 * Tq;
    p.Tq = Tq; p.Tk = Tk; p.H = H; p.D = D;
    p.scale = a.scale;
    p.causal = a.causal;
    p.dropoutP = a.dropoutP;
    p.dropScale = dropScale;
    p.seed = a.seed;
    p.lse = a.lse;
    p.out = a.out;
    p.dout = a.dout;
    for (int d = 0; d < 3; ++d) {
      p.outStrides[d] = a.outStrides[d];
      p.doutStrides[d] = a.doutStrides[d];
    }
    byRowWidth(Tk, "attnGradKernel", [&](auto group) {
      constexpr int G = decltype(group)::value;
      attnGradKernel<G><<<rowBlocks<G, attnGradKernel<G>>(p.rows, ctx), kThreads, 0, ctx.stream>>>(p);
    });
    const Operand pdz{Pd, t, ldS, scoreElems}, dsz{dS, t, ldS, scoreElems};
    // dv = dropout_scale * (P * keep)^T dout   [Tk, D]
    batchedGemm(n, Tk, D, Tq, true, pdz, false, gz, dropScale, at(dv.p, gt, z0 * dv.stride), gt, dv.ld, dv.stride, ctx);
    // dq = scale * dS k   [Tq, D]
    batchedGemm(n, Tq, D, Tk, false, dsz, false, kz, a.scale, at(dq.p, gt, z0 * dq.stride), gt, dq.ld, dq.stride, ctx);
    // dk = scale * dS^T q   [Tk, D]
    batchedGemm(n, Tk, D, Tq, true, dsz, false, qz, a.scale, at(dk.p, gt, z0 * dk.stride), gt, dk.ld, dk.stride, ctx);
  }
  finishOutput(dq, a.dq, gt, B, H, Tq, D, a.dqStrides, ctx);
  finishOutput(dk, a.dk, gt, B, H, Tk, D, a.dkStrides, ctx);
  finishOutput(dv, a.dv, gt, B, H, Tk, D, a.dvStrides, ctx);
}

}  // namespace cuda
}  // namespace mp
