// The mixed-precision step's math: ONE definition, called per element by the CPU loops and the
// CUDA kernels, and once per step (amp_finalize) by the host or a one-thread kernel.
//
// A step over a parameter store (flat buffers; see src/amp/store.ts):
//   1. unscale_check_norm over the flat gradient: g32 = g * invScale (invScale =
//      float32(1 / float64(S))); foundInf |= !finite(g32); sumsq += g32^2 (FP32).
//   2. amp_finalize (once): decides skip, the grad norm, the clip coefficient, the optimizer's
//      bias corrections, and (in the fused step) runs the loss-scale update rule.
//   3. the fused optimizer over (master, working copy, grad, moments): returns at once when the
//      step was skipped, else g = (g * invScale) * clipCoef, updates master and moments in FP32
//      and writes the FP16/BF16 working copy (RNE) in the same pass.
#pragma once
#include <math.h>
#include <stdint.h>
#include "dtype.h"

namespace mp {

// The loss-scaling options. Layout mirrored in src/amp/state.ts.
struct ScalerConfig {
  // Factors in float64, as PyTorch passes them: new scale = float32(float64(scale) * factor).
  double growthFactor = 2.0;    // > 1
  double backoffFactor = 0.5;   // in (0, 1)
  double minScale = 0.0;        // 0: none
  double maxScale = INFINITY;   // inf: none
  int32_t growthInterval = 2000;
  int32_t hysteresis = 1;       // Megatron-style: overflows tolerated before a backoff (1 = PyTorch)
  int32_t dynamic = 1;          // 0: static scale (never changes; overflow steps still skipped)
  int32_t enabled = 1;          // 0: pass-through (scale 1, never skips)
};

enum class OptimKind : int32_t { SGD = 0, Adam = 1, AdamW = 2 };

// Optimizer hyper-parameters with PyTorch's names and meaning.
struct OptimConfig {
  int32_t kind = 0;             // OptimKind
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weightDecay = 0.0f;     // Adam / SGD: L2 added to the gradient; AdamW: decoupled
  float momentum = 0.0f, dampening = 0.0f;
  int32_t nesterov = 0;
  float maxNorm = 0.0f;         // > 0: clip the global grad norm to this
};

// Per-step state, a few bytes in backend memory; uploaded before a step, read back after it.
// Layout mirrored in src/amp/state.ts (all fields 4 bytes).
struct AmpState {
  float scale;            // S, the loss scale the gradients carry
  float sumsq;            // sum of (g/S)^2 (zeroed before the step)
  int32_t foundInf;       // any inf/NaN in g/S (zeroed before the step)
  int32_t growthTracker;  // clean steps since the last growth / overflow
  int32_t hysteresisLeft;
  int32_t optimizerStep;  // applied (not skipped) optimizer steps
  float gradNorm;         // this step's global norm of g/S (inf or NaN when foundInf)
  float clipCoef;         // this step's clip coefficient (1 = none)
  float invScale;         // inv_scale of the scale this step's gradients carried (before the update)
  float stepSize;         // Adam: lr / (1 - beta1^t); SGD: lr
  float biasCorrection2Sqrt;  // Adam: sqrt(1 - beta2^t)
  int32_t skipped;        // this step was skipped (overflow)
  int32_t steps, skippedSteps, backoffs, growths, minScaleHits;  // counters
};

MP_HD float inv_scale(float scale) { return (float)(1.0 / (double)scale); }

MP_HD bool is_finite_f32(float x) { return (f32_bits(x) & 0x7f800000u) != 0x7f800000u; }

// The smallest loss scale the rule produces (2^-126, FP32's smallest normal): its reciprocal, the
// unscale factor, is still finite. PyTorch lets the scale reach 0 (every later step is skipped and
// its state cannot be reloaded here); DeepSpeed floors it at 1. This floor keeps every state
// loadable without changing any run that never gets near it; minScale raises it.
constexpr double kMinLossScale = 1.1754943508222875e-38;

// The loss-scale update rule: PyTorch's GradScaler, plus Megatron's hysteresis, min and max.
MP_HD void scaler_update(AmpState& s, const ScalerConfig& c) {
  if (!c.enabled || !c.dynamic) return;
  if (s.foundInf) {
    s.growthTracker = 0;
    s.hysteresisLeft -= 1;
    if (s.hysteresisLeft <= 0) {
      // The floor: minScale, and never below 2^-126 (the smallest normal FP32) whatever minScale
      // says: below it 1 / scale overflows FP32 and the scale would fall to 0, a state no
      // checkpoint can hold. Reaching it is counted (minScaleHits), never fatal.
      const double floor = c.minScale > kMinLossScale ? c.minScale : kMinLossScale;
      float next = (float)((double)s.scale * c.backoffFactor);
      if ((double)next < floor) { next = (float)floor; s.minScaleHits += 1; }
      s.scale = next;
      s.backoffs += 1;
    }
  } else {
    s.growthTracker += 1;
    if (s.growthTracker == c.growthInterval) {
      const float next = (float)((double)s.scale * c.growthFactor);
      if (is_finite_f32(next) && (double)next <= c.maxScale) { s.scale = next; s.growths += 1; }
      s.growthTracker = 0;
      s.hysteresisLeft = c.hysteresis;
    }
  }
}

// Once per step, after every gradient buffer went through unscale_check_norm. With updateScale,
// the loss-scale rule runs in the same place (the fused step); else GradScaler.update() runs it.
MP_HD void amp_finalize(AmpState& s, const ScalerConfig& c, const OptimConfig& o, bool updateScale) {
  s.steps += 1;
  s.invScale = inv_scale(s.scale);
  s.gradNorm = s.foundInf ? (float)INFINITY : sqrtf(s.sumsq);
  s.skipped = (s.foundInf && c.enabled) ? 1 : 0;
  if (s.skipped) {
    s.skippedSteps += 1;
    s.clipCoef = 0.0f;
  } else {
    s.optimizerStep += 1;
    // PyTorch's clip_grad_norm_: coef = maxNorm / (norm + 1e-6), clamped to 1.
    s.clipCoef = o.maxNorm > 0.0f ? fminf(1.0f, o.maxNorm / (s.gradNorm + 1e-6f)) : 1.0f;
    // Bias corrections in float64, as PyTorch computes them from a Python float step.
    const double t = (double)s.optimizerStep;
    if (o.kind == (int32_t)OptimKind::SGD) {
      s.stepSize = o.lr;
      s.biasCorrection2Sqrt = 1.0f;
    } else {
      s.stepSize = (float)((double)o.lr / (1.0 - pow((double)o.beta1, t)));
      s.biasCorrection2Sqrt = (float)sqrt(1.0 - pow((double)o.beta2, t));
    }
  }
  if (updateScale) scaler_update(s, c);
}

// Element i of the unscale / check / norm pass. Returns g/S; the caller reduces foundInf/sumsq.
MP_HD float unscale_element(const void* g, DType t, size_t i, float invScale) {
  return load_f32(g, t, i) * invScale;
}

// One parameter's fused update, PyTorch's single-tensor formulas in FP32. g is the unscaled,
// clipped gradient. SGD initialises its momentum buffer with the gradient on the first applied
// step, as PyTorch does. Options are applied as value selects, not branches, so loops over this
// function vectorise (the CPU calls it with a compile-time kind); each select picks exactly the
// value PyTorch's branch would compute.
MP_HD void optimizer_update(float& p, float& m, float& v, float g, const OptimConfig& o, const AmpState& s) {
  if (o.kind == (int32_t)OptimKind::SGD) {
    g = o.weightDecay != 0.0f ? g + o.weightDecay * p : g;
    const bool useMomentum = o.momentum != 0.0f;
    const float buf = s.optimizerStep == 1 ? g : o.momentum * m + (1.0f - o.dampening) * g;
    m = useMomentum ? buf : m;
    g = useMomentum ? (o.nesterov ? g + o.momentum * buf : buf) : g;
    p = p - s.stepSize * g;
    return;
  }
  const bool decoupled = o.kind == (int32_t)OptimKind::AdamW;
  p = decoupled ? p * (1.0f - o.lr * o.weightDecay) : p;
  g = (!decoupled && o.weightDecay != 0.0f) ? g + o.weightDecay * p : g;
  m = m + (1.0f - o.beta1) * (g - m);  // exp_avg.lerp_(grad, 1 - beta1)
  v = v * o.beta2 + (1.0f - o.beta2) * g * g;
  const float denom = sqrtf(v) / s.biasCorrection2Sqrt + o.eps;
  p = p - s.stepSize * (m / denom);
}

// The gradient the optimizer applies: unscaled, then clipped (two FP32 roundings, as the unfused
// PyTorch sequence unscale_ -> clip_grad_norm_ -> step; a coefficient of 1 is exact).
MP_HD float optimizer_grad(const void* g, DType t, size_t i, const AmpState& s) {
  return unscale_element(g, t, i, s.invScale) * s.clipCoef;
}

// The whole update of element i: master, moments, working copy.
MP_HD void optimizer_element(size_t i, float* master, void* working, DType wt, const void* grad, DType gt,
                             float* m, float* v, const OptimConfig& o, const AmpState& s) {
  float p = master[i], mi = m ? m[i] : 0.0f, vi = v ? v[i] : 0.0f;
  optimizer_update(p, mi, vi, optimizer_grad(grad, gt, i, s), o, s);
  master[i] = p;
  if (m) m[i] = mi;
  if (v) v[i] = vi;
  if (working) store_f32(working, wt, i, p);
}

}  // namespace mp
