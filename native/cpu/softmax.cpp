// Row softmax (forward / backward, plain and log) and the losses (softmax cross-entropy, MSE).
// Semantics at SoftmaxArgs ... MseArgs (native/core/op_args.h); per-element math in
// native/shared/elementwise.h and nn.h.
//
// Order (see nn.cpp's header for the contract): a row's sums run on one thread over 8 lanes
// (loops.h); the row max is exact in any order. The losses' scalars are sums of per-row (CE) or
// per-block (MSE, blocks of kBlock elements) values in index order, written once at the end.
// Rows are widened into a per-task FP32 buffer before anything is written, so dx may be dy.
#include <math.h>

#include <vector>

#include "../shared/elementwise.h"
#include "../shared/nn.h"
#include "cpu_backend.h"
#include "loops.h"

namespace mp {
namespace cpu {
namespace {

// The row's max; NaN entries are skipped here and make the sum (hence the row) NaN.
float rowMax(const float* z, int64_t n) {
  float mx = z[0];
  for (int64_t j = 1; j < n; ++j) mx = z[j] > mx ? z[j] : mx;
  return mx;
}

MP_ISA_BODY inline void expShiftedLoop(const float* z, float mx, float* e, int64_t n) {
  for (int64_t j = 0; j < n; ++j) e[j] = softmax_exp(z[j], mx);
}
void expShifted(const float* z, float mx, float* e, int64_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return expShiftedLoop(z, mx, e, n); });
}

}  // namespace

void softmaxForward(const SoftmaxArgs& a) {
  const int64_t M = a.M, N = a.N;
  forRange(M, itemsPerTask(N, kExpBlock), [&](int64_t m0, int64_t m1) {
    std::vector<float> z((size_t)N), e((size_t)N);
    for (int64_t m = m0; m < m1; ++m) {
      const size_t off = (size_t)(m * N);
      widen(a.x, a.xType, off, (size_t)N, z.data());
      // An all -inf row: mx = -inf, every x - mx is NaN, so the row is NaN (as PyTorch).
      const float mx = rowMax(z.data(), N);
      expShifted(z.data(), mx, e.data(), N);
      const float s = laneSum(e.data(), (size_t)N);
      if (a.log) for (int64_t j = 0; j < N; ++j) e[j] = log_softmax_value(z[j], mx, s);
      else for (int64_t j = 0; j < N; ++j) e[j] = softmax_value(z[j], mx, s);
      narrow(e.data(), a.y, a.yType, off, (size_t)N);
    }
  });
}

void softmaxBackward(const SoftmaxBackwardArgs& a) {
  const int64_t M = a.M, N = a.N;
  forRange(M, itemsPerTask(2 * N, kExpBlock), [&](int64_t m0, int64_t m1) {
    std::vector<float> y((size_t)N), dy((size_t)N);
    for (int64_t m = m0; m < m1; ++m) {
      const size_t off = (size_t)(m * N);
      widen(a.y, a.yType, off, (size_t)N, y.data());
      widen(a.dy, a.dyType, off, (size_t)N, dy.data());
      if (a.log) {
        const float sum = laneSum(dy.data(), (size_t)N);
        for (int64_t j = 0; j < N; ++j) dy[j] = log_softmax_grad(y[j], dy[j], sum);
      } else {
        const float dot = laneDot(dy.data(), y.data(), (size_t)N);
        for (int64_t j = 0; j < N; ++j) dy[j] = softmax_grad(y[j], dy[j], dot);
      }
      narrow(dy.data(), a.dx, a.dxType, off, (size_t)N);
    }
  });
}

void softmaxCrossEntropy(const CrossEntropyArgs& a) {
  const int64_t B = a.B, C = a.C;
  std::vector<float> rowLoss((size_t)B);
  std::vector<uint8_t> rowOk((size_t)B);
  const float gscale = loss_grad_factor(ce_grad_scale(a.lossScale, B), a.gradScale ? *a.gradScale : 1.0f);
  forRange(B, itemsPerTask(C, kExpBlock), [&](int64_t b0, int64_t b1) {
    std::vector<float> z((size_t)C), d((size_t)C);
    for (int64_t b = b0; b < b1; ++b) {
      const size_t off = (size_t)(b * C);
      widen(a.logits, a.logitsType, off, (size_t)C, z.data());
      float mx = z[0];
      int64_t arg = 0;
      for (int64_t c = 1; c < C; ++c)
        if (z[c] > mx) { mx = z[c]; arg = c; }  // the first maximal index
      const int32_t label = a.labels[b];
      rowOk[(size_t)b] = arg == label ? 1 : 0;
      if (label < 0 || label >= C) {  // callers validate; a bad label poisons its row, never reads
        rowLoss[(size_t)b] = NAN;
        if (a.dlogits) {
          std::fill(d.begin(), d.end(), NAN);
          narrow(d.data(), a.dlogits, a.dType, off, (size_t)C);
        }
        continue;
      }
      Lanes s;
      for (int64_t c = 0; c < C; ++c) s.add((size_t)c, softmax_exp(z[c], mx));
      const float sum = s.total(), lse = log_sum_exp(mx, sum);
      if (a.loss) {
        Lanes l;
        for (int64_t c = 0; c < C; ++c) l.add((size_t)c, ce_loss_term(z[c], lse, ce_target(c, label, C, a.smoothing)));
        rowLoss[(size_t)b] = l.total();
      }
      if (a.dlogits) {
        for (int64_t c = 0; c < C; ++c) d[c] = ce_dlogit(z[c], mx, sum, ce_target(c, label, C, a.smoothing), gscale);
        narrow(d.data(), a.dlogits, a.dType, off, (size_t)C);
      }
    }
  });
  if (a.loss) {
    Lanes total;
    for (int64_t b = 0; b < B; ++b) total.add((size_t)b, rowLoss[(size_t)b]);
    *a.loss = total.total() / (float)B;
  }
  if (a.correct) {
    int64_t correct = 0;
    for (int64_t b = 0; b < B; ++b) correct += rowOk[(size_t)b];
    *a.correct = (int32_t)correct;
  }
}

void mseLoss(const MseArgs& a) {
  const size_t n = a.n;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> sums(blocks);
  const float k = loss_grad_factor(mse_grad_scale(a.lossScale, n), a.gradScale ? *a.gradScale : 1.0f);
  forBlocks(n, [&](int64_t b, size_t begin, size_t end) {
    Lanes s;
    alignas(64) float p[kChunk], t[kChunk], d[kChunk];
    for (size_t i = begin; i < end; i += kChunk) {
      const size_t len = std::min(kChunk, end - i);
      widen(a.pred, a.predType, i, len, p);
      widen(a.target, a.targetType, i, len, t);
      if (a.loss)
        for (size_t j = 0; j < len; ++j) s.add(i - begin + j, mse_term(p[j], t[j]));
      if (a.dpred) {
        for (size_t j = 0; j < len; ++j) d[j] = mse_grad(p[j], t[j], k);
        narrow(d, a.dpred, a.dType, i, len);
      }
    }
    sums[(size_t)b] = s.total();
  });
  if (!a.loss) return;
  float total = 0.0f;
  for (size_t b = 0; b < blocks; ++b) total += sums[b];
  *a.loss = total / (float)n;
}

}  // namespace cpu
}  // namespace mp
