// Internal to the CUDA backend: grid-stride indexing, grid sizing, and the vector loads / stores
// of the bandwidth-bound kernels (element-wise, AMP, row and column reductions).
//
// Two ways to vectorise a pass over n elements:
//  * Split (element-wise kernels, where no value depends on which thread did what): a scalar
//    head until the first operand is aligned, a run of vectors, a scalar tail; every operand
//    must be aligned at the head, else everything is scalar (the same math, only slower).
//  * Chunks of 4 (reductions): element 4q .. 4q + 3 is chunk q whatever the alignment; a chunk is
//    one vector load where its operand is aligned, else 4 scalar loads. Which thread sums which
//    element, and in which order, then never depends on the addresses, so a reduction is bitwise
//    repeatable for any buffer placement.
// Little-endian throughout: element k of a packed word sits in its low bits first.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <algorithm>
#include <initializer_list>
#include "../shared/dtype.h"

namespace mp {
namespace cuda {

constexpr int kThreads = 256;  // the block size of every kernel but the GEMMs
constexpr int kWarps = kThreads / 32;

// The element type a DType is stored as.
template <DType T> struct Storage { using type = float; };
template <> struct Storage<DType::F16> { using type = uint16_t; };
template <> struct Storage<DType::BF16> { using type = uint16_t; };

__device__ __forceinline__ size_t globalThread() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t gridThreads() { return (size_t)gridDim.x * blockDim.x; }

// a / b for a >= 0, b > 0: 32-bit division when both fit (the common case; 64-bit division is a
// long emulated sequence on the GPU).
__device__ __forceinline__ int64_t divIndex(int64_t a, int64_t b) {
  if ((((uint64_t)a | (uint64_t)b) >> 32) == 0) return (int64_t)((uint32_t)a / (uint32_t)b);
  return a / b;
}

// ---- grid sizing (host) ----------------------------------------------------------------------

// Enough blocks for `work` units of `perBlock` each, at most `cap` (>= 1), at least 1.
inline unsigned blocksFor(uint64_t work, uint64_t perBlock, uint64_t cap) {
  const uint64_t needed = std::max<uint64_t>(1, (work + perBlock - 1) / perBlock);
  return (unsigned)std::min(needed, std::max<uint64_t>(cap, 1));
}
// One full wave: SMs x resident blocks per SM. Only for kernels whose results do not depend on
// the grid (no reduction across threads); reductions size their grids from the sizes alone.
inline uint64_t oneWave(int multiprocessors, int residentPerSm) {
  return (uint64_t)std::max(multiprocessors, 1) * (uint64_t)std::max(residentPerSm, 1);
}
__host__ __device__ __forceinline__ int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- Split: head / vectors / tail ------------------------------------------------------------

// A buffer of n elements as [0, head) scalar, [head, tail()) nvec vectors of `width`, [tail(), n)
// scalar. With head = nvec = 0 the whole buffer is the scalar tail.
struct Split {
  size_t n, head, nvec, width;
  __host__ __device__ size_t tail() const { return head + nvec * width; }
};

struct VecOperand {
  const void* p;        // null: not used (no constraint)
  size_t elementBytes;  // 2 or 4
};

// Splits n elements for vectors of V elements. The first operand decides the head (elements
// until it is aligned to its vector, at most 16 bytes); every other operand must then be aligned
// to its own vector (V x its element size, at most 16 bytes) at element head, else there are no
// vectors.
inline Split splitForVectors(size_t n, size_t V, std::initializer_list<VecOperand> operands) {
  const Split scalarOnly{n, 0, 0, V};
  Split s = scalarOnly;
  bool first = true;
  for (const VecOperand& o : operands) {
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
  if (first) return scalarOnly;
  s.nvec = (n - s.head) / V;
  return s;
}

// Threads that have work: the most of vectors, head elements, tail elements.
inline size_t threadsWanted(const Split& s) { return std::max({s.nvec, s.head, s.n - s.tail()}); }

// `bytes`-aligned address (bytes a power of two).
inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---- fixed-type vectors (the caller guarantees alignment) -------------------------------------

__device__ __forceinline__ void loadVec(const float* p, float (&x)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w;
}
__device__ __forceinline__ void storeVec(float* p, const float (&x)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}
__device__ __forceinline__ void loadVec(const uint16_t* p, uint16_t (&x)[4]) {  // 8 bytes
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  x[0] = (uint16_t)(v.x & 0xffffu); x[1] = (uint16_t)(v.x >> 16);
  x[2] = (uint16_t)(v.y & 0xffffu); x[3] = (uint16_t)(v.y >> 16);
}
__device__ __forceinline__ void storeVec(uint16_t* p, const uint16_t (&x)[4]) {
  *reinterpret_cast<uint2*>(p) =
      make_uint2((uint32_t)x[0] | ((uint32_t)x[1] << 16), (uint32_t)x[2] | ((uint32_t)x[3] << 16));
}
__device__ __forceinline__ void loadVec(const uint16_t* p, uint16_t (&x)[8]) {  // 16 bytes
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  x[0] = (uint16_t)(v.x & 0xffffu); x[1] = (uint16_t)(v.x >> 16);
  x[2] = (uint16_t)(v.y & 0xffffu); x[3] = (uint16_t)(v.y >> 16);
  x[4] = (uint16_t)(v.z & 0xffffu); x[5] = (uint16_t)(v.z >> 16);
  x[6] = (uint16_t)(v.w & 0xffffu); x[7] = (uint16_t)(v.w >> 16);
}
// V floats (a multiple of 4) as V / 4 16-byte stores.
template <int V>
__device__ __forceinline__ void storeFloats(float* p, const float (&x)[V]) {
#pragma unroll
  for (int j = 0; j < V; j += 4) *reinterpret_cast<float4*>(p + j) = make_float4(x[j], x[j + 1], x[j + 2], x[j + 3]);
}

// ---- dtype-dynamic chunks of 4 (F32: 16 bytes, F16 / BF16: 8 bytes) --------------------------

// The conversions are load_f32 / store_f32's, without their pointer (a dynamically typed local
// array would live in local memory).
__device__ __forceinline__ float halfToF32(DType t, uint16_t h) {
  return t == DType::F16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
}
__device__ __forceinline__ uint16_t f32ToHalf(DType t, float v) {
  return t == DType::F16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
}

// Elements i0 .. i0 + 3 at an address aligned to 4 elements.
__device__ __forceinline__ void load4(const void* p, DType t, size_t i0, float (&v)[4]) {
  if (t == DType::F32) {
    loadVec(static_cast<const float*>(p) + i0, v);
  } else {
    uint16_t h[4];
    loadVec(static_cast<const uint16_t*>(p) + i0, h);
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = halfToF32(t, h[k]);
  }
}
__device__ __forceinline__ void store4(void* p, DType t, size_t i0, const float (&v)[4]) {
  if (t == DType::F32) {
    storeVec(static_cast<float*>(p) + i0, v);
  } else {
    uint16_t h[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = f32ToHalf(t, v[k]);
    storeVec(static_cast<uint16_t*>(p) + i0, h);
  }
}

// Chunk at element i0: `count` (1..4) valid elements; one vector access when the chunk is aligned
// (`isAligned`: p + i0 is aligned to 4 elements) and whole, else element by element. Elements
// past count read as 0 and are never written.
__device__ __forceinline__ void loadChunk(const void* p, DType t, size_t i0, int count, bool isAligned, float (&v)[4]) {
  if (isAligned && count == 4) { load4(p, t, i0, v); return; }
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = k < count ? load_f32(p, t, i0 + (size_t)k) : 0.0f;
}
__device__ __forceinline__ void storeChunk(void* p, DType t, size_t i0, int count, bool isAligned, const float (&v)[4]) {
  if (isAligned && count == 4) { store4(p, t, i0, v); return; }
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < count) store_f32(p, t, i0 + (size_t)k, v[k]);
}

// One operand of a row kernel: the row's first element, its dtype, and whether that element is
// aligned to 4 elements (then every chunk of the row is).
struct RowIn {
  const void* p;
  DType t;
  bool isAligned;
  __device__ __forceinline__ void chunk(int64_t j0, int count, float (&v)[4]) const {
    loadChunk(p, t, (size_t)j0, count, isAligned, v);
  }
};
struct RowOut {
  void* p;
  DType t;
  bool isAligned;
  __device__ __forceinline__ void chunk(int64_t j0, int count, const float (&v)[4]) const {
    storeChunk(p, t, (size_t)j0, count, isAligned, v);
  }
};
__device__ __forceinline__ RowIn rowIn(const void* base, DType t, size_t offset) {
  const char* p = static_cast<const char*>(base) + offset * dtype_size(t);
  return {p, t, reinterpret_cast<uintptr_t>(p) % (4 * dtype_size(t)) == 0};
}
__device__ __forceinline__ RowOut rowOut(void* base, DType t, size_t offset) {
  char* p = static_cast<char*>(base) + offset * dtype_size(t);
  return {p, t, reinterpret_cast<uintptr_t>(p) % (4 * dtype_size(t)) == 0};
}
// Valid elements of the chunk at j0 in a row of N.
__device__ __forceinline__ int chunkCount(int64_t j0, int64_t N) { return N - j0 >= 4 ? 4 : (int)(N - j0); }

// f(value, index) for each element of a row of N that thread `rank` of a group of kGroup owns:
// chunks of 4 at q = rank, rank + kGroup, ..., in that order (the order the reductions rely on).
template <int kGroup, class F>
__device__ __forceinline__ void forRowChunks(const RowIn& x, int64_t N, int rank, F&& f) {
  const int64_t chunks = (N + 3) / 4;
  for (int64_t q = rank; q < chunks; q += kGroup) {
    const int count = chunkCount(4 * q, N);
    float v[4];
    x.chunk(4 * q, count, v);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k < count) f(v[k], 4 * q + k);
  }
}

}  // namespace cuda
}  // namespace mp
