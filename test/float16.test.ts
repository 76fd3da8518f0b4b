// FP32 <-> FP16 / BF16 conversion tests against oracles independent of native/shared/half.h:
//   * an exhaustive field-by-field float64 decoder for all 65,536 patterns of each format;
//   * numpy's float16 cast and a first-principles Python bf16 reference (test/fixtures/half_rne.json,
//     made by test/fixtures/make_half_fixtures.py);
//   * a float64 round-to-nearest-even reference written here, run on fresh random inputs each run.
// Random inputs are drawn fresh each run; the seed is logged (set MIXPREC_TEST_SEED to replay one).
import { freshSeed, rngFromSeed } from './helpers/random';
import { describe, expect, test } from '@jest/globals';
import * as fs from 'fs';
import * as path from 'path';
import { types } from 'util';
import * as mixprec from '../src';

// ------------------------------------------------------------------------------------ helpers
const hex = (n: number, digits: number): string => '0x' + (n >>> 0).toString(16).padStart(digits, '0');

function f32Bits(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}
function f32FromBits(bits: Uint32Array): Float32Array {
  return new Float32Array(bits.buffer, bits.byteOffset, bits.length);
}

/** Collects mismatch lines; `report()` is '' when there are none, else the count and the first few. */
class Mismatches {
  private lines: string[] = [];
  private n = 0;
  constructor(private readonly what: string, private readonly keep = 12) {}
  add(line: string): void {
    if (this.lines.length < this.keep) this.lines.push(line);
    this.n++;
  }
  get count(): number {
    return this.n;
  }
  report(): string {
    return this.n === 0 ? '' : `${this.what}: ${this.n} mismatches, first:\n  ${this.lines.join('\n  ')}`;
  }
}

const u32 = (rng: () => number): number => Math.floor(rng() * 2 ** 32) >>> 0;

// ----------------------------------------------------------- independent format descriptions
interface Fmt {
  name: string;
  p: number; // significand bits incl. the implicit one
  emin: number; // exponent of the smallest normal
  emax: number;
  ebits: number;
}
const F16: Fmt = { name: 'float16', p: 11, emin: -14, emax: 15, ebits: 5 };
const BF16: Fmt = { name: 'bfloat16', p: 8, emin: -126, emax: 127, ebits: 8 };

/** The value of a 16-bit pattern, from its fields, in float64. */
function decode(fmt: Fmt, h: number): number {
  const mbits = fmt.p - 1;
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> mbits) & ((1 << fmt.ebits) - 1);
  const m = h & ((1 << mbits) - 1);
  const bias = fmt.emax;
  if (e === (1 << fmt.ebits) - 1) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** (fmt.emin - mbits); // subnormal (and +-0)
  return s * 2 ** (e - bias) * (1 + m / 2 ** mbits);
}
function isNaN16(fmt: Fmt, h: number): boolean {
  return Number.isNaN(decode(fmt, h));
}

/** Round a float32 value (exact in float64) to the format: nearest of the two neighbouring
 *  representable values, ties to the even significand, overflow to infinity. */
function roundRef(fmt: Fmt, x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (!Number.isFinite(x) || x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  let E = Math.floor(Math.log2(a));
  while (2 ** E > a) E--;
  while (2 ** (E + 1) <= a) E++;
  E = Math.max(E, fmt.emin);
  const ulp = 2 ** (E - (fmt.p - 1));
  const k = Math.floor(a / ulp);
  const lo = k * ulp;
  const hi = (k + 1) * ulp;
  const dlo = a - lo; // exact: both are multiples of a's ulp and differ by < ulp
  const dhi = hi - a;
  const r = dlo < dhi ? lo : dhi < dlo ? hi : k % 2 === 0 ? lo : hi;
  const maxFinite = (2 - 2 ** (1 - fmt.p)) * 2 ** fmt.emax;
  return sign * (r > maxFinite ? Infinity : r);
}

type Conv = { fromFloat32(v: Float32Array): Uint16Array; toFloat32(b: Uint16Array): Float32Array };
const CONV: Record<'float16' | 'bfloat16', Conv> = { float16: mixprec.float16, bfloat16: mixprec.bfloat16 };

// ---------------------------------------------------------------------------- exhaustive
describe.each([F16, BF16])('$name: exhaustive over all 65,536 bit patterns', (fmt) => {
  const conv = CONV[fmt.name as 'float16' | 'bfloat16'];
  const all = new Uint16Array(65536).map((_, i) => i);

  test('toFloat32 equals the field-by-field float64 value (NaN -> NaN with the same sign; FP16 NaNs quieted)', () => {
    const out = conv.toFloat32(all);
    expect(types.isFloat32Array(out)).toBe(true); // realm-independent (native arrays are not jest-realm instances)
    expect(out.length).toBe(65536);
    const bits = f32Bits(out);
    const mm = new Mismatches(`${fmt.name}.toFloat32`);
    let nans = 0;
    for (let h = 0; h < 65536; h++) {
      const ref = decode(fmt, h);
      const got = out[h];
      if (Number.isNaN(ref)) {
        nans++;
        const sameSign = bits[h] >>> 31 === h >>> 15;
        // FP16 -> FP32 quiets NaNs (as F16C does); BF16 -> FP32 is the plain 16-bit widening, so a
        // signalling bf16 NaN may stay signalling: only NaN-ness and sign are required there.
        const quiet = fmt === BF16 || (bits[h] & 0x00400000) !== 0;
        if (!Number.isNaN(got) || !sameSign || !quiet)
          mm.add(`${hex(h, 4)}: expected a ${fmt === BF16 ? '' : 'quiet '}NaN with sign ${h >>> 15}, got ${hex(bits[h], 8)} (${got})`);
      } else if (!Object.is(got, ref)) {
        mm.add(`${hex(h, 4)}: expected ${ref}, got ${got} (${hex(bits[h], 8)})`);
      }
    }
    expect(nans).toBe(2 * (2 ** (fmt.p - 1) - 1));
    expect(mm.report()).toBe('');
  });

  test('fromFloat32(toFloat32(h)) === h (NaN: a quiet NaN with the same sign)', () => {
    const back = conv.fromFloat32(conv.toFloat32(all));
    expect(types.isUint16Array(back)).toBe(true);
    expect(back.length).toBe(65536);
    const mm = new Mismatches(`${fmt.name} round trip`);
    for (let h = 0; h < 65536; h++) {
      if (isNaN16(fmt, h)) {
        const quietBit = 1 << (fmt.p - 2); // FP32 -> FP16 / BF16 returns quiet NaNs
        if (!isNaN16(fmt, back[h]) || back[h] >>> 15 !== h >>> 15 || (back[h] & quietBit) === 0)
          mm.add(`${hex(h, 4)} (NaN) -> ${hex(back[h], 4)}: expected a quiet NaN with sign ${h >>> 15}`);
      } else if (back[h] !== h) {
        mm.add(`${hex(h, 4)} -> ${hex(back[h], 4)}`);
      }
    }
    expect(mm.report()).toBe('');
  });

  test('typed-array views with a byte offset are honoured', () => {
    const rng = rngFromSeed(freshSeed(`${fmt.name} views`));
    const f = new Float32Array(1000).map(() => (rng() - 0.5) * 2 ** Math.floor(rng() * 40 - 20));
    const whole = conv.fromFloat32(f);
    const part = conv.fromFloat32(f.subarray(3, 503));
    expect(Array.from(part)).toEqual(Array.from(whole.subarray(3, 503)));
    const hv = conv.toFloat32(all.subarray(0x3c01, 0x3c01 + 777));
    expect(Array.from(hv)).toEqual(Array.from(conv.toFloat32(all).subarray(0x3c01, 0x3c01 + 777)));
  });
});

// ------------------------------------------------------------------------- numpy fixture
interface Fixture {
  numpy_version: string;
  command: string;
  seed: number;
  count: number;
  edge_count: number;
  edge_labels: string[];
  input_f32_bits: number[];
  f16_bits: number[];
  bf16_bits: number[];
}
const fixture = JSON.parse(
  fs.readFileSync(path.join(__dirname, 'fixtures', 'half_rne.json'), 'utf8'),
) as Fixture;

describe('fromFloat32 against the fixture (numpy float16, Python bf16 reference)', () => {
  test('the fixture is well-formed and covers the edge cases', () => {
    expect(fixture.input_f32_bits.length).toBe(fixture.count);
    expect(fixture.f16_bits.length).toBe(fixture.count);
    expect(fixture.bf16_bits.length).toBe(fixture.count);
    expect(fixture.edge_labels.length).toBe(fixture.edge_count);
    expect(fixture.count).toBeGreaterThan(20000);
    expect(typeof fixture.numpy_version).toBe('string');
    // not degenerate: many distinct outputs across both signs, every half exponent present
    expect(new Set(fixture.f16_bits).size).toBeGreaterThan(10000);
    const exps = new Set(fixture.f16_bits.map((h) => (h >> 10) & 31));
    expect(exps.size).toBe(32);
  });

  const cases: Array<[string, Fmt, number[]]> = [
    ['float16 == numpy', F16, fixture.f16_bits],
    ['bfloat16 == Python exact-distance reference', BF16, fixture.bf16_bits],
  ];
  test.each(cases)('%s, bit for bit', (_label, fmt, expected) => {
    const conv = CONV[fmt.name as 'float16' | 'bfloat16'];
    const inBits = Uint32Array.from(fixture.input_f32_bits);
    const got = conv.fromFloat32(f32FromBits(inBits));
    expect(got.length).toBe(inBits.length);
    const mm = new Mismatches(`${fmt.name}.fromFloat32 vs fixture`);
    let nanInputs = 0;
    for (let i = 0; i < inBits.length; i++) {
      const x = inBits[i];
      const label = i < fixture.edge_count ? ` [${fixture.edge_labels[i]}]` : '';
      const isNanIn = (x & 0x7fffffff) > 0x7f800000;
      if (isNanIn) {
        nanInputs++;
        if (!isNaN16(fmt, expected[i])) mm.add(`fixture: NaN input ${hex(x, 8)} has non-NaN expectation`);
        if (!isNaN16(fmt, got[i]) || got[i] >>> 15 !== x >>> 31)
          mm.add(`in ${hex(x, 8)}${label}: expected a NaN with sign ${x >>> 31}, got ${hex(got[i], 4)}`);
      } else if (got[i] !== expected[i]) {
        mm.add(`in ${hex(x, 8)}${label}: expected ${hex(expected[i], 4)}, got ${hex(got[i], 4)}`);
      }
    }
    expect(nanInputs).toBeGreaterThan(10);
    expect(mm.report()).toBe('');
  });
});

// ------------------------------------------------------------- fresh random, TS oracle
/** Fresh random float32 inputs covering every exponent, plus exact ties of the format. */
function randomInputs(rng: () => number, fmt: Fmt, n: number): Float32Array {
  const out = new Float32Array(n);
  const bits = f32Bits(out);
  const mbits = fmt.p - 1;
  for (let i = 0; i < n; i++) {
    switch (i % 4) {
      case 0: // uniform over bit patterns
        bits[i] = u32(rng);
        break;
      case 1: // uniform over [-70000, 70000]
        out[i] = (rng() * 2 - 1) * 70000;
        break;
      case 2: // ... scaled into and below the subnormal range
        out[i] = (rng() * 2 - 1) * 70000 * 2 ** -(1 + Math.floor(rng() * 45));
        break;
      default: {
        // an exact midpoint between two neighbouring finite values of the format, or a float32 ulp off it
        const maxFiniteBits = (((1 << fmt.ebits) - 1) << mbits) - 1;
        const h = Math.floor(rng() * maxFiniteBits); // h and h+1 both finite
        const mid = (decode(fmt, h) + decode(fmt, h + 1)) / 2;
        out[i] = mid;
        if (out[i] !== mid) throw new Error(`midpoint ${mid} not a float32`);
        const nudge = Math.floor(rng() * 3) - 1;
        if (nudge !== 0 && bits[i] !== 0) bits[i] += nudge;
        if (rng() < 0.5) bits[i] ^= 0x80000000;
      }
    }
  }
  return out;
}

describe.each([F16, BF16])('$name: fresh random values vs a float64 RNE reference in TypeScript', (fmt) => {
  test('fromFloat32 gives the nearest value, ties to even, overflow to inf, -0 kept', () => {
    const conv = CONV[fmt.name as 'float16' | 'bfloat16'];
    const rng = rngFromSeed(freshSeed(`${fmt.name} random RNE`));
    const x = randomInputs(rng, fmt, 200000);
    const xb = f32Bits(x);
    const got = conv.fromFloat32(x);
    const mm = new Mismatches(`${fmt.name}.fromFloat32 vs TS reference`);
    let ties = 0;
    let nonzero = 0;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      const ref = roundRef(fmt, v);
      const val = decode(fmt, got[i]);
      if (Number.isNaN(ref)) {
        if (!Number.isNaN(val) || got[i] >>> 15 !== xb[i] >>> 31)
          mm.add(`in ${hex(xb[i], 8)} (NaN): got ${hex(got[i], 4)}`);
        continue;
      }
      if (ref !== 0) nonzero++;
      const q = Math.abs(v) / 2 ** (Math.max(Math.floor(Math.log2(Math.abs(v) || 1)), fmt.emin) - fmt.p);
      if (Number.isFinite(q) && Number.isInteger(q) && q % 2 === 1) ties++;
      if (!Object.is(val, ref)) mm.add(`in ${hex(xb[i], 8)} (${v}): expected ${ref}, got ${hex(got[i], 4)} (${val})`);
    }
    expect(nonzero).toBeGreaterThan(x.length / 2);
    expect(ties).toBeGreaterThan(1000); // the exact-midpoint cases really were exercised
    expect(mm.report()).toBe('');
  });
});

// ------------------------------------------------------------------ underflow & loss scaling
describe('float16 underflow of small gradients, rescued by loss scaling', () => {
  test('|g| in [2^-30, 2^-25) flushes to +-0 in FP16 but survives a 2^16 scale and unscales within half precision', () => {
    const rng = rngFromSeed(freshSeed('underflow'));
    const n = 10000;
    const g = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let v: number;
      do v = Math.fround(2 ** (-30 + 5 * rng()));
      while (v >= 2 ** -25 || v < 2 ** -30);
      g[i] = rng() < 0.5 ? -v : v;
    }
    const gb = f32Bits(g);
    const plain = mixprec.float16.fromFloat32(g);
    const scaled = new Float32Array(n).map((_, i) => g[i] * 65536); // exact: a power of two
    const sb = mixprec.float16.fromFloat32(scaled);
    const mm = new Mismatches('loss scaling');
    const relTol = 2 ** -11; // half precision: at most half an ulp of an 11-bit significand
    let maxRel = 0;
    for (let i = 0; i < n; i++) {
      const sign = gb[i] >>> 31;
      if (plain[i] !== sign << 15) mm.add(`g=${g[i]} (${hex(gb[i], 8)}): unscaled FP16 ${hex(plain[i], 4)} is not ${sign ? '-' : '+'}0`);
      const h = decode(F16, sb[i]);
      if (h === 0 || !Number.isFinite(h)) {
        mm.add(`g=${g[i]}: scaled FP16 ${hex(sb[i], 4)} did not survive`);
        continue;
      }
      if (sb[i] >>> 15 !== sign) mm.add(`g=${g[i]}: scaled FP16 ${hex(sb[i], 4)} lost the sign`);
      const back = h / 65536;
      const rel = Math.abs(back - g[i]) / Math.abs(g[i]);
      maxRel = Math.max(maxRel, rel);
      if (rel > relTol) mm.add(`g=${g[i]}: unscaled ${back}, relative error ${rel} > 2^-11`);
    }
    expect(mm.report()).toBe('');
    expect(maxRel).toBeGreaterThan(0); // rounding really happened on some inputs
  });
});

// ---------------------------------------------------------------------- device round trips
const backendInfo = mixprec.backends();

function deviceValues(seed: number): { values: Float32Array; finite: Float32Array } {
  const rng = rngFromSeed(seed);
  const edges = f32FromBits(Uint32Array.from(fixture.input_f32_bits.slice(0, fixture.edge_count)));
  const rand = new Float32Array(4107 - edges.length);
  for (let i = 0; i < rand.length; i++) {
    if (i % 3 === 0) f32Bits(rand)[i] = u32(rng);
    else rand[i] = (rng() * 2 - 1) * 70000 * 2 ** -Math.floor(rng() * 45);
  }
  const values = new Float32Array(4107); // odd length: exercises vector tails
  values.set(edges, 0);
  values.set(rand, edges.length);
  return { values, finite: values.filter((v) => Number.isFinite(v)) };
}

function sameBits(what: string, got: Float32Array, want: Float32Array): string {
  const mm = new Mismatches(what);
  if (got.length !== want.length) return `${what}: length ${got.length} != ${want.length}`;
  const gb = f32Bits(got);
  const wb = f32Bits(want);
  for (let i = 0; i < got.length; i++) if (gb[i] !== wb[i]) mm.add(`[${i}]: expected ${hex(wb[i], 8)}, got ${hex(gb[i], 8)}`);
  return mm.report();
}

describe.each(['cpu', 'cuda'] as const)('device round trip: %s', (device) => {
  const info = backendInfo.find((b) => b.name === device);
  if (device === 'cuda' && !info?.available) {
    test.skip(`cuda: skipped: ${info?.reason ?? 'not listed by mixprec.backends()'}`, () => undefined);
    return;
  }
  test(`${device} backend is listed and available`, () => {
    expect(info).toBeDefined();
    expect(info?.available).toBe(true);
  });

  test.each(['float16', 'bfloat16'] as const)(
    `tensor(values, {dtype: %s, device: ${device}}).toFloat32() == host conversion, and cast from float32 agrees`,
    async (dtype) => {
      const { values, finite } = deviceValues(freshSeed(`${device} ${dtype} round trip`));
      const conv = CONV[dtype];
      const want = conv.toFloat32(conv.fromFloat32(values));
      // sanity: the expectation is not trivial
      expect(want.filter((v) => v !== 0 && Number.isFinite(v)).length).toBeGreaterThan(1000);

      const t = mixprec.tensor(values, [37, 111], { dtype, device });
      expect(t.dtype).toBe(dtype);
      expect(t.device).toBe(device);
      expect(sameBits(`${device} upload ${dtype}`, await t.toFloat32(), want)).toBe('');
      t.dispose();

      const t32 = mixprec.tensor(values, [37, 111], { dtype: 'float32', device });
      expect(sameBits(`${device} float32 upload`, await t32.toFloat32(), values)).toBe('');
      const c = t32.cast(dtype);
      expect(c.dtype).toBe(dtype);
      expect(c.shape).toEqual([37, 111]);
      expect(sameBits(`${device} cast float32->${dtype}`, await c.toFloat32(), want)).toBe('');
      c.dispose();
      t32.dispose();

      // number[] data (finite values only: a JS number cannot carry a float32 NaN payload)
      const tn = mixprec.tensor(Array.from(finite), [finite.length], { dtype, device });
      expect(sameBits(`${device} number[] upload ${dtype}`, await tn.toFloat32(), conv.toFloat32(conv.fromFloat32(finite)))).toBe('');
      tn.dispose();
    },
  );
});

// ---------------------------------------------------------------------------- bad inputs
describe('bad inputs throw MixprecError E_ARG', () => {
  function expectEArg(fn: () => unknown): void {
    let caught: unknown;
    try {
      fn();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(mixprec.MixprecError);
    expect((caught as mixprec.MixprecError).code).toBe('E_ARG');
  }
  test.each(['float16', 'bfloat16'] as const)('%s', (name) => {
    const conv = CONV[name];
    expectEArg(() => conv.fromFloat32([1, 2, 3] as unknown as Float32Array));
    expectEArg(() => conv.fromFloat32(new Float64Array([1, 2, 3]) as unknown as Float32Array));
    expectEArg(() => conv.fromFloat32(new Uint16Array([1, 2, 3]) as unknown as Float32Array));
    expectEArg(() => conv.toFloat32(new Float32Array([1, 2, 3]) as unknown as Uint16Array));
    expectEArg(() => conv.toFloat32([0x3c00] as unknown as Uint16Array));
    expectEArg(() => conv.fromFloat32(undefined as unknown as Float32Array));
  });
});
