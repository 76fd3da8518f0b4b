// CUDA memory-shaped ops: fill and copy (strided N-D, with cast). Semantics at FillArgs / CopyArgs
// (native/core/op_args.h). No reductions: results never depend on the grid.
//
//  * fill: the element's bits are computed once on the host (the CPU backend's conversions:
//    the FP32 bits, RNE to FP16 / BF16, f32_to_i32_rne for int32); a zero pattern is a
//    cudaMemsetAsync, anything else fillKernel: 16-byte stores between a scalar head and tail.
//  * copy: the host coalesces the index space (out, x). One contiguous run on both sides is a
//    cudaMemcpyAsync (same dtype: raw bits, NaN payloads included; the only way int32 moves) or
//    elementwiseKernel's vectorised cast (through FP32 with the shared RNE); anything else
//    (views, expand, cat into a narrow view, transposes) is stridedKernel with raw 2- / 4-byte
//    moves or the cast per element. x == out walked the same way moves nothing.
#include <string.h>

#include "../core/strided.h"
#include "../shared/elementwise.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "elementwise.cuh"
#include "strided.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

// word: the 32-bit pattern (a 16-bit element repeated in both halves).
__global__ void __launch_bounds__(kThreads) fillKernel(void* out, int elementBytes, uint32_t word, const Split sp) {
  const size_t tid = globalThread(), stride = gridThreads();
  const uint4 v = make_uint4(word, word, word, word);
  if (elementBytes == 4) {
    uint32_t* o = static_cast<uint32_t*>(out);
    for (size_t i = tid; i < sp.head; i += stride) o[i] = word;
    for (size_t i = sp.tail() + tid; i < sp.n; i += stride) o[i] = word;
    for (size_t q = tid; q < sp.nvec; q += stride) reinterpret_cast<uint4*>(o + sp.head)[q] = v;
  } else {
    uint16_t* o = static_cast<uint16_t*>(out);
    const uint16_t h = (uint16_t)word;
    for (size_t i = tid; i < sp.head; i += stride) o[i] = h;
    for (size_t i = sp.tail() + tid; i < sp.n; i += stride) o[i] = h;
    for (size_t q = tid; q < sp.nvec; q += stride) reinterpret_cast<uint4*>(o + sp.head)[q] = v;
  }
}

// Strided copy elements (operand 0 out, 1 x).
template <typename T>
struct RawElement {
  const T* x;
  T* out;
  __device__ __forceinline__ void operator()(int64_t o, int64_t i, int64_t) const { out[o] = x[i]; }
};
struct CastElement {
  const void* x; DType xType;
  void* out; DType outType;
  __device__ __forceinline__ void operator()(int64_t o, int64_t i, int64_t) const {
    store_f32(out, outType, (size_t)o, load_f32(x, xType, (size_t)i));
  }
};

}  // namespace

void fill(const FillArgs& a, const CudaContext& ctx) {
  if (a.n == 0) return;
  const size_t bytes = dtype_size(a.outType);
  uint32_t word;
  if (a.outType == DType::I32) {
    const int32_t v = f32_to_i32_rne(a.value);
    memcpy(&word, &v, 4);
  } else if (a.outType == DType::F32) {
    memcpy(&word, &a.value, 4);
  } else {
    const uint32_t h = a.outType == DType::F16 ? f32_to_f16_bits(a.value) : f32_to_bf16_bits(a.value);
    word = h | (h << 16);
  }
  if (word == 0) {
    MP_CUDA_CHECK(cudaMemsetAsync(a.out, 0, a.n * bytes, ctx.stream));
    return;
  }
  const Split sp = splitForVectors(a.n, 16 / bytes, {{a.out, bytes}});
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<fillKernel, kThreads>());
  fillKernel<<<blocksFor(threadsWanted(sp), kThreads, cap), kThreads, 0, ctx.stream>>>(a.out, (int)bytes, word, sp);
  checkLaunch("fillKernel");
}

void copy(const CopyArgs& a, const CudaContext& ctx) {
  const size_t n = shapeSize(a.ndim, a.shape);
  if (n == 0) return;
  const int64_t* strides[2] = {a.outStrides, a.xStrides};
  const StridedSpace s = coalesce(a.ndim, a.shape, strides, 2);
  const bool sameType = a.xType == a.outType;
  if (a.x == a.out && sameType) {  // the same array walked the same way: nothing moves
    bool same = true;
    for (int d = 0; d < s.ndim; ++d) same = same && s.strides[0][d] == s.strides[1][d];
    if (same) return;
  }
  if (s.ndim == 1 && s.strides[0][0] == 1 && s.strides[1][0] == 1) {
    if (sameType) {
      MP_CUDA_CHECK(cudaMemcpyAsync(a.out, a.x, n * dtype_size(a.outType), cudaMemcpyDeviceToDevice, ctx.stream));
      return;
    }
    ElementwiseParams e;
    e.op = ElementOp::Cast;
    e.a = a.x; e.aType = a.xType;
    e.out = a.out; e.outType = a.outType;
    e.n = n;
    launchElementwise(e, ctx);
    return;
  }
  if (sameType && dtype_size(a.outType) == 4) {
    const RawElement<uint32_t> f{static_cast<const uint32_t*>(a.x), static_cast<uint32_t*>(a.out)};
    launchStrided(s, f, ctx, "stridedKernel<copy32>");
  } else if (sameType) {
    const RawElement<uint16_t> f{static_cast<const uint16_t*>(a.x), static_cast<uint16_t*>(a.out)};
    launchStrided(s, f, ctx, "stridedKernel<copy16>");
  } else {
    const CastElement f{a.x, a.xType, a.out, a.outType};
    launchStrided(s, f, ctx, "stridedKernel<cast>");
  }
}

}  // namespace cuda
}  // namespace mp
