// Per-element math of the element-wise and softmax ops, shared by the CPU loops and the CUDA
// kernels (row / column reductions are structured per backend; the arithmetic on each element
// is defined here once). All of it is FP32.
#pragma once
#include <math.h>
#include <stdint.h>
#include "fastmath.h"

namespace mp {

// BinaryOp codes (native/core/op_args.h): 0 add, 1 sub, 2 mul.
MP_HD float binary_apply(int op, float a, float b) {
  if (op == 0) return a + b;
  if (op == 1) return a - b;
  return a * b;
}

// Softmax of one row with max mx and s = sum_j exp(x_j - mx): y_j = exp(x_j - mx) / s.
MP_HD float softmax_value(float x, float mx, float s) { return exp_poly(x - mx) / s; }
// log_softmax: x_j - mx - log(s).
MP_HD float log_softmax_value(float x, float mx, float s) { return x - mx - logf(s); }
// Backward, per element, from the row's dot = sum_j dy_j y_j (softmax) or sum = sum_j dy_j (log).
MP_HD float softmax_grad(float y, float dy, float dot) { return y * (dy - dot); }
MP_HD float log_softmax_grad(float y, float dy, float sum) { return dy - exp_poly(y) * sum; }

// reduceSum's output from the FP32 sum: alpha * sum + beta * old; beta 0 never uses old (it is
// not read, so NaN poison there does not propagate). Also a gradient sum accumulated into an
// existing one (layer norm's dgamma / dbeta with accumulate: alpha 1, beta 1).
MP_HD float reduce_output(float alpha, float sum, float beta, float old) {
  return beta == 0.0f ? alpha * sum : alpha * sum + beta * old;
}

// fill into an int32 tensor: the value rounded to the nearest integer (ties to even), saturated
// to [INT32_MIN, INT32_MAX]; NaN gives 0.
MP_HD int32_t f32_to_i32_rne(float v) {
  if (!(v == v)) return 0;
  if (v >= 2147483648.0f) return 2147483647;
  if (v <= -2147483648.0f) return (int32_t)(-2147483647 - 1);
  return (int32_t)rintf(v);
}

}  // namespace mp
