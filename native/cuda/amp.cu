// CUDA kernels of the mixed-precision step: unscale / inf-check / sum of squares, amp_finalize,
// the fused optimizer, and gradient accumulation. Semantics at UnscaleArgs ... AccumulateArgs
// (native/core/op_args.h). The per-element math is the shared definition (native/shared/amp.h:
// unscale_element, is_finite_f32, inv_scale, amp_finalize, optimizer_element), called per element
// exactly as the CPU backend (native/cpu/amp.cpp) does; nothing here re-derives a formula.
// Everything is enqueued on the backend's one stream, and the AmpState stays in device memory
// (read and written by the kernels, never by the host): a whole step needs no host round trip.
//
// Memory access: bandwidth-bound grid-stride loops with 16-byte loads and stores.
//  * unscaleCheckNorm (a reduction): chunks of 16 bytes (8 halves or 4 floats), chunk q always
//    elements [q * V, q * V + V), two chunks in flight per thread; a chunk is one vector load
//    where g (and out32) are 16-byte aligned, else element loads of the same elements. The grid
//    is a function of n alone (at most kMaxReduceBlocks blocks). Each thread sums its chunks in
//    order, the block through the fixed tree of reduce.cuh, the per-block sums go to a workspace
//    and unscaleFinalizeKernel (one block) adds them in block order to state->sumsq: bitwise
//    repeatable for a given n on any GPU and any buffer placement (no float atomics). foundInf
//    is an integer OR (atomicOr), order-free. The order differs from the CPU's fixed blocks, so
//    sumsq (and the grad norm) may differ from the CPU backend's in the last bits.
//  * optimizer / accumulate (no reduction): a scalar head until the operands are aligned,
//    vectors of 4, a scalar tail (vec.cuh's Split); one wave of blocks.
//
// Floating point: compiled with -fmad=false (CMakeLists.txt), so the shared formulas round as
// the CPU's (built with -ffp-contract=off); the sum of squares uses explicitly rounded operations.
#include <stdint.h>
#include <string>
#include "check.cuh"
#include "cuda_ops.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

constexpr unsigned kMaxReduceBlocks = 2048;  // unscale's grid cap (a constant: results never depend on the GPU)

// acc + u * u with two roundings, as the CPU computes it (never contracted into an FMA).
__device__ __forceinline__ float addSquare(float acc, float u) { return __fadd_rn(acc, __fmul_rn(u, u)); }

// ---- unscale / check / sum of squares -----------------------------------------------------

struct UnscaleParams {
  const void* g;
  float* out32;     // may be null
  size_t n;
  bool vectors;     // g and out32 16-byte aligned: whole chunks are single vector accesses
  AmpState* state;
  float* part;      // workspace [gridDim.x]
};

template <DType T>
__global__ void __launch_bounds__(kThreads) unscaleCheckNormKernel(const __grid_constant__ UnscaleParams p) {
  using S = typename Storage<T>::type;
  constexpr int V = 16 / (int)sizeof(S);
  __shared__ float scratch[kWarps];
  const float invScale = inv_scale(p.state->scale);
  const size_t chunks = (p.n + V - 1) / V, tid = globalThread(), stride = gridThreads();
  const S* gs = static_cast<const S*>(p.g);
  float sum = 0.0f;
  bool bad = false;
  auto load = [&](size_t q, S (&x)[V]) {
    const size_t i0 = q * V;
    if (p.vectors && i0 + V <= p.n) {
      loadVec(gs + i0, x);  // float4, or 8 halves as a uint4
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = i0 + k < p.n ? gs[i0 + k] : S(0);
    }
  };
  auto consume = [&](size_t q, const S (&x)[V]) {
    const size_t i0 = q * V;
    const int count = i0 + V <= p.n ? V : (int)(p.n - i0);
    float u[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      u[k] = unscale_element(x, T, (size_t)k, invScale);
      if (k < count) {
        sum = addSquare(sum, u[k]);
        bad = bad || !is_finite_f32(u[k]);
      }
    }
    if (p.out32 == nullptr) return;
    if (p.vectors && count == V) {
      storeFloats<V>(p.out32 + i0, u);
    } else {
      for (int k = 0; k < count; ++k) p.out32[i0 + k] = u[k];
    }
  };
  for (size_t q = tid; q < chunks; q += 2 * stride) {
    // Both loads are issued before anything is stored: more bytes in flight, and an out32 that
    // is g itself (F32, in place) is still read before it is written.
    const size_t q2 = q + stride;
    const bool second = q2 < chunks;
    S a[V], b[V];
    load(q, a);
    if (second) load(q2, b);
    consume(q, a);
    if (second) consume(q2, b);
  }
  sum = groupSum<kThreads>(sum, scratch);
  const int anyBad = __syncthreads_or(bad ? 1 : 0);
  if (threadIdx.x == 0) {
    p.part[blockIdx.x] = sum;
    if (anyBad) atomicOr(&p.state->foundInf, 1);
  }
}

__global__ void __launch_bounds__(kThreads) unscaleFinalizeKernel(const float* part, unsigned blocks, AmpState* state) {
  __shared__ float scratch[kWarps];
  const float s = blockSumOrdered(part, blocks, scratch);
  if (threadIdx.x == 0) state->sumsq = __fadd_rn(state->sumsq, s);
}

__global__ void ampFinalizeKernel(AmpState* state, const ScalerConfig c, const OptimConfig o, bool updateScale) {
  amp_finalize(*state, c, o, updateScale);
}

// ---- the fused optimizer ------------------------------------------------------------------

struct OptimKernelArgs {
  Split split;  // vector width 4
  float* master;
  void* working;  // may be null
  const void* grad;
  float* m;  // may be null
  float* v;  // may be null
  const AmpState* state;
  OptimConfig config;
};

// optimizer_element per element. On the vector path it runs on registers loaded 4 elements at a
// time; an absent m / v is a zero register array that is never stored, which is what
// optimizer_element does with a null pointer (reads 0, writes nothing).
template <DType G, DType W>
__global__ void __launch_bounds__(kThreads) optimizerKernel(const __grid_constant__ OptimKernelArgs a) {
  using GS = typename Storage<G>::type;
  using WS = typename Storage<W>::type;
  // A skipped step (overflow) changes nothing: every thread leaves before touching any buffer.
  if (a.state->skipped) return;
  const AmpState s = *a.state;
  const size_t tid = globalThread(), stride = gridThreads();
  const Split& sp = a.split;
  auto element = [&](size_t i) { optimizer_element(i, a.master, a.working, W, a.grad, G, a.m, a.v, a.config, s); };
  for (size_t i = tid; i < sp.head; i += stride) element(i);
  for (size_t i = sp.tail() + tid; i < sp.n; i += stride) element(i);
  const GS* grad = static_cast<const GS*>(a.grad);
  WS* working = static_cast<WS*>(a.working);
  for (size_t q = tid; q < sp.nvec; q += stride) {
    const size_t i0 = sp.head + q * 4;
    float p[4], m[4] = {0.0f, 0.0f, 0.0f, 0.0f}, v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    GS g[4];
    WS w[4] = {};
    loadVec(a.master + i0, p);
    loadVec(grad + i0, g);
    if (a.m) loadVec(a.m + i0, m);
    if (a.v) loadVec(a.v + i0, v);
#pragma unroll
    for (int k = 0; k < 4; ++k) optimizer_element((size_t)k, p, w, W, g, G, m, v, a.config, s);
    storeVec(a.master + i0, p);
    if (a.m) storeVec(a.m + i0, m);
    if (a.v) storeVec(a.v + i0, v);
    if (working) storeVec(working + i0, w);
  }
}

// ---- gradient accumulation ----------------------------------------------------------------

// acc = g (overwrite) or acc + g, in FP32. The overwrite path never reads acc.
template <DType G>
__global__ void __launch_bounds__(kThreads) accumulateKernel(const void* g, float* acc, const Split sp, bool overwrite) {
  using GS = typename Storage<G>::type;
  const size_t tid = globalThread(), stride = gridThreads();
  auto element = [&](size_t i) {
    const float x = load_f32(g, G, i);
    acc[i] = overwrite ? x : acc[i] + x;
  };
  for (size_t i = tid; i < sp.head; i += stride) element(i);
  for (size_t i = sp.tail() + tid; i < sp.n; i += stride) element(i);
  const GS* gs = static_cast<const GS*>(g);
  for (size_t q = tid; q < sp.nvec; q += stride) {
    const size_t i0 = sp.head + q * 4;
    GS x[4];
    float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    loadVec(gs + i0, x);
    if (!overwrite) loadVec(acc + i0, y);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float xk = load_f32(x, G, (size_t)k);
      y[k] = overwrite ? xk : y[k] + xk;
    }
    storeVec(acc + i0, y);
  }
}

// ---- host side ----------------------------------------------------------------------------

[[noreturn]] void badDType(const char* op, DType t) {
  fail("E_DTYPE", std::string(op) + ": unsupported dtype code " + std::to_string((int)t));
}

template <DType T>
void unscaleAs(const UnscaleArgs& a, const CudaContext& ctx) {
  using S = typename Storage<T>::type;
  constexpr size_t V = 16 / sizeof(S);
  const size_t chunks = (a.n + V - 1) / V;
  const unsigned blocks = blocksFor(chunks, 2 * (uint64_t)kThreads, kMaxReduceBlocks);
  Workspace ws(ctx, blocks * sizeof(float));
  UnscaleParams p{};
  p.g = a.g;
  p.out32 = a.out32;
  p.n = a.n;
  p.vectors = aligned(a.g, 16) && (a.out32 == nullptr || aligned(a.out32, 16));
  p.state = a.state;
  p.part = ws.as<float>();
  unscaleCheckNormKernel<T><<<blocks, kThreads, 0, ctx.stream>>>(p);
  checkLaunch("unscaleCheckNormKernel");
  unscaleFinalizeKernel<<<1, kThreads, 0, ctx.stream>>>(p.part, blocks, a.state);
  checkLaunch("unscaleFinalizeKernel");
}

template <DType G, DType W>
void optimizerAs(const OptimStepArgs& args, const CudaContext& ctx) {
  OptimKernelArgs a;
  a.split = splitForVectors(args.n, 4,
                            {{args.master, 4},
                             {args.m, 4},
                             {args.v, 4},
                             {args.grad, sizeof(typename Storage<G>::type)},
                             {args.working, sizeof(typename Storage<W>::type)}});
  a.master = args.master;
  a.working = args.working;
  a.grad = args.grad;
  a.m = args.m;
  a.v = args.v;
  a.state = args.state;
  a.config = args.config;
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<optimizerKernel<G, W>, kThreads>());
  optimizerKernel<G, W><<<blocksFor(threadsWanted(a.split), kThreads, cap), kThreads, 0, ctx.stream>>>(a);
  checkLaunch("optimizerKernel");
}

template <DType G>
void optimizerWithGrad(const OptimStepArgs& args, const CudaContext& ctx) {
  switch (args.workingType) {
    case DType::F32: return optimizerAs<G, DType::F32>(args, ctx);
    case DType::F16: return optimizerAs<G, DType::F16>(args, ctx);
    case DType::BF16: return optimizerAs<G, DType::BF16>(args, ctx);
    default: break;
  }
  badDType("optimizerStep working copy", args.workingType);
}

template <DType G>
void accumulateAs(const AccumulateArgs& a, const CudaContext& ctx) {
  const Split split = splitForVectors(a.n, 4, {{a.acc, 4}, {a.g, sizeof(typename Storage<G>::type)}});
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<accumulateKernel<G>, kThreads>());
  accumulateKernel<G><<<blocksFor(threadsWanted(split), kThreads, cap), kThreads, 0, ctx.stream>>>(a.g, a.acc, split,
                                                                                                   a.overwrite);
  checkLaunch("accumulateKernel");
}

}  // namespace

void unscaleCheckNorm(const UnscaleArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  switch (a.gType) {
    case DType::F32: return unscaleAs<DType::F32>(a, ctx);
    case DType::F16: return unscaleAs<DType::F16>(a, ctx);
    case DType::BF16: return unscaleAs<DType::BF16>(a, ctx);
    default: break;
  }
  badDType("unscaleCheckNorm", a.gType);
}

void ampFinalize(const AmpFinalizeArgs& a, const CudaContext& ctx) {
  ampFinalizeKernel<<<1, 1, 0, ctx.stream>>>(a.state, a.scaler, a.optim, a.updateScale);
  checkLaunch("ampFinalizeKernel");
}

void optimizerStep(const OptimStepArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  switch (a.gradType) {
    case DType::F32: return optimizerWithGrad<DType::F32>(a, ctx);
    case DType::F16: return optimizerWithGrad<DType::F16>(a, ctx);
    case DType::BF16: return optimizerWithGrad<DType::BF16>(a, ctx);
    default: break;
  }
  badDType("optimizerStep grad", a.gradType);
}

void accumulate(const AccumulateArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  switch (a.gType) {
    case DType::F32: return accumulateAs<DType::F32>(a, ctx);
    case DType::F16: return accumulateAs<DType::F16>(a, ctx);
    case DType::BF16: return accumulateAs<DType::BF16>(a, ctx);
    default: break;
  }
  badDType("accumulate", a.gType);
}

}  // namespace cuda
}  // namespace mp
