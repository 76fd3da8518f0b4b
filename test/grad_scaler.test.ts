// GradScaler: PyTorch's update rule and defaults, Megatron's hysteresis/min/max, static and
// disabled modes, state round trips and misuse errors. The rule runs natively (the same function
// the fused device step runs); checked here against hand-worked sequences and a float64/float32
// reference written in the test.
import * as mixprec from '../src';
import { makeRng } from './helpers/random';
import { RefScaler } from './helpers/optim_ref';
import { describeEachBackend } from './helpers/backends';

const { GradScaler } = mixprec.amp;
const rng = makeRng('grad_scaler.test');

function errorOf(f: () => unknown): mixprec.MixprecError | undefined {
  try { f(); } catch (e) { expect(e).toBeInstanceOf(mixprec.MixprecError); return e as mixprec.MixprecError; }
  return undefined;
}
function codeOf(f: () => unknown): string {
  return errorOf(f)?.code ?? 'no error';
}

test("PyTorch's defaults", () => {
  const s = new GradScaler();
  expect(s.scale).toBe(65536);
  expect(s.options).toMatchObject({ growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000, hysteresis: 1, minScale: 0, maxScale: Infinity, enabled: true, dynamic: true });
});

test("PyTorch's update sequence: scale 4, growth 2, backoff 0.25, interval 2: clean -> 4, clean -> 8, inf -> 2", () => {
  const s = new GradScaler({ initScale: 4, growthFactor: 2, backoffFactor: 0.25, growthInterval: 2 });
  s.update(false);
  expect([s.scale, s.growthTracker]).toEqual([4, 1]);
  s.update(false);
  expect([s.scale, s.growthTracker]).toEqual([8, 0]);
  s.update(false);
  expect(s.growthTracker).toBe(1);
  s.update(true); // overflow: backoff and the growth tracker resets
  expect([s.scale, s.growthTracker]).toEqual([2, 0]);
  expect(s.counters).toMatchObject({ backoffs: 1, growths: 1 });
});

test('growth that would give a non-finite scale is not applied (init 1e38, growth 16, interval 1)', () => {
  const s = new GradScaler({ initScale: 1e38, growthFactor: 16, growthInterval: 1 });
  s.update(false);
  expect(s.scale).toBe(Math.fround(1e38));
  expect(s.growthTracker).toBe(0);
  expect(s.counters.growths).toBe(0);
});

test('maxScale caps growth; minScale floors backoff and is reported, never fatal', () => {
  const up = new GradScaler({ initScale: 1024, growthInterval: 1, maxScale: 4096 });
  for (let i = 0; i < 5; i++) up.update(false);
  expect(up.scale).toBe(4096);
  const down = new GradScaler({ initScale: 8, minScale: 2 });
  for (let i = 0; i < 4; i++) down.update(true);
  expect(down.scale).toBe(2);
  expect(down.counters.minScaleHits).toBe(2); // 8 -> 4 -> 2 (exact, not a hit) -> 2 (hit) -> 2 (hit)
});

test('hysteresis (Megatron): backoff only after `hysteresis` overflows; growth resets it', () => {
  const s = new GradScaler({ initScale: 1024, hysteresis: 2, growthInterval: 2 });
  // hand-worked trace: [outcome, scale after, hysteresisLeft after]
  const trace: [boolean, number, number][] = [
    [true, 1024, 1], [true, 512, 0], [true, 256, -1], [false, 256, -1], [false, 512, 2], [true, 512, 1], [false, 512, 1], [true, 256, 0],
  ];
  for (const [inf, scale, hyst] of trace) {
    s.update(inf);
    expect([s.scale, s.hysteresisLeft]).toEqual([scale, hyst]);
  }
});

test('random configurations and overflow sequences match the reference rule step for step', () => {
  for (let trial = 0; trial < 40; trial++) {
    const o = {
      initScale: 2 ** Math.floor(rng() * 40 - 10) * (1 + rng()),
      growthFactor: 1 + rng() * 3,
      backoffFactor: 0.05 + rng() * 0.9,
      growthInterval: 1 + Math.floor(rng() * 5),
      hysteresis: 1 + Math.floor(rng() * 3),
      minScale: rng() < 0.5 ? 0 : rng(),
      maxScale: rng() < 0.5 ? Infinity : 2 ** 30,
    };
    if (o.minScale > o.maxScale) o.minScale = 0;
    if (o.initScale < o.minScale) o.initScale = o.minScale * (1 + rng()); // initScale must lie in [minScale, maxScale]
    if (o.initScale > o.maxScale) o.initScale = o.maxScale;
    const s = new GradScaler(o);
    const ref = new RefScaler(o);
    for (let i = 0; i < 200; i++) {
      const inf = rng() < 0.3;
      s.update(inf);
      ref.update(inf);
      if (s.scale !== ref.scale || s.growthTracker !== ref.tracker || s.hysteresisLeft !== ref.hyst)
        throw new Error(`trial ${trial} step ${i} (${JSON.stringify(o)}): scale ${s.scale} vs ${ref.scale}, tracker ${s.growthTracker} vs ${ref.tracker}, hyst ${s.hysteresisLeft} vs ${ref.hyst}`);
    }
  }
});

test('a NaN storm: the scale stops at its floor 2^-126 (never 0), counted in minScaleHits, and the state stays loadable', () => {
  const s = new GradScaler(); // default options: no minScale
  for (let i = 0; i < 400; i++) s.update(true); // 2^16 halves to 2^-126 after 142 overflows
  expect(s.scale).toBe(2 ** -126);
  expect(s.counters.minScaleHits).toBe(400 - 142);
  const again = new GradScaler();
  again.loadStateDict(JSON.parse(JSON.stringify(s.stateDict())));
  expect(again.scale).toBe(2 ** -126);
  for (let i = 0; i < 2; i++) again.update(false);
  expect(again.scale).toBe(2 ** -126); // growth resumes after growthInterval clean steps, as before
  // A minScale above the floor is the floor.
  const m = new GradScaler({ minScale: 1, backoffFactor: 0.125 });
  for (let i = 0; i < 40; i++) m.update(true);
  expect(m.scale).toBe(1);
});

test('options are checked as the float32 the state holds: initScale 1e-46 (0 in FP32) or outside [minScale, maxScale] is E_ARG', () => {
  for (const o of [{ initScale: 1e-46 }, { initScale: 1e39 }, { initScale: 2 ** -127 }, { initScale: 0.5, minScale: 1 }, { initScale: 4096, maxScale: 1024 }])
    expect(codeOf(() => new GradScaler(o))).toBe('E_ARG');
  expect(codeOf(() => GradScaler.static(1e-46))).toBe('E_ARG');
  expect(new GradScaler({ initScale: 2 ** -126 }).scale).toBe(2 ** -126);
  const bad = new GradScaler().stateDict();
  expect(codeOf(() => new GradScaler().loadStateDict({ ...bad, scale: 0 }))).toBe('E_STATE');
});

test('static scaling never changes the scale; a disabled scaler is scale 1', () => {
  const st = new GradScaler({ dynamic: false, initScale: 1024 });
  st.update(true);
  st.update(false);
  expect(st.scale).toBe(1024);
  expect(GradScaler.from(512).scale).toBe(512);
  expect(GradScaler.from(512).dynamic).toBe(false);
  const off = new GradScaler({ enabled: false });
  off.update(true);
  expect(off.scale).toBe(1);
});

test('stateDict round trip is exact, also through JSON, and the restored scaler continues identically', () => {
  const o = { initScale: 3 * 2 ** 10, growthFactor: 1.7, backoffFactor: 0.3, growthInterval: 3, hysteresis: 2, minScale: 0.5 };
  const a = new GradScaler(o);
  const seq = Array.from({ length: 60 }, () => rng() < 0.35);
  seq.slice(0, 30).forEach((x) => a.update(x));
  const d = a.stateDict();
  const b = new GradScaler();
  b.loadStateDict(JSON.parse(JSON.stringify(d)));
  expect(b.stateDict()).toEqual(d);
  seq.slice(30).forEach((x) => { a.update(x); b.update(x); });
  expect(b.stateDict()).toEqual(a.stateDict());
  expect(b.scale).toBe(a.scale);
});

test('invalid options and malformed states are typed errors; a failed load changes nothing', () => {
  expect(codeOf(() => new GradScaler({ growthFactor: 1 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ backoffFactor: 1 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ backoffFactor: 0 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ growthInterval: 0 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ growthInterval: 1.5 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ initScale: 0 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ initScale: -1 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ initScale: 1e39 }))).toBe('E_ARG'); // not a finite float32
  expect(codeOf(() => new GradScaler({ hysteresis: 0 }))).toBe('E_ARG');
  expect(codeOf(() => new GradScaler({ growthIntervall: 3 } as never))).toBe('E_ARG');
  const s = new GradScaler({ initScale: 8 });
  const good = s.stateDict();
  for (const bad of [null, {}, { ...good, version: 2 }, { ...good, scale: -1 }, { ...good, scale: 'x' }, { ...good, growthTracker: 1.5 },
    { ...good, counters: undefined }, { ...good, options: { ...good.options, backoffFactor: 2 } }])
    expect(codeOf(() => s.loadStateDict(bad as never))).toBe('E_STATE');
  expect(s.stateDict()).toEqual(good);
  expect(codeOf(() => s.update(1 as never))).toBe('E_ARG');
  expect(codeOf(() => s.update())).toBe('E_STATE'); // nothing recorded since the last update
});

test('options that cannot be read (a throwing getter, a Proxy whose trap throws) are E_ARG, and each option is read once', () => {
  const boom = () => { throw new Error('boom'); };
  const getter = Object.defineProperty({}, 'initScale', { get: boom, enumerable: true });
  const e = errorOf(() => new GradScaler(getter));
  expect(e?.code).toBe('E_ARG');
  expect(e?.message).toMatch(/GradScaler options.*boom/);
  for (const trap of ['get', 'ownKeys', 'getOwnPropertyDescriptor'] as const) {
    const p = new Proxy({ initScale: 8 }, { [trap]: boom });
    expect(codeOf(() => new GradScaler(p))).toBe('E_ARG');
    expect(codeOf(() => GradScaler.from(p))).toBe('E_ARG');
  }
  expect(codeOf(() => GradScaler.from(new Proxy({}, { getPrototypeOf: boom })))).toBe('E_ARG');
  // A getter that answers differently on its second read: the value checked is the value kept.
  let reads = 0;
  const fickle = Object.defineProperty({}, 'initScale', { get: () => (reads++ === 0 ? 8 : -1), enumerable: true });
  expect(new GradScaler(fickle).scale).toBe(8);
  expect(reads).toBe(1);
  // A state dict that cannot be read is E_STATE (as every malformed state), and changes nothing.
  const s = new GradScaler({ initScale: 4 });
  const good = s.stateDict();
  expect(codeOf(() => s.loadStateDict(Object.defineProperty({ ...good }, 'scale', { get: boom, enumerable: true })))).toBe('E_STATE');
  expect(codeOf(() => s.loadStateDict({ ...good, options: new Proxy(good.options, { ownKeys: boom }) }))).toBe('E_STATE');
  expect(codeOf(() => s.loadStateDict({ ...good, counters: new Proxy(good.counters, { get: boom }) }))).toBe('E_STATE');
  expect(codeOf(() => s.loadStateDict(new Proxy(good, { get: boom })))).toBe('E_STATE');
  expect(s.stateDict()).toEqual(good);
  // step() options likewise.
  expect(codeOf(() => s.step(null as never, null as never, new Proxy({ maxNorm: 1 }, { get: boom })))).toBe('E_ARG');
});

describeEachBackend('split unscale() / step(): per (store, optimizer)', (device) => {
  const SPECS = [{ name: 'w', shape: [5, 7] }, { name: 'b', shape: [5] }];
  const OTHER = [{ name: 'w', shape: [3, 3] }];
  const size = (specs: { shape: number[] }[]) => specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  const flat = (entries: { data: Float32Array }[]) => Float32Array.from(entries.flatMap((e) => Array.from(e.data)));
  function newStore(specs = SPECS, seed = 0) {
    const store = mixprec.amp.parameterStore(specs, { precision: 'fp16', device });
    store.loadParameters(specs.map((s, j) => ({ name: s.name, data: Float32Array.from({ length: size([s]) }, (_, i) => Math.sin(1 + i + 10 * j + seed)) })));
    store.loadGradients(specs.map((s, j) => ({ name: s.name, data: Float32Array.from({ length: size([s]) }, (_, i) => 1024 * 0.01 * Math.cos(i + 3 * j + seed)) })));
    return store;
  }
  const stores: mixprec.amp.ParameterStore[] = [];
  const track = (s: mixprec.amp.ParameterStore) => (stores.push(s), s);
  afterAll(() => { for (const s of stores) s.dispose(); });

  test('unscale(A, opt); step(B, opt) is E_STATE naming the mismatch, and leaves both stores\' masters unchanged', () => {
    for (const make of [() => mixprec.optim.sgd({ lr: 0.1 }), () => mixprec.optim.adam({ lr: 0.1 })]) {
      const a = track(newStore(SPECS, 0)), b = track(newStore(SPECS, 1)); // the same size: the moments fit both
      const opt = make();
      const s = new GradScaler({ initScale: 1024 });
      const a0 = flat(a.parameters()), b0 = flat(b.parameters());
      s.unscale(a, opt);
      const before = s.stateDict();
      const e = errorOf(() => s.step(b, opt));
      expect(e?.code).toBe('E_STATE');
      expect(e?.message).toMatch(/unscale\(\) was called with another store/);
      expect(flat(a.parameters())).toEqual(a0);
      expect(flat(b.parameters())).toEqual(b0);
      expect(s.stateDict()).toEqual(before);
      expect(opt.stepCount).toBe(0);
      // The pair that was unscaled can still step; B steps after the update, with its own optimizer.
      expect(s.step(a, opt).skipped).toBe(false);
      s.update();
      expect(flat(a.parameters())).not.toEqual(a0);
      expect(flat(b.parameters())).toEqual(b0);
      const ob = make();
      expect(s.step(b, ob, { update: true }).skipped).toBe(false);
      for (const x of flat(b.parameters())) expect(Number.isFinite(x)).toBe(true);
    }
  });

  test('one store with two optimizers, or one optimizer with two stores, between update()s: E_STATE', () => {
    const a = track(newStore()), b = track(newStore(SPECS, 1));
    const o1 = mixprec.optim.sgd({ lr: 0.1 }), o2 = mixprec.optim.sgd({ lr: 0.1 });
    const s = new GradScaler({ initScale: 1024 });
    const a0 = flat(a.parameters()), b0 = flat(b.parameters());
    s.unscale(a, o1);
    expect(errorOf(() => s.unscale(b, o1))?.message).toMatch(/unscale\(\) was called with another store/);
    expect(errorOf(() => s.step(a, o2))?.message).toMatch(/another optimizer/);
    expect(errorOf(() => s.unscale(a, o2))?.message).toMatch(/another optimizer/);
    s.step(a, o1);
    const a1 = flat(a.parameters());
    expect(errorOf(() => s.step(a, o2))?.message).toMatch(/another optimizer/); // a second update of A
    expect(errorOf(() => s.step(b, o1))?.message).toMatch(/another store/);
    expect(flat(a.parameters())).toEqual(a1);
    expect(flat(b.parameters())).toEqual(b0);
    expect(a1).not.toEqual(a0);
    s.update();
    expect(() => { s.unscale(b, o2); s.step(b, o2); s.update(); }).not.toThrow();
  });

  test('an optimizer whose moments were made for a store of another size: E_STATE from unscale() and step(), nothing changed', () => {
    const a = track(newStore()), c = track(newStore(OTHER));
    const opt = mixprec.optim.adam({ lr: 0.1 });
    const s = new GradScaler({ initScale: 1024 });
    s.step(a, opt, { update: true }); // the moments are now a's size
    const c0 = flat(c.parameters()), state = s.stateDict(), optState = opt.stateDict();
    for (const f of [() => s.unscale(c, opt), () => s.step(c, opt), () => s.step(c, opt, { update: true })]) {
      const e = errorOf(f);
      expect(e?.code).toBe('E_STATE');
      expect(e?.message).toMatch(new RegExp(`moments were made for another store.*${a.length} parameters.*this is a store of ${c.length} parameters`));
    }
    expect(flat(c.parameters())).toEqual(c0);
    expect(s.stateDict()).toEqual(state);
    expect(opt.stateDict()).toEqual(optState);
    // And the scaler goes on: a's optimizer on a, a fresh one on c.
    s.unscale(a, opt);
    s.step(a, opt);
    s.step(c, mixprec.optim.adam({ lr: 0.1 }));
    s.update();
    expect(s.counters.steps).toBe(3);
  });

  test('the normal sequences still work and match the fused step bitwise: unscale + step on one store; two stores with two optimizers', async () => {
    const ref = [track(newStore(SPECS, 0)), track(newStore(OTHER, 1))];
    const got = [track(newStore(SPECS, 0)), track(newStore(OTHER, 1))];
    const refOpt = [mixprec.optim.adamw({ lr: 0.01 }), mixprec.optim.adamw({ lr: 0.01 })];
    const opt = [mixprec.optim.adamw({ lr: 0.01 }), mixprec.optim.adamw({ lr: 0.01 })];
    const refScalers = [new GradScaler({ initScale: 1024 }), new GradScaler({ initScale: 1024 })];
    const s = new GradScaler({ initScale: 1024 });
    for (let it = 0; it < 3; it++) {
      for (let i = 0; i < 2; i++) await mixprec.amp.step(ref[i], refOpt[i], refScalers[i], { maxNorm: 1 });
      s.unscale(got[0], opt[0]);
      s.unscale(got[1], opt[1]);
      s.step(got[1], opt[1], { maxNorm: 1 });
      s.step(got[0], opt[0], { maxNorm: 1 });
      s.update();
    }
    for (let i = 0; i < 2; i++) {
      expect(got[i].parameters()).toEqual(ref[i].parameters());
      expect(opt[i].stateDict()).toEqual(refOpt[i].stateDict());
    }
    expect(s.scale).toBe(refScalers[0].scale);
    const one = track(newStore());
    const o = mixprec.optim.sgd({ lr: 0.1, momentum: 0.9 });
    for (let it = 0; it < 3; it++) { s.unscale(one, o); s.step(one, o); s.update(); }
    expect(o.stepCount).toBe(3);
  });
});
