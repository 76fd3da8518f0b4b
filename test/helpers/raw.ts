// Plumbing for suites that test the raw native layer (test/nn_ops.test.ts, test/gemm.test.ts)
// through the binding alone: storage handles, uploads as stored, NaN-poisoned outputs, per-backend
// suites, typed-error checks, seeded randomness. It imports only src/native and src/float16 (the
// TypeScript layer above them may be mid-change; these suites must not depend on it).
import type { DTypeCode, NativeBackendInfo, StorageHandle } from '../../binding';
import { bfloat16, float16 } from '../../src/float16';
import { native } from '../../src/native';

export type DType = 'float32' | 'float16' | 'bfloat16';
export type Device = 'cpu' | 'cuda';
export const F32: DType = 'float32', F16: DType = 'float16', BF16: DType = 'bfloat16';
export const DTYPES: DType[] = [F32, F16, BF16];
export const dc = (t: DType): DTypeCode => (t === F32 ? 0 : t === F16 ? 1 : 2);
export const bytesOf = (t: DType): number => (t === F32 ? 4 : 2);

/** FP32 unit roundoff (the ops compute in FP32). */
export const EPS32 = 2 ** -24;
/** Unit roundoff of a store into each dtype (RNE), and the absolute rounding floor (half the smallest subnormal). */
export const U: Record<DType, number> = { float32: 2 ** -24, float16: 2 ** -11, bfloat16: 2 ** -8 };
export const TINY: Record<DType, number> = { float32: 2 ** -150, float16: 2 ** -25, bfloat16: 2 ** -134 };

// ---------------------------------------------------------------------------------------------
// Backends

export const BACKENDS: NativeBackendInfo[] = native().backends();
export const cudaInfo = BACKENDS.find((b) => b.name === 'cuda');
export const cudaAvailable = !!cudaInfo?.available;

/** The CPU kernel levels this CPU has below its best (native/cpu/isa.h), e.g. ['avx2', 'scalar']. */
export const LOWER_CPU_ISAS: string[] = native().cpuIsa().available.slice(1);

/**
 * Runs a suite once per backend; an unavailable backend registers one skipped test naming why.
 * everyCpuIsa: the CPU once more on each lower level (the [cpu] suite runs the best one), the
 * level set for the suite's tests only; body gets the level's name there (to leave out what only
 * needs to run once, such as the largest sizes).
 */
export function describeEachBackend(title: string, body: (device: Device, lowerCpuIsa?: string) => void, opts: { everyCpuIsa?: boolean } = {}): void {
  for (const b of BACKENDS) {
    describe(`${title} [${b.name}]`, () => {
      if (b.available) body(b.name);
      else test.skip(`${b.name}: skipped: ${b.reason ?? 'unavailable'}`, () => undefined);
    });
    if (b.name !== 'cpu' || !opts.everyCpuIsa) continue;
    for (const isa of LOWER_CPU_ISAS) {
      describe(`${title} [cpu, ${isa} kernels]`, () => {
        beforeAll(() => native().setCpuIsa(isa as 'auto'));
        afterAll(() => native().setCpuIsa('auto'));
        body('cpu', isa);
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Randomness: a fresh, logged seed per suite (MIXPREC_TEST_SEED replays).

export function makeRng(label: string): () => number {
  let s = process.env.MIXPREC_TEST_SEED ? Number(process.env.MIXPREC_TEST_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  // eslint-disable-next-line no-console
  console.log(`${label}: seed ${s} (replay with MIXPREC_TEST_SEED=${s})`);
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// Storage, tracked per test (release with releaseAll() in afterEach).

let live: StorageHandle[] = [];
export function releaseAll(): void {
  for (const h of live) native().release(h);
  live = [];
}
export function alloc(device: Device, bytes: number): StorageHandle {
  const h = native().alloc(device, bytes);
  live.push(h);
  return h;
}

/** Values as a dtype stores them (RNE). */
export function roundTo(dtype: DType, x: ArrayLike<number>): Float32Array {
  const f = Float32Array.from(x);
  if (dtype === F16) return float16.toFloat32(float16.fromFloat32(f));
  if (dtype === BF16) return bfloat16.toFloat32(bfloat16.fromFloat32(f));
  return f;
}

export interface Buf { h: StorageHandle; dtype: DType; n: number }
/** A device buffer holding `values` rounded to dtype; v = the values it actually holds. */
export function inp(values: ArrayLike<number>, dtype: DType, device: Device): Buf & { v: Float32Array } {
  const v = roundTo(dtype, values);
  const h = alloc(device, Math.max(1, v.length) * bytesOf(dtype));
  native().upload(h, v, dc(dtype));
  return { h, dtype, n: v.length, v };
}
/** An output of n elements plus `pad` more, every element NaN. */
export function out(n: number, dtype: DType, device: Device, pad = 3): Buf {
  const h = alloc(device, (n + pad) * bytesOf(dtype));
  native().upload(h, new Float32Array(n + pad).fill(NaN), dc(dtype));
  return { h, dtype, n: n + pad };
}
/** Every element of a buffer as FP32. */
export function readAll(b: Buf): Float32Array {
  return native().download(b.h, dc(b.dtype), b.n);
}
/** The first n elements of an output; the poisoned elements after them must be intact. */
export function read(b: Buf, n: number, what: string): Float32Array {
  const all = readAll(b);
  for (let i = n; i < all.length; i++) if (!Number.isNaN(all[i])) throw new Error(`${what}: element ${i} past the end was written`);
  return all.slice(0, n);
}

/** int32 storage holding `values`. */
export function int32s(values: ArrayLike<number>, device: Device): StorageHandle {
  const a = Int32Array.from(values);
  const h = alloc(device, Math.max(1, a.length) * 4);
  if (a.length) native().writeBytes(h, new Uint8Array(a.buffer));
  return h;
}
export function readInt32(h: StorageHandle, n: number): Int32Array {
  return new Int32Array(native().readBytes(h, n * 4).slice().buffer);
}
export const NAN_BITS = new Int32Array(new Float32Array([NaN]).buffer)[0];
/** n 4-byte slots of NaN bits (for int32 and float32 scalar outputs). */
export function slots(n: number, device: Device): StorageHandle {
  const h = alloc(device, n * 4);
  native().upload(h, new Float32Array(n).fill(NaN), 0);
  return h;
}
export function readSlots(h: StorageHandle, n: number): { f: Float32Array; i: Int32Array } {
  const buf = native().readBytes(h, n * 4).slice().buffer;
  return { f: new Float32Array(buf), i: new Int32Array(buf) };
}

// ---------------------------------------------------------------------------------------------
// Checks

/** Asserts |got[i] - ref[i]| <= tol(i) for every i (NaN never passes); reports the worst element. */
export function expectClose(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: (i: number) => number): void {
  if (got.length !== ref.length) throw new Error(`${what}: length ${got.length}, expected ${ref.length}`);
  let worst = -1, worstRatio = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(got[i] - ref[i]), t = tol(i);
    if (e <= t) continue;
    const ratio = Number.isNaN(e) ? Infinity : e / t;
    if (worst < 0 || ratio > worstRatio) { worst = i; worstRatio = ratio; }
  }
  if (worst >= 0)
    throw new Error(`${what}: element ${worst} of ${ref.length}: got ${got[worst]}, expected ${ref[worst]} ± ${tol(worst)} (${worstRatio.toPrecision(3)}x the bound)`);
}
/** Bitwise-equal values (NaN equals NaN; -0 and 0 are told apart unless `zeroSign` is false). */
export function expectExact(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, zeroSign = false): void {
  if (got.length !== ref.length) throw new Error(`${what}: length ${got.length}, expected ${ref.length}`);
  for (let i = 0; i < ref.length; i++)
    if (!Object.is(got[i], ref[i]) && !(!zeroSign && got[i] === 0 && ref[i] === 0))
      throw new Error(`${what}: element ${i}: got ${got[i]}, expected exactly ${ref[i]}`);
}

/** The error code a call throws ('no error' if none); a throw without a code string fails loudly. */
export function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' ? code : `no code: ${String(e)}`;
  }
  return 'no error';
}
