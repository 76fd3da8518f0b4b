// The Trainer end to end on the CPU (the oracle backend): real MNIST converges, fp16 tracks fp32,
// checkpoints continue bitwise, schedules, accumulation, stop, and typed errors.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mixprec from '../src';
import { lrAt } from '../src/train/schedule';
import { makeRng } from './helpers/random';

const rng = makeRng('trainer.test');
const { train: fullTrain, test: fullTest } = mixprec.data.loadMnist();
function subset(ds: mixprec.data.Dataset, n: number, from = 0): mixprec.data.Dataset {
  return { ...ds, n, x: ds.x.slice(from * ds.features, (from + n) * ds.features), y: (ds.y as Int32Array).slice(from, from + n) };
}
const train = subset(fullTrain, 4000);
const test_ = subset(fullTest, 1000);

const mlp = (seed: number, hidden = 64) => mixprec.sequential([mixprec.layers.linear(784, hidden, { activation: 'relu' }), mixprec.layers.linear(hidden, 10)], { seed });
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-trainer-'));
const codeOf = async (f: () => unknown) => {
  try { await f(); } catch (e) { expect(e).toBeInstanceOf(mixprec.MixprecError); return (e as mixprec.MixprecError).code; }
  return 'no error';
};

describe('MNIST subset (4000 train / 1000 test, 2 epochs)', () => {
  // Each precision's run, trained on first use (deterministic: same seed, same data), so that every
  // test below stands alone: run in any order, or by itself with -t, it trains what it reads.
  const runs = new Map<mixprec.amp.Precision, Promise<{ hist: mixprec.EpochInfo[]; accuracy: number; scalerEnabled: boolean }>>();
  const run = (precision: mixprec.amp.Precision) => {
    if (!runs.has(precision))
      runs.set(precision, (async () => {
        const t = new mixprec.Trainer(mlp(7), { precision, device: 'cpu', seed: 1, optimizer: { type: 'adam', lr: 2e-3 } });
        try {
          const hist = await t.fit(train, { epochs: 2, batchSize: 64 });
          return { hist, accuracy: (await t.evaluate(test_)).accuracy!, scalerEnabled: t.scaler.enabled };
        } finally {
          t.dispose();
        }
      })());
    return runs.get(precision)!;
  };
  for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
    test(`${precision} converges`, async () => {
      const { hist, accuracy, scalerEnabled } = await run(precision);
      expect(hist).toHaveLength(2);
      expect(hist[1].loss).toBeLessThan(hist[0].loss);
      expect(accuracy).toBeGreaterThan(0.85);
      expect(scalerEnabled).toBe(precision === 'fp16'); // dynamic scaling by default for fp16 only
    });
  }
  test('fp16 and bf16 end within 2 points of fp32 at the same seed', async () => {
    const [fp32, fp16, bf16] = await Promise.all([run('fp32'), run('fp16'), run('bf16')]);
    expect(Math.abs(fp16.accuracy - fp32.accuracy)).toBeLessThan(0.02);
    expect(Math.abs(bf16.accuracy - fp32.accuracy)).toBeLessThan(0.02);
  });
});

test('save -> load -> continue gives bitwise the same parameters, optimizer and scaler state as training straight through', async () => {
  const dir = tmp();
  const opts = { precision: 'fp16' as const, device: 'cpu' as const, seed: 5, maxGradNorm: 1, lossScale: { initScale: 2 ** 10, growthInterval: 3 }, lrSchedule: { type: 'cosine' as const, totalSteps: 40, warmupSteps: 3 } };
  const batch = (i: number) => {
    const s = subset(fullTrain, 32, 100 + 32 * i);
    return { x: mixprec.tensor(s.x, [32, 784], { device: 'cpu' }), y: s.y as Int32Array };
  };
  const a = new mixprec.Trainer(mlp(11, 48), opts);
  for (let i = 0; i < 6; i++) await a.step(batch(i).x, batch(i).y);
  const file = path.join(dir, 'ckpt.mpk');
  await a.save(file);
  for (let i = 6; i < 12; i++) await a.step(batch(i).x, batch(i).y);
  const b = await mixprec.Trainer.load(file);
  expect(b.iteration).toBe(6);
  for (let i = 6; i < 12; i++) await b.step(batch(i).x, batch(i).y);
  expect(b.model.parameters()).toEqual(a.model.parameters());
  expect(b.optimizer.stateDict()).toEqual(a.optimizer.stateDict());
  expect(b.scaler.stateDict()).toEqual(a.scaler.stateDict());
  expect(b.store.workingParameters()).toEqual(a.store.workingParameters());
  a.dispose();
  b.dispose();
});

test('fit resumes mid-epoch from a checkpoint and ends where an uninterrupted fit ends', async () => {
  const dir = tmp();
  const small = subset(fullTrain, 640);
  const opts = { precision: 'bf16' as const, device: 'cpu' as const, seed: 9, optimizer: 'adamw' as const };
  const a = new mixprec.Trainer(mlp(3, 32), opts);
  await a.fit(small, { epochs: 2, batchSize: 64 });
  const b = new mixprec.Trainer(mlp(3, 32), opts);
  const file = path.join(dir, 'mid.mpk');
  await b.fit(small, { epochs: 2, batchSize: 64, callbacks: { onStep: (s) => { if (s.step === 13) b.stop(); } } });
  expect(b.iteration).toBe(13);
  await b.save(file);
  const c = await mixprec.Trainer.load(file);
  await c.fit(small, { epochs: 2 - c.epoch, batchSize: 64 });
  expect(c.epoch).toBe(2);
  expect(c.model.parameters()).toEqual(a.model.parameters());
});

test('checkpoint errors: truncated, corrupted, wrong version, wrong model; a failed save keeps the old file', async () => {
  const dir = tmp();
  const t = new mixprec.Trainer(mlp(1, 16), { device: 'cpu' });
  const file = path.join(dir, 'a.mpk');
  await t.save(file);
  const good = fs.readFileSync(file);
  fs.writeFileSync(path.join(dir, 'trunc.mpk'), good.subarray(0, good.length - 100));
  expect(await codeOf(() => mixprec.Trainer.load(path.join(dir, 'trunc.mpk')))).toBe('E_CHECKPOINT');
  const bad = Buffer.from(good);
  bad[bad.length >> 1] ^= 0x40;
  fs.writeFileSync(path.join(dir, 'bad.mpk'), bad);
  expect(await codeOf(() => mixprec.Trainer.load(path.join(dir, 'bad.mpk')))).toBe('E_CHECKPOINT');
  const other = new mixprec.Trainer(mlp(1, 17), { device: 'cpu' });
  expect(await codeOf(() => other.restore(file))).toBe('E_CHECKPOINT');
  expect(await codeOf(() => mixprec.Trainer.load(path.join(dir, 'missing.mpk')))).toBe('E_IO');
  expect(await codeOf(() => t.save(path.join(dir, 'no', 'such', 'dir', 'x.mpk')))).toBe('E_IO');
  // Failures no permission bypasses, so they fail as root too (CI runs as root): a target under a
  // regular file (ENOTDIR: the path cannot exist for anyone) ...
  expect(await codeOf(() => t.save(path.join(file, 'x.mpk')))).toBe('E_IO');
  await t.step(mixprec.tensor(subset(fullTrain, 8).x, [8, 784], { device: 'cpu' }), subset(fullTrain, 8).y as Int32Array);
  // ... and an existing checkpoint whose name is so long that the temp file beside it (".<name>.<pid>.….tmp")
  // is over the file-name limit (ENAMETOOLONG): the save fails and the old file stays as it was.
  const longName = path.join(dir, `${'c'.repeat(240)}.mpk`);
  fs.writeFileSync(longName, good);
  expect(await codeOf(() => t.save(longName))).toBe('E_IO');
  expect(fs.readFileSync(longName).equals(good)).toBe(true);
  if (process.getuid?.() !== 0) {
    fs.chmodSync(dir, 0o500); // read-only directory: the new save fails (not for root, who may write anyway)
    try {
      expect(await codeOf(() => t.save(file))).toBe('E_IO');
    } finally {
      fs.chmodSync(dir, 0o700);
    }
  }
  expect(fs.readFileSync(file).equals(good)).toBe(true);
  await t.save(file); // and a save that can succeed replaces it
  expect(fs.readFileSync(file).equals(good)).toBe(false);
  t.dispose();
  other.dispose();
});

test('gradient accumulation over micro-batches matches the whole batch (fp32)', async () => {
  const s = subset(fullTrain, 48, 500);
  const run = async (gradAccumulation: number) => {
    const t = new mixprec.Trainer(mlp(2, 32), { precision: 'fp32', device: 'cpu', gradAccumulation });
    const r = await t.step(mixprec.tensor(s.x, [48, 784], { device: 'cpu' }), s.y as Int32Array);
    const p = t.model.parameters();
    t.dispose();
    return { r, p };
  };
  const one = await run(1), three = await run(3);
  expect(three.r.loss).toBeCloseTo(one.r.loss, 5);
  expect(three.r.gradNorm).toBeCloseTo(one.r.gradNorm, 4);
  one.p.forEach((p, i) => p.data.forEach((v, j) => expect(Math.abs(v - three.p[i].data[j])).toBeLessThan(1e-6)));
});

test('a batch smaller than gradAccumulation (an epoch\'s last) splits into micro-batches of one, and matches the whole batch', async () => {
  const s = subset(fullTrain, 3, 700);
  const run = async (gradAccumulation: number) => {
    const t = new mixprec.Trainer(mlp(4, 16), { precision: 'fp32', device: 'cpu', gradAccumulation });
    const r = await t.step(mixprec.tensor(s.x, [3, 784], { device: 'cpu' }), s.y as Int32Array);
    const p = t.model.parameters();
    t.dispose();
    return { r, p };
  };
  const one = await run(1), eight = await run(8);
  expect(eight.r.loss).toBeCloseTo(one.r.loss, 5);
  one.p.forEach((p, i) => p.data.forEach((v, j) => expect(Math.abs(v - eight.p[i].data[j])).toBeLessThan(1e-6)));
});

test('fit / evaluate without a dataset are E_ARG, not TypeError', async () => {
  const t = new mixprec.Trainer(mlp(1, 8), { device: 'cpu' });
  expect(await codeOf(() => t.fit(null as never, { epochs: 1, batchSize: 8 }))).toBe('E_ARG');
  expect(await codeOf(() => t.evaluate(null as never))).toBe('E_ARG');
  expect(await codeOf(() => t.evaluate({ n: 3 } as never))).toBe('E_ARG');
  t.dispose();
});

test('LR schedules: constant, step, cosine, linear warmup (hand-worked values)', () => {
  expect(lrAt({ type: 'constant' }, 0.1, 50)).toBe(0.1);
  expect(lrAt({ type: 'step', stepSize: 10, gamma: 0.5 }, 0.1, 9)).toBe(0.1);
  expect(lrAt({ type: 'step', stepSize: 10, gamma: 0.5 }, 0.1, 25)).toBeCloseTo(0.025, 12);
  expect(lrAt({ type: 'cosine', totalSteps: 100 }, 0.1, 0)).toBeCloseTo(0.1, 12);
  expect(lrAt({ type: 'cosine', totalSteps: 100 }, 0.1, 50)).toBeCloseTo(0.05, 12);
  expect(lrAt({ type: 'cosine', totalSteps: 100, minLr: 0.01 }, 0.1, 100)).toBeCloseTo(0.01, 12);
  expect(lrAt({ type: 'constant', warmupSteps: 4 }, 0.1, 0)).toBeCloseTo(0.025, 12);
  expect(lrAt({ type: 'constant', warmupSteps: 4 }, 0.1, 3)).toBeCloseTo(0.1, 12);
  expect(lrAt({ type: 'cosine', totalSteps: 14, warmupSteps: 4 }, 0.1, 9)).toBeCloseTo(0.05, 12);
});

test('typed errors for bad batches and options', async () => {
  const t = new mixprec.Trainer(mlp(1, 8), { device: 'cpu' });
  const x = mixprec.tensor(Float32Array.from({ length: 2 * 784 }, () => rng()), [2, 784], { device: 'cpu' });
  expect(await codeOf(() => t.step(x, Int32Array.from([1, 10])))).toBe('E_DATA');
  expect(await codeOf(() => t.step(x, Int32Array.from([1])))).toBe('E_SHAPE');
  expect(await codeOf(() => t.step(mixprec.tensor([1, 2], [1, 2], { device: 'cpu' }), Int32Array.from([1])))).toBe('E_SHAPE');
  expect(await codeOf(() => t.step(x, [1, 2] as never))).toBe('E_ARG');
  expect(await codeOf(() => new mixprec.Trainer(mlp(1, 8), { precison: 'fp16' } as never))).toBe('E_ARG');
  expect(await codeOf(() => new mixprec.Trainer(mlp(1, 8), { lrSchedule: { type: 'linear' } as never }))).toBe('E_ARG');
  expect(await codeOf(() => new mixprec.Trainer(t.model))).toBe('E_STATE'); // a model belongs to one trainer
  t.dispose();
});

test('a NaN storm is reported: a non-finite FP32 loss, runs of skipped steps and the scale floor are MixprecWarnings; an epoch of only skipped steps has loss NaN', async () => {
  const warnings: { code?: string; message: string }[] = [];
  {
    const model = mixprec.sequential([mixprec.layers.linear(784, 16, { activation: 'relu' }), mixprec.layers.linear(16, 10)], { seed: 1 });
    const t = new mixprec.Trainer(model, {
      precision: 'fp16', device: 'cpu', lossScale: { backoffFactor: 0.5, minScale: 2 ** 10 },
      onWarning: (code, message) => warnings.push({ code, message }),
    });
    // A NaN weight: the FP32 forward's loss is NaN, every step is skipped.
    const first = t.model.parameters()[0];
    t.store.loadParameters([{ name: first.name, data: first.data.map((v, i) => (i === 3 ? NaN : v)) }]);
    const small = subset(train, 256);
    const hist = await t.fit(small, { epochs: 1, batchSize: 16 }); // 16 steps
    expect(hist[0].skippedSteps).toBe(16);
    expect(hist[0].loss).toBeNaN(); // not 0: nothing was averaged
    const codes = warnings.map((w) => w.code);
    expect(codes.filter((c) => c === 'MIXPREC_NONFINITE_LOSS')).toHaveLength(1);
    expect(warnings.find((w) => w.code === 'MIXPREC_NONFINITE_LOSS')!.message).toMatch(/data or model bug/);
    expect(codes.filter((c) => c === 'MIXPREC_SKIPPED_STEPS')).toHaveLength(1); // at 10 in a row
    expect(codes).toContain('MIXPREC_MIN_SCALE'); // 2^16 halves to the floor 2^10 after 6 overflows
    expect(t.scaler.scale).toBe(2 ** 10);
    const x = mixprec.tensor(small.x.subarray(0, 784 * 4), [4, 784], { dtype: 'float16', device: 'cpu' });
    const s = await t.step(x, (small.y as Int32Array).subarray(0, 4));
    expect(s).toMatchObject({ skipped: true, consecutiveSkipped: 17 });
    // Counted at every occurrence (the warnings are rate-limited): 17 NaN losses, 8 steps at 10+ in
    // a row, and 11 overflows at the floor (steps 7..17: 2^16 reaches 2^10 at step 6).
    expect(t.warningCounts).toEqual({ MIXPREC_NONFINITE_LOSS: 17, MIXPREC_SKIPPED_STEPS: 8, MIXPREC_MIN_SCALE: 11 });
    x.dispose();
    t.dispose();
  }
});
