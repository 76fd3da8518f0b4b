// GEMM kernels of the CUDA backend: the strided-batched GEMM of GemmArgs (native/core/op_args.h).
//
// Batching: blockIdx.z is the batch item (launches of at most 65535 items each, the host moving
// the base pointers for the next launch); item z reads A + z * strideA, B + z * strideB and
// writes out / preAct (reads C) at z * strideC, all offsets in int64. Every operand carries its
// own leading dimension. Tiles are blockIdx.x (band order, see tileOrigin).
//
// Two kernels, chosen per call by chooseGemmPath():
//  * tensorCoreGemmKernel<bf16?>: A and B both F16 (sm_75+) or both BF16 (sm_80+). 128x128x32
//    block tile, 8 warps each owning 64x32 of it, FP32 accumulators in registers. Operand tiles
//    reach shared memory through a 3-stage cp.async pipeline (sm_80+; plain 16-byte copies on
//    sm_75) in the operand's own stored orientation; ldmatrix (.trans where the orientation
//    needs it) then yields mma.sync fragments, so all four transpose combinations read global
//    memory directly with no transpose pass. The 16-byte chunk copies need the operand's base,
//    every row (ld % 8 == 0) and every batch item (stride % 8 == 0) 16-byte aligned; otherwise
//    that operand takes guarded 2-byte loads into the same tile layout (same results).
//  * simtGemmKernel: everything else (F32 operands, mixed operand dtypes, BF16 on sm_75). FP32
//    FMA, 128x128x8 tile, 8x8 outputs per thread, operands of any dtype widened on load.
//    This is also the FP32 baseline the benchmarks compare against.
// Both share the epilogue (alpha, beta*C, bias, activation, store in outType through the shared
// conversion helpers, so rounding matches the CPU backend; optionally the pre-activation value
// too, in preActType) and never read outside A, B, C, bias.
#include "gemm.cuh"

#include <limits.h>
#include <stdint.h>
#include <algorithm>
#include "check.cuh"
#include "cuda_ops.cuh"

namespace mp {
namespace {

// ------------------------------------------------------------------------------------------
// Shared by both kernels

struct GemmEpilogue {
  float alpha, beta;
  const void* c; DType cType;  // read only when beta != 0
  const void* bias; DType biasType;  // [N], shared by the batch
  Act act;
  void* out; DType outType;
  void* preAct; DType preActType;  // optional: the value before the activation
  int64_t M, N;
  int64_t ldc, strideC;  // C, out and preAct: rows ldc apart, batch items strideC apart
};

// C may alias out (or preAct): each element is read and then written by the same thread,
// nothing else touches it, so reading C first is enough. batchOffset = z * strideC.
__device__ __forceinline__ void storeOutput(const GemmEpilogue& ep, int64_t batchOffset, int64_t row, int64_t col,
                                            float acc) {
  if (row >= ep.M || col >= ep.N) return;
  const size_t index = (size_t)(batchOffset + row * ep.ldc + col);
  // Explicit roundings: nvcc would otherwise fuse these into FMAs, and the result would then
  // differ from a plain multiply-then-add epilogue on the CPU in the last bit.
  float value = __fmul_rn(ep.alpha, acc);
  if (ep.beta != 0.0f) value = __fadd_rn(value, __fmul_rn(ep.beta, load_f32(ep.c, ep.cType, index)));
  if (ep.bias != nullptr) value = __fadd_rn(value, load_f32(ep.bias, ep.biasType, (size_t)col));
  // The pre-activation (what GELU's backward needs), stored before out: when preAct is the very
  // array out is, out's value (after the activation) is the one that stays.
  if (ep.preAct != nullptr) store_f32(ep.preAct, ep.preActType, index, value);
  store_f32(ep.out, ep.outType, index, apply_act(ep.act, value));
}

// Two horizontally adjacent outputs. Not inlined: the dtype switches, conversions and erff of
// the epilogue, copied into every unrolled accumulator store, would multiply the kernels' code
// size (and the addon's compile time) several times over for a part that runs once per tile.
__device__ __noinline__ void storeOutputPair(const GemmEpilogue& ep, int64_t batchOffset, int64_t row, int64_t col,
                                             float v0, float v1) {
  storeOutput(ep, batchOffset, row, col, v0);
  storeOutput(ep, batchOffset, row, col + 1, v1);
}

struct TileOrigin { int64_t row, col; };

// Blocks that run at the same time walk down a band of kBandRows tile rows before moving one
// tile column right, so they share A rows and B columns in L2 instead of streaming all of B
// once per tile row.
__device__ __forceinline__ TileOrigin tileOrigin(int tilesM, int tilesN, int tileRows, int tileCols) {
  constexpr int64_t kBandRows = 8;
  const int64_t tile = blockIdx.x;
  const int64_t tilesPerBand = kBandRows * tilesN;
  const int64_t band = tile / tilesPerBand;
  const int64_t firstRow = band * kBandRows;
  const int64_t rowsInBand = tilesM - firstRow < kBandRows ? tilesM - firstRow : kBandRows;
  const int64_t inBand = tile - band * tilesPerBand;
  return {(firstRow + inBand % rowsInBand) * tileRows, (inBand / rowsInBand) * tileCols};
}

// ------------------------------------------------------------------------------------------
// Tensor Core kernel

constexpr int kTcTileM = 128, kTcTileN = 128, kTcTileK = 32;
constexpr int kTcStages = 3;  // 3 x 16 KB: fits the 48 KB static shared-memory limit on every arch
constexpr int kTcThreads = 256;
constexpr int kTcWarpTileM = 64, kTcWarpTileN = 32;
constexpr int kTcTileElems = kTcTileM * kTcTileK;  // one operand tile per stage (== kTcTileN * kTcTileK)
constexpr int kTcChunksPerThread = kTcTileElems / 8 / kTcThreads;
static_assert(kTcTileM * kTcTileK == kTcTileN * kTcTileK, "A and B tiles share one shape");
static_assert(kTcChunksPerThread * 8 * kTcThreads == kTcTileElems, "tile splits evenly into 16-byte chunks");
static_assert((kTcTileM / kTcWarpTileM) * (kTcTileN / kTcWarpTileN) * 32 == kTcThreads, "warp grid");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
constexpr bool kArchHasBf16Mma = true;
#else
constexpr bool kArchHasBf16Mma = false;
#endif

// One operand as stored in global memory. "K-contiguous" means K is the fast dimension (A not
// transposed, B transposed); otherwise M (or N) is.
struct TcOperand {
  const uint16_t* data;  // batch item 0 of this launch
  int64_t ld;            // elements between consecutive stored rows
  int64_t stride;        // elements between consecutive batch items (0: shared)
  int64_t extent;        // M for A, N for B
  bool kContiguous;
  bool vectorLoads;      // base, every row and every item 16-byte aligned: cp.async; else guarded 2-byte loads
};

struct TcParams {
  TcOperand a, b;
  int64_t K;
  int tilesM, tilesN;
  GemmEpilogue ep;
};

// Shared-memory tile layouts, offsets in 16-bit elements. Each mirrors the global orientation
// so the global -> shared copy is a straight 16-byte chunk copy; the chunk index within a row is
// XOR-swizzled so the 8 rows one ldmatrix phase reads (and the chunks one cp.async phase writes)
// fall into 8 different bank groups of 16 bytes.
//
// K-contiguous: 128 rows (m or n) x 32 k, four chunks per row, two rows per 128-byte line:
// swizzle with (row / 2) % 4.
__device__ __forceinline__ int kContiguousOffset(int row, int col) {
  return row * kTcTileK + ((((col >> 3) ^ (row >> 1)) & 3) << 3) + (col & 7);
}
// MN-contiguous: 32 k rows x 128 (m or n), sixteen chunks per row: swizzle with row % 8.
__device__ __forceinline__ int mnContiguousOffset(int row, int col) {
  return row * kTcTileM + (((col >> 3) ^ (row & 7)) << 3) + (col & 7);
}

__device__ __forceinline__ uint32_t sharedAddress(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// Copies validElems (0..8) elements, zero-filling the rest of the 16-byte chunk. Works for any
// alignment; used when an operand's rows are not 16-byte aligned and for Turing's edge chunks.
__device__ __forceinline__ void copyChunkGuarded(uint16_t* dst, const uint16_t* src, int validElems) {
  uint32_t packed[4];
#pragma unroll
  for (int pair = 0; pair < 4; ++pair) {
    const uint32_t lo = 2 * pair < validElems ? src[2 * pair] : 0u;
    const uint32_t hi = 2 * pair + 1 < validElems ? src[2 * pair + 1] : 0u;
    packed[pair] = lo | (hi << 16);
  }
  *reinterpret_cast<uint4*>(dst) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// src must be 16-byte aligned (and in bounds for validElems elements; any valid address when 0).
__device__ __forceinline__ void copyChunkAligned(uint16_t* dst, const uint16_t* src, int validElems) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // src-size < 16 makes the hardware zero-fill the rest; 0 reads nothing at all.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(sharedAddress(dst)), "l"(src), "r"(validElems * 2) : "memory");
#else
  if (validElems == 8) *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  else copyChunkGuarded(dst, src, validElems);
#endif
}

__device__ __forceinline__ void cpAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int kPendingGroups>
__device__ __forceinline__ void cpAsyncWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" :: "n"(kPendingGroups) : "memory");
#endif
}

// Starts copying the operand's tile at (mnStart, kStart) into one shared stage; base is this
// block's batch item of the operand. Out-of-range rows and columns (M/N/K edges) become zeros,
// which add nothing to the products.
__device__ __forceinline__ void loadTcTile(uint16_t* tile, const TcOperand& op, const uint16_t* base, int64_t mnStart,
                                           int64_t kStart, int64_t K, int tid) {
#pragma unroll
  for (int i = 0; i < kTcChunksPerThread; ++i) {
    const int chunk = tid + i * kTcThreads;
    int row, col;
    int64_t globalRow, globalCol, rowLimit, colLimit;
    if (op.kContiguous) {
      row = chunk >> 2; col = (chunk & 3) << 3;
      globalRow = mnStart + row; globalCol = kStart + col;
      rowLimit = op.extent; colLimit = K;
    } else {
      row = chunk >> 4; col = (chunk & 15) << 3;
      globalRow = kStart + row; globalCol = mnStart + col;
      rowLimit = K; colLimit = op.extent;
    }
    uint16_t* dst = tile + (op.kContiguous ? kContiguousOffset(row, col) : mnContiguousOffset(row, col));
    const int64_t remaining = globalRow < rowLimit ? colLimit - globalCol : 0;
    const int validElems = remaining <= 0 ? 0 : (remaining >= 8 ? 8 : (int)remaining);
    if (validElems == 0) {
      // Point at the item's base so not even the address is out of bounds.
      if (op.vectorLoads) copyChunkAligned(dst, base, 0);
      else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      continue;
    }
    const uint16_t* src = base + globalRow * op.ld + globalCol;
    if (op.vectorLoads) copyChunkAligned(dst, src, validElems);
    else copyChunkGuarded(dst, src, validElems);
  }
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address) : "memory");
#endif
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t address) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address) : "memory");
#endif
}

// d += a (16x16, row) * b (16x8, col), FP32 accumulate.
template <bool kBf16>
__device__ __forceinline__ void mma16x8x16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kBf16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  // Turing has only k8 for f16: the k16 product is the sum of its k 0-7 half (a[0], a[1], b[0])
  // and its k 8-15 half (a[2], a[3], b[1]); the fragments line up register for register.
  if constexpr (!kBf16) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[2]), "r"(a[3]), "r"(b[1]));
  }
#endif
}

constexpr int kTcFragsM = kTcWarpTileM / 16;  // m16 fragments per warp
constexpr int kTcFragsN = kTcWarpTileN / 8;   // n8 fragments per warp

// A fragments of one k16 step for the warp's four m16 slices. ldmatrix lane l supplies the row
// address of 8x8 matrix l/8 (row l%8); the four matrices must come back as mma's a0..a3:
// (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15).
__device__ __forceinline__ void loadFragmentsA(uint32_t (&frag)[kTcFragsM][4], uint32_t tileAddress,
                                               bool kContiguous, int warpRow, int kStep, int lane) {
#pragma unroll
  for (int i = 0; i < kTcFragsM; ++i) {
    const int m0 = warpRow + i * 16;
    if (kContiguous) {
      // Stored rows are m: lanes 0-15 give rows m0..m0+15 at k 0, lanes 16-31 the same rows at k 8.
      const int offset = kContiguousOffset(m0 + (lane & 15), kStep + ((lane >> 4) << 3));
      ldmatrixX4(frag[i], tileAddress + 2u * offset);
    } else {
      // Stored rows are k: each 8x8 block is transposed on load. Matrix l/8: bit 0 picks m+8,
      // bit 1 picks k+8.
      const int offset = mnContiguousOffset(kStep + (lane & 7) + ((lane >> 4) << 3), m0 + (((lane >> 3) & 1) << 3));
      ldmatrixX4Trans(frag[i], tileAddress + 2u * offset);
    }
  }
}

// B fragments of one k16 step for the warp's four n8 slices, two slices per ldmatrix.x4. The four
// matrices must come back as (n 0-7: b0 = k 0-7, b1 = k 8-15), (n 8-15: b0, b1).
__device__ __forceinline__ void loadFragmentsB(uint32_t (&frag)[kTcFragsN][2], uint32_t tileAddress,
                                               bool kContiguous, int warpCol, int kStep, int lane) {
#pragma unroll
  for (int pair = 0; pair < kTcFragsN / 2; ++pair) {
    const int n0 = warpCol + pair * 16;
    uint32_t r[4];
    if (kContiguous) {
      // Stored rows are n (B^T): already mma's "col" layout. Matrix l/8: bit 0 picks k+8, bit 1 n+8.
      const int offset = kContiguousOffset(n0 + (lane & 7) + ((lane >> 4) << 3), kStep + (((lane >> 3) & 1) << 3));
      ldmatrixX4(r, tileAddress + 2u * offset);
    } else {
      // Stored rows are k: transpose on load. Matrix l/8: bit 0 picks k+8, bit 1 n+8.
      const int offset = mnContiguousOffset(kStep + (lane & 7) + (((lane >> 3) & 1) << 3), n0 + ((lane >> 4) << 3));
      ldmatrixX4Trans(r, tileAddress + 2u * offset);
    }
    frag[2 * pair][0] = r[0];
    frag[2 * pair][1] = r[1];
    frag[2 * pair + 1][0] = r[2];
    frag[2 * pair + 1][1] = r[3];
  }
}

template <bool kBf16>
__device__ __forceinline__ void tensorCoreGemmTile(const TcParams& p, uint16_t (*tilesA)[kTcTileElems],
                                                   uint16_t (*tilesB)[kTcTileElems]) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warpRow = (warp / (kTcTileN / kTcWarpTileN)) * kTcWarpTileM;
  const int warpCol = (warp % (kTcTileN / kTcWarpTileN)) * kTcWarpTileN;
  const TileOrigin origin = tileOrigin(p.tilesM, p.tilesN, kTcTileM, kTcTileN);
  const int numKTiles = (int)((p.K + kTcTileK - 1) / kTcTileK);
  const int64_t z = blockIdx.z;
  const uint16_t* baseA = p.a.data + z * p.a.stride;
  const uint16_t* baseB = p.b.data + z * p.b.stride;

  float acc[kTcFragsM][kTcFragsN][4];
#pragma unroll
  for (int i = 0; i < kTcFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kTcFragsN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  // Pipeline: k tile t lives in stage t % kTcStages and is commit group t; the prologue issues
  // the first kTcStages - 1 tiles. Empty groups are still committed so the group count per
  // iteration stays fixed and wait_group's arithmetic holds at the tail.
#pragma unroll
  for (int s = 0; s < kTcStages - 1; ++s) {
    if (s < numKTiles) {
      loadTcTile(tilesA[s], p.a, baseA, origin.row, (int64_t)s * kTcTileK, p.K, tid);
      loadTcTile(tilesB[s], p.b, baseB, origin.col, (int64_t)s * kTcTileK, p.K, tid);
    }
    cpAsyncCommit();
  }

  int readStage = 0, writeStage = kTcStages - 1;
  for (int kt = 0; kt < numKTiles; ++kt) {
    // Groups committed so far: kTcStages - 1 + kt. Leaving kTcStages - 2 in flight means groups
    // 0..kt are complete: tile kt has landed (for this thread; the barrier makes it everyone's).
    cpAsyncWait<kTcStages - 2>();
    // Also guarantees every warp finished computing on tile kt - 1, whose stage is refilled next.
    __syncthreads();
    const int nextTile = kt + kTcStages - 1;
    if (nextTile < numKTiles) {
      loadTcTile(tilesA[writeStage], p.a, baseA, origin.row, (int64_t)nextTile * kTcTileK, p.K, tid);
      loadTcTile(tilesB[writeStage], p.b, baseB, origin.col, (int64_t)nextTile * kTcTileK, p.K, tid);
    }
    cpAsyncCommit();

    const uint32_t addressA = sharedAddress(tilesA[readStage]);
    const uint32_t addressB = sharedAddress(tilesB[readStage]);
#pragma unroll
    for (int kStep = 0; kStep < kTcTileK; kStep += 16) {
      uint32_t fragA[kTcFragsM][4], fragB[kTcFragsN][2];
      loadFragmentsA(fragA, addressA, p.a.kContiguous, warpRow, kStep, lane);
      loadFragmentsB(fragB, addressB, p.b.kContiguous, warpCol, kStep, lane);
#pragma unroll
      for (int i = 0; i < kTcFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kTcFragsN; ++j) mma16x8x16<kBf16>(acc[i][j], fragA[i], fragB[j]);
    }
    readStage = readStage == kTcStages - 1 ? 0 : readStage + 1;
    writeStage = writeStage == kTcStages - 1 ? 0 : writeStage + 1;
  }
  cpAsyncWait<0>();  // only empty groups can remain; leave nothing in flight at exit

  // Accumulator fragment: c0, c1 at (row g, cols 2t, 2t+1), c2, c3 at (row g + 8, same cols).
  const int group = lane >> 2, inGroup = lane & 3;
  const int64_t batchOffset = z * p.ep.strideC;
#pragma unroll
  for (int i = 0; i < kTcFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kTcFragsN; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t row = origin.row + warpRow + i * 16 + group + half * 8;
        const int64_t col = origin.col + warpCol + j * 8 + inGroup * 2;
        storeOutputPair(p.ep, batchOffset, row, col, acc[i][j][2 * half], acc[i][j][2 * half + 1]);
      }
}

// Compiles to an empty body where the arch lacks the instructions (below sm_75; BF16 below
// sm_80); chooseGemmPath() never sends work there.
template <bool kBf16>
__global__ void __launch_bounds__(kTcThreads, 2) tensorCoreGemmKernel(const __grid_constant__ TcParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  if constexpr (!kBf16 || kArchHasBf16Mma) {
    __shared__ __align__(128) uint16_t tilesA[kTcStages][kTcTileElems];
    __shared__ __align__(128) uint16_t tilesB[kTcStages][kTcTileElems];
    tensorCoreGemmTile<kBf16>(p, tilesA, tilesB);
  }
#endif
}

// ------------------------------------------------------------------------------------------
// SIMT FP32 kernel

constexpr int kSimtTileM = 128, kSimtTileN = 128, kSimtTileK = 8;
constexpr int kSimtThreads = 256;
// Row stride of a shared k-row: the +4 floats make the K-contiguous fill (8 k values of 4 rows
// per warp) land in 32 different banks, and keep float4 reads 16-byte aligned.
constexpr int kSimtStride = kSimtTileM + 4;
constexpr int kSimtElemsPerThread = kSimtTileM * kSimtTileK / kSimtThreads;  // per operand
static_assert(kSimtTileM == kSimtTileN, "A and B tiles share one shape");
static_assert(kSimtElemsPerThread == 4, "fetch mapping below assumes 4 elements per thread");

struct SimtOperand {
  const void* data;  // batch item 0 of this launch
  DType type;
  int64_t ld;
  int64_t stride;    // between batch items (0: shared)
  int64_t extent;    // M for A, N for B
  bool kContiguous;  // see TcOperand
};

struct SimtParams {
  SimtOperand a, b;
  int64_t K;
  int tilesM, tilesN;
  GemmEpilogue ep;
};

// Element e of this thread's share of a 128 x 8 operand tile. Consecutive threads take
// consecutive addresses along the stored fast dimension, so global reads coalesce.
__device__ __forceinline__ void simtTileCoord(bool kContiguous, int tid, int e, int& mn, int& k) {
  if (kContiguous) { k = tid & 7; mn = (tid >> 3) + e * 32; }
  else { mn = tid & 127; k = (tid >> 7) + e * 2; }
}

// itemOffset: this block's batch item, z * stride elements.
__device__ __forceinline__ void fetchSimtTile(float (&regs)[kSimtElemsPerThread], const SimtOperand& op,
                                              int64_t itemOffset, int64_t mnStart, int64_t kStart, int64_t K, int tid) {
#pragma unroll
  for (int e = 0; e < kSimtElemsPerThread; ++e) {
    int mn, k;
    simtTileCoord(op.kContiguous, tid, e, mn, k);
    const int64_t globalMn = mnStart + mn, globalK = kStart + k;
    float value = 0.0f;
    if (globalMn < op.extent && globalK < K) {
      const int64_t index = op.kContiguous ? globalMn * op.ld + globalK : globalK * op.ld + globalMn;
      value = load_f32(op.data, op.type, (size_t)(itemOffset + index));
    }
    regs[e] = value;
  }
}

// Shared tiles are k-major ([k][mn]) whatever the global orientation, so the inner product
// loop reads a row of A values and a row of B values as float4s.
__device__ __forceinline__ void storeSimtTile(float* tile, const float (&regs)[kSimtElemsPerThread],
                                              bool kContiguous, int tid) {
#pragma unroll
  for (int e = 0; e < kSimtElemsPerThread; ++e) {
    int mn, k;
    simtTileCoord(kContiguous, tid, e, mn, k);
    tile[k * kSimtStride + mn] = regs[e];
  }
}

__global__ void __launch_bounds__(kSimtThreads, 2) simtGemmKernel(const __grid_constant__ SimtParams p) {
  __shared__ __align__(16) float tilesA[2][kSimtTileK * kSimtStride];
  __shared__ __align__(16) float tilesB[2][kSimtTileK * kSimtStride];
  const int tid = threadIdx.x;
  // 16 x 16 threads; each owns rows {ty*4 .. +3} and {64 + ty*4 .. +3} (columns likewise with
  // tx): two float4 reads per operand per k, and a warp's reads hit distinct banks or broadcast.
  const int tx = tid & 15, ty = tid >> 4;
  const TileOrigin origin = tileOrigin(p.tilesM, p.tilesN, kSimtTileM, kSimtTileN);
  const int numKTiles = (int)((p.K + kSimtTileK - 1) / kSimtTileK);
  const int64_t z = blockIdx.z;
  const int64_t itemA = z * p.a.stride, itemB = z * p.b.stride;

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  float nextA[kSimtElemsPerThread], nextB[kSimtElemsPerThread];
  fetchSimtTile(nextA, p.a, itemA, origin.row, 0, p.K, tid);
  fetchSimtTile(nextB, p.b, itemB, origin.col, 0, p.K, tid);
  storeSimtTile(tilesA[0], nextA, p.a.kContiguous, tid);
  storeSimtTile(tilesB[0], nextB, p.b.kContiguous, tid);
  __syncthreads();

  // Double buffer: tile kt + 1 is fetched into registers before computing on tile kt, so its
  // global latency hides behind the FMAs; one barrier per tile separates the buffer swap.
  for (int kt = 0; kt < numKTiles; ++kt) {
    const int buffer = kt & 1;
    const bool hasNext = kt + 1 < numKTiles;
    if (hasNext) {
      fetchSimtTile(nextA, p.a, itemA, origin.row, (int64_t)(kt + 1) * kSimtTileK, p.K, tid);
      fetchSimtTile(nextB, p.b, itemB, origin.col, (int64_t)(kt + 1) * kSimtTileK, p.K, tid);
    }
    const float* tileA = tilesA[buffer];
    const float* tileB = tilesB[buffer];
#pragma unroll
    for (int k = 0; k < kSimtTileK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(tileA + k * kSimtStride + ty * 4);
      const float4 a1 = *reinterpret_cast<const float4*>(tileA + k * kSimtStride + 64 + ty * 4);
      const float4 b0 = *reinterpret_cast<const float4*>(tileB + k * kSimtStride + tx * 4);
      const float4 b1 = *reinterpret_cast<const float4*>(tileB + k * kSimtStride + 64 + tx * 4);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (hasNext) {
      // The other buffer was last read in iteration kt - 1, before the barrier that ended it.
      storeSimtTile(tilesA[buffer ^ 1], nextA, p.a.kContiguous, tid);
      storeSimtTile(tilesB[buffer ^ 1], nextB, p.b.kContiguous, tid);
    }
    __syncthreads();
  }

  const int64_t batchOffset = z * p.ep.strideC;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t row = origin.row + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      const int64_t col = origin.col + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
      storeOutputPair(p.ep, batchOffset, row, col, acc[i][j], acc[i][j + 1]);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Host side

constexpr int64_t kMaxBatchPerLaunch = 65535;  // gridDim.z

GemmEpilogue makeEpilogue(const GemmArgs& args) {
  GemmEpilogue ep;
  ep.alpha = args.alpha; ep.beta = args.beta;
  ep.c = args.beta != 0.0f ? args.C : nullptr; ep.cType = args.cType;
  ep.bias = args.bias; ep.biasType = args.biasType;
  ep.act = args.act;
  ep.out = args.out; ep.outType = args.outType;
  ep.preAct = args.preAct; ep.preActType = args.preActType;
  ep.M = args.M; ep.N = args.N;
  ep.ldc = args.ldc; ep.strideC = args.strideC;
  return ep;
}

// The kernels index tiles and k steps with int; reject what would overflow instead of
// computing garbage (such sizes exceed any GPU's memory anyway).
void tileGrid(const GemmArgs& args, int tileM, int tileN, int tileK, int& tilesM, int& tilesN) {
  const int64_t rows = (args.M + tileM - 1) / tileM, cols = (args.N + tileN - 1) / tileN;
  const int64_t kTiles = (args.K + tileK - 1) / tileK;
  if (args.M < 1 || args.N < 1 || args.K < 1 || args.batch < 1 || rows > INT_MAX / cols || kTiles > INT_MAX)
    fail("E_ARG", "gemm: M, N, K, batch must be >= 1 and small enough for the CUDA grid (M=" +
                      std::to_string(args.M) + ", N=" + std::to_string(args.N) + ", K=" + std::to_string(args.K) +
                      ", batch=" + std::to_string(args.batch) + ")");
  tilesM = (int)rows;
  tilesN = (int)cols;
}

// cp.async needs every 16-byte chunk it copies to be 16-byte aligned: the base, every row start
// (ld a multiple of 8 elements) and every batch item (stride a multiple of 8 elements).
bool chunksAre16ByteAligned(const void* data, int64_t ld, int64_t stride, int64_t batch) {
  return reinterpret_cast<uintptr_t>(data) % 16 == 0 && ld % 8 == 0 && (batch == 1 || stride % 8 == 0);
}

// p advanced by `elements` of t (null stays null).
const void* advance(const void* p, DType t, int64_t elements) {
  return p == nullptr ? nullptr : static_cast<const char*>(p) + elements * (int64_t)dtype_size(t);
}
void* advance(void* p, DType t, int64_t elements) {
  return p == nullptr ? nullptr : static_cast<char*>(p) + elements * (int64_t)dtype_size(t);
}

// The epilogue's batched pointers moved to batch item z0.
GemmEpilogue epilogueFrom(const GemmEpilogue& ep, int64_t z0) {
  GemmEpilogue e = ep;
  e.c = advance(ep.c, ep.cType, z0 * ep.strideC);
  e.out = advance(ep.out, ep.outType, z0 * ep.strideC);
  e.preAct = advance(ep.preAct, ep.preActType, z0 * ep.strideC);
  return e;
}

void launchTensorCoreGemm(const GemmArgs& args, bool bf16, cudaStream_t stream) {
  TcParams p;
  p.a.data = static_cast<const uint16_t*>(args.A);
  p.a.ld = args.lda;
  p.a.stride = args.strideA;
  p.a.extent = args.M;
  p.a.kContiguous = !args.transA;
  p.a.vectorLoads = chunksAre16ByteAligned(args.A, args.lda, args.strideA, args.batch);
  p.b.data = static_cast<const uint16_t*>(args.B);
  p.b.ld = args.ldb;
  p.b.stride = args.strideB;
  p.b.extent = args.N;
  p.b.kContiguous = args.transB;
  p.b.vectorLoads = chunksAre16ByteAligned(args.B, args.ldb, args.strideB, args.batch);
  p.K = args.K;
  tileGrid(args, kTcTileM, kTcTileN, kTcTileK, p.tilesM, p.tilesN);
  p.ep = makeEpilogue(args);
  const unsigned tiles = (unsigned)p.tilesM * (unsigned)p.tilesN;
  for (int64_t z0 = 0; z0 < args.batch; z0 += kMaxBatchPerLaunch) {
    TcParams q = p;
    q.a.data = p.a.data + z0 * p.a.stride;
    q.b.data = p.b.data + z0 * p.b.stride;
    q.ep = epilogueFrom(p.ep, z0);
    const dim3 grid(tiles, 1, (unsigned)std::min(kMaxBatchPerLaunch, args.batch - z0));
    if (bf16) {
      tensorCoreGemmKernel<true><<<grid, kTcThreads, 0, stream>>>(q);
      checkLaunch("tensorCoreGemmKernel<bf16>");
    } else {
      tensorCoreGemmKernel<false><<<grid, kTcThreads, 0, stream>>>(q);
      checkLaunch("tensorCoreGemmKernel<f16>");
    }
  }
}

void launchSimtGemm(const GemmArgs& args, cudaStream_t stream) {
  SimtParams p;
  p.a = {args.A, args.aType, args.lda, args.strideA, args.M, !args.transA};
  p.b = {args.B, args.bType, args.ldb, args.strideB, args.N, args.transB};
  p.K = args.K;
  tileGrid(args, kSimtTileM, kSimtTileN, kSimtTileK, p.tilesM, p.tilesN);
  p.ep = makeEpilogue(args);
  const unsigned tiles = (unsigned)p.tilesM * (unsigned)p.tilesN;
  for (int64_t z0 = 0; z0 < args.batch; z0 += kMaxBatchPerLaunch) {
    SimtParams q = p;
    q.a.data = advance(p.a.data, p.a.type, z0 * p.a.stride);
    q.b.data = advance(p.b.data, p.b.type, z0 * p.b.stride);
    q.ep = epilogueFrom(p.ep, z0);
    const dim3 grid(tiles, 1, (unsigned)std::min(kMaxBatchPerLaunch, args.batch - z0));
    simtGemmKernel<<<grid, kSimtThreads, 0, stream>>>(q);
    checkLaunch("simtGemmKernel");
  }
}

void launchGemm(const GemmArgs& args, cudaStream_t stream, int ccMajor, int ccMinor) {
  switch (chooseGemmPath(args, ccMajor, ccMinor)) {
    case GemmPath::TensorCoreF16: launchTensorCoreGemm(args, false, stream); break;
    case GemmPath::TensorCoreBf16: launchTensorCoreGemm(args, true, stream); break;
    default: launchSimtGemm(args, stream); break;
  }
}

}  // namespace

GemmPath chooseGemmPath(const GemmArgs& args, int ccMajor, int ccMinor) {
  const int cc = ccMajor * 10 + ccMinor;
  if (args.aType == DType::F16 && args.bType == DType::F16 && cc >= 75) return GemmPath::TensorCoreF16;
  if (args.aType == DType::BF16 && args.bType == DType::BF16 && cc >= 80) return GemmPath::TensorCoreBf16;
  return GemmPath::SimtF32;
}

const char* gemmPathName(GemmPath path) {
  switch (path) {
    case GemmPath::TensorCoreF16: return "tensor-core-f16";
    case GemmPath::TensorCoreBf16: return "tensor-core-bf16";
    default: return "simt-f32";
  }
}

std::string gemmFeatures(int ccMajor, int ccMinor) {
  const int cc = ccMajor * 10 + ccMinor;
  if (cc >= 80) return "gemm: mma.sync m16n8k16 f16+bf16 (cp.async pipeline), simt fp32";
  if (cc >= 75) return "gemm: mma.sync m16n8k8 f16, simt fp32 (bf16 via simt)";
  return "gemm: none (compute capability below 7.5)";
}

namespace cuda {

// check() has rejected out overlapping A, B or (other than as the same array) C. preAct is
// written by the epilogue while other blocks may still read A, B and C, so whatever preAct
// overlaps is first copied to a workspace (stream-ordered, no host sync) and read from there:
// the result is that of reading every input before writing.
void gemm(const GemmArgs& args, const CudaContext& ctx) {
  GemmArgs a = args;
  Workspace stagedA, stagedB, stagedC;
  if (a.preAct != nullptr) {
    const size_t preActBytes = a.cExtent() * dtype_size(a.preActType);
    auto stage = [&](Workspace& ws, const void*& p, size_t bytes) {
      ws.reset(ctx, bytes);
      MP_CUDA_CHECK(cudaMemcpyAsync(ws.as<void>(), p, bytes, cudaMemcpyDeviceToDevice, ctx.stream));
      p = ws.as<void>();
    };
    const size_t aBytes = a.aExtent() * dtype_size(a.aType), bBytes = a.bExtent() * dtype_size(a.bType);
    const size_t cBytes = a.beta != 0.0f ? a.cExtent() * dtype_size(a.cType) : 0;
    if (bytesOverlap(a.preAct, preActBytes, a.A, aBytes)) stage(stagedA, a.A, aBytes);
    if (bytesOverlap(a.preAct, preActBytes, a.B, bBytes)) stage(stagedB, a.B, bBytes);
    if (bytesOverlap(a.preAct, preActBytes, a.C, cBytes) && !(a.C == a.preAct && a.cType == a.preActType))
      stage(stagedC, a.C, cBytes);
  }
  launchGemm(a, ctx.stream, ctx.ccMajor, ctx.ccMinor);
}

}  // namespace cuda
}  // namespace mp
