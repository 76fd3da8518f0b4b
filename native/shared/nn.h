// Per-element math of the layers and losses, shared by the CPU loops and the CUDA kernels.
// (Reductions — row max / sums, column sums — are structured per backend; the arithmetic on each
// element is defined here once.)
#pragma once
#include <math.h>
#include <stdint.h>
#include "activation.h"

namespace mp {

// d/dx GELU(x) = Phi(x) + x * phi(x)  (PyTorch's approximate='none').
MP_HD float gelu_grad(float x) {
  return normal_cdf(x) + x * (0.39894228040143268f * exp_poly(-0.5f * x * x));
}

// Activation derivative. For ReLU, z may be the pre-activation or the output (z > 0 iff y > 0);
// at 0 the gradient is 0, as torch's threshold_backward.
MP_HD float act_grad(Act a, float z) {
  if (a == Act::Relu) return z > 0.0f ? 1.0f : 0.0f;
  if (a == Act::Gelu) return gelu_grad(z);
  return 1.0f;
}

// keep ? y : +0, as a bit mask: y is computed whatever keep is, so CPU loops over it are branch-free
// and vectorise (a conditional FP operation could trap, so the compiler would keep the branch).
MP_HD float keep_or_zero(bool keep, float y) { return bits_f32(f32_bits(y) & (keep ? 0xffffffffu : 0u)); }

// Counter-based randomness: the same 32 bits for (seed, i) on every backend and thread layout
// (splitmix64 finaliser of seed + (i + 1) * golden ratio).
MP_HD uint32_t hash_u32(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (uint32_t)((z ^ (z >> 31)) >> 32);
}

// Dropout keeps element i with probability 1 - p: u = 24 random bits / 2^24 in [0, 1), keep iff u >= p.
MP_HD bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  return (float)(hash_u32(seed, i) >> 8) * (1.0f / 16777216.0f) >= p;
}

// Cross-entropy target with label smoothing eps (PyTorch's label_smoothing): (1-eps)*onehot + eps/C.
MP_HD float ce_target(int64_t c, int32_t label, int64_t C, float eps) {
  return (c == label ? 1.0f - eps : 0.0f) + eps / (float)C;
}

// Activation backward, one element: dx = dy * act'(z).
MP_HD float act_backward(Act a, float dy, float z) { return dy * act_grad(a, z); }

// The dropout multiplier for kept elements, computed once per call in FP32: 1 / (1 - p).
MP_HD float dropout_scale(float p) { return 1.0f / (1.0f - p); }
// One element of dropout (forward, and backward on dy with the same seed): x * scale or 0.
MP_HD float dropout_apply(float x, bool keep, float scale) { return keep_or_zero(keep, x * scale); }

// --- scaled dot-product attention (AttentionArgs / AttentionBackwardArgs in native/core/op_args.h) ---
// Both backends run an online softmax over key blocks: per query row a running max m and sum l,
// P = attention_prob(score, m). The sums (q.k, P.V, ...) are each backend's own; the per-element
// steps are these.


// The dropout counter of probability (b, h, i, j): its index in the [B, H, Tq, Tk] score space.
MP_HD uint64_t attention_drop_index(int64_t b, int64_t h, int64_t i, int64_t j, int64_t H, int64_t Tq, int64_t Tk) {
  return (((uint64_t)b * (uint64_t)H + (uint64_t)h) * (uint64_t)Tq + (uint64_t)i) * (uint64_t)Tk + (uint64_t)j;
}
// Query i sees the keys j < attention_key_end(causal, i, Tk); the others are masked (causal: j > i,
// torch's top-left aligned is_causal, so every row sees key 0).
MP_HD int64_t attention_key_end(bool causal, int64_t i, int64_t Tk) { return causal && i + 1 < Tk ? i + 1 : Tk; }
// The score of a (query, key) pair from its FP32 dot product q.k: scale * dot, -inf when masked.
MP_HD float attention_score(float dot, float scale, bool masked) { return masked ? -INFINITY : scale * dot; }
// A probability before normalisation, exp(s - m) for the row max m (forward) or the row's lse
// (backward: then it is the normalised probability). A masked score (-inf) gives 0, also when
// m = -inf (a row with nothing visible so far).
MP_HD float attention_prob(float s, float m) { return keep_or_zero(s != -INFINITY, exp_poly(s - m)); }
// The online softmax's rescale of what a row accumulated when its max rises from mOld to mNew:
// exp(mOld - mNew); 1 while mNew = -inf (nothing accumulated: the sum and the output row are 0).
// Then l = l * alpha + (the block's sum of attention_prob), out_acc = out_acc * alpha + P.V.
MP_HD float attention_rescale(float mOld, float mNew) { return mNew == -INFINITY ? 1.0f : exp_poly(mOld - mNew); }
// The factor of the accumulated row, out = out_acc * attention_inv_sum(l): 1 / l, and 0 for a row
// that saw nothing (l = 0: its output row is zeros).
MP_HD float attention_inv_sum(float l) { return l == 0.0f ? 0.0f : 1.0f / l; }
// The row's log-sum-exp of the scaled masked scores, m + log(l); -inf when nothing was visible.
MP_HD float attention_lse(float m, float l) { return m == -INFINITY ? -INFINITY : m + logf(l); }
// The backward's score gradient: dS = P * (dP - Di), with dP = dropout(dout . v) (the forward's
// mask and scale, dropout_apply) and Di = sum_d dout_id * out_id. dq = scale * dS k, dk = scale * dS^T q.
MP_HD float attention_ds(float p, float dp, float di) { return p * (dp - di); }

// --- softmax cross-entropy, per row of logits z with mx = max_c z_c and s = sum_c softmax_exp(z_c, mx) ---
MP_HD float softmax_exp(float z, float mx) { return exp_poly(z - mx); }
// log(sum_c exp(z_c)) from the row's max and shifted sum.
MP_HD float log_sum_exp(float mx, float s) { return mx + logf(s); }
// Class c's share of the row loss: target_c * -log softmax_c = target_c * (lse - z_c). A zero
// target contributes exactly 0 (so a -inf logit off the label gives a finite loss, as PyTorch).
MP_HD float ce_loss_term(float z, float lse, float target) { return target == 0.0f ? 0.0f : target * (lse - z); }
// The fused backward's factor lossScale / B (computed once per call).
MP_HD float ce_grad_scale(float lossScale, int64_t B) { return lossScale / (float)B; }
// A loss backward's factor times the upstream gradient of the loss (the optional gradScale, one
// FP32 in backend memory; absent: 1, which leaves the factor exact): factor * upstream.
MP_HD float loss_grad_factor(float factor, float upstream) { return factor * upstream; }
// dlogit_c = (softmax_c - target_c) * gscale.
MP_HD float ce_dlogit(float z, float mx, float s, float target, float gscale) {
  return (softmax_exp(z, mx) / s - target) * gscale;
}

// --- mean squared error ---
MP_HD float mse_term(float p, float t) { const float d = p - t; return d * d; }
// The backward's factor 2 * lossScale / n (computed once per call); dp = (p - t) * factor.
MP_HD float mse_grad_scale(float lossScale, uint64_t n) { return 2.0f * lossScale / (float)n; }
MP_HD float mse_grad(float p, float t, float k) { return (p - t) * k; }

// --- layer norm (statistics in FP32: mean = sum x / N, var = sum (x - mean)^2 / N, biased) ---
MP_HD float ln_rstd(float var, float eps) { return 1.0f / sqrtf(var + eps); }
MP_HD float ln_xhat(float x, float mean, float rstd) { return (x - mean) * rstd; }
MP_HD float ln_affine(float xhat, float gamma, float beta) { return xhat * gamma + beta; }
// dx_j from g_j = dy_j * gamma_j, xhat_j and the row means mg = mean(g), mgx = mean(g * xhat).
MP_HD float ln_dx(float g, float xhat, float mg, float mgx, float rstd) { return rstd * (g - mg - xhat * mgx); }

}  // namespace mp
