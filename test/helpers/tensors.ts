// Shared plumbing for the ops / autograd suites: random inputs (contiguous or as views), the
// values they actually hold (rounded to their dtype) as float64 references, poisoned memory,
// element-wise bound checks and typed-error checks.
import * as mp from '../../src';
import * as R from './ref64';
import { expectClose } from './raw';

export { expectClose };

export type FloatDType = 'float32' | 'float16' | 'bfloat16';
export const FLOAT_DTYPES: FloatDType[] = ['float32', 'float16', 'bfloat16'];

/** FP32 unit roundoff: the ops compute in FP32. */
export const EPS32 = 2 ** -24;
/** Unit roundoff of one RNE store into each dtype (eps/2): 2^-24, 2^-11, 2^-8. */
export const U: Record<FloatDType, number> = { float32: 2 ** -24, float16: 2 ** -11, bfloat16: 2 ** -8 };
/** Absolute rounding floor of a store: half the smallest subnormal of the dtype. */
export const TINY: Record<FloatDType, number> = { float32: 2 ** -150, float16: 2 ** -25, bfloat16: 2 ** -134 };

/** The code of the MixprecError f throws ('no error' / 'not a MixprecError: ...' otherwise). */
export function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof mp.MixprecError) return e.code;
    return `not a MixprecError: ${String(e)}`;
  }
  return 'no error';
}
export async function codeOfAsync(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (e instanceof mp.MixprecError) return e.code;
    return `not a MixprecError: ${String(e)}`;
  }
  return 'no error';
}
/** The MixprecError f throws (fails the test when it throws nothing or something else). */
export function errorOf(f: () => unknown): mp.MixprecError {
  try {
    f();
  } catch (e) {
    if (e instanceof mp.MixprecError) return e;
    throw new Error(`expected a MixprecError, got ${String(e)}`);
  }
  throw new Error('expected a MixprecError, nothing was thrown');
}

/** A shape as a regex fragment that allows "[2,3]" and "[2, 3]". */
export const shapeRe = (s: readonly number[]): string => `\\[${s.join(',\\s*')}\\]`;

// ---------------------------------------------------------------------------------------------
// Randomness

export type Rng = () => number;
export const randInt = (rng: Rng, lo: number, hi: number): number => lo + Math.min(hi - lo, Math.floor(rng() * (hi - lo + 1)));
export const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.min(xs.length - 1, Math.floor(rng() * xs.length))];
export function values(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rng();
  return a;
}
/** Values with |x| in [lo, hi), random sign: away from relu's kink and from zero. */
export function awayFromZero(rng: Rng, n: number, lo = 0.05, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng());
  return a;
}
export function permutation(rng: Rng, n: number): number[] {
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) { const j = randInt(rng, 0, i); [p[i], p[j]] = [p[j], p[i]]; }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Inputs

export type ViewKind = 'contiguous' | 'transposed' | 'permuted' | 'narrowed';
export const VIEW_KINDS: ViewKind[] = ['contiguous', 'transposed', 'permuted', 'narrowed'];

export interface Input {
  /** The tensor handed to the op: `base` itself, or a view of it. */
  t: mp.Tensor;
  /** The contiguous tensor the values were uploaded into (the leaf when requiresGrad). */
  base: mp.Tensor;
  /** The values `base` holds (rounded to its dtype). */
  baseV: R.A64;
  /** The logical values of `t`: toView(baseV). */
  v: R.A64;
  toView: (a: R.A64) => R.A64;
  kind: ViewKind;
}

export interface InputOptions {
  dtype?: FloatDType;
  device: mp.Device;
  view?: ViewKind;
  requiresGrad?: boolean;
  /** Values drawn uniform in [lo, hi) (default [-1, 1)), or given. */
  lo?: number; hi?: number;
  data?: (n: number) => Float32Array;
}

/**
 * A random tensor of logical shape `shape`, as the view kind asks: 'transposed' stores the last
 * two dims swapped and transposes them back, 'permuted' stores a random permutation of the dims
 * and permutes back, 'narrowed' stores one dim longer and narrows it (a non-zero start, rows
 * farther apart than their length). Kinds that need more dims than the shape has fall back to
 * 'narrowed' / 'contiguous'. The reference values come from the contiguous base (rounded to the
 * dtype) through ref64's own view ops, and `t.toFloat32()` must agree with them exactly.
 */
export async function makeInput(rng: Rng, shape: readonly number[], o: InputOptions): Promise<Input> {
  const nd = shape.length;
  let kind: ViewKind = o.view ?? 'contiguous';
  if ((kind === 'transposed' || kind === 'permuted') && nd < 2) kind = nd === 1 ? 'narrowed' : 'contiguous';
  if (kind === 'narrowed' && nd === 0) kind = 'contiguous';
  let baseShape = [...shape];
  let toView: (a: R.A64) => R.A64 = (a) => a;
  let viewOf: (b: mp.Tensor) => mp.Tensor = (b) => b;
  if (kind === 'transposed') {
    [baseShape[nd - 2], baseShape[nd - 1]] = [shape[nd - 1], shape[nd - 2]];
    toView = (a) => R.transpose(a, -1, -2);
    viewOf = (b) => b.transpose(-1, -2);
  } else if (kind === 'permuted') {
    let p = permutation(rng, nd);
    if (p.every((d, i) => d === i)) p = [...p.slice(1), p[0]];
    baseShape = new Array<number>(nd);
    for (let i = 0; i < nd; i++) baseShape[p[i]] = shape[i];
    toView = (a) => R.permute(a, p);
    viewOf = (b) => b.permute(p);
  } else if (kind === 'narrowed') {
    const d = randInt(rng, 0, nd - 1), extra = randInt(rng, 1, 3), start = randInt(rng, 1, extra);
    baseShape[d] = shape[d] + extra;
    toView = (a) => R.narrow(a, d, start, shape[d]);
    viewOf = (b) => b.narrow(d, start, shape[d]);
  }
  const n = R.numel(baseShape);
  const data = o.data ? o.data(n) : values(rng, n, o.lo ?? -1, o.hi ?? 1);
  const base = mp.tensor(data, baseShape, { dtype: o.dtype ?? 'float32', device: o.device, requiresGrad: o.requiresGrad ?? false });
  const baseV = R.arr(await base.toFloat32(), baseShape);
  const t = viewOf(base);
  const v = toView(baseV);
  expect([...t.shape]).toEqual([...shape]);
  const read = await t.toFloat32();
  expectExact(`toFloat32 of a ${kind} view [${shape}]`, read, v.data);
  return { t, base, baseV, v, toView, kind };
}

/** An int32 tensor. */
export const ints = (ids: ArrayLike<number>, shape: readonly number[], device: mp.Device): mp.Tensor =>
  mp.tensor(Int32Array.from(ids), shape, { device });

/**
 * Best-effort poisoning of what the next output allocation returns: blocks of `bytes` filled with
 * bfloat16 NaN (0x7FC0 halves: NaN read as float32, float16 or bfloat16) are allocated and freed
 * just before the op, so an allocator that reuses them hands the op memory where an element it
 * forgets to write reads NaN (or a huge int), which no bound below accepts.
 */
export function poison(device: mp.Device, bytes: number): void {
  const n = Math.max(1, Math.ceil(bytes / 2));
  const blocks = [0, 1].map(() => mp.full([n], NaN, { dtype: 'bfloat16', device }));
  for (const b of blocks) b.dispose();
}
export const bytesOf = (shape: readonly number[], dtype: FloatDType): number => R.numel(shape) * (dtype === 'float32' ? 4 : 2);

// ---------------------------------------------------------------------------------------------
// Checks


/** Exactly equal (NaN equals NaN; +0 equals -0). */
export function expectExact(what: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  if (got.length !== ref.length) throw new Error(`${what}: ${got.length} values, expected ${ref.length}`);
  for (let i = 0; i < ref.length; i++)
    if (!(got[i] === ref[i] || (Number.isNaN(got[i]) && Number.isNaN(ref[i]))))
      throw new Error(`${what}: element ${i}: got ${got[i]}, expected exactly ${ref[i]}`);
}

/**
 * The forward bound of an op computed in FP32 and stored once into `out`:
 *   |got - ref| <= U[out] |ref| + c * 2^-24 * S_i + TINY[out]
 * (ref: float64 on the inputs as stored; S_i: the sum of |terms| that FP32 rounding acts on,
 * c: the number of FP32 operations along the longest dependency chain, with margin).
 */
export function expectBound(what: string, got: ArrayLike<number>, ref: R.A64, out: FloatDType, c: number, S?: ArrayLike<number>): void {
  expectClose(what, got, ref.data, (i) => U[out] * Math.abs(ref.data[i]) + c * EPS32 * (S ? S[i] : Math.abs(ref.data[i])) + TINY[out]);
}

/** Reads a tensor back and checks its logical shape and dtype. */
export async function readAs(t: mp.Tensor, shape: readonly number[], dtype: string): Promise<Float32Array> {
  expect([...t.shape]).toEqual([...shape]);
  expect(t.dtype).toBe(dtype);
  const v = await t.toFloat32();
  expect(v.length).toBe(R.numel(shape));
  return v;
}

/** Round to float16 (RNE, subnormals, overflow to inf), in JS: only for simulating FP16 arithmetic. */
export function roundF16(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10);
  const q = a / ulp;
  let r = Math.floor(q);
  const f = q - r;
  if (f > 0.5 || (f === 0.5 && r % 2 === 1)) r++;
  const v = r * ulp;
  return Math.sign(x) * (v > 65504 ? Infinity : v);
}
