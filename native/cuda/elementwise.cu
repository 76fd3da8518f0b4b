// CUDA element-wise ops: binary (broadcasting add / sub / mul), activation forward / backward,
// dropout; and the contiguous element-wise kernel that copy.cu's casts share. Semantics at
// BinaryArgs, ActivationArgs, ActivationBackwardArgs, DropoutArgs (native/core/op_args.h); the
// per-element math is native/shared/elementwise.h and nn.h, called exactly as the CPU loops do
// (compiled with -fmad=false, so no FMA contraction changes a bit).
//
//  * elementwiseKernel: contiguous operands. A grid-stride loop over a scalar head (until out
//    is aligned), vectors of 4 (16-byte accesses for F32, 8-byte for F16 / BF16) when every
//    operand is aligned there, and a scalar tail. One wave of blocks (SMs x resident blocks):
//    no value depends on the grid. Dropout's element index is the global one, so its mask is a
//    function of (seed, i) only.
//  * binary with broadcasting or strided operands: the host coalesces the index space
//    (out, a, b); a fully contiguous result goes to elementwiseKernel, anything else to
//    stridedKernel (strided.cuh). Every element is read and written by one thread, so the
//    allowed in-place forms (out is a, or b, contiguous) are safe.
#include "elementwise.cuh"

#include "../core/strided.h"
#include "../shared/elementwise.h"
#include "../shared/nn.h"
#include "check.cuh"
#include "strided.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {
namespace {

__device__ __forceinline__ float elementValue(const ElementwiseParams& e, size_t i, float a, float b) {
  switch (e.op) {
    case ElementOp::ActForward: return apply_act(e.act, a);
    case ElementOp::ActBackward: return act_backward(e.act, a, b);
    case ElementOp::Dropout: return dropout_apply(a, dropout_keep(e.seed, (uint64_t)i, e.p), e.scale);
    case ElementOp::Binary: return binary_apply(e.binaryOp, a, b);
    default: return a;  // Cast
  }
}

__global__ void __launch_bounds__(kThreads) elementwiseKernel(const __grid_constant__ ElementwiseParams e) {
  const size_t tid = globalThread(), stride = gridThreads();
  const bool hasB = e.b != nullptr;
  auto scalar = [&](size_t i) {
    const float a = load_f32(e.a, e.aType, i);
    const float b = hasB ? load_f32(e.b, e.bType, i) : e.scalar;
    store_f32(e.out, e.outType, i, elementValue(e, i, a, b));
  };
  const Split& sp = e.split;
  for (size_t i = tid; i < sp.head; i += stride) scalar(i);
  for (size_t i = sp.tail() + tid; i < sp.n; i += stride) scalar(i);
  for (size_t q = tid; q < sp.nvec; q += stride) {
    const size_t i0 = sp.head + 4 * q;
    float a[4], b[4] = {e.scalar, e.scalar, e.scalar, e.scalar}, y[4];
    load4(e.a, e.aType, i0, a);
    if (hasB) load4(e.b, e.bType, i0, b);
#pragma unroll
    for (int k = 0; k < 4; ++k) y[k] = elementValue(e, i0 + (size_t)k, a[k], b[k]);
    store4(e.out, e.outType, i0, y);
  }
}

// One element of a strided binary op (operand 0 out, 1 a, 2 b).
struct BinaryElement {
  int op;
  const void* a; DType aType;
  const void* b; DType bType;  // null: scalar
  float scalar;
  void* out; DType outType;
  __device__ __forceinline__ void operator()(int64_t o, int64_t ia, int64_t ib) const {
    const float x = load_f32(a, aType, (size_t)ia);
    const float y = b != nullptr ? load_f32(b, bType, (size_t)ib) : scalar;
    store_f32(out, outType, (size_t)o, binary_apply(op, x, y));
  }
};

}  // namespace

void launchElementwise(ElementwiseParams e, const CudaContext& ctx) {
  if (e.n == 0) return;
  e.split = splitForVectors(e.n, 4,
                            {{e.out, dtype_size(e.outType)}, {e.a, dtype_size(e.aType)},
                             {e.b, e.b ? dtype_size(e.bType) : 4}});
  const uint64_t cap = oneWave(ctx.multiprocessors, residentBlocks<elementwiseKernel, kThreads>());
  elementwiseKernel<<<blocksFor(threadsWanted(e.split), kThreads, cap), kThreads, 0, ctx.stream>>>(e);
  checkLaunch("elementwiseKernel");
}

void binary(const BinaryArgs& a, const CudaContext& ctx) {
  const size_t n = shapeSize(a.ndim, a.shape);
  if (n == 0) return;
  int64_t outStrides[kMaxDims] = {}, zero[kMaxDims] = {};
  contiguousStrides(a.ndim, a.shape, outStrides);
  const int64_t* strides[3] = {outStrides, a.aStrides, a.b ? a.bStrides : zero};
  const StridedSpace s = coalesce(a.ndim, a.shape, strides, 3);
  const bool flat = s.ndim == 1 && s.strides[1][0] == 1 && (a.b == nullptr || s.strides[2][0] == 1);
  if (flat) {
    ElementwiseParams e;
    e.op = ElementOp::Binary;
    e.binaryOp = (int)a.op;
    e.a = a.a; e.aType = a.aType;
    e.b = a.b; e.bType = a.bType;
    e.scalar = a.scalar;
    e.out = a.out; e.outType = a.outType;
    e.n = n;
    launchElementwise(e, ctx);
    return;
  }
  const BinaryElement f{(int)a.op, a.a, a.aType, a.b, a.bType, a.scalar, a.out, a.outType};
  launchStrided(s, f, ctx, "stridedKernel<binary>");
}

void activationForward(const ActivationArgs& a, const CudaContext& ctx) {
  ElementwiseParams e;
  e.op = ElementOp::ActForward;
  e.act = a.act;
  e.a = a.x; e.aType = a.xType;
  e.out = a.y; e.outType = a.yType;
  e.n = a.n;
  launchElementwise(e, ctx);
}

void activationBackward(const ActivationBackwardArgs& a, const CudaContext& ctx) {
  ElementwiseParams e;
  e.op = ElementOp::ActBackward;
  e.act = a.act;
  e.a = a.dy; e.aType = a.dyType;
  e.b = a.z; e.bType = a.zType;
  e.out = a.dx; e.outType = a.dxType;
  e.n = a.n;
  launchElementwise(e, ctx);
}

void dropout(const DropoutArgs& a, const CudaContext& ctx) {
  ElementwiseParams e;
  e.op = ElementOp::Dropout;
  e.a = a.x; e.aType = a.xType;
  e.out = a.y; e.outType = a.yType;
  e.n = a.n;
  e.p = a.p;
  e.scale = dropout_scale(a.p);  // once per call, on the host, as the CPU backend
  e.seed = a.seed;
  launchElementwise(e, ctx);
}

}  // namespace cuda
}  // namespace mp
