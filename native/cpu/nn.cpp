// CPU side of layer norm (forward / backward) and embedding (forward / backward): loops over rows
// / blocks calling the shared per-element math (native/shared/nn.h). Semantics at LayerNormArgs
// ... EmbeddingBackwardArgs (native/core/op_args.h).
//
// Determinism (the contract of every CPU op file): every reduction has a fixed order that depends
// only on the sizes, never on the thread count. Row reductions (softmax sums, layer-norm
// statistics) run on one thread per row, over 8 lanes (lane k takes the elements j with
// j % 8 == k, the lanes then added pairwise). Sums over rows (reduceSum's column sums, dgamma /
// dbeta) are taken over fixed row blocks (rows in order within a block), then over the blocks in
// order. Scalar results (loss, correct count) are sums of per-row or per-block values in index
// order, written once at the end. The embedding backward adds rows in index order.
#include <math.h>

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
constexpr int64_t kCols = 1024;         // columns per task of the final block reduction

// Rows per block of a column reduction over M rows: a function of M only.
int64_t rowsPerBlock(int64_t M) { return std::max(kMinRows, (M + kMaxRowBlocks - 1) / kMaxRowBlocks); }

// [N] values of t as FP32, or `absent` everywhere when p is null.
std::vector<float> vectorOr(const void* p, DType t, int64_t N, float absent) {
  std::vector<float> v((size_t)N, absent);
  if (p) widen(p, t, 0, (size_t)N, v.data());
  return v;
}

// out[n] = sum over blocks (in order) of part[block * N + n], stored in outType (or added to out's
// values when accumulate); columns in parallel.
void reduceBlocks(const std::vector<float>& part, int64_t blocks, int64_t N, void* out, DType outType, bool accumulate) {
  forRange(N, kCols, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) s += part[(size_t)(b * N + n)];
      const float beta = accumulate ? 1.0f : 0.0f;
      store_f32(out, outType, (size_t)n, reduce_output(1.0f, s, beta, accumulate ? load_f32(out, outType, (size_t)n) : 0.0f));
    }
  });
}

MP_ISA_BODY inline void rowSqDevLoop(const float* x, float mean, float* d, int64_t n) {
  for (int64_t j = 0; j < n; ++j) { const float v = x[j] - mean; d[j] = v * v; }
}
void rowSqDev(const float* x, float mean, float* d, int64_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return rowSqDevLoop(x, mean, d, n); });
}

}  // namespace

void layerNormForward(const LayerNormArgs& a) {
  const int64_t M = a.M, N = a.N;
  if (M == 0) return;
  const std::vector<float> gamma = vectorOr(a.gamma, a.gType, N, 1.0f), beta = vectorOr(a.beta, a.gType, N, 0.0f);
  forRange(M, itemsPerTask(N), [&](int64_t m0, int64_t m1) {
    std::vector<float> x((size_t)N), t((size_t)N);
    for (int64_t m = m0; m < m1; ++m) {
      const size_t off = (size_t)(m * N);
      widen(a.x, a.xType, off, (size_t)N, x.data());
      const float mean = laneSum(x.data(), (size_t)N) / (float)N;
      rowSqDev(x.data(), mean, t.data(), N);  // two passes: the variance about the mean
      const float rstd = ln_rstd(laneSum(t.data(), (size_t)N) / (float)N, a.eps);
      for (int64_t j = 0; j < N; ++j) t[j] = ln_affine(ln_xhat(x[j], mean, rstd), gamma[j], beta[j]);
      narrow(t.data(), a.y, a.yType, off, (size_t)N);
      a.mean[m] = mean;
      a.rstd[m] = rstd;
    }
  });
}

void layerNormBackward(const LayerNormBackwardArgs& a) {
  const int64_t M = a.M, N = a.N;
  const bool params = a.dgamma || a.dbeta;
  if (!a.dx && !params) return;
  const int64_t R = rowsPerBlock(M), blocks = ceilDiv(M, R);
  if (M == 0) {
    // No rows: dgamma / dbeta are sums of nothing, and gamma (N wide, maybe huge) is never read.
    std::vector<float> none;
    if (a.dgamma) reduceBlocks(none, 0, N, a.dgamma, a.dgType, a.accumulate);
    if (a.dbeta) reduceBlocks(none, 0, N, a.dbeta, a.dgType, a.accumulate);
    return;
  }
  const std::vector<float> gamma = vectorOr(a.gamma, a.gType, N, 1.0f);
  // Per-block dgamma / dbeta partial sums (only when they are asked for).
  std::vector<float> pg(params ? (size_t)(blocks * N) : 0), pb(params ? (size_t)(blocks * N) : 0);
  forRange(blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> dy((size_t)N), g((size_t)N), xhat((size_t)N);
    for (int64_t b = b0; b < b1; ++b) {
      float* dgamma = params ? pg.data() + b * N : nullptr;
      float* dbeta = params ? pb.data() + b * N : nullptr;
      if (params) {
        std::fill(dgamma, dgamma + N, 0.0f);
        std::fill(dbeta, dbeta + N, 0.0f);
      }
      for (int64_t m = b * R, m1 = std::min(M, m + R); m < m1; ++m) {
        const size_t off = (size_t)(m * N);
        const float mean = a.mean[m], rstd = a.rstd[m];
        widen(a.dy, a.dyType, off, (size_t)N, dy.data());
        widen(a.x, a.xType, off, (size_t)N, xhat.data());
        Lanes sg, sgx;
        for (int64_t j = 0; j < N; ++j) {
          xhat[j] = ln_xhat(xhat[j], mean, rstd);
          g[j] = dy[j] * gamma[j];
          sg.add((size_t)j, g[j]);
          sgx.add((size_t)j, g[j] * xhat[j]);
        }
        if (params)
          for (int64_t j = 0; j < N; ++j) {
            dgamma[j] += dy[j] * xhat[j];
            dbeta[j] += dy[j];
          }
        if (a.dx) {
          const float mg = sg.total() / (float)N, mgx = sgx.total() / (float)N;
          for (int64_t j = 0; j < N; ++j) g[j] = ln_dx(g[j], xhat[j], mg, mgx, rstd);
          narrow(g.data(), a.dx, a.dxType, off, (size_t)N);
        }
      }
    }
  });
  if (a.dgamma) reduceBlocks(pg, blocks, N, a.dgamma, a.dgType, a.accumulate);
  if (a.dbeta) reduceBlocks(pb, blocks, N, a.dbeta, a.dgType, a.accumulate);
}

void embeddingForward(const EmbeddingArgs& a) {
  const int64_t C = a.C;
  forRange(a.n, itemsPerTask(C), [&](int64_t i0, int64_t i1) {
    std::vector<float> nanRow;
    for (int64_t i = i0; i < i1; ++i) {
      const int32_t id = a.ids[i];
      const size_t dst = (size_t)(i * C);
      if (id < 0 || (int64_t)id >= a.V) {  // callers validate; never read outside the table
        if (nanRow.empty()) nanRow.assign((size_t)C, NAN);
        narrow(nanRow.data(), a.out, a.outType, dst, (size_t)C);
        continue;
      }
      // Row id of the table onto row i of out: shift the bases so both start at element 0.
      const void* src = static_cast<const char*>(a.weight) + (size_t)id * (size_t)C * dtype_size(a.wType);
      convert(src, a.wType, static_cast<char*>(a.out) + dst * dtype_size(a.outType), a.outType, 0, (size_t)C);
    }
  });
}

void embeddingBackward(const EmbeddingBackwardArgs& a) {
  const int64_t n = a.n, C = a.C, V = a.V;
  if (n == 0) return;
  // Threads own disjoint ranges of table rows and each scans all ids in index order, so every
  // table element receives its additions in index order whatever the split.
  const int64_t work = n * C;
  const int64_t slices = work < (int64_t)kBlock ? 1 : std::min<int64_t>(V, numThreads());
  forRange(slices, 1, [&](int64_t s0, int64_t s1) {
    const int64_t v0 = s0 * V / slices, v1 = s1 * V / slices;
    std::vector<float> buf(a.dyType == DType::F32 ? 0 : (size_t)C);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = a.ids[i];
      if (id < v0 || id >= v1) continue;  // another slice's row, or outside [0, V): skipped
      float* dst = a.dweight + id * C;
      const float* src;
      if (a.dyType == DType::F32) {
        src = static_cast<const float*>(a.dy) + i * C;
      } else {
        widen(a.dy, a.dyType, (size_t)(i * C), (size_t)C, buf.data());
        src = buf.data();
      }
      for (int64_t j = 0; j < C; ++j) dst[j] += src[j];
    }
  });
}

}  // namespace cpu
}  // namespace mp
