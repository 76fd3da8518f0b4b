// Float64 references written independently of the library.

/** erf to ~1e-15 (series for small |x|, continued fraction for large); JS has no Math.erf. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax, sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz), accurate for ax >= 2.5
  let f = ax, C = ax, D = 0;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    D = ax + an * D; D = 1 / D;
    C = ax + an / C;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export const gelu64 = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

/**
 * out = act(alpha * op(A) @ op(B) + beta * C + bias) in float64. A is stored [M,K] ([K,M] if
 * transA); B is stored [K,N] ([N,K] if transB). Values are the operands as stored (already
 * rounded to their dtype).
 */
export function gemm64(
  A: ArrayLike<number>, B: ArrayLike<number>, M: number, N: number, K: number,
  o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number; C?: ArrayLike<number>; bias?: ArrayLike<number>; act?: 'none' | 'relu' | 'gelu' } = {},
): Float64Array {
  const a = new Float64Array(M * K), bt = new Float64Array(N * K);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) a[m * K + k] = o.transA ? A[k * M + m] : A[m * K + k];
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) bt[n * K + k] = o.transB ? B[n * K + k] : B[k * N + n];
  const out = new Float64Array(M * N);
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      const ao = m * K, bo = n * K;
      for (let k = 0; k < K; k++) acc += a[ao + k] * bt[bo + k];
      let v = alpha * acc;
      if (beta !== 0 && o.C) v += beta * o.C[m * N + n];
      if (o.bias) v += o.bias[n];
      if (o.act === 'relu') v = v < 0 ? 0 : v;
      else if (o.act === 'gelu') v = gelu64(v);
      out[m * N + n] = v;
    }
  }
  return out;
}

/** ||x - ref|| / ||ref|| (Frobenius); NaN in x gives Infinity. */
export function relErr(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(x[i])) return Infinity;
    num += (x[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
