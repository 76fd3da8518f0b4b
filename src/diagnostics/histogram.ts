// Histograms of log2|value| (one bucket per integer exponent floor(log2|x|)) and what FP16 would
// do to the values: round them to zero, to a subnormal, or overflow them to inf — exactly, with
// round-to-nearest-even at the boundaries, also with a power-of-two loss scale applied (scaling
// by 2^k is exact, so a value's fate only depends on its exponent plus k and on three properties
// of its significand, which the histogram keeps per bucket).
import { types } from 'node:util';
import { MixprecError } from '../errors';
import { show } from '../util/show';

/** IEEE binary16 facts. */
export const FP16 = Object.freeze({
  /** Smallest positive subnormal, 2^-24. */
  minSubnormal: 2 ** -24,
  /** Smallest positive normal, 2^-14. */
  minNormal: 2 ** -14,
  /** Largest finite value, 65504 = 2^15 (2 - 2^-10). */
  max: 65504,
  /** Values with |x| >= 65520 (the midpoint between 65504 and 2^16, a tie that rounds to even: inf) overflow. */
  overflowThreshold: 65520,
  /** Values with |x| <= 2^-25 (the midpoint between 0 and 2^-24, a tie that rounds to even: 0) become zero. */
  zeroThreshold: 2 ** -25,
});

/** The lowest and highest floor(log2|x|) of a nonzero finite float32 (2^-149 .. 2^127 (2 - 2^-23)). */
export const MIN_EXPONENT = -149;
export const MAX_EXPONENT = 127;
const NB = MAX_EXPONENT - MIN_EXPONENT + 1;

/** Significand 1.f with f (23 bits) >= 0x7fe000, i.e. >= 2 - 2^-10: rounds up to the next power of two at 2^-24 spacing in [2^-15, 2^-14). */
const UP10 = 0x800000 - 0x2000;
/** Significand >= 2 - 2^-11: rounds up to the next power of two with FP16's 11 significant bits. */
const UP11 = 0x800000 - 0x1000;

/** What FP16 does to a set of values; fractions are of the nonzero finite values (0 when there are none). */
export interface Fp16Fractions {
  /** The power of two the values were multiplied by before rounding. */
  scale: number;
  /** Nonzero finite values (the denominator). */
  values: number;
  /** Round to zero (|x s| <= 2^-25). */
  underflow: number;
  /** Round to a nonzero subnormal (below 2^-14 after rounding). */
  subnormal: number;
  /** Round to a normal FP16 number. */
  normal: number;
  /** Overflow to inf (|x s| >= 65520). */
  overflow: number;
}

export interface HistogramJSON {
  /** The exponent of counts[0]; buckets run minExponent .. minExponent + counts.length - 1. */
  minExponent: number;
  counts: number[];
  zero: number;
  inf: number;
  nan: number;
}

const f32scratch = new Float32Array(1);
const u32scratch = new Uint32Array(f32scratch.buffer);

/** floor(log2|x|) of x rounded to float32 (exact, from the bits; subnormal float32 included); NaN for 0, inf, NaN. */
export function exponentOf(x: number): number {
  f32scratch[0] = x;
  const b = u32scratch[0] & 0x7fffffff;
  const E = b >>> 23;
  const M = b & 0x7fffff;
  if (E === 255 || (E === 0 && M === 0)) return NaN;
  return E === 0 ? MIN_EXPONENT + (31 - Math.clz32(M)) : E - 127;
}

function pow2(k: number): number {
  return 2 ** k;
}

/** The integer k with scale = 2^k; E_ARG for a scale that is not a power of two. */
export function scaleExponent(scale: number): number {
  if (typeof scale !== 'number' || !(scale > 0) || !Number.isFinite(scale)) throw new MixprecError('E_ARG', `loss scale must be a positive power of two (got ${show(scale)})`);
  const k = Math.round(Math.log2(scale));
  if (pow2(k) !== scale) throw new MixprecError('E_ARG', `loss scale must be a power of two for the exact FP16 classification (got ${scale})`);
  return k;
}

/**
 * Counts of log2|x| by integer exponent, with zero / inf / NaN counted apart. Per bucket it also
 * keeps how many values are exact powers of two and how many have a significand >= 2 - 2^-10 or
 * >= 2 - 2^-11: enough to say exactly which values FP16 rounds to zero, to a subnormal, or to inf
 * after any power-of-two scale.
 */
export class Log2Histogram {
  /** counts[e - MIN_EXPONENT]: values with floor(log2|x|) = e. */
  readonly counts = new Float64Array(NB);
  /** Of those, exact powers of two (significand 1). */
  readonly powersOfTwo = new Float64Array(NB);
  /** Of those, significand >= 2 - 2^-10. */
  readonly roundUp10 = new Float64Array(NB);
  /** Of those, significand >= 2 - 2^-11 (a subset of roundUp10). */
  readonly roundUp11 = new Float64Array(NB);
  zero = 0;
  inf = 0;
  nan = 0;

  /** Adds values (numbers are rounded to float32 first: the histogram describes float32 data). */
  add(values: Float32Array | ArrayLike<number>): this {
    const f = types.isFloat32Array(values) ? values : Float32Array.from(values as ArrayLike<number>);
    const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
    const { counts, powersOfTwo, roundUp10, roundUp11 } = this;
    for (let i = 0; i < u.length; i++) {
      const b = u[i] & 0x7fffffff;
      const E = b >>> 23;
      let M = b & 0x7fffff;
      if (E === 255) {
        if (M === 0) this.inf++;
        else this.nan++;
        continue;
      }
      let j: number; // bucket index = exponent - MIN_EXPONENT
      if (E === 0) {
        if (M === 0) { this.zero++; continue; }
        const lead = 31 - Math.clz32(M); // float32 subnormal: M 2^-149, normalise the significand
        j = lead;
        M = (M << (23 - lead)) & 0x7fffff;
      } else {
        j = E - 127 - MIN_EXPONENT;
      }
      counts[j]++;
      if (M === 0) powersOfTwo[j]++;
      else if (M >= UP10) {
        roundUp10[j]++;
        if (M >= UP11) roundUp11[j]++;
      }
    }
    return this;
  }

  /** Adds another histogram's counts into this one. */
  merge(other: Log2Histogram): this {
    for (let j = 0; j < NB; j++) {
      this.counts[j] += other.counts[j];
      this.powersOfTwo[j] += other.powersOfTwo[j];
      this.roundUp10[j] += other.roundUp10[j];
      this.roundUp11[j] += other.roundUp11[j];
    }
    this.zero += other.zero;
    this.inf += other.inf;
    this.nan += other.nan;
    return this;
  }

  static of(values: Float32Array | ArrayLike<number>): Log2Histogram {
    return new Log2Histogram().add(values);
  }

  static merged(hs: readonly Log2Histogram[]): Log2Histogram {
    const h = new Log2Histogram();
    for (const x of hs) h.merge(x);
    return h;
  }

  /** Values with floor(log2|x|) = e. */
  count(exponent: number): number {
    return Number.isInteger(exponent) && exponent >= MIN_EXPONENT && exponent <= MAX_EXPONENT ? this.counts[exponent - MIN_EXPONENT] : 0;
  }

  /** Nonzero finite values. */
  get finiteNonzero(): number {
    let n = 0;
    for (let j = 0; j < NB; j++) n += this.counts[j];
    return n;
  }

  /** All values added (zero, inf and NaN included). */
  get total(): number {
    return this.finiteNonzero + this.zero + this.inf + this.nan;
  }

  /** The lowest and highest occupied exponents (null when no nonzero finite value). */
  range(): { min: number; max: number } | null {
    let lo = -1, hi = -1;
    for (let j = 0; j < NB; j++) if (this.counts[j] > 0) { if (lo < 0) lo = j; hi = j; }
    return lo < 0 ? null : { min: lo + MIN_EXPONENT, max: hi + MIN_EXPONENT };
  }

  /** The occupied buckets, lowest exponent first. */
  buckets(): { exponent: number; count: number }[] {
    const out: { exponent: number; count: number }[] = [];
    for (let j = 0; j < NB; j++) if (this.counts[j] > 0) out.push({ exponent: j + MIN_EXPONENT, count: this.counts[j] });
    return out;
  }

  /** Counts of values FP16 would round to zero / subnormal / normal / inf after multiplying by 2^k. */
  fp16Counts(k = 0): { underflow: number; subnormal: number; normal: number; overflow: number } {
    if (!Number.isInteger(k)) throw new MixprecError('E_ARG', `scale exponent must be an integer (got ${k})`);
    let underflow = 0, subnormal = 0, normal = 0, overflow = 0;
    for (let j = 0; j < NB; j++) {
      const c = this.counts[j];
      if (c === 0) continue;
      const f = j + MIN_EXPONENT + k; // exponent after scaling
      if (f >= 16) overflow += c;
      else if (f === 15) { overflow += this.roundUp11[j]; normal += c - this.roundUp11[j]; }
      else if (f >= -14) normal += c;
      else if (f === -15) { normal += this.roundUp10[j]; subnormal += c - this.roundUp10[j]; }
      else if (f >= -24) subnormal += c;
      else if (f === -25) { underflow += this.powersOfTwo[j]; subnormal += c - this.powersOfTwo[j]; }
      else underflow += c;
    }
    return { underflow, subnormal, normal, overflow };
  }

  /** Fractions of the nonzero finite values FP16 would lose / make subnormal / overflow with this (power-of-two) scale applied. */
  fp16(scale = 1): Fp16Fractions {
    const k = scaleExponent(scale);
    const c = this.fp16Counts(k);
    const n = c.underflow + c.subnormal + c.normal + c.overflow;
    const frac = (x: number) => (n === 0 ? 0 : x / n);
    return { scale, values: n, underflow: frac(c.underflow), subnormal: frac(c.subnormal), normal: frac(c.normal), overflow: frac(c.overflow) };
  }

  toJSON(): HistogramJSON {
    const r = this.range();
    const counts = r ? Array.from(this.counts.subarray(r.min - MIN_EXPONENT, r.max - MIN_EXPONENT + 1)) : [];
    return { minExponent: r ? r.min : 0, counts, zero: this.zero, inf: this.inf, nan: this.nan };
  }
}

/** % helpers for one-off arrays. */
export function fp16Fractions(values: Float32Array | ArrayLike<number>, scale = 1): Fp16Fractions {
  return Log2Histogram.of(values).fp16(scale);
}
/** Fraction of the nonzero finite values that FP16 rounds to zero (|x s| <= 2^-25). */
export function underflowFraction(values: Float32Array | ArrayLike<number> | Log2Histogram, scale = 1): number {
  return (values instanceof Log2Histogram ? values : Log2Histogram.of(values)).fp16(scale).underflow;
}
/** Fraction of the nonzero finite values that FP16 rounds to a nonzero subnormal. */
export function subnormalFraction(values: Float32Array | ArrayLike<number> | Log2Histogram, scale = 1): number {
  return (values instanceof Log2Histogram ? values : Log2Histogram.of(values)).fp16(scale).subnormal;
}
/** Fraction of the nonzero finite values that overflow FP16 (|x s| >= 65520). */
export function overflowFraction(values: Float32Array | ArrayLike<number> | Log2Histogram, scale = 1): number {
  return (values instanceof Log2Histogram ? values : Log2Histogram.of(values)).fp16(scale).overflow;
}

export interface ScaleSuggestion {
  /** The smallest power-of-two scale that loses fewer than maxUnderflow of the values and overflows none; null when none does. */
  scale: number | null;
  /** log2 of scale (null with it). */
  exponent: number | null;
  /** The largest power-of-two scale that overflows nothing (null when no value is nonzero and finite). */
  maxSafeScale: number | null;
  /** What FP16 does with `scale` applied (null with it). */
  at: Fp16Fractions | null;
  /** Why there is no suggestion (absent when there is one). */
  reason?: string;
}

/** Powers of two searched: every float32 value can be moved into or out of FP16's range within this window. */
const K_LO = -160, K_HI = 160;

/**
 * The smallest power-of-two loss scale that keeps the fraction of nonzero finite values FP16
 * rounds to zero below `maxUnderflow` (default 0.1%) without overflowing any value. Underflow only
 * falls and overflow only grows as the scale grows, so this scale exists iff it overflows nothing;
 * when it does not, the values span more than FP16 can hold and the answer is null with a reason.
 * The smallest such scale leaves the most headroom against overflow. Loss scaling scales up, so
 * the search starts at `minScale` (a power of two, default 1: "no scaling needed" is the answer
 * 1); `minScale: 0` searches below 1 too.
 */
export function suggestLossScale(h: Log2Histogram, opts: { maxUnderflow?: number; minScale?: number } = {}): ScaleSuggestion {
  const maxUnderflow = opts.maxUnderflow ?? 0.001;
  if (typeof maxUnderflow !== 'number' || !(maxUnderflow > 0 && maxUnderflow <= 1)) throw new MixprecError('E_ARG', 'maxUnderflow must be in (0, 1]');
  const kFloor = opts.minScale === 0 ? K_LO : scaleExponent(opts.minScale ?? 1);
  const n = h.finiteNonzero;
  if (n === 0) return { scale: null, exponent: null, maxSafeScale: null, at: null, reason: 'no nonzero finite values to scale' };
  let kMax = K_LO - 1;
  for (let k = K_HI; k >= K_LO; k--) if (h.fp16Counts(k).overflow === 0) { kMax = k; break; }
  let kMin = K_HI + 1;
  for (let k = Math.max(K_LO, kFloor); k <= K_HI; k++) if (h.fp16Counts(k).underflow / n < maxUnderflow) { kMin = k; break; }
  const maxSafeScale = kMax >= K_LO ? pow2(kMax) : null;
  if (kMin > kMax && kMin === Math.max(K_LO, kFloor) && maxSafeScale !== null)
    return {
      scale: null, exponent: null, maxSafeScale, at: null,
      reason: `some values overflow FP16 already at the smallest scale considered, 2^${kMin}: only scales up to 2^${kMax} overflow nothing (pass minScale to search lower)`,
    };
  if (kMin > kMax) {
    const pct = (maxUnderflow * 100).toPrecision(2);
    return {
      scale: null, exponent: null, maxSafeScale, at: null,
      reason: `impossible: keeping the values lost to zero under ${pct}% needs a scale of at least 2^${kMin}, but ` +
        (maxSafeScale === null ? 'every scale overflows some value' : `any scale above 2^${kMax} overflows some value`) +
        ` (the values span ${(h.range()!.max - h.range()!.min + 1)} binades, FP16 about 40)`,
    };
  }
  return { scale: pow2(kMin), exponent: kMin, maxSafeScale, at: h.fp16(pow2(kMin)) };
}
