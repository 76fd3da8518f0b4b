// CUDA embedding, forward (a row gather) and backward (a row scatter-add). Semantics at
// EmbeddingArgs / EmbeddingBackwardArgs (native/core/op_args.h).
//
//  * embeddingForwardKernel: grid-stride over (output row i, chunk of 4 columns); consecutive
//    threads take consecutive chunks of a row, so both the table row and the output row are read
//    / written contiguously; a chunk is one 16- / 8-byte access where both rows are aligned.
//    Same dtype: raw bits (as the CPU's convert); else through FP32 with the shared RNE. An id
//    outside [0, V) is never used as an index: its output row is NaN. One wave of blocks.
//  * embeddingBackwardKernel: grid-stride over the n x C elements of dy, one FP32 atomicAdd into
//    dweight[id, c] each (a row's columns by consecutive threads: coalesced). Ids outside [0, V)
//    are skipped. The order of the additions into one element is not fixed (repeated ids), so
//    results may differ from run to run in the last bits, as the Args comment says.
#include <math.h>

#include "check.cuh"
#include "cuda_ops.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

struct EmbeddingParams {
  const int32_t* ids;
  const void* weight; DType wType;
  void* out; DType outType;
  int64_t n, V, C, chunksPerRow;
};

__device__ __forceinline__ bool rowAligned(const void* base, size_t row, int64_t C, size_t elementBytes) {
  return (reinterpret_cast<uintptr_t>(base) + row * (size_t)C * elementBytes) % (4 * elementBytes) == 0;
}

__global__ void __launch_bounds__(kThreads) embeddingForwardKernel(const __grid_constant__ EmbeddingParams p) {
  const int64_t total = p.n * p.chunksPerRow;
  const bool raw = p.wType == p.outType;
  const size_t wBytes = dtype_size(p.wType), oBytes = dtype_size(p.outType);
  for (int64_t t = (int64_t)globalThread(); t < total; t += (int64_t)gridThreads()) {
    const int64_t i = divIndex(t, p.chunksPerRow), j0 = 4 * (t - i * p.chunksPerRow);
    const int count = chunkCount(j0, p.C);
    const int32_t id = p.ids[i];
    const size_t dst = (size_t)(i * p.C + j0);
    const bool outAligned = rowAligned(p.out, (size_t)i, p.C, oBytes);
    if (id < 0 || (int64_t)id >= p.V) {  // callers validate; never read outside the table
      const float v[4] = {NAN, NAN, NAN, NAN};
      storeChunk(p.out, p.outType, dst, count, outAligned, v);
      continue;
    }
    const size_t src = (size_t)id * (size_t)p.C + (size_t)j0;
    const bool isAligned = outAligned && rowAligned(p.weight, (size_t)id, p.C, wBytes);
    if (raw && wBytes == 4) {
      const uint32_t* w = static_cast<const uint32_t*>(p.weight) + src;
      uint32_t* o = static_cast<uint32_t*>(p.out) + dst;
      if (isAligned && count == 4) {
        *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(w);
      } else {
        for (int k = 0; k < count; ++k) o[k] = w[k];
      }
    } else if (raw) {
      const uint16_t* w = static_cast<const uint16_t*>(p.weight) + src;
      uint16_t* o = static_cast<uint16_t*>(p.out) + dst;
      if (isAligned && count == 4) {
        *reinterpret_cast<uint2*>(o) = *reinterpret_cast<const uint2*>(w);
      } else {
        for (int k = 0; k < count; ++k) o[k] = w[k];
      }
    } else {
      float v[4];
      loadChunk(p.weight, p.wType, src, count, isAligned, v);
      storeChunk(p.out, p.outType, dst, count, isAligned, v);
    }
  }
}

struct EmbeddingBackwardParams {
  const int32_t* ids;
  const void* dy; DType dyType;
  float* dweight;
  int64_t n, V, C;
};

__global__ void __launch_bounds__(kThreads) embeddingBackwardKernel(const __grid_constant__ EmbeddingBackwardParams p) {
  const int64_t total = p.n * p.C;
  for (int64_t t = (int64_t)globalThread(); t < total; t += (int64_t)gridThreads()) {
    const int64_t i = divIndex(t, p.C), c = t - i * p.C;
    const int32_t id = p.ids[i];
    if (id < 0 || (int64_t)id >= p.V) continue;
    atomicAdd(p.dweight + (size_t)id * (size_t)p.C + (size_t)c, load_f32(p.dy, p.dyType, (size_t)t));
  }
}

}  // namespace

void embeddingForward(const EmbeddingArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  EmbeddingParams p{a.ids, a.weight, a.wType, a.out, a.outType, a.n, a.V, a.C, ceilDiv(a.C, 4)};
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<embeddingForwardKernel, kThreads>());
  embeddingForwardKernel<<<blocksFor((uint64_t)(a.n * p.chunksPerRow), kThreads, cap), kThreads, 0, ctx.stream>>>(p);
  checkLaunch("embeddingForwardKernel");
}

void embeddingBackward(const EmbeddingBackwardArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  const EmbeddingBackwardParams p{a.ids, a.dy, a.dyType, a.dweight, a.n, a.V, a.C};
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<embeddingBackwardKernel, kThreads>());
  embeddingBackwardKernel<<<blocksFor((uint64_t)(a.n * a.C), kThreads, cap), kThreads, 0, ctx.stream>>>(p);
  checkLaunch("embeddingBackwardKernel");
}

}  // namespace cuda
}  // namespace mp
