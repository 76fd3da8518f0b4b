// CUDA kernels of the mixed-precision step: unscale / inf-check / sum of squares, amp_finalize,
// the fused optimizer, and gradient accumulation. The per-element math is the shared definition
// (native/shared/amp.h: unscale_element, is_finite_f32, inv_scale, amp_finalize,
// optimizer_element), called per element exactly as the CPU backend (native/cpu/amp.cpp) does;
// nothing here re-derives a formula. Everything is enqueued on the backend's one stream, and the
// AmpState stays in device memory (read and written by the kernels, never by the host).
//
// Memory access: the three element-wise kernels are bandwidth-bound grid-stride loops. Each
// buffer is cut into a scalar head (until the first operand is 16-byte aligned), a run of
// vectors, and a scalar tail; the vectors use 16-byte loads and stores (8 bytes for 4 halves)
// when every operand is aligned at the head (else the whole range takes the scalar path, which
// is the same math, only slower). Grids are one full wave: SMs x resident blocks per SM.
//
// Floating point: nvcc contracts a * b + c into an FMA by default (the CPU backend is built with
// -ffp-contract=off), and that applies to the shared formulas inlined here, so the optimizer's
// results can differ from the CPU's in the last bit unless this file is compiled with
// -fmad=false. The sum of squares below uses explicitly rounded operations (no contraction).
//
// Determinism: the sum of squares is reduced in a fixed order for a given device, buffer
// address and n: each thread sums its elements in order, blocks reduce through a fixed shuffle
// tree, and the last block to finish adds the per-block sums in block order (no float atomics),
// so repeated runs give the same bits. The order differs from the CPU's fixed blocks, so the FP32
// sum (and the grad norm) may differ from the CPU backend's in the last bits.
#include "amp.cuh"

#include <stdint.h>
#include <algorithm>
#include <initializer_list>
#include <string>
#include "check.cuh"

namespace mp {
namespace {

constexpr int kThreads = 256;  // every kernel here is launched with this block size
constexpr int kWarps = kThreads / 32;
// The unscale kernel's grid never exceeds this (its per-block sums live in a static buffer).
constexpr unsigned kMaxReduceBlocks = 4096;

// Host + device: the per-thread work is also compiled for the host, so it can be exercised
// without a GPU; only the block reduction and the kernels themselves are device-only.
#define MP_AMP_HD __host__ __device__ __forceinline__
#if defined(__CUDA_ARCH__)
#define MP_AMP_UNROLL _Pragma("unroll")
#else
#define MP_AMP_UNROLL  // the host copy is only for testing; GCC would warn about the pragma
#endif

// The element type a DType is stored as.
template <DType T> struct Storage { using type = float; };
template <> struct Storage<DType::F16> { using type = uint16_t; };
template <> struct Storage<DType::BF16> { using type = uint16_t; };

// A buffer of n elements as [0, head) scalar, [head, tail()) nvec vectors of V, [tail(), n) scalar.
// With head = nvec = 0 the whole buffer is the scalar tail.
struct Split {
  size_t n, head, nvec, vectorWidth;
  MP_AMP_HD size_t tail() const { return head + nvec * vectorWidth; }
};

// ---- aligned vector loads / stores (the caller guarantees alignment) -----------------------
// Little-endian: element k of a packed word sits in its low bits first, on the GPU and the host.

MP_AMP_HD void loadVec(const float* p, float (&x)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w;
}
MP_AMP_HD void storeVec(float* p, const float (&x)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}
MP_AMP_HD void loadVec(const uint16_t* p, uint16_t (&x)[4]) {  // 8 bytes
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  x[0] = (uint16_t)(v.x & 0xffffu); x[1] = (uint16_t)(v.x >> 16);
  x[2] = (uint16_t)(v.y & 0xffffu); x[3] = (uint16_t)(v.y >> 16);
}
MP_AMP_HD void storeVec(uint16_t* p, const uint16_t (&x)[4]) {
  *reinterpret_cast<uint2*>(p) = make_uint2((uint32_t)x[0] | ((uint32_t)x[1] << 16), (uint32_t)x[2] | ((uint32_t)x[3] << 16));
}
MP_AMP_HD void loadVec(const uint16_t* p, uint16_t (&x)[8]) {  // 16 bytes
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  x[0] = (uint16_t)(v.x & 0xffffu); x[1] = (uint16_t)(v.x >> 16);
  x[2] = (uint16_t)(v.y & 0xffffu); x[3] = (uint16_t)(v.y >> 16);
  x[4] = (uint16_t)(v.z & 0xffffu); x[5] = (uint16_t)(v.z >> 16);
  x[6] = (uint16_t)(v.w & 0xffffu); x[7] = (uint16_t)(v.w >> 16);
}
// V floats (a multiple of 4) as V / 4 16-byte stores.
template <int V>
MP_AMP_HD void storeFloats(float* p, const float (&x)[V]) {
  MP_AMP_UNROLL
  for (int j = 0; j < V; j += 4) *reinterpret_cast<float4*>(p + j) = make_float4(x[j], x[j + 1], x[j + 2], x[j + 3]);
}

// acc + u * u with two roundings, as the CPU computes it (never contracted into an FMA).
MP_AMP_HD float addSquare(float acc, float u) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(acc, __fmul_rn(u, u));
#else
  return acc + u * u;
#endif
}

// ---- per-thread work (grid-stride over a Split) ---------------------------------------------
// Thread tid of stride takes head elements tid, tid + stride, ...; tail elements tail() + tid,
// ...; and vectors tid, tid + stride, ... of nvec: every element exactly once.

// unscale / check / sum of squares. V = 16 / element size (8 halves or 4 floats per 16-byte
// load); two vectors in flight per thread. sum and bad accumulate this thread's share.
template <DType T>
MP_AMP_HD void unscaleThread(size_t tid, size_t stride, const void* g, float* out32, const Split& sp, float invScale,
                             float& sum, bool& bad) {
  using S = typename Storage<T>::type;
  constexpr int V = 16 / (int)sizeof(S);
  auto element = [&](size_t i) {
    const float u = unscale_element(g, T, i, invScale);
    sum = addSquare(sum, u);
    bad = bad || !is_finite_f32(u);
    if (out32) out32[i] = u;
  };
  for (size_t i = tid; i < sp.head; i += stride) element(i);
  for (size_t i = sp.tail() + tid; i < sp.n; i += stride) element(i);

  // x holds elements i0 .. i0 + V - 1 as stored.
  auto vector = [&](const S (&x)[V], size_t i0) {
    float u[V];
    MP_AMP_UNROLL
    for (int k = 0; k < V; ++k) {
      u[k] = unscale_element(x, T, (size_t)k, invScale);
      sum = addSquare(sum, u[k]);
      bad = bad || !is_finite_f32(u[k]);
    }
    if (out32) storeFloats<V>(out32 + i0, u);
  };
  const S* gs = static_cast<const S*>(g);
  for (size_t q = tid; q < sp.nvec; q += 2 * stride) {
    // Both loads are issued before anything is stored: more bytes in flight, and an out32 that
    // aliased g (in place) would still be read before it is written.
    const size_t q2 = q + stride;
    const bool second = q2 < sp.nvec;
    S a[V], b[V] = {};
    loadVec(gs + sp.head + q * V, a);
    if (second) loadVec(gs + sp.head + q2 * V, b);
    vector(a, sp.head + q * V);
    if (second) vector(b, sp.head + q2 * V);
  }
}

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

// The fused update: optimizer_element per element. On the vector path it runs on registers
// loaded 4 elements at a time; an absent m / v is a zero register array that is never stored,
// which is what optimizer_element does with a null pointer (reads 0, writes nothing).
template <DType G, DType W>
MP_AMP_HD void optimizerThread(size_t tid, size_t stride, const OptimKernelArgs& a, const AmpState& s) {
  using GS = typename Storage<G>::type;
  using WS = typename Storage<W>::type;
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
    MP_AMP_UNROLL
    for (int k = 0; k < 4; ++k) optimizer_element((size_t)k, p, w, W, g, G, m, v, a.config, s);
    storeVec(a.master + i0, p);
    if (a.m) storeVec(a.m + i0, m);
    if (a.v) storeVec(a.v + i0, v);
    if (working) storeVec(working + i0, w);
  }
}

// acc = g (overwrite) or acc + g, in FP32. The overwrite path never reads acc.
template <DType G>
MP_AMP_HD void accumulateThread(size_t tid, size_t stride, const void* g, float* acc, const Split& sp, bool overwrite) {
  using GS = typename Storage<G>::type;
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
    MP_AMP_UNROLL
    for (int k = 0; k < 4; ++k) {
      const float xk = load_f32(x, G, (size_t)k);
      y[k] = overwrite ? xk : y[k] + xk;
    }
    storeVec(acc + i0, y);
  }
}

// ---- kernels ------------------------------------------------------------------------------

__device__ __forceinline__ size_t globalThread() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gridThreads() { return (size_t)gridDim.x * blockDim.x; }

// Per-block sums of the unscale kernel and the count of blocks done with theirs. Only that
// kernel touches them, and only on the backend's one stream, so launches never overlap; the
// last block of each launch resets the count to 0 for the next launch.
__device__ float gBlockSums[kMaxReduceBlocks];
__device__ unsigned int gBlocksDone;

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;  // the same bits in every lane
}

// Block reduction of (sum, bad), then state->foundInf |= any bad, and the last block to finish
// adds the block sums, in block order, to state->sumsq (deterministic; see the top comment).
// Every thread of the block must call it.
__device__ void commitBlock(float sum, bool bad, AmpState* state) {
  __shared__ float warpSums[kWarps];
  __shared__ bool lastBlock;
  const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  sum = warpSum(sum);
  if (lane == 0) warpSums[warp] = sum;
  const int anyBad = __syncthreads_or(bad ? 1 : 0);  // also the barrier for warpSums
  if (warp == 0) {
    float s = lane < (unsigned)kWarps ? warpSums[lane] : 0.0f;
    s = warpSum(s);
    if (lane == 0) {
      if (anyBad) atomicOr(&state->foundInf, 1);
      gBlockSums[blockIdx.x] = s;
      __threadfence();  // the block sum is visible device-wide before the count says so
      const bool last = atomicAdd(&gBlocksDone, 1u) == gridDim.x - 1;
      if (last) __threadfence();  // and, in the last block, every other block's sum after it
      lastBlock = last;
    }
  }
  __syncthreads();
  if (!lastBlock || warp != 0) return;
  __threadfence();  // every other block's sum (fenced before its increment) is visible now
  float s = 0.0f;
  for (unsigned b = lane; b < gridDim.x; b += 32) s = __fadd_rn(s, __ldcg(&gBlockSums[b]));  // L2, not L1
  s = warpSum(s);
  if (lane == 0) {
    state->sumsq = __fadd_rn(state->sumsq, s);
    gBlocksDone = 0;
  }
}

template <DType T>
__global__ void __launch_bounds__(kThreads) unscaleCheckNormKernel(const void* g, float* out32, const Split split,
                                                                     AmpState* state) {
  const float invScale = inv_scale(state->scale);
  float sum = 0.0f;
  bool bad = false;
  unscaleThread<T>(globalThread(), gridThreads(), g, out32, split, invScale, sum, bad);
  commitBlock(sum, bad, state);
}

__global__ void ampFinalizeKernel(AmpState* state, const ScalerConfig c, const OptimConfig o, bool updateScale) {
  amp_finalize(*state, c, o, updateScale);
}

template <DType G, DType W>
__global__ void __launch_bounds__(kThreads) optimizerKernel(const __grid_constant__ OptimKernelArgs a) {
  // A skipped step (overflow) changes nothing: every thread leaves before touching any buffer.
  if (a.state->skipped) return;
  const AmpState s = *a.state;
  optimizerThread<G, W>(globalThread(), gridThreads(), a, s);
}

template <DType G>
__global__ void __launch_bounds__(kThreads) accumulateKernel(const void* g, float* acc, const Split split,
                                                               bool overwrite) {
  accumulateThread<G>(globalThread(), gridThreads(), g, acc, split, overwrite);
}

// ---- host side ----------------------------------------------------------------------------

struct Operand {
  const void* p;        // null: not used (no constraint)
  size_t elementBytes;  // 2 or 4
};

// Splits n elements for vectors of V elements. The first operand decides the head (elements
// until it is aligned to its vector, at most 16 bytes); every other operand must then be aligned
// to its own vector (V * its element size, at most 16 bytes) at element head, else there are no
// vectors and every element takes the scalar path.
Split splitForVectors(size_t n, size_t V, std::initializer_list<Operand> operands) {
  const Split scalarOnly{n, 0, 0, V};
  Split s = scalarOnly;
  bool first = true;
  for (const Operand& o : operands) {
    if (o.p == nullptr) continue;
    const uintptr_t address = reinterpret_cast<uintptr_t>(o.p);
    const size_t align = std::min<size_t>(16, V * o.elementBytes);
    if (first) {
      first = false;
      if (address % o.elementBytes != 0) return scalarOnly;
      s.head = ((align - address % align) % align) / o.elementBytes;
      if (s.head >= n) return scalarOnly;
    } else if ((address + s.head * o.elementBytes) % align != 0) {
      return scalarOnly;
    }
  }
  s.nvec = (n - s.head) / V;
  return s;
}

// Threads that have work: the most of vectors, head elements, tail elements.
size_t threadsWanted(const Split& s) { return std::max({s.nvec, s.head, s.n - s.tail()}); }

// One full wave (SMs x resident blocks per SM), fewer when there is less work; >= 1.
unsigned gridBlocks(size_t threadsNeeded, int multiprocessors, int residentPerSm, unsigned cap) {
  const size_t needed = std::max<size_t>(1, (threadsNeeded + kThreads - 1) / kThreads);
  const size_t wave = (size_t)std::max(multiprocessors, 1) * (size_t)std::max(residentPerSm, 1);
  return (unsigned)std::min({needed, wave, (size_t)cap});
}


constexpr unsigned kNoCap = 0xffffffffu;

[[noreturn]] void badDType(const char* op, DType t) {
  fail("E_DTYPE", std::string(op) + ": unsupported dtype code " + std::to_string((int)t));
}

template <DType T>
void unscaleCheckNormAs(const void* g, size_t n, AmpState* state, float* out32, cudaStream_t stream, int sms) {
  using S = typename Storage<T>::type;
  constexpr size_t V = 16 / sizeof(S);
  const Split split = splitForVectors(n, V, {{g, sizeof(S)}, {out32, 4}});
  const unsigned blocks =
      gridBlocks(threadsWanted(split), sms, residentBlocks<unscaleCheckNormKernel<T>, kThreads>(), kMaxReduceBlocks);
  unscaleCheckNormKernel<T><<<blocks, kThreads, 0, stream>>>(g, out32, split, state);
  checkLaunch("unscaleCheckNormKernel");
}

template <DType G, DType W>
void optimizerAs(const OptimStepArgs& args, cudaStream_t stream, int sms) {
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
  const unsigned blocks = gridBlocks(threadsWanted(a.split), sms, residentBlocks<optimizerKernel<G, W>, kThreads>(), kNoCap);
  optimizerKernel<G, W><<<blocks, kThreads, 0, stream>>>(a);
  checkLaunch("optimizerKernel");
}

template <DType G>
void optimizerWithGrad(const OptimStepArgs& args, cudaStream_t stream, int sms) {
  switch (args.workingType) {
    case DType::F32: return optimizerAs<G, DType::F32>(args, stream, sms);
    case DType::F16: return optimizerAs<G, DType::F16>(args, stream, sms);
    case DType::BF16: return optimizerAs<G, DType::BF16>(args, stream, sms);
  }
  badDType("optimizerStep working copy", args.workingType);
}

template <DType G>
void accumulateAs(const void* g, float* acc, size_t n, bool overwrite, cudaStream_t stream, int sms) {
  const Split split = splitForVectors(n, 4, {{acc, 4}, {g, sizeof(typename Storage<G>::type)}});
  const unsigned blocks = gridBlocks(threadsWanted(split), sms, residentBlocks<accumulateKernel<G>, kThreads>(), kNoCap);
  accumulateKernel<G><<<blocks, kThreads, 0, stream>>>(g, acc, split, overwrite);
  checkLaunch("accumulateKernel");
}

}  // namespace

void launchUnscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32, cudaStream_t stream,
                            int multiprocessors) {
  if (n == 0) return;
  switch (t) {
    case DType::F32: return unscaleCheckNormAs<DType::F32>(g, n, state, out32, stream, multiprocessors);
    case DType::F16: return unscaleCheckNormAs<DType::F16>(g, n, state, out32, stream, multiprocessors);
    case DType::BF16: return unscaleCheckNormAs<DType::BF16>(g, n, state, out32, stream, multiprocessors);
  }
  badDType("unscaleCheckNorm", t);
}

void launchAmpFinalize(AmpState* state, const ScalerConfig& c, const OptimConfig& o, bool updateScale,
                       cudaStream_t stream) {
  ampFinalizeKernel<<<1, 1, 0, stream>>>(state, c, o, updateScale);
  checkLaunch("ampFinalizeKernel");
}

void launchOptimizerStep(const OptimStepArgs& args, cudaStream_t stream, int multiprocessors) {
  if (args.n == 0) return;
  switch (args.gradType) {
    case DType::F32: return optimizerWithGrad<DType::F32>(args, stream, multiprocessors);
    case DType::F16: return optimizerWithGrad<DType::F16>(args, stream, multiprocessors);
    case DType::BF16: return optimizerWithGrad<DType::BF16>(args, stream, multiprocessors);
  }
  badDType("optimizerStep grad", args.gradType);
}

void launchAccumulate(const void* g, DType t, float* acc, size_t n, bool overwrite, cudaStream_t stream,
                      int multiprocessors) {
  if (n == 0) return;
  switch (t) {
    case DType::F32: return accumulateAs<DType::F32>(g, acc, n, overwrite, stream, multiprocessors);
    case DType::F16: return accumulateAs<DType::F16>(g, acc, n, overwrite, stream, multiprocessors);
    case DType::BF16: return accumulateAs<DType::BF16>(g, acc, n, overwrite, stream, multiprocessors);
  }
  badDType("accumulate", t);
}

}  // namespace mp
