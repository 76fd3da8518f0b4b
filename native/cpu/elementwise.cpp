// Element-wise ops and sums: binary (broadcasting add / sub / mul), reduceSum, activation forward /
// backward, dropout. Semantics at their Args structs (native/core/op_args.h); the per-element
// math is native/shared/elementwise.h and nn.h, the same definitions the CUDA kernels use.
//
// Every pass works on chunks of kChunk elements widened to FP32 (loops.h), computes in FP32 and
// rounds once when it narrows to the output type. A chunk is read completely before the same
// chunk of the output is written, which is what makes the allowed in-place forms (y = x,
// out = a) safe.
//
// reduceSum's order (a function of outer, R and inner only, never of the thread count):
//   inner == 1 (row sums): each row in fixed blocks of kBlock elements, 8 lanes within a block
//     (loops.h), the block sums then added in order;
//   inner > 1 (column sums): rows in fixed blocks of rowsPerBlock(R) rows, each column summed
//     row by row within a block, then the block sums added in order -- the old columnSum's
//     algorithm. When there are few (o, column range) tasks (a bias gradient) the blocks are
//     computed in parallel into partial sums, as columnSum did; otherwise each task runs its
//     blocks itself. Both evaluate the same additions in the same order: the same bits.
#include <vector>

#include "../shared/elementwise.h"
#include "../shared/nn.h"
#include "cpu_backend.h"
#include "loops.h"

namespace mp {
namespace cpu {
namespace {

constexpr int64_t kMinRows = 32;        // rows per block of a column reduction, at least ...
constexpr int64_t kMaxRowBlocks = 256;  // ... and at most this many blocks (bounds the partials)
constexpr int64_t kCols = 1024;         // columns per task of a column reduction (stay in cache)
constexpr int64_t kMaxPartials = int64_t(1) << 23;  // FP32 partial sums a column reduction may hold (32 MiB)

// Rows per block of a column reduction over R rows: a function of R only.
int64_t rowsPerBlock(int64_t R) { return std::max(kMinRows, (R + kMaxRowBlocks - 1) / kMaxRowBlocks); }

template <int Op>
MP_ISA_BODY inline void applyBinaryLoop(const float* x, const float* y, float* o, size_t n) {
  for (size_t j = 0; j < n; ++j) o[j] = binary_apply(Op, x[j], y[j]);
}
template <int Op>
void applyBinary(const float* x, const float* y, float* o, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return applyBinaryLoop<Op>(x, y, o, n); });
}

template <int A>
MP_ISA_BODY inline void applyActLoop(float* v, size_t n) {
  for (size_t j = 0; j < n; ++j) v[j] = apply_act((Act)A, v[j]);
}
template <int A>
void applyAct(float* v, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return applyActLoop<A>(v, n); });
}
void applyActRuntime(Act act, float* v, size_t n) {
  if (act == Act::Relu) applyAct<(int)Act::Relu>(v, n);
  else if (act == Act::Gelu) applyAct<(int)Act::Gelu>(v, n);
}

template <int A>
MP_ISA_BODY inline void applyActBackwardLoop(const float* dy, const float* z, float* dx, size_t n) {
  for (size_t j = 0; j < n; ++j) dx[j] = act_backward((Act)A, dy[j], z[j]);
}
template <int A>
void applyActBackward(const float* dy, const float* z, float* dx, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return applyActBackwardLoop<A>(dy, z, dx, n); });
}
// ReLU's dx = act_backward(Relu, dy, z) = dy * act_grad(Relu, z), its two factors evaluated in
// loops of their own: GCC does not if-convert the select inside the product (a branch per element,
// mispredicted half the time), but does in a loop of its own. Same operations, same bits.
MP_ISA_BODY inline void reluGradsLoop(const float* z, float* g, size_t n) {
  for (size_t j = 0; j < n; ++j) g[j] = act_grad(Act::Relu, z[j]);
}
void reluGrads(const float* z, float* g, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return reluGradsLoop(z, g, n); });
}
MP_ISA_BODY inline void mulInPlaceLoop(const float* dy, float* g, size_t n) {
  for (size_t j = 0; j < n; ++j) g[j] = dy[j] * g[j];
}
void mulInPlace(const float* dy, float* g, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return mulInPlaceLoop(dy, g, n); });
}

// dst[0..n) += src[0..n), element by element (FP32).
MP_ISA_BODY inline void addRowLoop(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] += src[j];
}
void addRow(float* __restrict dst, const float* __restrict src, int64_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return addRowLoop(dst, src, n); });
}
// dst[0..n) += elements [off, off + n) of x as FP32 (widened through buf unless x is FP32).
void addRowOf(float* dst, const void* x, DType t, size_t off, int64_t n, float* buf) {
  if (t == DType::F32) return addRow(dst, static_cast<const float*>(x) + off, n);
  widen(x, t, off, (size_t)n, buf);
  addRow(dst, buf, n);
}

void storeResult(const ReduceArgs& a, size_t i, float sum) {
  store_f32(a.out, a.outType, i, reduce_output(a.alpha, sum, a.beta, a.beta != 0.0f ? load_f32(a.out, a.outType, i) : 0.0f));
}

// inner == 1: out[o] from the row x[o, 0..R).
void reduceRows(const ReduceArgs& a) {
  const int64_t outer = a.outer, R = a.R;
  const int64_t blocksPerRow = ceilDiv(R, (int64_t)kBlock);
  auto blockSum = [&](int64_t o, int64_t blk) {
    const size_t begin = (size_t)(o * R + blk * (int64_t)kBlock);
    const size_t len = (size_t)std::min<int64_t>((int64_t)kBlock, R - blk * (int64_t)kBlock);
    if (a.xType == DType::F32) return laneSum(static_cast<const float*>(a.x) + begin, len);
    Lanes l;
    alignas(64) float buf[kChunk];
    for (size_t c = 0; c < len; c += kChunk) {
      const size_t n = std::min(kChunk, len - c);
      widen(a.x, a.xType, begin + c, n, buf);
      laneAdd(l, buf, n);
    }
    return l.total();
  };
  if (blocksPerRow == 1) {
    forRange(outer, itemsPerTask(R), [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) storeResult(a, (size_t)o, blockSum(o, 0));
    });
    return;
  }
  std::vector<float> part((size_t)(outer * blocksPerRow));
  forRange(outer * blocksPerRow, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) part[(size_t)t] = blockSum(t / blocksPerRow, t % blocksPerRow);
  });
  forRange(outer, itemsPerTask(blocksPerRow), [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      float s = 0.0f;
      for (int64_t b = 0; b < blocksPerRow; ++b) s += part[(size_t)(o * blocksPerRow + b)];
      storeResult(a, (size_t)o, s);
    }
  });
}

// inner > 1: out[o, i] from the columns of x[o, 0..R, i].
void reduceColumns(const ReduceArgs& a) {
  const int64_t outer = a.outer, R = a.R, N = a.inner;
  const int64_t rpb = rowsPerBlock(R), blocks = ceilDiv(R, rpb), colTasks = ceilDiv(N, kCols);
  // Sums of rows [m0, m1) of problem o, columns [n0, n0 + len), into p[0..len) (overwritten).
  auto blockSum = [&](int64_t o, int64_t m0, int64_t m1, int64_t n0, int64_t len, float* p, float* buf) {
    std::fill(p, p + len, 0.0f);
    for (int64_t m = m0; m < m1; ++m) addRowOf(p, a.x, a.xType, (size_t)((o * R + m) * N + n0), len, buf);
  };
  const bool fewTasks = outer * colTasks < 4 * (int64_t)numThreads();
  if (fewTasks && outer * blocks * N <= kMaxPartials) {
    // Few independent (o, column range) tasks (a bias gradient: outer 1, one or a few column
    // ranges): compute the row blocks in parallel too, into partial sums.
    std::vector<float> part((size_t)(outer * blocks * N));
    forRange(outer * blocks * colTasks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> buf((size_t)kCols);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c = t % colTasks, b = (t / colTasks) % blocks, o = t / (colTasks * blocks);
        const int64_t n0 = c * kCols, len = std::min(N, n0 + kCols) - n0;
        blockSum(o, b * rpb, std::min(R, (b + 1) * rpb), n0, len, part.data() + (o * blocks + b) * N + n0, buf.data());
      }
    });
    forRange(outer * colTasks, itemsPerTask(blocks * kCols), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t o = t / colTasks, n0 = (t % colTasks) * kCols, n1 = std::min(N, n0 + kCols);
        for (int64_t n = n0; n < n1; ++n) {
          float s = 0.0f;
          for (int64_t b = 0; b < blocks; ++b) s += part[(size_t)((o * blocks + b) * N + n)];
          storeResult(a, (size_t)(o * N + n), s);
        }
      }
    });
    return;
  }
  // Many tasks: each runs its blocks in order, adding each block's sums to its running total.
  forRange(outer * colTasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> total((size_t)kCols), blk((size_t)kCols), buf((size_t)kCols);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o = t / colTasks, n0 = (t % colTasks) * kCols, len = std::min(N, n0 + kCols) - n0;
      std::fill(total.begin(), total.begin() + len, 0.0f);
      for (int64_t b = 0; b < blocks; ++b) {
        blockSum(o, b * rpb, std::min(R, (b + 1) * rpb), n0, len, blk.data(), buf.data());
        addRow(total.data(), blk.data(), len);
      }
      for (int64_t j = 0; j < len; ++j) storeResult(a, (size_t)(o * N + n0 + j), total[(size_t)j]);
    }
  });
}

}  // namespace

void binary(const BinaryArgs& a) {
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[d] == 0) return;
  int64_t outStrides[kMaxDims] = {}, zero[kMaxDims] = {};
  contiguousStrides(a.ndim, a.shape, outStrides);
  const float scalar = a.scalar;  // b absent: a stride-0 FP32 operand holding the scalar
  const void* b = a.b ? a.b : &scalar;
  const DType bType = a.b ? a.bType : DType::F32;
  const int64_t* strides[3] = {outStrides, a.aStrides, a.b ? a.bStrides : zero};
  const StridedSpace s = coalesce(a.ndim, a.shape, strides, 3);
  const int last = s.ndim - 1;
  const int64_t inner = s.shape[last], rows = s.size() / inner;
  const int64_t sa = s.strides[1][last], sb = s.strides[2][last];  // out's is 1 (contiguous)
  void (*apply)(const float*, const float*, float*, size_t) =
      a.op == BinaryOp::Add ? applyBinary<0> : a.op == BinaryOp::Sub ? applyBinary<1> : applyBinary<2>;
  // Flat contiguous, a broadcast row (b strides [0, 1]) and a broadcast column ([1, 0]) are all
  // rows here whose operands are contiguous (used in place) or constant (one value repeated).
  forRowSegments(rows, inner, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    alignas(64) float bufA[kChunk], bufB[kChunk], bufO[kChunk];
    RowWalker w(s, r0);
    for (int64_t r = r0; r < r1; ++r, w.next()) {
      for (int64_t c = c0; c < c1; c += (int64_t)kChunk) {
        const size_t len = (size_t)std::min<int64_t>((int64_t)kChunk, c1 - c);
        const float* x = floatsOf(a.a, a.aType, w.off[1] + c * sa, sa, len, bufA);
        const float* y = floatsOf(b, bType, w.off[2] + c * sb, sb, len, bufB);
        const size_t oo = (size_t)(w.off[0] + c);
        if (a.outType == DType::F32) {
          apply(x, y, static_cast<float*>(a.out) + oo, len);
        } else {
          apply(x, y, bufO, len);
          narrow(bufO, a.out, a.outType, oo, len);
        }
      }
    }
  });
}

void reduceSum(const ReduceArgs& a) {
  if (a.outer == 0 || a.inner == 0) return;
  if (a.R == 0) {  // empty sums: out = alpha * 0 + beta * out
    forRange(a.outer * a.inner, (int64_t)kBlock, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) storeResult(a, (size_t)i, 0.0f);
    });
    return;
  }
  if (a.inner == 1) reduceRows(a);
  else reduceColumns(a);
}

void activationForward(const ActivationArgs& a) {
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) {
    alignas(64) float v[kChunk];
    for (size_t i = begin; i < end; i += kChunk) {
      const size_t len = std::min(kChunk, end - i);
      widen(a.x, a.xType, i, len, v);
      applyActRuntime(a.act, v, len);
      narrow(v, a.y, a.yType, i, len);
    }
  });
}

void activationBackward(const ActivationBackwardArgs& a) {
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) {
    alignas(64) float dy[kChunk], z[kChunk], dx[kChunk];
    for (size_t i = begin; i < end; i += kChunk) {
      const size_t len = std::min(kChunk, end - i);
      widen(a.dy, a.dyType, i, len, dy);
      widen(a.z, a.zType, i, len, z);
      if (a.act == Act::Relu) { reluGrads(z, dx, len); mulInPlace(dy, dx, len); }
      else if (a.act == Act::Gelu) applyActBackward<(int)Act::Gelu>(dy, z, dx, len);
      else applyActBackward<(int)Act::None>(dy, z, dx, len);
      narrow(dx, a.dx, a.dxType, i, len);
    }
  });
}

void dropout(const DropoutArgs& a) {
  const float scale = dropout_scale(a.p);
  forBlocks(a.n, [&](int64_t, size_t begin, size_t end) {
    alignas(64) float v[kChunk];
    for (size_t i = begin; i < end; i += kChunk) {
      const size_t len = std::min(kChunk, end - i);
      widen(a.x, a.xType, i, len, v);
      for (size_t j = 0; j < len; ++j) v[j] = dropout_apply(v[j], dropout_keep(a.seed, i + j, a.p), scale);
      narrow(v, a.y, a.yType, i, len);
    }
  });
}

}  // namespace cpu
}  // namespace mp
