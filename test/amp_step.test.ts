// The fused mixed-precision step over a parameter store, on every available backend, against
// float64 references of PyTorch's semantics written in the test (test/helpers/optim_ref.ts).
import * as mixprec from '../src';
import { describeEachBackend } from './helpers/backends';
import { makeRng } from './helpers/random';
import { RefHyper, RefOptimizer } from './helpers/optim_ref';
import { relErr } from './helpers/reference';

const { GradScaler } = mixprec.amp;
const rng = makeRng('amp_step.test');
type Precision = mixprec.amp.Precision;
const LOW: Record<Precision, mixprec.DType> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };

// Odd sizes: views that are not multiples of any vector width, plus padding between them.
const SPECS = [{ name: 'w1', shape: [37, 13] }, { name: 'b1', shape: [37] }, { name: 'w2', shape: [3, 37] }, { name: 'b2', shape: [3] }];

function normal(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = rng() || 1e-12, v = rng();
    a[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return a;
}

function codeOf(f: () => unknown): string {
  try { f(); } catch (e) { expect(e).toBeInstanceOf(mixprec.MixprecError); return (e as mixprec.MixprecError).code; }
  return 'no error';
}

/** Values as the gradient dtype stores them. */
function roundTo(dtype: mixprec.DType, x: Float32Array): Float32Array {
  if (dtype === 'float16') return mixprec.float16.toFloat32(mixprec.float16.fromFloat32(x));
  if (dtype === 'bfloat16') return mixprec.bfloat16.toFloat32(mixprec.bfloat16.fromFloat32(x));
  return x;
}

const flat = (entries: { data: Float32Array }[]) => Float32Array.from(entries.flatMap((e) => Array.from(e.data)));

function newStore(precision: Precision, device: mixprec.Device) {
  const store = mixprec.amp.parameterStore(SPECS, { precision, device });
  const init = SPECS.map((s) => ({ name: s.name, data: normal(s.shape.reduce((a, b) => a * b, 1)) }));
  store.loadParameters(init);
  return { store, init: flat(init) };
}

/** Random scaled gradients for every parameter; returns them as stored (rounded to the gradient dtype). */
function loadRandomGrads(store: mixprec.amp.ParameterStore, scale: number, magnitude = 1e-2): Float32Array {
  const entries = SPECS.map((s) => ({ name: s.name, data: normal(s.shape.reduce((a, b) => a * b, 1), magnitude * scale) }));
  store.loadGradients(entries);
  return roundTo(store.gradDtype, flat(entries));
}

describeEachBackend('parameter store', (device) => {
  test('views are 16-byte aligned, in order; parameters() returns the masters; the working copy is RNE(master)', () => {
    for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
      const { store, init } = newStore(precision, device);
      expect(store.views.map((v) => v.name)).toEqual(SPECS.map((s) => s.name));
      for (const v of store.views) expect(v.offset % 8).toBe(0);
      const params = store.parameters();
      expect(params.map((p) => p.shape)).toEqual(SPECS.map((s) => s.shape));
      expect(flat(params)).toEqual(init);
      expect(flat(store.workingParameters())).toEqual(roundTo(LOW[precision], init));
      store.dispose();
    }
  });

  test('bad loads are typed errors and write nothing', () => {
    const { store, init } = newStore('fp16', device);
    expect(codeOf(() => store.loadParameters([{ name: 'w1', data: new Float32Array(37 * 13) }, { name: 'nope', data: [1] }]))).toBe('E_ARG');
    expect(codeOf(() => store.loadParameters([{ name: 'b1', data: new Float32Array(36) }]))).toBe('E_SHAPE');
    expect(codeOf(() => store.loadParameters([{ name: 'b2', data: 'abc' as never }]))).toBe('E_ARG');
    expect(codeOf(() => store.loadGradients([{ name: 'b2', data: [1, 2] }]))).toBe('E_SHAPE');
    expect(flat(store.parameters())).toEqual(init);
    expect(codeOf(() => mixprec.amp.parameterStore([{ name: 'a', shape: [2] }, { name: 'a', shape: [3] }], { device }))).toBe('E_ARG');
    expect(codeOf(() => mixprec.amp.parameterStore([{ name: 'a', shape: [2.5] }], { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.amp.parameterStore([{ name: 'a', shape: [2] }], { precision: 'fp8' as never, device }))).toBe('E_ARG');
    expect(codeOf(() => mixprec.amp.parameterStore([], { device }))).toBe('E_ARG');
  });
});

describeEachBackend('unscale / inf-check / norm', (device) => {
  test('unscaling finite gradients is exact: float32(g) * float32(1 / float64(S))', () => {
    for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
      const { store } = newStore(precision, device);
      const S = 3 * 2 ** (8 + Math.floor(rng() * 8)); // not a power of two: 1/S is inexact
      const scaler = new GradScaler({ initScale: S });
      const g = loadRandomGrads(store, S);
      const opt = mixprec.optim.sgd({ lr: 0.1 });
      expect(scaler.unscale(store, opt)).toBe(false);
      const inv = Math.fround(1 / S);
      const expected = g.map((x) => Math.fround(x * inv));
      expect(flat(store.unscaledGradients())).toEqual(expected);
      store.dispose();
    }
  });

  test('inf or NaN at any position of any parameter is found exactly once, and the step is skipped', async () => {
    for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
      const { store } = newStore(precision, device);
      const scaler = new GradScaler({ initScale: 1024, dynamic: false });
      const opt = mixprec.optim.adam();
      let skipped = 0;
      for (const spec of SPECS) {
        const n = spec.shape.reduce((a, b) => a * b, 1);
        for (const pos of new Set([0, 1, n >> 1, n - 2, n - 1].filter((p) => p >= 0 && p < n))) {
          for (const bad of [Infinity, -Infinity, NaN]) {
            loadRandomGrads(store, 1024);
            const data = normal(n, 1);
            data[pos] = bad;
            store.loadGradients([{ name: spec.name, data }]);
            const r = await mixprec.amp.step(store, opt, scaler);
            expect(r.skipped).toBe(true);
            expect(r.gradNorm).toBe(Infinity);
            skipped++;
            expect(scaler.counters.skippedSteps).toBe(skipped);
          }
        }
      }
      loadRandomGrads(store, 1024);
      expect((await mixprec.amp.step(store, opt, scaler)).skipped).toBe(false);
      expect(opt.stepCount).toBe(1);
      store.dispose();
    }
  });

  test('the global norm matches float64 over the unscaled gradients', async () => {
    const { store } = newStore('fp16', device);
    const g = loadRandomGrads(store, 4096, 0.1);
    const r = await mixprec.amp.step(store, mixprec.optim.sgd(), 4096);
    let ss = 0;
    for (const x of g) ss += (x / 4096) ** 2;
    expect(Math.abs(r.gradNorm - Math.sqrt(ss)) / Math.sqrt(ss)).toBeLessThan(1e-5);
  });
}, { everyCpuIsa: true });

const HYPERS: RefHyper[] = [
  { kind: 'sgd', lr: 0.05 },
  { kind: 'sgd', lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 },
  { kind: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-2 },
  { kind: 'adam', lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
  { kind: 'adam', lr: 1e-2, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 1e-2 },
  { kind: 'adamw', lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 },
];

function makeOptimizer(h: RefHyper): mixprec.Optimizer {
  if (h.kind === 'sgd') return mixprec.optim.sgd({ lr: h.lr, momentum: h.momentum, dampening: h.dampening, nesterov: h.nesterov, weightDecay: h.weightDecay });
  const o = { lr: h.lr, betas: [h.beta1 ?? 0.9, h.beta2 ?? 0.999] as [number, number], eps: h.eps, weightDecay: h.weightDecay ?? 0 };
  return h.kind === 'adam' ? mixprec.optim.adam(o) : mixprec.optim.adamw(o);
}

describeEachBackend('fused optimizers', (device) => {
  for (const h of HYPERS) {
    test(`${h.kind} ${JSON.stringify(h)}: 25 steps with random gradients (some overflowing) == float64 reference; working copy == RNE(master)`, async () => {
      for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
        const { store, init } = newStore(precision, device);
        const opt = makeOptimizer(h);
        const scaler = new GradScaler({ initScale: 2 ** 12, growthInterval: 3 });
        const ref = new RefOptimizer(h, Float64Array.from(init));
        for (let step = 0; step < 25; step++) {
          const S = scaler.scale;
          const g = loadRandomGrads(store, S);
          const overflow = step % 7 === 5;
          if (overflow) store.loadGradients([{ name: 'b2', data: [1, NaN, 1] }]);
          const r = await mixprec.amp.step(store, opt, scaler);
          expect(r.skipped).toBe(overflow);
          if (!overflow) ref.step(Array.from(g, (x) => x / S));
        }
        const master = flat(store.parameters());
        // Padding in store.views is skipped by parameters(); the reference covers only views.
        const err = relErr(master, ref.p);
        if (!(err < 2e-6)) throw new Error(`${precision}: master rel err ${err}`);
        expect(opt.stepCount).toBe(ref.t);
        const working = flat(store.workingParameters());
        expect(working).toEqual(roundTo(LOW[precision], master));
        store.dispose();
      }
    });
  }

  test('a skipped step leaves masters, working copy, moments and step count bitwise unchanged', async () => {
    for (const kind of ['sgd', 'adam', 'adamw'] as const) {
      const { store } = newStore('fp16', device);
      const opt = kind === 'sgd' ? mixprec.optim.sgd({ momentum: 0.9 }) : mixprec.optim[kind]();
      const scaler = new GradScaler({ initScale: 256 });
      loadRandomGrads(store, 256);
      await mixprec.amp.step(store, opt, scaler);
      const before = { p: store.parameters(), w: store.workingParameters(), s: opt.stateDict() };
      const g = loadRandomGrads(store, 256);
      g[7] = Infinity;
      store.loadGradients([{ name: 'w1', data: g.slice(0, 37 * 13).map((x, i) => (i === 7 ? Infinity : x)) }]);
      const r = await mixprec.amp.step(store, opt, scaler);
      expect(r.skipped).toBe(true);
      expect(scaler.scale).toBe(128);
      expect(store.parameters()).toEqual(before.p);
      expect(store.workingParameters()).toEqual(before.w);
      expect(opt.stateDict()).toEqual(before.s);
      store.dispose();
    }
  });

  test('clipping: clip then update equals the unscaled-FP32 reference with PyTorch\'s clip_grad_norm_ coefficient', async () => {
    const { store, init } = newStore('fp32', device);
    const S = 1024;
    const g = loadRandomGrads(store, S, 1);
    const maxNorm = 0.5;
    const r = await mixprec.amp.step(store, mixprec.optim.sgd({ lr: 0.1 }), S, { maxNorm });
    const u = Array.from(g, (x) => x / S);
    const norm = Math.sqrt(u.reduce((a, x) => a + x * x, 0));
    expect(r.gradNorm).toBeCloseTo(norm, 4);
    const coef = Math.min(1, maxNorm / (norm + 1e-6));
    expect(coef).toBeLessThan(1); // the case actually clips
    const expected = Array.from(init, (p, i) => p - 0.1 * u[i] * coef);
    expect(relErr(flat(store.parameters()), expected)).toBeLessThan(1e-6);
    // and the applied update has the clipped norm
    const applied = Math.sqrt(Array.from(flat(store.parameters()), (p, i) => ((init[i] - p) / 0.1) ** 2).reduce((a, b) => a + b, 0));
    expect(applied).toBeCloseTo(maxNorm, 4);
  });

  test('unscale() then step() gives bitwise the same result as the fused amp.step', async () => {
    const a = newStore('fp16', device), b = newStore('fp16', device);
    b.store.loadParameters(a.store.parameters());
    const g = SPECS.map((s) => ({ name: s.name, data: normal(s.shape.reduce((x, y) => x * y, 1), 100) }));
    a.store.loadGradients(g);
    b.store.loadGradients(g);
    const oa = mixprec.optim.adamw(), ob = mixprec.optim.adamw();
    const sa = new GradScaler({ initScale: 2 ** 14 }), sb = new GradScaler({ initScale: 2 ** 14 });
    await mixprec.amp.step(a.store, oa, sa, { maxNorm: 1 });
    sb.unscale(b.store, ob);
    sb.step(b.store, ob, { maxNorm: 1 });
    sb.update();
    expect(b.store.parameters()).toEqual(a.store.parameters());
    expect(ob.stateDict()).toEqual(oa.stateDict());
    expect(sb.stateDict()).toEqual(sa.stateDict());
  });

  test('PyTorch-shaped misuse errors: unscale twice, step twice, unscale after step', () => {
    const { store } = newStore('fp16', device);
    loadRandomGrads(store, 1024);
    const opt = mixprec.optim.sgd();
    const s = new GradScaler({ initScale: 1024 });
    s.unscale(store, opt);
    expect(codeOf(() => s.unscale(store, opt))).toBe('E_STATE');
    s.step(store, opt);
    expect(codeOf(() => s.step(store, opt))).toBe('E_STATE');
    expect(codeOf(() => s.unscale(store, opt))).toBe('E_STATE');
    s.update();
    expect(() => s.unscale(store, opt)).not.toThrow();
    expect(codeOf(() => s.step(store, opt, { maxNorm: -1 }))).toBe('E_ARG');
  });

  test('gradient accumulation: two micro-batches accumulate in FP32 and step once', async () => {
    const { store, init } = newStore('fp16', device);
    const S = 512;
    const g1 = loadRandomGrads(store, S);
    store.accumulate();
    const g2 = loadRandomGrads(store, S);
    store.accumulate();
    expect(store.accumulated).toBe(2);
    await mixprec.amp.step(store, mixprec.optim.sgd({ lr: 0.5 }), S);
    expect(store.accumulated).toBe(0);
    const expected = Array.from(init, (p, i) => p - 0.5 * (Math.fround(g1[i] + g2[i]) / S));
    expect(relErr(flat(store.parameters()), expected)).toBeLessThan(1e-6);
  });

  test('a disabled scaler never skips (plain fp32 training); a static one skips and counts', async () => {
    const { store } = newStore('fp32', device);
    const off = new GradScaler({ enabled: false });
    loadRandomGrads(store, 1);
    const r = await mixprec.amp.step(store, mixprec.optim.sgd(), off);
    expect(r).toMatchObject({ skipped: false, scale: 1 });
    const st = new GradScaler({ dynamic: false, initScale: 1024 });
    store.loadGradients([{ name: 'b2', data: [NaN, 0, 0] }]);
    expect((await mixprec.amp.step(store, mixprec.optim.sgd(), st)).skipped).toBe(true);
    expect(st.scale).toBe(1024);
    expect(st.counters.skippedSteps).toBe(1);
  });

  test('optimizer stateDict round trip continues bitwise identically', async () => {
    const a = newStore('bf16', device), b = newStore('bf16', device);
    b.store.loadParameters(a.store.parameters());
    const oa = mixprec.optim.adam({ lr: 3e-3 });
    const grads = Array.from({ length: 6 }, () => SPECS.map((s) => ({ name: s.name, data: normal(s.shape.reduce((x, y) => x * y, 1), 1) })));
    for (const g of grads.slice(0, 3)) { a.store.loadGradients(g); await mixprec.amp.step(a.store, oa, 1); }
    const ob = mixprec.optim.adam({ lr: 3e-3 });
    ob.loadStateDict(oa.stateDict(), device);
    b.store.loadParameters(a.store.parameters());
    for (const g of grads.slice(3)) {
      a.store.loadGradients(g); await mixprec.amp.step(a.store, oa, 1);
      b.store.loadGradients(g); await mixprec.amp.step(b.store, ob, 1);
    }
    expect(b.store.parameters()).toEqual(a.store.parameters());
    expect(codeOf(() => ob.loadStateDict({ ...oa.stateDict(), kind: 'sgd' }))).toBe('E_STATE');
  });
}, { everyCpuIsa: true });

test('optimizer options: PyTorch defaults and validation', () => {
  expect(mixprec.optim.adam().hyper).toMatchObject({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  expect(mixprec.optim.adamw().hyper).toMatchObject({ weightDecay: 1e-2 });
  expect(mixprec.optim.sgd().hyper).toMatchObject({ lr: 1e-3, momentum: 0, dampening: 0, nesterov: false });
  expect(codeOf(() => mixprec.optim.adam({ lr: -1 }))).toBe('E_ARG');
  expect(codeOf(() => mixprec.optim.adam({ betas: [1, 0.9] }))).toBe('E_ARG');
  expect(codeOf(() => mixprec.optim.sgd({ nesterov: true }))).toBe('E_ARG');
  expect(codeOf(() => mixprec.optim.sgd({ learningRate: 1 } as never))).toBe('E_ARG');
});
