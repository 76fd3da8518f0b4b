// Scaled dot-product attention, forward and backward, flash-attention style. Semantics at
// AttentionArgs / AttentionBackwardArgs (native/core/op_args.h); the per-element steps (mask,
// score, online-softmax rescale, probabilities, lse, dS, dropout) come from native/shared/nn.h.
//
// Forward: tasks split the (b, h, query block of kBQ rows) items. A task widens the K (transposed,
// [Dp, Tkp]) and V ([Tkp, Dp]) of each head it meets once to FP32; then per query block and per
// block of kBK keys (those a causal mask hides entirely are skipped): the kBQ x kBK score block in
// FP32, the mask, the online softmax (running max m and sum l per row), the FP32 output
// accumulator acc = acc * alpha + P.V; at the end out = acc / l and lse = m + log(l). Only one
// block of scores ever exists.
// Backward: each (b, h) whole on one thread: Q, dout, Di = dout . out and the FP32 dQ accumulator
// for the head; for each key block (outer) and each query block that sees it (inner): P recomputed
// from lse, dP = dout . V^T, the dropout mask on both, dV += Pd^T dout, dS = P * (dP - Di),
// dQ += dS K, dK += dS^T Q; dK / dV (dK times scale) written once per key block, dQ (times scale)
// once per head.
//
// The products are register tiles (4 rows x 16 or 8 columns) over plain FP32 buffers padded to
// whole tiles (with zeros: a padded key is masked, a padded column adds nothing), vectorised across
// output elements: each element's sum runs sequentially over its reduction index, so the AVX2 clone
// and the baseline clone give the same bits (no FMA: -ffp-contract=off). On a block the causal
// diagonal crosses, the tiles wholly above it are skipped (Band): their probabilities are exactly
// 0, so the sums are unchanged. Nothing depends on the thread count: the forward's rows are
// independent, the backward's sums run over key blocks / query blocks in order, each head on one
// thread.
#include <math.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <string>
#include <utility>

#include "../shared/nn.h"
#include "cpu_backend.h"
#include "loops.h"

namespace mp {
namespace cpu {
namespace {

constexpr int64_t kBQ = 64;  // query rows per block
constexpr int64_t kBK = 64;  // keys per block
constexpr int64_t kTR = 4;   // rows of a register tile
constexpr int64_t kTC = 16;  // columns of a score tile (2 x 8 lanes)

typedef float F8 __attribute__((vector_size(32)));
#define MP_INLINE inline __attribute__((always_inline))

int64_t roundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// One zeroed, 64-byte aligned allocation per task, carved into the task's buffers.
class Arena {
 public:
  explicit Arena(size_t floats) : n_(floats) {
    const size_t bytes = std::max<size_t>(floats, 16) * sizeof(float);
    p_ = static_cast<float*>(::operator new(bytes, std::align_val_t(64), std::nothrow));
    if (!p_) fail("E_OOM", "CPU attention: cannot allocate " + std::to_string(bytes) + " bytes of scratch");
    memset(p_, 0, bytes);
  }
  ~Arena() { ::operator delete(p_, std::align_val_t(64)); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  // `floats` more floats, 64-byte aligned.
  float* take(int64_t floats) {
    float* r = p_ + used_;
    used_ += (size_t)roundUp(floats, 16);
    if (used_ > n_) fail("E_INTERNAL", "CPU attention: scratch arena overrun");
    return r;
  }
  // Floats take() hands out for these requests (the constructor's size).
  template <class... T>
  static size_t need(T... floats) { return (0 + ... + (size_t)roundUp((int64_t)floats, 16)); }

 private:
  float* p_ = nullptr;
  size_t n_ = 0, used_ = 0;
};

// C[r][c] = sum_{d < D} A[r][d] * Bt[d][c] (d in order), r < rows (a multiple of kTR), c < cols
// (a multiple of kTC): a block of dot products, vectorised over c.
// Only the tiles with a column some row of the tile sees are computed (band.cols); the others hold
// whatever they held, which the mask then ignores.
template <class B>
MP_INLINE void dotBlock(const float* A, int64_t lda, int64_t rows, const float* Bt, int64_t ldb, int64_t cols,
                        int64_t D, float* C, int64_t ldc, const B& band) {
  for (int64_t r = 0; r < rows; r += kTR)
    for (int64_t c = 0, ce = band.cols(r, cols); c < ce; c += kTC) {
      F8 acc[kTR][2];
      for (int i = 0; i < kTR; ++i) acc[i][0] = acc[i][1] = F8{};
      const float* a = A + r * lda;
      const float* b = Bt + c;
      for (int64_t d = 0; d < D; ++d) {
        F8 b0, b1;
        memcpy(&b0, b + d * ldb, sizeof b0);
        memcpy(&b1, b + d * ldb + 8, sizeof b1);
        for (int i = 0; i < kTR; ++i) {
          const float x = a[i * lda + d];
          acc[i][0] += x * b0;
          acc[i][1] += x * b1;
        }
      }
      for (int i = 0; i < kTR; ++i) {
        memcpy(C + (r + i) * ldc + c, &acc[i][0], sizeof acc[i][0]);
        memcpy(C + (r + i) * ldc + c + 8, &acc[i][1], sizeof acc[i][1]);
      }
    }
}

// C[a][d..d + 8 NV) += sum_{t0 <= t < t1} W[a * sa + t * st] * X[t][d..] (t in order), a < kTR.
template <int NV>
MP_INLINE void accTile(const float* W, int64_t sa, int64_t st, int64_t t0, int64_t t1, const float* X, int64_t ldx, float* C,
                       int64_t ldc) {
  F8 acc[kTR][NV];
  for (int i = 0; i < kTR; ++i)
    for (int v = 0; v < NV; ++v) memcpy(&acc[i][v], C + i * ldc + 8 * v, sizeof acc[i][v]);
  for (int64_t t = t0; t < t1; ++t) {
    F8 x[NV];
    for (int v = 0; v < NV; ++v) memcpy(&x[v], X + t * ldx + 8 * v, sizeof x[v]);
    for (int i = 0; i < kTR; ++i) {
      const float w = W[i * sa + t * st];
      for (int v = 0; v < NV; ++v) acc[i][v] += w * x[v];
    }
  }
  for (int i = 0; i < kTR; ++i)
    for (int v = 0; v < NV; ++v) memcpy(C + i * ldc + 8 * v, &acc[i][v], sizeof acc[i][v]);
}

// C[a][0..n) += sum_{t in terms(a)} W[a * sa + t * st] * X[t][0..n), a < rows (a multiple of kTR), n
// a multiple of 8: a block of W X products (W or its transpose), vectorised over the columns.
// terms(a) = [t0, t1): the t where W may be nonzero for some row of the tile a..a + kTR (W is
// exactly 0 elsewhere, so the sum is the whole sum).
template <class Terms>
MP_INLINE void accBlock(const float* W, int64_t sa, int64_t st, int64_t rows, const Terms& terms, const float* X,
                        int64_t ldx, int64_t n, float* C, int64_t ldc) {
  for (int64_t a = 0; a < rows; a += kTR) {
    const auto [t0, t1] = terms(a);
    int64_t d = 0;
    for (; d + 16 <= n; d += 16) accTile<2>(W + a * sa, sa, st, t0, t1, X + d, ldx, C + a * ldc + d, ldc);
    if (d < n) accTile<1>(W + a * sa, sa, st, t0, t1, X + d, ldx, C + a * ldc + d, ldc);
  }
}

// Which (row, key) pairs of a (query block, key block) pair are visible: row r sees the keys
// c < seen(r) = min(nk, r + diag) under a causal mask (diag = i0 - j0 + 1), all nk otherwise.
struct Band {
  bool causal;
  int64_t diag, nk;
  int64_t seen(int64_t r) const { return causal ? std::max<int64_t>(0, std::min(nk, r + diag)) : nk; }
  // Score columns a row tile r..r + kTR needs, in whole tiles (at most `cols`).
  int64_t cols(int64_t r, int64_t cols) const { return std::min(cols, roundUp(seen(r + kTR - 1), kTC)); }
  // Keys a row tile r..r + kTR sees (the terms of its P.V).
  std::pair<int64_t, int64_t> keys(int64_t r) const { return {0, seen(r + kTR - 1)}; }
  // Rows (< nq) that see some key of the tile c..c + kTR (the terms of its P^T x): r + diag > c.
  std::pair<int64_t, int64_t> rows(int64_t c, int64_t nq) const {
    return {causal ? std::max<int64_t>(0, std::min(nq, c - diag + 1)) : 0, nq};
  }
};

// The max of s[0..n) (n a multiple of 8); NaN entries are skipped (they make the row NaN later).
MP_INLINE float blockMax(const float* s, int64_t n) {
  F8 m = F8{} - INFINITY;
  for (int64_t c = 0; c < n; c += 8) {
    F8 v;
    memcpy(&v, s + c, sizeof v);
    m = v > m ? v : m;
  }
  float r = m[0];
  for (int k = 1; k < 8; ++k) r = m[k] > r ? m[k] : r;
  return r;
}

// s[c] = attention_score(s[c], scale, c >= visible) for c < n: a row of a score block, scaled and masked.
MP_INLINE void scoreRow(float* s, int64_t n, int64_t visible, float scale) {
  for (int64_t c = 0; c < n; ++c) s[c] = attention_score(s[c], scale, c >= visible);
}
// s[c] = attention_prob(s[c], m) for c < n (a multiple of 8). (A loop of its own: fused with
// scoreRow, the compiler folds the masked case into a branch and the loop no longer vectorises.)
MP_INLINE void probRow(float* s, int64_t n, float m) {
  for (int64_t c = 0; c < n; ++c) s[c] = attention_prob(s[c], m);
}
// probRow, returning the sum of the probabilities in loops.h's Lanes order (element c to lane
// c % 8, the lanes added pairwise): laneSum's bits, without a second pass over the row.
MP_INLINE float probRowSum(float* s, int64_t n, float m) {
  F8 lanes = F8{};
  for (int64_t c = 0; c < n; c += 8) {
    F8 v;
    memcpy(&v, s + c, sizeof v);
    for (int k = 0; k < 8; ++k) v[k] = attention_prob(v[k], m);
    memcpy(s + c, &v, sizeof v);
    lanes += v;
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

typedef int32_t I8 __attribute__((vector_size(32)));

// dst[d * ldd + j] = src[j * lds + d] for j, d < 8: an 8 x 8 transpose in registers.
MP_INLINE void transpose8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  F8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) memcpy(&r[i], src + i * lds, sizeof r[i]);
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], I8{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], I8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4)
    for (int k = 0; k < 2; ++k) {
      u[i + 2 * k] = __builtin_shuffle(t[i + k], t[i + k + 2], I8{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 2 * k + 1] = __builtin_shuffle(t[i + k], t[i + k + 2], I8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int k = 0; k < 4; ++k) {
    const F8 lo = __builtin_shuffle(u[k], u[k + 4], I8{0, 1, 2, 3, 8, 9, 10, 11});
    const F8 hi = __builtin_shuffle(u[k], u[k + 4], I8{4, 5, 6, 7, 12, 13, 14, 15});
    memcpy(dst + k * ldd, &lo, sizeof lo);
    memcpy(dst + (k + 4) * ldd, &hi, sizeof hi);
  }
}
// dst[d * ldd + j] = src[j * lds + d] for j < rows, d < cols (both multiples of 8).
MP_INLINE void transposeBlock(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  for (int64_t j = 0; j < rows; j += 8)
    for (int64_t d = 0; d < cols; d += 8) transpose8(src + j * lds + d, lds, dst + d * ldd + j, ldd);
}

// dst[0..n) = elements [off, off + n) of src as FP32 (loops.h widen; FP32 rows are copied inline:
// the rows are short and many, a library call each would cost more than the copy).
MP_INLINE void loadRow(const void* src, DType t, int64_t off, int64_t n, float* dst) {
  if (t != DType::F32) return widen(src, t, (size_t)off, (size_t)n, dst);
  const float* s = static_cast<const float*>(src) + off;
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) memcpy(dst + d, s + d, 32);
  for (; d < n; ++d) dst[d] = s[d];
}
// Elements [off, off + n) of dst = src[0..n) rounded to t (loops.h narrow; FP32 inline).
MP_INLINE void storeRow(const float* src, void* dst, DType t, int64_t off, int64_t n) {
  if (t != DType::F32) return narrow(src, dst, t, (size_t)off, (size_t)n);
  float* o = static_cast<float*>(dst) + off;
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) memcpy(o + d, src + d, 32);
  for (; d < n; ++d) o[d] = src[d];
}

// Element offsets of row t of head (b, h) in a view with strides {b, h, t}.
MP_INLINE int64_t rowOffset(const int64_t* st, int64_t b, int64_t h, int64_t t) { return b * st[0] + h * st[1] + t * st[2]; }

// ---------------------------------------------------------------------------------------------
// Forward

// Items [it0, it1) of the (b, h, query block) space, in order.
MP_ISA_BODY inline void forwardItemsLoop(const AttentionArgs& a, int64_t it0, int64_t it1) {
  const int64_t H = a.H, Tq = a.Tq, Tk = a.Tk, D = a.D, Dp = roundUp(D, 8), Tkp = roundUp(Tk, kTC);
  const int64_t nQB = ceilDiv(Tq, kBQ);
  const bool drop = a.dropoutP > 0.0f;
  const float dscale = dropout_scale(a.dropoutP);
  Arena arena(Arena::need(Dp * Tkp, Tkp * Dp, kBQ * Dp, kBQ * Dp, kBQ * kBK, kBQ, kBQ, kBQ, Dp, 8 * Dp));
  float* Kt = arena.take(Dp * Tkp);   // [Dp][Tkp]: the head's keys, transposed
  float* V = arena.take(Tkp * Dp);    // [Tkp][Dp]
  float* Q = arena.take(kBQ * Dp);    // [kBQ][Dp]: the query block
  float* O = arena.take(kBQ * Dp);    // [kBQ][Dp]: the output accumulator
  float* S = arena.take(kBQ * kBK);   // [kBQ][kBK]: scores, then probabilities
  float* m = arena.take(kBQ);         // running row max
  float* l = arena.take(kBQ);         // running row sum
  float* alpha = arena.take(kBQ);     // the block's rescale per row
  float* row = arena.take(Dp);
  float* rows8 = arena.take(8 * Dp);  // [8][Dp]: keys on their way into Kt
  int64_t head = -1;
  for (int64_t it = it0; it < it1; ++it) {
    // Within a head the query blocks go 0, last, 1, last - 1, ...: under a causal mask block q
    // costs ~q + 1 key blocks, so any run of items (one task's share) mixes cheap and dear ones.
    const int64_t bh = it / nQB, b = bh / H, h = bh % H, qn = it % nQB;
    const int64_t i0 = (qn % 2 == 0 ? qn / 2 : nQB - 1 - qn / 2) * kBQ;
    if (bh != head) {  // this task's first block of head (b, h): its K and V as FP32
      head = bh;
      for (int64_t j0 = 0; j0 < Tkp; j0 += 8) {
        const int64_t n = std::max<int64_t>(0, std::min<int64_t>(8, Tk - j0));
        for (int64_t r = 0; r < n; ++r) {
          loadRow(a.k, a.type, rowOffset(a.kStrides, b, h, j0 + r), D, rows8 + r * Dp);
          loadRow(a.v, a.type, rowOffset(a.vStrides, b, h, j0 + r), D, V + (j0 + r) * Dp);
        }
        memset(rows8 + n * Dp, 0, sizeof(float) * (size_t)((8 - n) * Dp));  // padded keys: zero
        transposeBlock(rows8, Dp, 8, Dp, Kt + j0, Tkp);
      }
    }
    const int64_t nq = std::min(kBQ, Tq - i0), nqp = roundUp(nq, kTR);
    for (int64_t r = 0; r < nq; ++r) loadRow(a.q, a.type, rowOffset(a.qStrides, b, h, i0 + r), D, Q + r * Dp);
    memset(Q + nq * Dp, 0, sizeof(float) * (size_t)((nqp - nq) * Dp));
    memset(O, 0, sizeof(float) * (size_t)(nqp * Dp));
    for (int64_t r = 0; r < kBQ; ++r) { m[r] = -INFINITY; l[r] = 0.0f; alpha[r] = 1.0f; }
    // Keys any row of the block sees: [0, kEnd).
    const int64_t kEnd = attention_key_end(a.causal, i0 + nq - 1, Tk);
    for (int64_t j0 = 0; j0 < kEnd; j0 += kBK) {
      const int64_t nk = std::min(kBK, kEnd - j0), nkp = roundUp(nk, kTC);
      const Band band{a.causal, i0 - j0 + 1, nk};
      dotBlock(Q, Dp, nqp, Kt + j0, Tkp, nkp, D, S, kBK, band);
      for (int64_t r = 0; r < nq; ++r) {
        const int64_t i = i0 + r;
        const int64_t visible = std::max<int64_t>(0, std::min(nk, attention_key_end(a.causal, i, Tk) - j0));
        float* s = S + r * kBK;
        // The block's max of the scaled visible scores (scaling by scale >= 0 or < 0 keeps no
        // order, so scale first), then the new running max.
        scoreRow(s, nkp, visible, a.scale);
        const float mx = blockMax(s, nkp), mOld = m[r], mNew = mx > mOld ? mx : mOld;
        alpha[r] = attention_rescale(mOld, mNew);
        l[r] = l[r] * alpha[r] + probRowSum(s, nkp, mNew);
        m[r] = mNew;
        if (drop) {
          const uint64_t base = attention_drop_index(b, h, i, j0, H, Tq, Tk);
          for (int64_t c = 0; c < visible; ++c) s[c] = dropout_apply(s[c], dropout_keep(a.seed, base + (uint64_t)c, a.dropoutP), dscale);
        }
      }
      for (int64_t r = nq; r < nqp; ++r) memset(S + r * kBK, 0, sizeof(float) * (size_t)nkp);
      for (int64_t r = 0; r < nq; ++r) {
        const float al = alpha[r];
        float* o = O + r * Dp;
        for (int64_t d = 0; d < Dp; ++d) o[d] *= al;
      }
      accBlock(S, kBK, 1, nqp, [&](int64_t r) { return band.keys(r); }, V + j0 * Dp, Dp, Dp, O, Dp);
    }
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t i = i0 + r;
      const float inv = attention_inv_sum(l[r]);
      const float* o = O + r * Dp;
      for (int64_t d = 0; d < D; ++d) row[d] = o[d] * inv;
      storeRow(row, a.out, a.type, rowOffset(a.outStrides, b, h, i), D);
      if (a.lse) a.lse[bh * Tq + i] = attention_lse(m[r], l[r]);
    }
  }
}
void forwardItems(const AttentionArgs& a, int64_t it0, int64_t it1) {
  return onActiveIsa([&]() MP_ISA_BODY { return forwardItemsLoop(a, it0, it1); });
}

// ---------------------------------------------------------------------------------------------
// Backward

// Heads [bh0, bh1) (bh = b * H + h), each whole.
MP_ISA_BODY inline void backwardHeadsLoop(const AttentionBackwardArgs& a, int64_t bh0, int64_t bh1) {
  const int64_t H = a.H, Tq = a.Tq, Tk = a.Tk, D = a.D, Dp = roundUp(D, 8), Tqp = roundUp(Tq, kTR);
  const bool drop = a.dropoutP > 0.0f;
  const float dscale = dropout_scale(a.dropoutP), scale = a.scale;
  Arena arena(Arena::need(Tqp * Dp, Tqp * Dp, Tqp * Dp, Tqp, Tqp, kBK * Dp, kBK * Dp, Dp * kBK, Dp * kBK, kBK * Dp,
                          kBK * Dp, kBQ * kBK, kBQ * kBK, drop ? kBQ * kBK : 0, Dp, Dp));
  float* Q = arena.take(Tqp * Dp);    // [Tqp][Dp]: the head's queries
  float* dO = arena.take(Tqp * Dp);   // [Tqp][Dp]: dout
  float* dQ = arena.take(Tqp * Dp);   // [Tqp][Dp]: sum dS K
  float* Di = arena.take(Tqp);        // dout_i . out_i
  float* L = arena.take(Tqp);         // lse
  float* K = arena.take(kBK * Dp);    // [kBK][Dp]: the key block
  float* V = arena.take(kBK * Dp);    // [kBK][Dp]: the value block
  float* Kt = arena.take(Dp * kBK);   // [Dp][kBK]: the key block, transposed
  float* Vt = arena.take(Dp * kBK);   // [Dp][kBK]: the value block, transposed
  float* dK = arena.take(kBK * Dp);   // [kBK][Dp]: sum dS^T Q
  float* dV = arena.take(kBK * Dp);   // [kBK][Dp]: sum Pd^T dout
  float* P = arena.take(kBQ * kBK);   // [kBQ][kBK]: probabilities
  float* dP = arena.take(kBQ * kBK);  // [kBQ][kBK]: dout . v, then dS
  float* Pd = drop ? arena.take(kBQ * kBK) : P;  // dropped probabilities
  float* row = arena.take(Dp);
  float* row2 = arena.take(Dp);
  for (int64_t bh = bh0; bh < bh1; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    for (int64_t i = 0; i < Tq; ++i) {
      loadRow(a.q, a.type, rowOffset(a.qStrides, b, h, i), D, Q + i * Dp);
      loadRow(a.dout, a.type, rowOffset(a.doutStrides, b, h, i), D, dO + i * Dp);
      loadRow(a.out, a.type, rowOffset(a.outStrides, b, h, i), D, row);
      Di[i] = laneDot(dO + i * Dp, row, (size_t)D);
      L[i] = a.lse[bh * Tq + i];
    }
    memset(dQ, 0, sizeof(float) * (size_t)(Tqp * Dp));
    for (int64_t j0 = 0; j0 < Tk; j0 += kBK) {
      const int64_t nk = std::min(kBK, Tk - j0), nkp = roundUp(nk, kTC), nk4 = roundUp(nk, kTR);
      for (int64_t c = 0; c < nk; ++c) {
        loadRow(a.k, a.type, rowOffset(a.kStrides, b, h, j0 + c), D, K + c * Dp);
        loadRow(a.v, a.type, rowOffset(a.vStrides, b, h, j0 + c), D, V + c * Dp);
      }
      // A short last block: padded keys are zero (and masked).
      memset(K + nk * Dp, 0, sizeof(float) * (size_t)((nkp - nk) * Dp));
      memset(V + nk * Dp, 0, sizeof(float) * (size_t)((nkp - nk) * Dp));
      transposeBlock(K, Dp, nkp, Dp, Kt, kBK);
      transposeBlock(V, Dp, nkp, Dp, Vt, kBK);
      memset(dK, 0, sizeof(float) * (size_t)(nk4 * Dp));
      memset(dV, 0, sizeof(float) * (size_t)(nk4 * Dp));
      // The first query block with a row that sees key j0 (causal: rows i >= j0).
      const int64_t qStart = a.causal ? (j0 / kBQ) * kBQ : 0;
      for (int64_t i0 = qStart; i0 < Tq; i0 += kBQ) {
        const int64_t nq = std::min(kBQ, Tq - i0), nqp = roundUp(nq, kTR);
        const float* Qb = Q + i0 * Dp;
        const float* dOb = dO + i0 * Dp;
        const Band band{a.causal, i0 - j0 + 1, nk};
        dotBlock(Qb, Dp, nqp, Kt, kBK, nkp, D, P, kBK, band);
        dotBlock(dOb, Dp, nqp, Vt, kBK, nkp, D, dP, kBK, band);
        for (int64_t r = 0; r < nq; ++r) {
          const int64_t i = i0 + r;
          const int64_t visible = std::max<int64_t>(0, std::min(nk, attention_key_end(a.causal, i, Tk) - j0));
          float* p = P + r * kBK;
          scoreRow(p, nkp, visible, scale);
          probRow(p, nkp, L[i]);
          float* dp = dP + r * kBK;
          if (drop) {
            float* pd = Pd + r * kBK;
            const uint64_t base = attention_drop_index(b, h, i, j0, H, Tq, Tk);
            for (int64_t c = 0; c < visible; ++c) {
              const bool keep = dropout_keep(a.seed, base + (uint64_t)c, a.dropoutP);
              pd[c] = dropout_apply(p[c], keep, dscale);
              dp[c] = dropout_apply(dp[c], keep, dscale);
            }
            for (int64_t c = visible; c < nkp; ++c) pd[c] = 0.0f;
          }
          const float di = Di[i];
          // dS, exactly 0 where masked (dP there may be a tile band.cols skipped)
          for (int64_t c = 0; c < nkp; ++c) dp[c] = keep_or_zero(c < visible, attention_ds(p[c], dp[c], di));
        }
        for (int64_t r = nq; r < nqp; ++r) {  // padded rows: no probability, no gradient
          memset(P + r * kBK, 0, sizeof(float) * (size_t)nkp);
          memset(dP + r * kBK, 0, sizeof(float) * (size_t)nkp);
          if (drop) memset(Pd + r * kBK, 0, sizeof(float) * (size_t)nkp);
        }
        const auto rows = [&](int64_t c) { return band.rows(c, nq); };
        const auto keys = [&](int64_t r) { return band.keys(r); };
        accBlock(Pd, 1, kBK, nk4, rows, dOb, Dp, Dp, dV, Dp);         // dV += Pd^T dout
        accBlock(dP, kBK, 1, nqp, keys, K, Dp, Dp, dQ + i0 * Dp, Dp);  // dQ += dS K
        accBlock(dP, 1, kBK, nk4, rows, Qb, Dp, Dp, dK, Dp);          // dK += dS^T Q
      }
      for (int64_t c = 0; c < nk; ++c) {
        const int64_t j = j0 + c;
        for (int64_t d = 0; d < D; ++d) row[d] = scale * dK[c * Dp + d];
        storeRow(row, a.dk, a.dType, rowOffset(a.dkStrides, b, h, j), D);
        storeRow(dV + c * Dp, a.dv, a.dType, rowOffset(a.dvStrides, b, h, j), D);
      }
    }
    for (int64_t i = 0; i < Tq; ++i) {
      for (int64_t d = 0; d < D; ++d) row2[d] = scale * dQ[i * Dp + d];
      storeRow(row2, a.dq, a.dType, rowOffset(a.dqStrides, b, h, i), D);
    }
  }
}
void backwardHeads(const AttentionBackwardArgs& a, int64_t bh0, int64_t bh1) {
  return onActiveIsa([&]() MP_ISA_BODY { return backwardHeadsLoop(a, bh0, bh1); });
}

}  // namespace

void attentionForward(const AttentionArgs& a) {
  const int64_t items = a.B * a.H * ceilDiv(a.Tq, kBQ);
  forRange(items, 1, [&](int64_t i0, int64_t i1) { forwardItems(a, i0, i1); });
}

void attentionBackward(const AttentionBackwardArgs& a) {
  forRange(a.B * a.H, 1, [&](int64_t h0, int64_t h1) { backwardHeads(a, h0, h1); });
}

}  // namespace cpu
}  // namespace mp
