// CPU side of the layers and losses: loops over rows / blocks calling the shared per-element math
// (native/shared/nn.h). Semantics in native/core/backend.h.
//
// Determinism: every reduction has a fixed order that depends only on the sizes, never on the
// thread count. Row reductions (softmax sums, layer-norm statistics) run on one thread per row,
// over 8 lanes (lane k takes the elements j with j % 8 == k, the lanes then added pairwise).
// Sums over rows (column sums, dgamma / dbeta) are taken over fixed row blocks (rows in order
// within a block), then over the blocks in order. Scalar results (loss, correct count) are sums of
// per-row or per-block values in index order, written once at the end.
#include <algorithm>
#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

namespace mp {
namespace {

constexpr size_t kBlock = 1 << 14;      // elements per block of the element-wise passes
constexpr int64_t kMinRows = 32;        // rows per block of a column reduction, at least ...
constexpr int64_t kMaxRowBlocks = 256;  // ... and at most this many blocks (bounds the partials)
constexpr int64_t kCols = 1024;         // columns per task of a column reduction (stay in cache)

// An FP32 sum over 8 lanes: element j goes to lane j % 8; the total adds the lanes pairwise.
struct Lanes {
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  void add(size_t j, float v) { a[j & 7] += v; }
  float total() const { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }
};

// f(begin, end) over [0, n) in fixed blocks of kBlock, blocks split over the threads.
template <typename F>
void forBlocks(size_t n, F&& f) {
  const int64_t blocks = (int64_t)((n + kBlock - 1) / kBlock);
  parallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const size_t begin = (size_t)b * kBlock, end = std::min(n, begin + kBlock);
      f(b, begin, end);
    }
  });
}

// Rows per block of a column reduction over M rows: a function of M only.
int64_t rowsPerBlock(int64_t M) { return std::max(kMinRows, (M + kMaxRowBlocks - 1) / kMaxRowBlocks); }

// Elements [i0, i0 + n) of src as FP32.
void widenRow(const void* src, DType t, size_t i0, size_t n, float* dst) {
  for (size_t j = 0; j < n; ++j) dst[j] = load_f32(src, t, i0 + j);
}

// out[n] = sum over blocks (in order) of part[block * N + n], stored in outType; columns in parallel.
void reduceBlocks(const std::vector<float>& part, int64_t blocks, int64_t N, void* out, DType outType) {
  parallelFor((N + kCols - 1) / kCols, [&](int64_t c0, int64_t c1) {
    for (int64_t n = c0 * kCols, n1 = std::min(N, c1 * kCols); n < n1; ++n) {
      float s = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) s += part[(size_t)(b * N + n)];
      store_f32(out, outType, (size_t)n, s);
    }
  });
}

}  // namespace

void cpuActivationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n) {
  forBlocks(n, [&](int64_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) store_f32(y, yType, i, apply_act(act, load_f32(x, xType, i)));
  });
}

void cpuActivationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx, DType dxType,
                           size_t n) {
  forBlocks(n, [&](int64_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      store_f32(dx, dxType, i, act_backward(act, load_f32(dy, dyType, i), load_f32(z, zType, i)));
  });
}

void cpuColumnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType) {
  if (N <= 0) return;
  if (M <= 0) M = 0;
  const int64_t R = rowsPerBlock(M), blocks = (M + R - 1) / R, colTasks = (N + kCols - 1) / kCols;
  std::vector<float> part((size_t)(blocks * N));
  parallelFor(blocks * colTasks, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / colTasks, c = t % colTasks;
      const int64_t n0 = c * kCols, n1 = std::min(N, n0 + kCols);
      float* p = part.data() + b * N;
      for (int64_t n = n0; n < n1; ++n) p[n] = 0.0f;
      for (int64_t m = b * R, m1 = std::min(M, m + R); m < m1; ++m)
        for (int64_t n = n0; n < n1; ++n) p[n] += load_f32(x, xType, (size_t)(m * N + n));
    }
  });
  reduceBlocks(part, blocks, N, out, outType);
}

void cpuSoftmaxCrossEntropy(const CrossEntropyArgs& a) {
  const int64_t B = a.B, C = a.C;
  std::vector<float> rowLoss((size_t)std::max<int64_t>(B, 0));
  std::vector<uint8_t> rowOk((size_t)std::max<int64_t>(B, 0));
  const float gscale = ce_grad_scale(a.lossScale, B);
  parallelFor(B, [&](int64_t b0, int64_t b1) {
    std::vector<float> z((size_t)C);
    for (int64_t b = b0; b < b1; ++b) {
      const size_t off = (size_t)(b * C);
      widenRow(a.logits, a.logitsType, off, (size_t)C, z.data());
      float mx = z[0];
      int64_t arg = 0;
      for (int64_t c = 1; c < C; ++c)
        if (z[c] > mx) { mx = z[c]; arg = c; }  // the first maximal index
      Lanes s;
      for (int64_t c = 0; c < C; ++c) s.add((size_t)c, softmax_exp(z[c], mx));
      const float sum = s.total(), lse = log_sum_exp(mx, sum);
      const int32_t label = a.labels[b];
      Lanes l;
      for (int64_t c = 0; c < C; ++c) l.add((size_t)c, ce_loss_term(z[c], lse, ce_target(c, label, C, a.smoothing)));
      rowLoss[(size_t)b] = l.total();
      rowOk[(size_t)b] = arg == label ? 1 : 0;
      if (a.dlogits)
        for (int64_t c = 0; c < C; ++c)
          store_f32(a.dlogits, a.dType, off + (size_t)c, ce_dlogit(z[c], mx, sum, ce_target(c, label, C, a.smoothing), gscale));
    }
  });
  Lanes total;
  int64_t correct = 0;
  for (int64_t b = 0; b < B; ++b) { total.add((size_t)b, rowLoss[(size_t)b]); correct += rowOk[(size_t)b]; }
  *a.loss = B > 0 ? total.total() / (float)B : 0.0f;
  if (a.correct) *a.correct = (int32_t)correct;
}

void cpuMseLoss(const MseArgs& a) {
  const size_t n = a.n;
  if (n == 0) { *a.loss = 0.0f; return; }
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> sums(blocks);
  const float k = mse_grad_scale(a.lossScale, n);
  forBlocks(n, [&](int64_t b, size_t begin, size_t end) {
    Lanes s;
    for (size_t i = begin; i < end; ++i) {
      const float p = load_f32(a.pred, a.predType, i), t = load_f32(a.target, a.targetType, i);
      s.add(i - begin, mse_term(p, t));
      if (a.dpred) store_f32(a.dpred, a.dType, i, mse_grad(p, t, k));
    }
    sums[(size_t)b] = s.total();
  });
  float total = 0.0f;
  for (size_t b = 0; b < blocks; ++b) total += sums[b];
  *a.loss = total / (float)n;
}

void cpuLayerNormForward(const LayerNormArgs& a) {
  const int64_t M = a.M, N = a.N;
  if (M <= 0 || N <= 0) {
    for (int64_t m = 0; m < M; ++m) { a.mean[m] = 0.0f; a.rstd[m] = ln_rstd(0.0f, a.eps); }
    return;
  }
  std::vector<float> gamma((size_t)N), beta((size_t)N);
  widenRow(a.gamma, a.gType, 0, (size_t)N, gamma.data());
  widenRow(a.beta, a.gType, 0, (size_t)N, beta.data());
  parallelFor(M, [&](int64_t m0, int64_t m1) {
    std::vector<float> x((size_t)N);
    for (int64_t m = m0; m < m1; ++m) {
      const size_t off = (size_t)(m * N);
      widenRow(a.x, a.xType, off, (size_t)N, x.data());
      Lanes s;
      for (int64_t j = 0; j < N; ++j) s.add((size_t)j, x[j]);
      const float mean = s.total() / (float)N;
      Lanes v;
      for (int64_t j = 0; j < N; ++j) { const float d = x[j] - mean; v.add((size_t)j, d * d); }
      const float rstd = ln_rstd(v.total() / (float)N, a.eps);
      for (int64_t j = 0; j < N; ++j)
        store_f32(a.y, a.yType, off + (size_t)j, ln_affine(ln_xhat(x[j], mean, rstd), gamma[j], beta[j]));
      a.mean[m] = mean;
      a.rstd[m] = rstd;
    }
  });
}

void cpuLayerNormBackward(const LayerNormBackwardArgs& a) {
  const int64_t M = std::max<int64_t>(a.M, 0), N = a.N;
  if (N <= 0) return;
  std::vector<float> gamma((size_t)N);
  widenRow(a.gamma, a.gType, 0, (size_t)N, gamma.data());
  const int64_t R = rowsPerBlock(M), blocks = (M + R - 1) / R;
  std::vector<float> pg((size_t)(blocks * N)), pb((size_t)(blocks * N));  // per-block dgamma / dbeta
  parallelFor(blocks, [&](int64_t b0, int64_t b1) {
    std::vector<float> dy((size_t)N), g((size_t)N), xhat((size_t)N);
    for (int64_t b = b0; b < b1; ++b) {
      float* dgamma = pg.data() + b * N;
      float* dbeta = pb.data() + b * N;
      std::fill(dgamma, dgamma + N, 0.0f);
      std::fill(dbeta, dbeta + N, 0.0f);
      for (int64_t m = b * R, m1 = std::min(M, m + R); m < m1; ++m) {
        const size_t off = (size_t)(m * N);
        const float mean = a.mean[m], rstd = a.rstd[m];
        widenRow(a.dy, a.dyType, off, (size_t)N, dy.data());
        widenRow(a.x, a.xType, off, (size_t)N, xhat.data());
        Lanes sg, sgx;
        for (int64_t j = 0; j < N; ++j) {
          xhat[j] = ln_xhat(xhat[j], mean, rstd);
          g[j] = dy[j] * gamma[j];
          sg.add((size_t)j, g[j]);
          sgx.add((size_t)j, g[j] * xhat[j]);
          dgamma[j] += dy[j] * xhat[j];
          dbeta[j] += dy[j];
        }
        const float mg = sg.total() / (float)N, mgx = sgx.total() / (float)N;
        for (int64_t j = 0; j < N; ++j) store_f32(a.dx, a.dxType, off + (size_t)j, ln_dx(g[j], xhat[j], mg, mgx, rstd));
      }
    }
  });
  reduceBlocks(pg, blocks, N, a.dgamma, a.dgType);
  reduceBlocks(pb, blocks, N, a.dbeta, a.dgType);
}

void cpuDropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed) {
  const float scale = dropout_scale(p);
  forBlocks(n, [&](int64_t, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      store_f32(y, yType, i, dropout_apply(load_f32(x, xType, i), dropout_keep(seed, i, p), scale));
  });
}

}  // namespace mp
