// The argument of every backend op, one struct per op, each with ONE description of its fields:
// `visit(V&)` names every field in the order it is read. The N-API layer reads an op's options
// object through it (native/napi/op_entry.h), checking every number, dtype and tensor extent
// with overflow-checked arithmetic, so a backend op is only ever called with pointers whose
// whole range lies inside their storage. The op list is native/core/ops.def.
//
// Field conventions (JS side): a tensor field `x` is a storage handle with `xOffset` (elements of
// its dtype, default 0) and, for tensors whose dtype varies, `xType` (a DType code). Strides and
// shapes are arrays of integers (elements). A seed is `seedHi` / `seedLo` (two uint32).
//
// visit(V& v) calls, in order (the extent of a tensor may use fields read before it):
//   v.dim(key, int64&, min)        integer in [min, 2^53)           (E_SHAPE)
//   v.dim(key, int64&, min, dflt)  same, `dflt` when absent
//   v.count(key, size_t&)          integer in [0, 2^53)             (E_SHAPE)
//   v.number(key, float&)          any number (the struct's check() bounds it); v.real: double
//   v.int32(key, int32&)           32-bit integer (or boolean)
//   v.code(key, int&, max)         integer code in [0, max]
//   v.flag(key, bool&)             boolean (absent = false)
//   v.dtype(key, DType&, optional) float dtype code: 0, 1, 2        (E_DTYPE); optional: may be absent
//   v.anyDtype(key, DType&)        any storage dtype code, int32 included
//   v.act(key, Act&)               0 none, 1 relu, 2 gelu
//   v.dims(key, int&, int64 (&)[kMaxDims])     array of 0..kMaxDims integers >= 0 (a shape)
//   v.strides(key, int ndim, int64 (&)[kMaxDims], optional)  exactly ndim integers >= 0
//   v.seed(key, uint64&)           key + "Hi", key + "Lo"
//   v.tensor(key, ptr&, DType, size_t needElements, bool optional = false)
//   v.object(key, T&)              a nested object read with visitFields(v, T&)
// After visit, check() tests what relates fields to each other (aliasing, ld >= columns...).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string>
#include <utility>

#include "../shared/activation.h"
#include "../shared/amp.h"
#include "../shared/dtype.h"
#include "error.h"

namespace mp {

constexpr int kMaxDims = 8;

// --- overflow-checked size arithmetic (E_SHAPE on overflow: a huge shape is a shape error) ---
inline size_t checkedMul(size_t a, size_t b) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail("E_SHAPE", "tensor size overflows (" + std::to_string(a) + " x " + std::to_string(b) + ")");
  return r;
}
inline size_t checkedAdd(size_t a, size_t b) {
  size_t r;
  if (__builtin_add_overflow(a, b, &r)) fail("E_SHAPE", "tensor size overflows");
  return r;
}
inline size_t elems(int64_t a, int64_t b) { return checkedMul((size_t)a, (size_t)b); }
inline size_t elems(int64_t a, int64_t b, int64_t c) { return checkedMul(elems(a, b), (size_t)c); }
// Elements spanned by `rows` rows of `cols` elements, `ld` apart (0 when empty).
inline size_t matrixExtent(int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return 0;
  return checkedAdd(checkedMul((size_t)(rows - 1), (size_t)ld), (size_t)cols);
}
// Elements spanned by `batch` items of `one` elements, `stride` apart.
inline size_t batchedExtent(int64_t batch, int64_t stride, size_t one) {
  if (batch == 0 || one == 0) return 0;
  return checkedAdd(checkedMul((size_t)(batch - 1), (size_t)stride), one);
}
// Elements spanned by a strided view: 1 + sum (shape_i - 1) * stride_i (0 when any dim is 0).
inline size_t stridedExtent(int ndim, const int64_t* shape, const int64_t* strides) {
  size_t last = 0;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] == 0) return 0;
    last = checkedAdd(last, checkedMul((size_t)(shape[i] - 1), (size_t)strides[i]));
  }
  return checkedAdd(last, 1);
}
inline size_t shapeSize(int ndim, const int64_t* shape) {
  size_t n = 1;
  for (int i = 0; i < ndim; ++i) n = checkedMul(n, (size_t)shape[i]);
  return n;
}
// Byte ranges [a, a + an) and [b, b + bn) overlap (empty ranges never do).
inline bool bytesOverlap(const void* a, size_t an, const void* b, size_t bn) {
  if (!a || !b || an == 0 || bn == 0) return false;
  const uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
  return a0 < b0 + bn && b0 < a0 + an;
}
// The element-wise ops' aliasing rule: an output and an input are the very same array (same
// start, same dtype: in place) or do not overlap at all. Partial overlaps would race on the GPU.
inline void sameOrDisjoint(const char* op, const void* out, DType ot, const void* in, DType it, size_t n) {
  if (bytesOverlap(out, n * dtype_size(ot), in, n * dtype_size(it)) && !(out == in && ot == it))
    fail("E_ARG", std::string(op) + ": an output partly overlaps an input (in place needs the same array and dtype)");
}

// ---------------------------------------------------------------------------------------------
// Memory-shaped ops

// out[i] = value for i < n, converted to outType with RNE (int32: to nearest, ties to even,
// saturating, NaN -> 0).
struct FillArgs {
  size_t n = 0;
  float value = 0.0f;
  void* out = nullptr; DType outType = DType::F32;
  template <class V> void visit(V& v) {
    v.count("n", n);
    v.number("value", value);
    v.anyDtype("outType", outType);
    v.tensor("out", out, outType, n);
  }
  void check() const {}
};

// out[idx] = x[idx] (converted to outType with RNE) over an N-D index space `shape`, each side
// read / written through its own element strides (>= 0; out's nonzero where the dim is > 1).
// Covers contiguous(), cast, cat (into narrow views of the output) and expand. int32 copies only
// to int32. x and out must not overlap (unless they are the same contiguous array and dtype).
struct CopyArgs {
  int ndim = 0; int64_t shape[kMaxDims] = {};
  const void* x = nullptr; DType xType = DType::F32; int64_t xStrides[kMaxDims] = {};
  void* out = nullptr; DType outType = DType::F32; int64_t outStrides[kMaxDims] = {};
  template <class V> void visit(V& v) {
    v.dims("shape", ndim, shape);
    v.strides("xStrides", ndim, xStrides);
    v.strides("outStrides", ndim, outStrides);
    v.anyDtype("xType", xType);
    v.anyDtype("outType", outType);
    v.tensor("x", x, xType, stridedExtent(ndim, shape, xStrides));
    v.tensor("out", out, outType, stridedExtent(ndim, shape, outStrides));
  }
  void check() const {
    if ((xType == DType::I32) != (outType == DType::I32)) fail("E_DTYPE", "copy: int32 copies only to int32");
    for (int i = 0; i < ndim; ++i)
      if (shape[i] > 1 && outStrides[i] == 0) fail("E_ARG", "copy: out has a zero stride over a dimension of size > 1");
    bool sameLayout = x == out && xType == outType;
    for (int i = 0; i < ndim && sameLayout; ++i) sameLayout = shape[i] <= 1 || xStrides[i] == outStrides[i];
    if (!sameLayout && bytesOverlap(out, stridedExtent(ndim, shape, outStrides) * dtype_size(outType), x,
                                    stridedExtent(ndim, shape, xStrides) * dtype_size(xType)))
      fail("E_ARG", "copy: x and out overlap");
  }
};

// ---------------------------------------------------------------------------------------------
// GEMM

// For each batch item b < batch:
//   out_b[M,N] = act(alpha * op(A_b) @ op(B_b) + beta * C_b + bias), FP32 accumulation,
// A_b = A + b * strideA (likewise B, C, out, preAct with strideC). op(A) is [M,K]: A is stored
// [M,K] with rows lda apart, or [K,M] when transA (rows lda apart). op(B) is [K,N]: B stored [K,N]
// (rows ldb apart) or [N,K] when transB. C, out and preAct are [M,N] with rows ldc apart. A batch
// stride of 0 shares that operand across the batch. C (if beta != 0) is read before out is
// written and may be the same array as out (not another overlap). out overlapping A or B is
// rejected. bias (optional) is [N] of biasType, the same for every batch item. preAct (optional)
// stores the value before the activation (what GELU's backward needs). M, N, K, batch >= 1.
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0, batch = 1;
  bool transA = false, transB = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t strideA = 0, strideB = 0, strideC = 0;
  const void* A = nullptr; DType aType = DType::F32;
  const void* B = nullptr; DType bType = DType::F32;
  const void* C = nullptr; DType cType = DType::F32;
  const void* bias = nullptr; DType biasType = DType::F32;
  float alpha = 1.0f, beta = 0.0f;
  Act act = Act::None;
  void* out = nullptr; DType outType = DType::F32;
  void* preAct = nullptr; DType preActType = DType::F32;

  int64_t aRows() const { return transA ? K : M; }
  int64_t aCols() const { return transA ? M : K; }
  int64_t bRows() const { return transB ? N : K; }
  int64_t bCols() const { return transB ? K : N; }
  size_t aExtent() const { return batchedExtent(batch, strideA, matrixExtent(aRows(), aCols(), lda)); }
  size_t bExtent() const { return batchedExtent(batch, strideB, matrixExtent(bRows(), bCols(), ldb)); }
  size_t cExtent() const { return batchedExtent(batch, strideC, matrixExtent(M, N, ldc)); }

  template <class V> void visit(V& v) {
    v.dim("M", M, 1); v.dim("N", N, 1); v.dim("K", K, 1); v.dim("batch", batch, 1, 1);
    v.flag("transA", transA); v.flag("transB", transB);
    v.dim("lda", lda, 1, aCols()); v.dim("ldb", ldb, 1, bCols()); v.dim("ldc", ldc, 1, N);
    // Batch strides default to packed items (as strideC); an explicit 0 shares that operand.
    v.dim("strideA", strideA, 0, batch > 1 ? (int64_t)matrixExtent(aRows(), aCols(), lda) : 0);
    v.dim("strideB", strideB, 0, batch > 1 ? (int64_t)matrixExtent(bRows(), bCols(), ldb) : 0);
    v.dim("strideC", strideC, 0, batch > 1 ? (int64_t)matrixExtent(M, N, ldc) : 0);
    v.number("alpha", alpha); v.number("beta", beta);
    v.act("act", act);
    v.dtype("aType", aType); v.tensor("a", A, aType, aExtent());
    v.dtype("bType", bType); v.tensor("b", B, bType, bExtent());
    v.dtype("outType", outType); v.tensor("out", out, outType, cExtent());
    if (beta != 0.0f) { v.dtype("cType", cType); v.tensor("c", C, cType, cExtent()); }
    v.dtype("biasType", biasType, true); v.tensor("bias", bias, biasType, (size_t)N, true);
    v.dtype("preActType", preActType, true); v.tensor("preAct", preAct, preActType, cExtent(), true);
  }
  void check() const {
    if (lda < aCols() || ldb < bCols() || ldc < N) fail("E_SHAPE", "gemm: a leading dimension is smaller than its row");
    if (batch > 1 && strideC < (int64_t)matrixExtent(M, N, ldc)) fail("E_SHAPE", "gemm: output batch items overlap (strideC too small)");
    const size_t ob = cExtent() * dtype_size(outType);
    if (bytesOverlap(out, ob, A, aExtent() * dtype_size(aType)) || bytesOverlap(out, ob, B, bExtent() * dtype_size(bType)))
      fail("E_ARG", "gemm: out overlaps an input operand (a or b); write into a separate tensor");
    if (beta != 0.0f && bytesOverlap(out, ob, C, cExtent() * dtype_size(cType)) && !(C == out && cType == outType))
      fail("E_ARG", "gemm: c overlaps out without being the same array");
    const size_t pb = cExtent() * dtype_size(preActType);
    if (preAct && (bytesOverlap(out, ob, preAct, pb) || bytesOverlap(preAct, pb, A, aExtent() * dtype_size(aType)) ||
                   bytesOverlap(preAct, pb, B, bExtent() * dtype_size(bType)) ||
                   (beta != 0.0f && bytesOverlap(preAct, pb, C, cExtent() * dtype_size(cType)))))
      fail("E_ARG", "gemm: preAct overlaps out or an input");
    if (bias && bytesOverlap(out, ob, bias, (size_t)N * dtype_size(biasType))) fail("E_ARG", "gemm: bias overlaps out");
  }
};

// ---------------------------------------------------------------------------------------------
// Element-wise and reductions (per-element math in native/shared/elementwise.h)

enum class BinaryOp : int { Add = 0, Sub = 1, Mul = 2 };

// out[idx] = a[idx] op b[idx] over the N-D index space `shape`, out contiguous row-major; a and b
// read through element strides (0 = broadcast along that dim). b null: b is `scalar` everywhere.
// FP32 math, rounded once to outType. out may be the same array as a (or b) when that operand is
// contiguous with out's shape (in-place accumulation); other overlaps are rejected.
struct BinaryArgs {
  BinaryOp op = BinaryOp::Add;
  int ndim = 0; int64_t shape[kMaxDims] = {};
  const void* a = nullptr; DType aType = DType::F32; int64_t aStrides[kMaxDims] = {};
  const void* b = nullptr; DType bType = DType::F32; int64_t bStrides[kMaxDims] = {};
  float scalar = 0.0f;
  void* out = nullptr; DType outType = DType::F32;
  template <class V> void visit(V& v) {
    int code = 0;
    v.code("op", code, 2);
    op = (BinaryOp)code;
    v.dims("shape", ndim, shape);
    v.strides("aStrides", ndim, aStrides);
    v.dtype("aType", aType); v.tensor("a", a, aType, stridedExtent(ndim, shape, aStrides));
    v.number("scalar", scalar);
    v.strides("bStrides", ndim, bStrides, true);
    v.dtype("bType", bType, true); v.tensor("b", b, bType, stridedExtent(ndim, shape, bStrides), true);
    v.dtype("outType", outType); v.tensor("out", out, outType, shapeSize(ndim, shape));
  }
  bool contiguous(const int64_t* strides) const {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; --i) { if (shape[i] != 1 && strides[i] != s) return false; s *= shape[i]; }
    return true;
  }
  void check() const {
    const size_t n = shapeSize(ndim, shape), ob = n * dtype_size(outType);
    auto overlapOk = [&](const void* p, DType t, const int64_t* strides) {
      if (!bytesOverlap(out, ob, p, stridedExtent(ndim, shape, strides) * dtype_size(t))) return true;
      return p == out && t == outType && contiguous(strides);
    };
    if (!overlapOk(a, aType, aStrides) || (b && !overlapOk(b, bType, bStrides)))
      fail("E_ARG", "binary: out overlaps an input other than as the same contiguous array");
  }
};

// out[o, i] = alpha * sum_r x[o, r, i] + beta * out[o, i] for x contiguous [outer, R, inner] and
// out [outer, inner]; FP32 sums in a fixed order (bitwise repeatable per backend). beta 0 never
// reads out. R may be 0 (the sum is 0). Sum (alpha 1), mean (alpha 1/R), broadcast gradients.
struct ReduceArgs {
  int64_t outer = 0, R = 0, inner = 0;
  float alpha = 1.0f, beta = 0.0f;
  const void* x = nullptr; DType xType = DType::F32;
  void* out = nullptr; DType outType = DType::F32;
  template <class V> void visit(V& v) {
    v.dim("outer", outer, 0); v.dim("R", R, 0); v.dim("inner", inner, 0);
    v.number("alpha", alpha); v.number("beta", beta);
    v.dtype("xType", xType); v.tensor("x", x, xType, elems(outer, R, inner));
    v.dtype("outType", outType); v.tensor("out", out, outType, elems(outer, inner));
  }
  void check() const {
    if (bytesOverlap(out, elems(outer, inner) * dtype_size(outType), x, elems(outer, R, inner) * dtype_size(xType)))
      fail("E_ARG", "reduceSum: out overlaps x");
  }
};

// Activation forward, y = act(x) over n elements (y may be x).
struct ActivationArgs {
  Act act = Act::None;
  size_t n = 0;
  const void* x = nullptr; DType xType = DType::F32;
  void* y = nullptr; DType yType = DType::F32;
  template <class V> void visit(V& v) {
    v.act("act", act); v.count("n", n);
    v.dtype("xType", xType); v.tensor("x", x, xType, n);
    v.dtype("yType", yType); v.tensor("y", y, yType, n);
  }
  void check() const { sameOrDisjoint("activationForward", y, yType, x, xType, n); }
};

// dx = dy * act'(z) over n elements; z is the pre-activation (GELU) or either it or the output (ReLU).
struct ActivationBackwardArgs {
  Act act = Act::None;
  size_t n = 0;
  const void* dy = nullptr; DType dyType = DType::F32;
  const void* z = nullptr; DType zType = DType::F32;
  void* dx = nullptr; DType dxType = DType::F32;
  template <class V> void visit(V& v) {
    v.act("act", act); v.count("n", n);
    v.dtype("dyType", dyType); v.tensor("dy", dy, dyType, n);
    v.dtype("zType", zType); v.tensor("z", z, zType, n);
    v.dtype("dxType", dxType); v.tensor("dx", dx, dxType, n);
  }
  void check() const {
    sameOrDisjoint("activationBackward", dx, dxType, dy, dyType, n);
    sameOrDisjoint("activationBackward", dx, dxType, z, zType, n);
  }
};

// y = dropout_keep(seed, i, p) ? x / (1 - p) : 0 for i < n. The backward is the same call on dy
// with the same seed (the mask is regenerated, never stored). p in [0, 1).
struct DropoutArgs {
  size_t n = 0;
  float p = 0.0f;
  uint64_t seed = 0;
  const void* x = nullptr; DType xType = DType::F32;
  void* y = nullptr; DType yType = DType::F32;
  template <class V> void visit(V& v) {
    v.count("n", n); v.number("p", p); v.seed("seed", seed);
    v.dtype("xType", xType); v.tensor("x", x, xType, n);
    v.dtype("yType", yType); v.tensor("y", y, yType, n);
  }
  void check() const {
    if (!(p >= 0.0f && p < 1.0f)) fail("E_ARG", "dropout: p must be in [0, 1)");
    sameOrDisjoint("dropout", y, yType, x, xType, n);
  }
};

// Row softmax over the last dim of x [M, N] (contiguous), FP32 math: y = softmax(x), or
// log_softmax(x) when `log`. A row of all -inf gives NaN (as PyTorch).
struct SoftmaxArgs {
  int64_t M = 0, N = 0;
  bool log = false;
  const void* x = nullptr; DType xType = DType::F32;
  void* y = nullptr; DType yType = DType::F32;
  template <class V> void visit(V& v) {
    v.dim("M", M, 0); v.dim("N", N, 1); v.flag("log", log);
    v.dtype("xType", xType); v.tensor("x", x, xType, elems(M, N));
    v.dtype("yType", yType); v.tensor("y", y, yType, elems(M, N));
  }
  void check() const { sameOrDisjoint("softmaxForward", y, yType, x, xType, elems(M, N)); }
};

// Softmax backward from the forward's output y: softmax dx = y * (dy - sum_j dy_j y_j);
// log_softmax dx = dy - exp(y) * sum_j dy_j. FP32 row sums. dx may be dy.
struct SoftmaxBackwardArgs {
  int64_t M = 0, N = 0;
  bool log = false;
  const void* y = nullptr; DType yType = DType::F32;
  const void* dy = nullptr; DType dyType = DType::F32;
  void* dx = nullptr; DType dxType = DType::F32;
  template <class V> void visit(V& v) {
    v.dim("M", M, 0); v.dim("N", N, 1); v.flag("log", log);
    v.dtype("yType", yType); v.tensor("y", y, yType, elems(M, N));
    v.dtype("dyType", dyType); v.tensor("dy", dy, dyType, elems(M, N));
    v.dtype("dxType", dxType); v.tensor("dx", dx, dxType, elems(M, N));
  }
  void check() const {
    sameOrDisjoint("softmaxBackward", dx, dxType, dy, dyType, elems(M, N));
    if (bytesOverlap(dx, elems(M, N) * dtype_size(dxType), y, elems(M, N) * dtype_size(yType))) fail("E_ARG", "softmaxBackward: dx overlaps y");
  }
};

// ---------------------------------------------------------------------------------------------
// Losses (FP32; a mean over the batch)

// Softmax cross-entropy over logits [B, C], mean over the B rows, label smoothing eps (PyTorch's
// CrossEntropyLoss(label_smoothing=eps)). loss (optional): *loss = the mean loss; correct
// (optional): rows whose argmax (first max) equals the label (a bad label: a NaN loss, a NaN
// dlogits row, never correct). dlogits (optional): the backward,
// dlogits = (softmax - target) * lossScale * (*gradScale if given) / B in dType. gradScale is one
// FP32 in backend memory (the upstream gradient of the loss), so no host round trip is needed.
// A label outside [0, C) (callers validate; the kernels never read out of bounds) gives a NaN loss.
struct CrossEntropyArgs {
  int64_t B = 0, C = 0;
  float smoothing = 0.0f, lossScale = 1.0f;
  const void* logits = nullptr; DType logitsType = DType::F32;
  const int32_t* labels = nullptr;
  const float* gradScale = nullptr;
  void* dlogits = nullptr; DType dType = DType::F32;
  float* loss = nullptr;
  int32_t* correct = nullptr;
  template <class V> void visit(V& v) {
    v.dim("B", B, 1); v.dim("C", C, 1);
    v.number("smoothing", smoothing); v.number("lossScale", lossScale);
    v.dtype("logitsType", logitsType); v.tensor("logits", logits, logitsType, elems(B, C));
    v.tensor("labels", labels, DType::I32, (size_t)B);
    v.tensor("gradScale", gradScale, DType::F32, 1, true);
    v.dtype("dType", dType, true); v.tensor("dlogits", dlogits, dType, elems(B, C), true);
    v.tensor("loss", loss, DType::F32, 1, true);
    v.tensor("correct", correct, DType::I32, 1, true);
  }
  void check() const {
    if (!(smoothing >= 0.0f && smoothing <= 1.0f)) fail("E_ARG", "crossEntropy: labelSmoothing must be in [0, 1]");
    if (dlogits && bytesOverlap(dlogits, elems(B, C) * dtype_size(dType), logits, elems(B, C) * dtype_size(logitsType)))
      fail("E_ARG", "crossEntropy: dlogits overlaps logits");
  }
};

// Mean squared error over n elements: loss (optional) = mean((p - t)^2);
// dpred (optional) = 2 (p - t) / n * lossScale * (*gradScale if given).
struct MseArgs {
  size_t n = 0;
  float lossScale = 1.0f;
  const void* pred = nullptr; DType predType = DType::F32;
  const void* target = nullptr; DType targetType = DType::F32;
  const float* gradScale = nullptr;
  void* dpred = nullptr; DType dType = DType::F32;
  float* loss = nullptr;
  template <class V> void visit(V& v) {
    v.count("n", n); v.number("lossScale", lossScale);
    v.dtype("predType", predType); v.tensor("pred", pred, predType, n);
    v.dtype("targetType", targetType); v.tensor("target", target, targetType, n);
    v.tensor("gradScale", gradScale, DType::F32, 1, true);
    v.dtype("dType", dType, true); v.tensor("dpred", dpred, dType, n, true);
    v.tensor("loss", loss, DType::F32, 1, true);
  }
  void check() const {
    if (n == 0) fail("E_SHAPE", "mseLoss: no elements");
    if (dpred && (bytesOverlap(dpred, n * dtype_size(dType), pred, n * dtype_size(predType)) ||
                  bytesOverlap(dpred, n * dtype_size(dType), target, n * dtype_size(targetType))))
      fail("E_ARG", "mseLoss: dpred overlaps pred or target");
  }
};

// ---------------------------------------------------------------------------------------------
// Layer norm, embedding

// LayerNorm over the last dim N of x [M, N], FP32 statistics (biased variance, as PyTorch):
// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps). gamma / beta [N] of gType,
// each optional (absent: 1 / 0). mean / rstd [M] FP32 are saved for the backward.
struct LayerNormArgs {
  int64_t M = 0, N = 0;
  float eps = 1e-5f;
  const void* x = nullptr; DType xType = DType::F32;
  const void* gamma = nullptr; const void* beta = nullptr; DType gType = DType::F32;
  void* y = nullptr; DType yType = DType::F32;
  float* mean = nullptr; float* rstd = nullptr;
  template <class V> void visit(V& v) {
    v.dim("M", M, 0); v.dim("N", N, 1); v.number("eps", eps);
    v.dtype("xType", xType); v.tensor("x", x, xType, elems(M, N));
    v.dtype("gType", gType, true);
    v.tensor("gamma", gamma, gType, (size_t)N, true); v.tensor("beta", beta, gType, (size_t)N, true);
    v.dtype("yType", yType); v.tensor("y", y, yType, elems(M, N));
    v.tensor("mean", mean, DType::F32, (size_t)M); v.tensor("rstd", rstd, DType::F32, (size_t)M);
  }
  void check() const { if (!(eps >= 0.0f)) fail("E_ARG", "layerNorm: eps must be >= 0"); }
};

// Backward of LayerNorm: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma
// (gamma absent: 1) and xhat = (x - mean) * rstd; dgamma = sum_m dy * xhat, dbeta = sum_m dy
// (FP32 sums, stored in dgType; each optional). accumulate: dgamma / dbeta += the sums (read
// first) instead of being overwritten. dx optional.
struct LayerNormBackwardArgs {
  int64_t M = 0, N = 0;
  bool accumulate = false;
  const void* dy = nullptr; DType dyType = DType::F32;
  const void* x = nullptr; DType xType = DType::F32;
  const void* gamma = nullptr; DType gType = DType::F32;
  const float* mean = nullptr; const float* rstd = nullptr;
  void* dx = nullptr; DType dxType = DType::F32;
  void* dgamma = nullptr; void* dbeta = nullptr; DType dgType = DType::F32;
  template <class V> void visit(V& v) {
    v.dim("M", M, 0); v.dim("N", N, 1); v.flag("accumulate", accumulate);
    v.dtype("dyType", dyType); v.tensor("dy", dy, dyType, elems(M, N));
    v.dtype("xType", xType); v.tensor("x", x, xType, elems(M, N));
    v.dtype("gType", gType, true); v.tensor("gamma", gamma, gType, (size_t)N, true);
    v.tensor("mean", mean, DType::F32, (size_t)M); v.tensor("rstd", rstd, DType::F32, (size_t)M);
    v.dtype("dxType", dxType, true); v.tensor("dx", dx, dxType, elems(M, N), true);
    v.dtype("dgType", dgType, true);
    v.tensor("dgamma", dgamma, dgType, (size_t)N, true); v.tensor("dbeta", dbeta, dgType, (size_t)N, true);
  }
  void check() const {
    const size_t n = elems(M, N);
    if (dx && (bytesOverlap(dx, n * dtype_size(dxType), x, n * dtype_size(xType)) ||
               bytesOverlap(dx, n * dtype_size(dxType), dy, n * dtype_size(dyType))) && !(dx == dy && dxType == dyType))
      fail("E_ARG", "layerNormBackward: dx overlaps x, or dy other than as the same array");
    if (bytesOverlap(dgamma, (size_t)N * dtype_size(dgType), dbeta, (size_t)N * dtype_size(dgType))) fail("E_ARG", "layerNormBackward: dgamma overlaps dbeta");
  }
};

// out[i, :] = weight[ids[i], :] for i < n; weight [V, C] of wType, out [n, C]. An id outside
// [0, V) (callers validate; kernels never read out of bounds) gives a NaN row.
struct EmbeddingArgs {
  int64_t n = 0, V = 0, C = 0;
  const int32_t* ids = nullptr;
  const void* weight = nullptr; DType wType = DType::F32;
  void* out = nullptr; DType outType = DType::F32;
  template <class V_> void visit(V_& v) {
    v.dim("n", n, 0); v.dim("V", V, 1); v.dim("C", C, 1);
    v.tensor("ids", ids, DType::I32, (size_t)n);
    v.dtype("wType", wType); v.tensor("weight", weight, wType, elems(V, C));
    v.dtype("outType", outType); v.tensor("out", out, outType, elems(n, C));
  }
  void check() const {
    if (bytesOverlap(out, elems(n, C) * dtype_size(outType), weight, elems(V, C) * dtype_size(wType))) fail("E_ARG", "embedding: out overlaps weight");
  }
};

// dweight[ids[i], :] += dy[i, :] for i < n, accumulated in FP32 into dweight [V, C] (FP32; the
// caller zeroes it first or accumulates on purpose). Ids outside [0, V) are skipped. The CPU adds
// rows in index order (bitwise repeatable); CUDA uses FP32 atomics (order not fixed).
struct EmbeddingBackwardArgs {
  int64_t n = 0, V = 0, C = 0;
  const int32_t* ids = nullptr;
  const void* dy = nullptr; DType dyType = DType::F32;
  float* dweight = nullptr;
  template <class V_> void visit(V_& v) {
    v.dim("n", n, 0); v.dim("V", V, 1); v.dim("C", C, 1);
    v.tensor("ids", ids, DType::I32, (size_t)n);
    v.dtype("dyType", dyType); v.tensor("dy", dy, dyType, elems(n, C));
    v.tensor("dweight", dweight, DType::F32, elems(V, C));
  }
  void check() const {
    if (bytesOverlap(dweight, elems(V, C) * 4, dy, elems(n, C) * dtype_size(dyType))) fail("E_ARG", "embeddingBackward: dweight overlaps dy");
  }
};

// ---------------------------------------------------------------------------------------------
// Attention

// Elements spanned by a [B, H, T, D] view with element strides {b, h, t} and a contiguous last dim.
inline size_t headsExtent(int64_t B, int64_t H, int64_t T, int64_t D, const int64_t* s) {
  const int64_t shape[4] = {B, H, T, D}, st[4] = {s[0], s[1], s[2], 1};
  return stridedExtent(4, shape, st);
}

// Whether two elements of such a view may share memory: with its dims of size > 1 sorted by stride,
// one has a stride no larger than the span of those below it (a zero stride, rows that overlap...).
// A sufficient test for distinct elements, passed by every usual layout (contiguous, [B, T, H, D],
// slices of a packed [B, T, 3, H, D] buffer, padded rows). Call after headsExtent (no overflow).
inline bool headsOverlapItself(int64_t B, int64_t H, int64_t T, int64_t D, const int64_t* s) {
  int64_t size[4] = {D, T, H, B}, stride[4] = {1, s[2], s[1], s[0]};
  for (int i = 1; i < 4; ++i)  // insertion sort by stride
    for (int j = i; j > 0 && stride[j] < stride[j - 1]; --j) {
      std::swap(size[j], size[j - 1]);
      std::swap(stride[j], stride[j - 1]);
    }
  size_t span = 0;  // the largest offset the dims so far reach
  for (int i = 0; i < 4; ++i) {
    if (size[i] <= 1) continue;
    if ((size_t)stride[i] <= span) return true;
    span += (size_t)(size[i] - 1) * (size_t)stride[i];
  }
  return false;
}

// Scaled dot-product attention, torch's F.scaled_dot_product_attention, per head (b, h) < (B, H):
//   out = dropout(softmax(scale * q k^T  [+ causal mask])) v,  q [Tq, D], k / v [Tk, D], out [Tq, D].
// causal masks key j for query i when j > i (torch's is_causal: a top-left aligned tril). The
// scores, the softmax statistics (row max, sum), lse and every accumulation are FP32 on both
// backends. The CPU keeps everything in FP32 (an online softmax, never the Tq x Tk matrix). The CUDA
// backend stores the probabilities P (after the dropout mask, before its 1 / (1 - p), which rides
// in the GEMM) in `type` for the P v GEMM: for FP16 / BF16 inputs P is rounded to the input dtype
// (as PyTorch's math attention under autocast); FP32 inputs round nothing.
// Dropout (p in [0, 1)) keeps probability (b, h, i, j) iff
// dropout_keep(seed, ((b*H + h)*Tq + i)*Tk + j, p) and scales kept ones by 1 / (1 - p), so the
// backward regenerates the mask. q, k, v and out share dtype `type`; each is read / written through
// element strides {b, h, t} (`qStrides`, ...), its last dim contiguous. lse (optional, FP32,
// contiguous [B, H, Tq]): the log-sum-exp of each row of the scaled masked scores, for the backward.
// q, k and v may overlap one another (one packed QKV buffer); out and lse overlap nothing.
struct AttentionArgs {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0;
  float scale = 1.0f, dropoutP = 0.0f;
  bool causal = false;
  uint64_t seed = 0;
  DType type = DType::F32;
  int64_t qStrides[kMaxDims] = {}, kStrides[kMaxDims] = {}, vStrides[kMaxDims] = {}, outStrides[kMaxDims] = {};
  const void* q = nullptr; const void* k = nullptr; const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;

  size_t qExtent() const { return headsExtent(B, H, Tq, D, qStrides); }
  size_t kExtent() const { return headsExtent(B, H, Tk, D, kStrides); }
  size_t vExtent() const { return headsExtent(B, H, Tk, D, vStrides); }
  size_t outExtent() const { return headsExtent(B, H, Tq, D, outStrides); }
  template <class R> void visit(R& r) {
    r.dim("B", B, 1); r.dim("H", H, 1); r.dim("Tq", Tq, 1); r.dim("Tk", Tk, 1); r.dim("D", D, 1);
    r.number("scale", scale); r.number("dropoutP", dropoutP); r.flag("causal", causal); r.seed("seed", seed);
    r.dtype("type", type);
    r.strides("qStrides", 3, qStrides); r.strides("kStrides", 3, kStrides); r.strides("vStrides", 3, vStrides);
    r.strides("outStrides", 3, outStrides);
    r.tensor("q", q, type, qExtent()); r.tensor("k", k, type, kExtent()); r.tensor("v", v, type, vExtent());
    r.tensor("out", out, type, outExtent());
    r.tensor("lse", lse, DType::F32, elems(B, H, Tq), true);
  }
  void check() const {
    checkAttentionScalars("attentionForward", scale, dropoutP);
    const size_t es = dtype_size(type), ob = outExtent() * es, lb = elems(B, H, Tq) * 4;
    for (auto [p, n] : {std::pair<const void*, size_t>{q, qExtent() * es}, {k, kExtent() * es}, {v, vExtent() * es}})
      if (bytesOverlap(out, ob, p, n) || bytesOverlap(lse, lb, p, n)) fail("E_ARG", "attentionForward: out or lse overlaps q, k or v");
    if (bytesOverlap(out, ob, lse, lb)) fail("E_ARG", "attentionForward: out overlaps lse");
    if (headsOverlapItself(B, H, Tq, D, outStrides)) fail("E_ARG", "attentionForward: out overlaps itself (outStrides)");
  }
  static void checkAttentionScalars(const char* op, float scale, float p) {
    if (!(scale > -3.0e38f && scale < 3.0e38f)) fail("E_ARG", std::string(op) + ": scale must be finite");
    if (!(p >= 0.0f && p < 1.0f)) fail("E_ARG", std::string(op) + ": dropoutP must be in [0, 1)");
  }
};

// The backward of AttentionArgs from its inputs, output, lse and dout (flash-attention style: the
// probabilities are recomputed from lse):
//   P = exp(scale * q k^T - lse) (masked), Pd = dropout(P), Di = sum_d dout_i * out_i,
//   dv = Pd^T dout, dS = P * (drop(dout v^T) - Di), dq = scale * dS k, dk = scale * dS^T q.
// The CPU keeps everything in FP32 and never stores a Tq x Tk matrix. The CUDA backend computes
// the scores, P, dP, Di and dS in FP32 and accumulates every product in FP32, but stores Pd (before
// the 1 / (1 - p), which rides in the GEMM) and dS in `type` for the dv / dq / dk GEMMs: for FP16 /
// BF16 inputs they are rounded to the input dtype (as PyTorch's math attention under autocast).
// The same B, H, Tq, Tk, D, scale, causal, dropoutP, seed and strides as the forward; dout has
// `type` and strides {b, h, t}; dq / dk / dv have dType and their own strides. They are written
// (not accumulated) and must not overlap one another or any input.
struct AttentionBackwardArgs {
  int64_t B = 0, H = 0, Tq = 0, Tk = 0, D = 0;
  float scale = 1.0f, dropoutP = 0.0f;
  bool causal = false;
  uint64_t seed = 0;
  DType type = DType::F32, dType = DType::F32;
  int64_t qStrides[kMaxDims] = {}, kStrides[kMaxDims] = {}, vStrides[kMaxDims] = {}, outStrides[kMaxDims] = {};
  int64_t doutStrides[kMaxDims] = {}, dqStrides[kMaxDims] = {}, dkStrides[kMaxDims] = {}, dvStrides[kMaxDims] = {};
  const void* q = nullptr; const void* k = nullptr; const void* v = nullptr; const void* out = nullptr;
  const void* dout = nullptr;
  const float* lse = nullptr;
  void* dq = nullptr; void* dk = nullptr; void* dv = nullptr;

  template <class R> void visit(R& r) {
    r.dim("B", B, 1); r.dim("H", H, 1); r.dim("Tq", Tq, 1); r.dim("Tk", Tk, 1); r.dim("D", D, 1);
    r.number("scale", scale); r.number("dropoutP", dropoutP); r.flag("causal", causal); r.seed("seed", seed);
    r.dtype("type", type); r.dtype("dType", dType);
    r.strides("qStrides", 3, qStrides); r.strides("kStrides", 3, kStrides); r.strides("vStrides", 3, vStrides);
    r.strides("outStrides", 3, outStrides); r.strides("doutStrides", 3, doutStrides);
    r.strides("dqStrides", 3, dqStrides); r.strides("dkStrides", 3, dkStrides); r.strides("dvStrides", 3, dvStrides);
    r.tensor("q", q, type, headsExtent(B, H, Tq, D, qStrides));
    r.tensor("k", k, type, headsExtent(B, H, Tk, D, kStrides));
    r.tensor("v", v, type, headsExtent(B, H, Tk, D, vStrides));
    r.tensor("out", out, type, headsExtent(B, H, Tq, D, outStrides));
    r.tensor("dout", dout, type, headsExtent(B, H, Tq, D, doutStrides));
    r.tensor("lse", lse, DType::F32, elems(B, H, Tq));
    r.tensor("dq", dq, dType, headsExtent(B, H, Tq, D, dqStrides));
    r.tensor("dk", dk, dType, headsExtent(B, H, Tk, D, dkStrides));
    r.tensor("dv", dv, dType, headsExtent(B, H, Tk, D, dvStrides));
  }
  void check() const {
    AttentionArgs::checkAttentionScalars("attentionBackward", scale, dropoutP);
    const size_t es = dtype_size(type), gs = dtype_size(dType);
    const std::pair<const void*, size_t> ins[] = {
        {q, headsExtent(B, H, Tq, D, qStrides) * es}, {k, headsExtent(B, H, Tk, D, kStrides) * es},
        {v, headsExtent(B, H, Tk, D, vStrides) * es}, {out, headsExtent(B, H, Tq, D, outStrides) * es},
        {dout, headsExtent(B, H, Tq, D, doutStrides) * es}, {lse, elems(B, H, Tq) * 4}};
    const std::pair<const void*, size_t> outs[] = {
        {dq, headsExtent(B, H, Tq, D, dqStrides) * gs}, {dk, headsExtent(B, H, Tk, D, dkStrides) * gs},
        {dv, headsExtent(B, H, Tk, D, dvStrides) * gs}};
    for (int i = 0; i < 3; ++i) {
      for (const auto& in : ins)
        if (bytesOverlap(outs[i].first, outs[i].second, in.first, in.second)) fail("E_ARG", "attentionBackward: dq, dk or dv overlaps an input");
      for (int j = i + 1; j < 3; ++j)
        if (bytesOverlap(outs[i].first, outs[i].second, outs[j].first, outs[j].second)) fail("E_ARG", "attentionBackward: dq, dk and dv overlap one another");
    }
    if (headsOverlapItself(B, H, Tq, D, dqStrides) || headsOverlapItself(B, H, Tk, D, dkStrides) ||
        headsOverlapItself(B, H, Tk, D, dvStrides))
      fail("E_ARG", "attentionBackward: dq, dk or dv overlaps itself (its strides)");
  }
};

// ---------------------------------------------------------------------------------------------
// The mixed-precision step (math in native/shared/amp.h; the AmpState lives in backend memory)

template <class V> void visitFields(V& v, ScalerConfig& c) {
  v.real("growthFactor", c.growthFactor); v.real("backoffFactor", c.backoffFactor);
  v.real("minScale", c.minScale); v.real("maxScale", c.maxScale);
  v.int32("growthInterval", c.growthInterval); v.int32("hysteresis", c.hysteresis);
  v.int32("dynamic", c.dynamic); v.int32("enabled", c.enabled);
}
template <class V> void visitFields(V& v, OptimConfig& c) {
  v.int32("kind", c.kind);
  v.number("lr", c.lr); v.number("beta1", c.beta1); v.number("beta2", c.beta2); v.number("eps", c.eps);
  v.number("weightDecay", c.weightDecay); v.number("momentum", c.momentum); v.number("dampening", c.dampening);
  v.int32("nesterov", c.nesterov); v.number("maxNorm", c.maxNorm);
}
inline void checkOptimConfig(const OptimConfig& c) {
  if (c.kind < 0 || c.kind > 2) fail("E_ARG", "unknown optimizer kind");
}

// One pass over n scaled gradients: g32 = g * inv_scale(state->scale); state->foundInf |= any
// non-finite g32; state->sumsq += sum g32^2 (FP32; fixed order). out32 (optional) receives g32.
struct UnscaleArgs {
  size_t n = 0;
  const void* g = nullptr; DType gType = DType::F32;
  AmpState* state = nullptr;
  float* out32 = nullptr;
  template <class V> void visit(V& v) {
    v.count("n", n);
    v.dtype("gType", gType); v.tensor("g", g, gType, n);
    v.tensor("state", state, DType::F32, sizeof(AmpState) / 4);
    v.tensor("out32", out32, DType::F32, n, true);
  }
  void check() const {
    if (out32) sameOrDisjoint("unscaleCheckNorm", out32, DType::F32, g, gType, n);
    if (bytesOverlap(state, sizeof(AmpState), g, n * dtype_size(gType)) || bytesOverlap(state, sizeof(AmpState), out32, n * 4))
      fail("E_ARG", "unscaleCheckNorm: the state overlaps the gradients");
  }
};

// amp_finalize on the state, once per step, where the state lives.
struct AmpFinalizeArgs {
  AmpState* state = nullptr;
  ScalerConfig scaler;
  OptimConfig optim;
  bool updateScale = false;
  template <class V> void visit(V& v) {
    v.tensor("state", state, DType::F32, sizeof(AmpState) / 4);
    v.object("scaler", scaler); v.object("optim", optim);
    v.flag("updateScale", updateScale);
  }
  void check() const { checkOptimConfig(optim); }
};

// The fused optimizer over one flat parameter buffer: a no-op when state->skipped; else master
// and moments updated and the working copy (optional) written, g = grad * invScale * clipCoef.
struct OptimStepArgs {
  size_t n = 0;
  float* master = nullptr;
  void* working = nullptr; DType workingType = DType::F16;
  const void* grad = nullptr; DType gradType = DType::F16;
  float* m = nullptr;  // first moment / momentum (null when unused)
  float* v = nullptr;  // second moment (Adam/AdamW only)
  const AmpState* state = nullptr;
  OptimConfig config;
  template <class V> void visit(V& vis) {
    vis.count("n", n);
    vis.tensor("master", master, DType::F32, n);
    vis.dtype("workingType", workingType, true); vis.tensor("working", working, workingType, n, true);
    vis.dtype("gradType", gradType); vis.tensor("grad", grad, gradType, n);
    vis.tensor("m", m, DType::F32, n, true); vis.tensor("v", v, DType::F32, n, true);
    vis.tensor("state", state, DType::F32, sizeof(AmpState) / 4);
    vis.object("config", config);
  }
  void check() const {
    checkOptimConfig(config);
    if (config.kind != (int32_t)OptimKind::SGD && (!m || !v)) fail("E_ARG", "optimizerStep: Adam/AdamW need m and v");
    if (config.kind == (int32_t)OptimKind::SGD && config.momentum != 0.0f && !m) fail("E_ARG", "optimizerStep: SGD with momentum needs m");
  }
};

// Gradient accumulation over micro-batches: acc = g (overwrite) or acc += g, in FP32.
struct AccumulateArgs {
  size_t n = 0;
  bool overwrite = false;
  const void* g = nullptr; DType gType = DType::F32;
  float* acc = nullptr;
  template <class V> void visit(V& v) {
    v.count("n", n); v.flag("overwrite", overwrite);
    v.dtype("gType", gType); v.tensor("g", g, gType, n);
    v.tensor("acc", acc, DType::F32, n);
  }
  void check() const {}
};

}  // namespace mp
