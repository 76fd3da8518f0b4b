// Numerics diagnostics: the log2 histogram and its exact FP16 classification (against the native
// RNE conversion as the oracle), the suggested loss scale, the ablations behaving as the theory
// says on a small model (loss scale 1 loses tiny gradients that dynamic scaling keeps; without
// master weights, updates below half an FP16 ulp vanish), `mixprec diagnose` / `train --plot` /
// the SVG and HTML writers, and the report rendering in a real headless Chromium.
// Random inputs are drawn fresh each run; the seed is logged (MIXPREC_TEST_SEED replays one).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mixprec from '../src';
import { diagnose } from '../src/diagnostics/diagnose';
import {
  exponentOf, FP16, fp16Fractions, Log2Histogram, MIN_EXPONENT, overflowFraction, subnormalFraction, suggestLossScale, underflowFraction,
} from '../src/diagnostics/histogram';
import { benchChart, histogramChart, trainingCurves } from '../src/diagnostics/plots';
import { reportHtml } from '../src/diagnostics/report';
import { esc, lineChart } from '../src/diagnostics/svg';
import { dtypeCode } from '../src/dtype';
import { native } from '../src/native';
import { makeRng } from './helpers/random';

const rng = makeRng('diagnostics.test');
const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-diag-'));
const randInt = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1)); // inclusive
const sign = () => (rng() < 0.5 ? -1 : 1);

/** The next float32 above / below a positive float32. */
function f32Step(x: number, dir: 1 | -1): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] += dir;
  return f[0];
}

/** The oracle: what the native FP16 conversion (the kernels' RNE) does to each value times 2^k. */
function oracle(values: Float32Array, k: number) {
  const scaled = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) scaled[i] = values[i] * 2 ** k; // exact: exponents stay in float32's normal range
  const bits = mixprec.float16.fromFloat32(scaled);
  const c = { underflow: 0, subnormal: 0, normal: 0, overflow: 0 };
  for (let i = 0; i < values.length; i++) {
    if (values[i] === 0 || !Number.isFinite(values[i])) continue;
    const e = (bits[i] >> 10) & 31, m = bits[i] & 1023;
    if (e === 31) c.overflow++;
    else if (e === 0 && m === 0) c.underflow++;
    else if (e === 0) c.subnormal++;
    else c.normal++;
  }
  return c;
}

describe('log2 histogram: bucketing', () => {
  test('exact powers of two land in their own bucket; the largest value below the next power in the same one', () => {
    const es = Array.from({ length: 40 }, () => randInt(-149, 127));
    for (const e of es) {
      const p = 2 ** e;
      expect(exponentOf(p)).toBe(e);
      expect(exponentOf(-p)).toBe(e);
      if (e < 127) expect(exponentOf(f32Step(2 ** (e + 1), -1))).toBe(e); // 2^(e+1) (1 - 2^-24), or the largest subnormal below
      const h = Log2Histogram.of(new Float32Array([p, -p]));
      expect(h.count(e)).toBe(2);
      expect(h.count(e - 1) + h.count(e + 1)).toBe(0);
      expect(h.powersOfTwo[e - MIN_EXPONENT]).toBe(2);
    }
  });

  test('hand-computed cases: 2^-24, 2^-25, just above 2^-25, FP16 subnormals, zero, inf, NaN, negatives, float32 subnormals', () => {
    const above25 = f32Step(2 ** -25, 1);
    const values = new Float32Array([2 ** -24, 2 ** -25, above25, 3 * 2 ** -20, -(2 ** -14), 0, -0, Infinity, -Infinity, NaN, -3, 1.5, 2 ** -149, 3 * 2 ** -149, 65504, 65520]);
    const h = Log2Histogram.of(values);
    expect(h.count(-24)).toBe(1);
    expect(h.count(-25)).toBe(2); // 2^-25 and the float just above it
    expect(h.count(-19)).toBe(1); // 3 * 2^-20 = 1.5 * 2^-19
    expect(h.count(-14)).toBe(1);
    expect(h.count(1)).toBe(1); // -3
    expect(h.count(0)).toBe(1); // 1.5
    expect(h.count(-149)).toBe(1);
    expect(h.count(-148)).toBe(1); // 3 * 2^-149 = 1.5 * 2^-148
    expect(h.count(15)).toBe(2); // 65504 and 65520 are both below 2^16
    expect(h.zero).toBe(2);
    expect(h.inf).toBe(2);
    expect(h.nan).toBe(1);
    expect(h.finiteNonzero).toBe(values.length - 5);
    expect(h.total).toBe(values.length);
    expect([exponentOf(0), exponentOf(Infinity), exponentOf(NaN)].every(Number.isNaN)).toBe(true);
    // What FP16 does to them (11 nonzero finite values). To zero: 2^-25 (a tie, rounds to even 0),
    // 2^-149, 3 2^-149. Subnormal: 2^-24, the float above 2^-25 (rounds up to 2^-24), 3 2^-20.
    // Overflow: 65520 (the tie between 65504 and 2^16 rounds to even: inf). Normal: -2^-14, -3, 1.5, 65504.
    const c = h.fp16Counts(0);
    expect(c).toEqual({ underflow: 3, subnormal: 3, normal: 4, overflow: 1 });
    expect(h.fp16(1)).toMatchObject({ values: 11, underflow: 3 / 11, subnormal: 3 / 11, overflow: 1 / 11 });
    expect(c).toEqual(oracle(values, 0)); // and the native conversion agrees
  });

  test('the boundaries of FP16 rounding, on both sides, after random power-of-two scales, against the native conversion', () => {
    const edges = [FP16.zeroThreshold, FP16.minSubnormal, FP16.minNormal, FP16.minNormal - 2 ** -25, FP16.max, FP16.overflowThreshold, 2 ** -15, 2 ** 15];
    for (let trial = 0; trial < 30; trial++) {
      const k = randInt(-20, 20);
      const xs: number[] = [];
      for (const t of edges) {
        const v = t * 2 ** -k; // lands exactly on the boundary once scaled by 2^k
        xs.push(v, f32Step(v, 1), f32Step(v, -1));
      }
      for (let i = 0; i < 2000; i++) xs.push(sign() * (1 + rng()) * 2 ** randInt(-60, 40)); // exponents within float32's normal range after scaling
      const values = new Float32Array(xs.map((x) => x * sign()));
      const h = Log2Histogram.of(values);
      expect({ k, ...h.fp16Counts(k) }).toEqual({ k, ...oracle(values, k) });
      const f = h.fp16(2 ** k);
      const o = oracle(values, k);
      expect(f.underflow).toBeCloseTo(o.underflow / values.length, 12);
      expect(f.overflow).toBeCloseTo(o.overflow / values.length, 12);
    }
  });

  test('merge adds counts; toJSON keeps the occupied range', () => {
    const a = new Float32Array(500).map(() => sign() * 2 ** (rng() * 40 - 30));
    const b = new Float32Array(700).map(() => sign() * 2 ** (rng() * 40 - 10));
    const m = Log2Histogram.merged([Log2Histogram.of(a), Log2Histogram.of(b)]);
    const direct = Log2Histogram.of(new Float32Array([...a, ...b]));
    expect(m.toJSON()).toEqual(direct.toJSON());
    expect(m.fp16Counts(3)).toEqual(direct.fp16Counts(3));
    const j = m.toJSON();
    expect(j.counts.reduce((s, v) => s + v, 0)).toBe(1200);
    expect(j.counts[0]).toBeGreaterThan(0);
    expect(j.counts[j.counts.length - 1]).toBeGreaterThan(0);
  });

  test('a scale that is not a power of two is E_ARG', () => {
    const h = Log2Histogram.of(new Float32Array([1, 2, 3]));
    for (const s of [3, 0, -2, NaN, Infinity, 1000])
      expect(() => h.fp16(s)).toThrow(expect.objectContaining({ code: 'E_ARG' }) as unknown as Error);
  });
});

describe('FP16 fractions on a synthetic gradient with a known distribution', () => {
  test('log-uniform magnitudes: lost / subnormal / overflow fractions match the interval lengths, unscaled and scaled', () => {
    const a = -30 - 12 * rng(), b = 10 + 12 * rng(); // log2|x| uniform in [a, b)
    const n = 200_000;
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = sign() * 2 ** (a + (b - a) * rng());
    const L = b - a;
    const clamp = (x: number) => Math.min(1, Math.max(0, x));
    const tol = (p: number) => 5 * Math.sqrt((p * (1 - p)) / n) + 2e-4;
    for (const k of [0, randInt(1, 12)]) {
      // |x 2^k| <= 2^-25 -> 0; 2^-25 < |x 2^k| < 2^-14 (minus half an ulp) -> subnormal; >= 65520 -> inf
      const under = clamp((-25 - k - a) / L);
      const sub = clamp((-14 - k - a) / L) - under;
      const over = clamp((b - (Math.log2(65520) - k)) / L);
      const f = fp16Fractions(values, 2 ** k);
      expect({ k, under: Math.abs(f.underflow - under) < tol(under) }).toEqual({ k, under: true });
      expect({ k, sub: Math.abs(f.subnormal - sub) < tol(sub) }).toEqual({ k, sub: true });
      expect({ k, over: Math.abs(f.overflow - over) < tol(over) }).toEqual({ k, over: true });
      expect(f.underflow + f.subnormal + f.normal + f.overflow).toBeCloseTo(1, 12);
      expect(underflowFraction(values, 2 ** k)).toBe(f.underflow);
      expect(subnormalFraction(values, 2 ** k)).toBe(f.subnormal);
      expect(overflowFraction(values, 2 ** k)).toBe(f.overflow);
      const o = oracle(values, k);
      expect(f.underflow).toBeCloseTo(o.underflow / n, 12);
    }
  });
});

describe('suggested loss scale', () => {
  test('a tie at 2^-25 needs one more binade: all values at 2^-e need 2^(e-24), values just above 2^-e need 2^(e-25)', () => {
    const e = randInt(26, 60);
    const exact = Log2Histogram.of(new Float32Array(randInt(10, 100)).fill(sign() * 2 ** -e));
    expect(suggestLossScale(exact)).toMatchObject({ scale: 2 ** (e - 24), exponent: e - 24 });
    const above = Log2Histogram.of(new Float32Array(randInt(10, 100)).fill(f32Step(2 ** -e, 1)));
    expect(suggestLossScale(above)).toMatchObject({ scale: 2 ** (e - 25), exponent: e - 25 });
  });

  test('a tail below 0.1% is tolerated, above 0.1% it sets the scale', () => {
    const n = 10_000, eBig = randInt(-34, -26), eTail = randInt(-55, -45);
    const make = (tail: number) => Log2Histogram.of(new Float32Array(n).map((_, i) => (i < tail ? 2 ** eTail : 2 ** eBig) * sign()));
    // 9 of 10,000 (0.09%): only the bulk must survive: 2^eBig 2^k >= 2^-24
    expect(suggestLossScale(make(9)).scale).toBe(2 ** (-24 - eBig));
    // 11 of 10,000 (0.11%): the tail too: 2^eTail 2^k >= 2^-24
    const s = suggestLossScale(make(11));
    expect(s.scale).toBe(2 ** (-24 - eTail));
    expect(s.at!.underflow).toBe(0);
    expect(s.maxSafeScale).toBe(2 ** (15 - eBig)); // 2^eBig 2^k <= 2^15 (65536 overflows)
  });

  test('impossible when the values span more than FP16 can hold: null, a reason, and the largest safe scale', () => {
    const n = 1000;
    const values = new Float32Array(n).map((_, i) => (i < 20 ? 2 ** -40 : i < 21 ? 1.5 * 2 ** 10 : 2 ** -5));
    const s = suggestLossScale(Log2Histogram.of(values));
    expect(s.scale).toBeNull();
    expect(s.reason).toMatch(/impossible.*2\^16.*2\^5/);
    expect(s.maxSafeScale).toBe(2 ** 5); // 1.5 * 2^10 * 2^5 = 49152 fits; * 2^6 = 98304 does not
    expect(suggestLossScale(new Log2Histogram()).scale).toBeNull();
    expect(suggestLossScale(Log2Histogram.of([0, 0, NaN])).reason).toMatch(/no nonzero finite/);
  });

  test('values that need no scaling: 1 by default; below 1 only when asked (minScale: 0)', () => {
    const e = randInt(-10, 5);
    const h = Log2Histogram.of(new Float32Array(100).map(() => sign() * (1 + 2 ** -20 + rng() * 0.9) * 2 ** e));
    expect(suggestLossScale(h).scale).toBe(1);
    // (1 + r) 2^e 2^k with 0 < r < 0.9: at k = -25 - e every value is just above 2^-25 and rounds up to 2^-24; one binade lower all round to 0
    expect(suggestLossScale(h, { minScale: 0 }).scale).toBe(2 ** (-25 - e));
    // overflowing already at 1: null at minScale 1, a scale below 1 otherwise
    const big = Log2Histogram.of(new Float32Array([70000, 1]));
    expect(suggestLossScale(big).scale).toBeNull();
    expect(suggestLossScale(big).maxSafeScale).toBe(0.5);
    expect(suggestLossScale(big, { minScale: 0 }).scale).toBe(2 ** -24);
  });

  test('random mixtures: the suggestion is the smallest 2^k >= 1 that the native conversion says loses < 0.1% and overflows nothing', () => {
    for (let trial = 0; trial < 25; trial++) {
      const xs: number[] = [];
      const clusters = randInt(1, 4);
      for (let c = 0; c < clusters; c++) {
        const center = randInt(-55, 12), width = rng() * 6, count = randInt(1, 3000);
        for (let i = 0; i < count; i++) xs.push(sign() * 2 ** (center + width * (rng() - 0.5)));
      }
      const values = new Float32Array(xs);
      let expected: number | null = null;
      for (let k = 0; k <= 60; k++) {
        const o = oracle(values, k);
        if (o.underflow / values.length < 0.001) { expected = o.overflow === 0 ? 2 ** k : null; break; }
      }
      expect({ trial, scale: suggestLossScale(Log2Histogram.of(values)).scale }).toEqual({ trial, scale: expected });
    }
  });
});

// ------------------------------------------------------------------------------------ ablations

const { train: mnist } = mixprec.data.loadMnist();
function rows(from: number, n: number) {
  return { x: mnist.x.slice(from * 784, (from + n) * 784), y: (mnist.y as Int32Array).slice(from, from + n) };
}
const smallMlp = (seed: number, hidden = 32) => mixprec.sequential([mixprec.layers.linear(784, hidden, { activation: 'relu' }), mixprec.layers.linear(hidden, 10)], { seed });
const grad = (t: mixprec.Trainer, name: string) => t.store.gradients().find((g) => g.name === name)!.data;

describe('ablations behave as the theory says (small model, first backward / a few steps, CPU)', () => {
  test('tiny gradients: a loss scale of 1 rounds them to zero in FP16; dynamic scaling (2^16) keeps them', async () => {
    const seed = randInt(0, 1e6), from = randInt(0, 50_000), B = 32;
    const { x, y } = rows(from, B);
    // Shrink the inputs until the FP32 first-layer weight gradients are below FP16's zero threshold
    // unscaled, but not after x 2^16: the histogram predicts that, the FP16 kernels must follow.
    let chosen: { j: number; g32: Float32Array; xs: Float32Array; predicted: number } | null = null;
    for (let j = 8; j <= 24 && !chosen; j++) {
      // the inputs as FP16 holds them (tiny ones are FP16 subnormals), so FP32 sees the same x
      const xs = mixprec.float16.toFloat32(mixprec.float16.fromFloat32(x.map((v) => v * 2 ** -j)));
      const t = new mixprec.Trainer(smallMlp(seed), { precision: 'fp32', device: 'cpu', seed });
      await t.backward(mixprec.tensor(xs, [B, 784], { device: 'cpu' }), y);
      const g32 = grad(t, '0.weight');
      t.dispose();
      const h = Log2Histogram.of(g32);
      if (h.fp16(1).underflow > 0.9 && h.fp16(2 ** 16).underflow < 0.001 && h.finiteNonzero > 1000) chosen = { j, g32, xs, predicted: h.fp16(1).underflow };
    }
    expect(chosen).not.toBeNull();
    const { g32, xs } = chosen!;
    const firstBackward = async (lossScale: 'dynamic' | number) => {
      const t = new mixprec.Trainer(smallMlp(seed), { precision: 'fp16', lossScale, device: 'cpu', seed });
      const S = t.scaler.scale;
      await t.backward(mixprec.tensor(xs, [B, 784], { device: 'cpu' }), y);
      const g = grad(t, '0.weight');
      t.dispose();
      return { g, S };
    };
    const none = await firstBackward(1);
    const dyn = await firstBackward('dynamic');
    expect(none.S).toBe(1);
    expect(dyn.S).toBe(2 ** 16);
    let nonzero32 = 0, zeroNone = 0, zeroDyn = 0, err = 0, ref = 0;
    for (let i = 0; i < g32.length; i++) {
      if (g32[i] === 0) continue;
      nonzero32++;
      if (none.g[i] === 0) zeroNone++;
      if (dyn.g[i] === 0) zeroDyn++;
      err += (dyn.g[i] / dyn.S - g32[i]) ** 2;
      ref += g32[i] ** 2;
    }
    // lost without loss scaling, as many as the histogram of the FP32 gradients predicts
    expect(zeroNone / nonzero32).toBeGreaterThan(0.9);
    expect(Math.abs(zeroNone / nonzero32 - chosen!.predicted)).toBeLessThan(0.005);
    expect(zeroDyn / nonzero32).toBeLessThan(0.01); // kept with it
    expect(Math.sqrt(err / ref)).toBeLessThan(0.05); // and close to the FP32 gradient once unscaled
  });

  test('no master weights: with updates below half an FP16 ulp the weights stay bitwise equal; with masters they move', async () => {
    const seed = randInt(0, 1e6), B = 64;
    const { x, y } = rows(randInt(0, 50_000), B);
    // Every parameter FP16-representable with a magnitude in [2^-6, 2^-5): an FP16 ulp of 2^-16 there, half of it 2^-17.
    const model = () => {
      const m = smallMlp(seed, 16);
      m.loadParameters(m.parameters().map((p) => ({ name: p.name, data: p.data.map(() => sign() * (1 + randInt(0, 1023) / 1024) * 2 ** -6) })));
      return m;
    };
    const init = model().parameters();
    const make = (masterWeights: boolean, lr: number) => {
      const m = smallMlp(seed, 16);
      m.loadParameters(init);
      return new mixprec.Trainer(m, { precision: 'fp16', masterWeights, device: 'cpu', seed, optimizer: { type: 'sgd', lr } });
    };
    // The gradient scale, from a first backward: lr so that every update is <= 2^-20 (< 2^-18: no
    // rounding can move an FP16 weight), yet far above FP32's resolution there (2^-30).
    const probe = make(true, 1);
    await probe.backward(mixprec.tensor(x, [B, 784], { device: 'cpu' }), y);
    let gmax = 0;
    for (const p of probe.store.gradients()) for (const v of p.data) gmax = Math.max(gmax, Math.abs(v) / probe.scaler.scale);
    probe.dispose();
    expect(gmax).toBeGreaterThan(0);
    const lr = 2 ** -20 / gmax;
    const withMaster = make(true, lr), without = make(false, lr);
    const w0 = withMaster.store.workingParameters();
    expect(without.store.workingParameters()).toEqual(w0);
    const xt = mixprec.tensor(x, [B, 784], { device: 'cpu' });
    for (let s = 0; s < 40; s++) {
      await withMaster.step(xt, y);
      await without.step(xt, y);
    }
    const changed = (a: { data: Float32Array }[], b: { data: Float32Array }[]) => {
      let c = 0, n = 0;
      a.forEach((p, i) => p.data.forEach((v, j) => { n++; if (!Object.is(v, b[i].data[j])) c++; }));
      return { c, n };
    };
    // Without masters: nothing moved, bitwise, and the "master" is the rounded weight.
    expect(changed(without.store.workingParameters(), w0).c).toBe(0);
    expect(changed(without.store.parameters(), w0).c).toBe(0);
    // With masters: the FP32 copy took the updates, and the accumulated ones crossed FP16 rounding.
    const mm = changed(withMaster.store.parameters(), init);
    expect(mm.c / mm.n).toBeGreaterThan(0.5);
    expect(changed(withMaster.store.workingParameters(), w0).c).toBeGreaterThan(0);
    expect(withMaster.scaler.counters.skippedSteps + without.scaler.counters.skippedSteps).toBe(0);
    withMaster.dispose();
    without.dispose();
  });
});

// ------------------------------------------------------------------------------------ diagnose

describe('diagnose()', () => {
  const seed = randInt(0, 1e6);
  const data = { train: { ...mnist, n: 600, x: mnist.x.slice(0, 600 * 784), y: (mnist.y as Int32Array).slice(0, 600) } };
  let out: Awaited<ReturnType<typeof diagnose>>;
  beforeAll(async () => {
    out = await diagnose({ data, datasetName: 'MNIST <subset> & co', steps: 3, batchSize: 50, hidden: [24], seed, device: 'cpu', ablation: { steps: 12, lr: 1e-4, optimizer: 'adam', subset: 300, batchSize: 50 } });
  });

  test('its fractions are the native conversion of the same FP32 gradients (first step, recomputed here)', async () => {
    const one = await diagnose({ data, steps: 1, batchSize: 50, hidden: [24], seed, device: 'cpu' });
    const { mlp } = await import('../src/train/cli_train');
    const t = new mixprec.Trainer(mlp(784, [24], 10, 'relu', seed), { precision: 'fp32', lossScale: 'none', device: 'cpu', seed });
    const b = mixprec.data.batches(data.train, { batchSize: 50, shuffle: true, seed, epoch: 0 }).next().value!;
    const acts: Float32Array[] = [];
    await t.backward(mixprec.tensor(b.x, [50, 784], { device: 'cpu' }), b.y as Int32Array, { observe: (_l, g) => acts.push(native().download(g.handle(), dtypeCode(g.dtype), g.size)) });
    const w = grad(t, '0.weight');
    t.dispose();
    const g = one.result.groups.find((x) => x.name === '0.weight')!;
    const o = oracle(w, 0), o16 = oracle(w, 16);
    const nz = o.underflow + o.subnormal + o.normal + o.overflow;
    expect(g.values).toBe(w.length);
    expect(g.unscaled.underflow).toBeCloseTo(o.underflow / nz, 12);
    expect(g.unscaled.subnormal).toBeCloseTo(o.subnormal / nz, 12);
    expect(g.current.underflow).toBeCloseTo(o16.underflow / nz, 12);
    expect(g.zeroFraction).toBeCloseTo(w.filter((v) => v === 0).length / w.length, 12);
    expect(acts).toHaveLength(2); // observed once per layer, last layer first
    const a0 = one.result.groups.find((x) => x.name === 'layer 0 output')!;
    const oa = oracle(acts[1], 0);
    expect(a0.values).toBe(50 * 24);
    expect(a0.unscaled.underflow).toBeCloseTo(oa.underflow / (oa.underflow + oa.subnormal + oa.normal + oa.overflow), 12);
  });

  test('result: per-parameter and per-layer groups, overall fractions, a power-of-two suggestion, four ablation runs', () => {
    const r = out.result;
    expect(r.groups.map((g) => g.name)).toEqual(['0.weight', '0.bias', '1.weight', '1.bias', 'layer 0 output', 'layer 1 output', 'all weight gradients', 'all activation gradients', 'all gradients']);
    expect(r.groups[0].values).toBe(3 * 24 * 784);
    expect(r.groups[4].values).toBe(3 * 50 * 24);
    expect(r.underflowFraction).toBeGreaterThanOrEqual(0);
    expect(r.underflowFraction).toBeLessThan(1);
    const all = out.histograms.get('all gradients')!;
    expect(all.total).toBe(r.groups.filter((g) => g.kind !== 'all').reduce((s, g) => s + g.values, 0));
    expect(r.underflowFraction).toBe(all.fp16(1).underflow);
    if (r.suggestedLossScale !== null) {
      expect(Number.isInteger(Math.log2(r.suggestedLossScale))).toBe(true);
      expect(all.fp16(r.suggestedLossScale).underflow).toBeLessThan(0.001);
      expect(all.fp16(r.suggestedLossScale).overflow).toBe(0);
      if (r.suggestedLossScale > 1) expect(all.fp16(r.suggestedLossScale / 2).underflow).toBeGreaterThanOrEqual(0.001);
    }
    expect(r.ablation!.runs.map((x) => x.name)).toEqual(['fp32', 'fp16', 'fp16-no-loss-scaling', 'fp16-no-master-weights']);
    for (const run of r.ablation!.runs) {
      expect(run.losses).toHaveLength(12);
      expect(run.scales).toHaveLength(12);
      expect(run.losses.every(Number.isFinite)).toBe(true);
    }
    const byName = Object.fromEntries(r.ablation!.runs.map((x) => [x.name, x]));
    expect(byName['fp16-no-loss-scaling'].scales.every((s) => s === 1)).toBe(true);
    expect(byName.fp16.scales[0]).toBe(2 ** 16);
    expect(byName.fp32.scales.every((s) => s === 1)).toBe(true);
  });

  test('the report: self-contained HTML, one SVG per histogram plus the ablation charts, text escaped, no NaN', () => {
    const html = reportHtml(out.result, out.histograms);
    expect(html).not.toMatch(/<script|<link|src=|href=|@import|url\((?!#)/i);
    expect((html.match(/<svg /g) ?? []).length).toBe(1 + 8 + 2);
    expect(html).toContain('MNIST &lt;subset&gt; &amp; co');
    expect(html).not.toContain('<subset>');
    expect(html).not.toMatch(/="[^"]*(NaN|Infinity|undefined)[^"]*"/);
    // the FP16 ranges are marked on the histograms
    for (const s of ['2^-24', '2^-14', '65504', 'subnormal', 'normal FP16', '→ inf', '→ 0']) expect(html).toContain(esc(s));
  });

  test('bad options are E_ARG', async () => {
    await expect(diagnose({ data, steps: 0, batchSize: 10, hidden: [4], seed: 0, device: 'cpu' })).rejects.toMatchObject({ code: 'E_ARG' });
    await expect(diagnose({ data, steps: 1, batchSize: 10, hidden: [4], seed: 0, device: 'cpu', currentScale: 1000 })).rejects.toMatchObject({ code: 'E_ARG' });
  });
});

describe('SVG writers', () => {
  test('escaping', () => {
    expect(esc(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    const svg = lineChart({ title: '<t>', xLabel: 'x&', yLabel: 'y', series: [{ name: '"s"', points: [[0, 1], [1, NaN], [2, 3]] }] });
    expect(svg).toContain('&lt;t&gt;');
    expect(svg).toContain('x&amp;');
    expect(svg).toContain('&quot;s&quot;');
    expect(svg).not.toMatch(/="[^"]*(NaN|Infinity|undefined)/);
  });

  test('training curves: one marker per skipped step, the scale on a log2 axis', () => {
    const records = Array.from({ length: 200 }, (_, i) => ({ step: i + 1, loss: 2 - i / 200 + rng() * 0.1, scale: 2 ** (16 - Math.floor(i / 50)), skipped: false }));
    const skipped = new Set(Array.from({ length: randInt(1, 6) }, () => randInt(1, 200)));
    for (const s of skipped) records[s - 1].skipped = true;
    const svg = trainingCurves(records, 'run');
    expect((svg.match(/<circle /g) ?? []).length).toBe(skipped.size + 1); // + the legend's
    expect(svg).toContain(`skipped step (inf/NaN gradients): ${skipped.size}`);
    expect(svg).toContain('2^16');
  });

  test('histogram chart: bars for occupied buckets only, zero bar, overlays', () => {
    const h = Log2Histogram.of(new Float32Array([0, 0, 2 ** -30, 2 ** -3, 2 ** -3, 1]));
    const svg = histogramChart(h, { title: 't', overlays: [{ scale: 2 ** 10, label: 'x' }, { scale: 1, label: 'skipped' }] });
    const bars = svg.match(/<title>\[2\^-?\d+, 2\^-?\d+\): \d+ values/g) ?? [];
    expect(bars).toEqual(['<title>[2^-30, 2^-29): 1 values', '<title>[2^-3, 2^-2): 2 values', '<title>[2^0, 2^1): 1 values']);
    expect(svg).toContain('<title>= 0: 2 values (33.3%)</title>');
    expect(svg).toContain('× 2^10 (x)');
    expect(svg).not.toContain('skipped');
  });

  test('bench chart: fp32 / fp16 / bf16 bars from gemm and train rows; null without them', () => {
    const g = () => Math.round(rng() * 1000 * 10) / 10;
    const result = {
      gemm: { rows: [{ device: 'cpu', size: 256, dtype: 'float32', gflops: g() }, { device: 'cpu', size: 256, dtype: 'float16', gflops: g() }, { device: 'cpu', size: 256, dtype: 'bfloat16', gflops: g() }] },
      train: { rows: [{ device: 'cpu', precision: 'fp32', samplesPerSecond: g() }, { device: 'cpu', precision: 'fp16', samplesPerSecond: g() }, { device: 'cpu', precision: 'torch-amp', samplesPerSecond: g() }] },
      machine: { cpu: 'A <CPU>' },
    };
    const svg = benchChart(result)!;
    for (const r of result.gemm.rows) expect(svg).toContain(`cpu n=256 ${({ float32: 'fp32', float16: 'fp16', bfloat16: 'bf16' } as Record<string, string>)[r.dtype]}: `);
    const titles = [...svg.matchAll(/<title>([^<]*): ([^<]*)<\/title><\/rect>/g)].map((m) => m[1]);
    expect(titles).toEqual(['cpu n=256 fp32', 'cpu n=256 fp16', 'cpu n=256 bf16', 'cpu fp32', 'cpu fp16']);
    expect(svg).toContain('A &lt;CPU&gt;');
    expect(benchChart({ machine: {} })).toBeNull();
  });
});

// ------------------------------------------------------------------------------------ the CLI

const haveCli = fs.existsSync(cli);
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000, cwd: root });

(haveCli ? describe : describe.skip)(`the CLI (dist/cli.js${haveCli ? '' : ' missing: run tsc -p tsconfig.json'})`, () => {
  test('train --help documents --no-master-weights, --loss-scale 1 and --plot; diagnose --help its flags', () => {
    const h = run('train', '--help').stdout;
    expect(h).toMatch(/--no-master-weights/);
    expect(h).toMatch(/1 = the ablation without loss scaling/);
    expect(h).toMatch(/--plot <file>/);
    const d = run('diagnose', '--help').stdout;
    for (const f of ['--steps', '--out', '--json', '--hidden', '--batch-size', '--seed', '--dataset', '--svg']) expect(d).toContain(f);
    expect(run('diagnose', '--current-scale', '1000').status).toBe(2);
    expect(run('diagnose', '--steps', '0').status).toBe(2);
  });

  test('train --no-master-weights --loss-scale 1 --plot: reaches the Trainer, writes the curves', () => {
    const dir = tmp();
    const plot = path.join(dir, 'curves.svg'), ckpt = path.join(dir, 'c.mpk');
    const r = run('train', '--epochs', '1', '--hidden', '8', '--batch-size', '1024', '--device', 'cpu', '--json', '--no-master-weights', '--loss-scale', '1', '--plot', plot, '--save', ckpt, '--seed', String(randInt(0, 1000)));
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ event: 'start', precision: 'fp16', masterWeights: false });
    expect(lines[lines.length - 1]).toMatchObject({ event: 'summary', lossScale: { final: 1, enabled: true, dynamic: false } });
    const svg = fs.readFileSync(plot, 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('no master weights');
    expect(svg).toContain('loss scale static 1');
    expect(svg).not.toMatch(/="[^"]*(NaN|Infinity|undefined)/);
    // the checkpoint fixes the ablation: contradicting it on --resume is a usage error
    expect(run('train', '--resume', ckpt, '--no-master-weights').status).toBe(2);
  });

  test('diagnose --json: the last line holds underflowFraction and suggestedLossScale; --out and --svg are written', () => {
    const dir = tmp();
    const report = path.join(dir, 'report.html'), svgFile = path.join(dir, 'h.svg');
    const r = run('diagnose', '--steps', '4', '--hidden', '16', '--batch-size', '64', '--ablation-steps', '8', '--ablation-subset', '512', '--device', 'cpu', '--json', '--out', report, '--svg', svgFile, '--seed', String(randInt(0, 1000)));
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(j.underflowFraction).toBeGreaterThanOrEqual(0);
    expect(j.underflowFraction).toBeLessThanOrEqual(1);
    expect(j.suggestedLossScale === null || Number.isInteger(Math.log2(j.suggestedLossScale))).toBe(true);
    expect(j.currentLossScale).toBe(65536);
    expect(fs.readFileSync(report, 'utf8')).toMatch(/^<!DOCTYPE html>/);
    expect(fs.readFileSync(svgFile, 'utf8')).toMatch(/^<svg xmlns=/);
    const text = run('diagnose', '--steps', '2', '--hidden', '8', '--ablation-steps', '0', '--device', 'cpu');
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/all gradients\s+\d+/);
    expect(text.stdout).toMatch(/Suggested loss scale: 2\^-?\d+|No loss scale works/);
  });
});

// ------------------------------------------------------------------------------------ Chromium

const chromium = spawnSync('sh', ['-c', 'command -v chromium || command -v chromium-browser || command -v google-chrome'], { encoding: 'utf8' }).status === 0;
const script = path.join(root, 'scripts', 'check-report.sh');
(chromium ? test : test.skip)(`the report renders in headless Chromium without console errors${chromium ? '' : ' — SKIPPED: no chromium on PATH (apt-get install -y chromium)'}`, async () => {
  const dir = tmp();
  const seed = randInt(0, 1000);
  const { result, histograms } = await diagnose({
    data: { train: { ...mnist, n: 400, x: mnist.x.slice(0, 400 * 784), y: (mnist.y as Int32Array).slice(0, 400) } },
    steps: 2, batchSize: 40, hidden: [12, 12], seed, device: 'cpu', ablation: { steps: 6, lr: 1e-4, optimizer: 'adam', subset: 200, batchSize: 40 },
  });
  const good = path.join(dir, 'report.html');
  fs.writeFileSync(good, reportHtml(result, histograms));
  const shot = path.join(dir, 'shot.png');
  const r = spawnSync(script, [good, '--min-svgs', String(1 + 11 + 2), '--screenshot', shot, '--json'], { encoding: 'utf8', timeout: 120_000 });
  const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
  expect({ status: r.status, failures: j.failures }).toEqual({ status: 0, failures: [] });
  expect(j.svgs).toBe(14);
  expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
  // The check can fail: a console error, an exception, a remote stylesheet, a NaN in an SVG.
  const bad = path.join(dir, 'bad.html');
  fs.writeFileSync(bad, reportHtml(result, histograms).replace('</body>', '<svg width="5" height="5"><rect width="NaN" height="1"/></svg><script>console.error("x")</script></body>'));
  const rb = spawnSync(script, [bad, '--json'], { encoding: 'utf8', timeout: 120_000 });
  expect(rb.status).toBe(1);
  const jb = JSON.parse(rb.stdout.trim().split('\n').pop() ?? '{}');
  expect(jb.failures.join('\n')).toMatch(/console\.error: x/);
  expect(jb.failures.join('\n')).toMatch(/NaN/);
});
