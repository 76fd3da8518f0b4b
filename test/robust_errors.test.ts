// Hostile inputs are typed errors (issue 12, findings 14 and 15): crafted checkpoints with a valid
// CRC are E_CHECKPOINT, checked whole before anything is built; oversized layers are E_OOM / E_SHAPE,
// not a RangeError; options whose getters or Proxy traps throw are E_ARG naming the option.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mixprec from '../src';
import { readCheckpointFile, writeCheckpointFile } from '../src/train/checkpoint_file';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-robust-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The error's code; for anything that is not a MixprecError, its class and message (so a failure shows what escaped). */
async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (e instanceof mixprec.MixprecError) return e.code;
    return `${(e as Error)?.constructor?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`;
  }
  return 'no error';
}
async function errorOf(f: () => unknown): Promise<mixprec.MixprecError> {
  try {
    await f();
  } catch (e) {
    expect(e).toBeInstanceOf(mixprec.MixprecError);
    return e as mixprec.MixprecError;
  }
  throw new Error('expected an error');
}

const cudaAvailable = mixprec.backends().some((b) => b.name === 'cuda' && b.available);
const small = (seed = 1) => mixprec.sequential([mixprec.layers.linear(4, 3, { activation: 'relu' }), mixprec.layers.linear(3, 2)], { seed });
const batch = () => ({ x: mixprec.tensor(Float32Array.from({ length: 8 * 4 }, (_, i) => Math.sin(i)), [8, 4], { device: 'cpu' }), y: Int32Array.from({ length: 8 }, (_, i) => i % 2) });

type Tensors = Record<string, Float32Array | Int32Array | Uint8Array>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Header = any;
/** Saved checkpoints to craft from: header (JSON) and tensors. */
const base: Record<string, { header: Header; tensors: Tensors }> = {};
let crafted = 0;
/** A copy of base[name] changed by `edit`, written with a valid CRC; returns its path. */
async function craft(name: string, edit: (h: Header, t: Tensors) => void): Promise<string> {
  const b = base[name];
  const header = JSON.parse(JSON.stringify(b.header));
  const tensors: Tensors = {};
  for (const [k, v] of Object.entries(b.tensors)) tensors[k] = v.slice();
  edit(header, tensors);
  const file = path.join(dir, `crafted-${crafted++}.mpk`);
  await writeCheckpointFile(file, header, tensors);
  return file;
}

beforeAll(async () => {
  const save = async (name: string, t: mixprec.Trainer<mixprec.Module>, steps: number) => {
    const { x, y } = batch();
    for (let i = 0; i < steps; i++) await t.step(x, y);
    const file = path.join(dir, `${name}.mpk`);
    await t.save(file);
    base[name] = await readCheckpointFile(file);
    t.dispose();
  };
  // Adam after 2 steps (m and v saved), fp16 with a dynamic scaler, mid-epoch-free counters.
  await save('adam', new mixprec.Trainer(small(), { precision: 'fp16', device: 'cpu', optimizer: 'adam' }), 2);
  // Adam before its first step: no moments yet (a legitimate file without m / v).
  await save('adam0', new mixprec.Trainer(small(), { precision: 'fp16', device: 'cpu', optimizer: 'adam' }), 0);
  await save('sgd', new mixprec.Trainer(small(), { precision: 'fp32', device: 'cpu', optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 } }), 1);
  const gpt = mixprec.models.gpt({ vocabSize: 8, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4 });
  await save('gpt', new mixprec.Trainer(gpt, { precision: 'fp32', device: 'cpu' }) as mixprec.Trainer<mixprec.Module>, 0);
  expect(base.adam.tensors.m).toBeDefined();
  expect(base.adam0.tensors.m).toBeUndefined();
});

describe('finding 14: a crafted checkpoint (valid CRC) is E_CHECKPOINT, checked whole before anything is built', () => {
  test('the unmodified files load (the checks reject nothing legitimate)', async () => {
    for (const name of ['adam', 'adam0', 'sgd', 'gpt']) {
      const t = await mixprec.Trainer.load<mixprec.Module>(await craft(name, () => undefined));
      expect(t.device).toBe('cpu');
      t.dispose();
    }
  });

  const del = (k: string) => (h: Header) => { delete h[k]; };
  const set = (k: string, v: unknown) => (h: Header) => { h[k] = v; };
  const opt = (k: string, v: unknown) => (h: Header) => { h.options[k] = v; };
  const cases: [string, (h: Header, t: Tensors) => void][] = [
    // The header's root: kind, version, missing sections.
    ['kind', set('kind', 'mixprec.Other')],
    ['version 3', set('version', 3)],
    ["version '2'", set('version', '2')],
    ['no options', del('options')],
    ['options a string', set('options', 'fast')],
    ['no optimizer', del('optimizer')],
    ['optimizer a string', set('optimizer', 'adam')],
    ['no scaler', del('scaler')],
    // Options, each field.
    ["options.loss 'hinge'", opt('loss', 'hinge')],
    ['options.loss missing', (h) => { delete h.options.loss; }],
    ["options.precision 'fp8'", opt('precision', 'fp8')],
    ['options.precision null', opt('precision', null)],
    ["options.labelSmoothing '0.1'", opt('labelSmoothing', '0.1')],
    ['options.labelSmoothing 2', opt('labelSmoothing', 2)],
    ['options.maxGradNorm -1', opt('maxGradNorm', -1)],
    ['options.gradAccumulation 0', opt('gradAccumulation', 0)],
    ['options.gradAccumulation 1.5', opt('gradAccumulation', 1.5)],
    ['options.seed -1', opt('seed', -1)],
    ["options.seed 'x'", opt('seed', 'x')],
    ["options.lrSchedule { type: 'linear' }", opt('lrSchedule', { type: 'linear' })],
    ['options.lrSchedule null', opt('lrSchedule', null)],
    ["options.masterWeights 'yes'", opt('masterWeights', 'yes')],
    ['options.device 42', opt('device', 42)],
    ["options.device 'tpu'", opt('device', 'tpu')],
    ['options.baseLr -1', opt('baseLr', -1)],
    ["options.baseLr 'x'", opt('baseLr', 'x')],
    // Optimizer: kind, hyper-parameters, step.
    ["optimizer.kind 'rmsprop'", (h) => { h.optimizer.kind = 'rmsprop'; }],
    ['optimizer.hyper null', (h) => { h.optimizer.hyper = null; }],
    ["optimizer.hyper.lr 'x'", (h) => { h.optimizer.hyper.lr = 'x'; }],
    ['optimizer.hyper.beta1 2', (h) => { h.optimizer.hyper.beta1 = 2; }],
    ['optimizer.step -1', (h) => { h.optimizer.step = -1; }],
    ['optimizer.step 1.5', (h) => { h.optimizer.step = 1.5; }],
    // Scaler state (GradScaler.loadStateDict's E_STATE).
    ['scaler.version 2', (h) => { h.scaler.version = 2; }],
    ["scaler.scale 'x'", (h) => { h.scaler.scale = 'x'; }],
    ['scaler.counters missing', (h) => { delete h.scaler.counters; }],
    // Counters.
    ['iteration -1', set('iteration', -1)],
    ["iteration 'x'", set('iteration', 'x')],
    ['epoch 1.5', set('epoch', 1.5)],
    ['batchInEpoch -2', set('batchInEpoch', -2)],
    ['batchInEpoch 3 without a batchSize', (h) => { h.batchInEpoch = 3; h.batchSize = null; }],
    ['batchSize 0', set('batchSize', 0)],
    ["batchSize 'x'", set('batchSize', 'x')],
    ['worldSize 0', set('worldSize', 0)],
    ["worldSize 'two'", set('worldSize', 'two')],
    // Metadata.
    ['metadata an array', set('metadata', [1, 2])],
    ['metadata a string', set('metadata', 'notes')],
    // Model config and parameter list.
    ["modelKind 'rnn'", set('modelKind', 'rnn')],
    ["model 'mlp'", set('model', 'mlp')],
    ["model.layers 'x'", (h) => { h.model.layers = 'x'; }],
    ["a layer of type 'conv'", (h) => { h.model.layers[0].type = 'conv'; }],
    ["linear inFeatures '4'", (h) => { h.model.layers[0].inFeatures = '4'; }],
    ['linear inFeatures 2^40', (h) => { h.model.layers[0].inFeatures = 2 ** 40; }],
    ["linear activation 'tanh'", (h) => { h.model.layers[0].activation = 'tanh'; }],
    ['model.seed -1', (h) => { h.model.seed = -1; }],
    ['parameters not a list', set('parameters', 'all')],
    ["parameters[0].shape 'x'", (h) => { h.parameters[0].shape = 'x'; }],
    ['parameters[1].name 5', (h) => { h.parameters[1].name = 5; }],
    ["storeLength 'x'", set('storeLength', 'x')],
    ['storeLength one short', (h) => { h.storeLength -= 1; }],
    // Tensors.
    ['no master', (_h, t) => { delete t.master; }],
    ['master an Int32Array', (_h, t) => { t.master = new Int32Array(t.master.length); }],
    ['master shorter than the model', (h, t) => { t.master = t.master.slice(0, 56); h.storeLength = 56; }],
    ['a NaN master weight', (_h, t) => { t.master[5] = NaN; }],
    ['an infinite master weight', (_h, t) => { t.master[0] = -Infinity; }],
    ['Adam without m and v', (_h, t) => { delete t.m; delete t.v; }],
    ['Adam without v', (_h, t) => { delete t.v; }],
    ['Adam m of the wrong length', (_h, t) => { t.m = t.m.slice(0, 8); }],
    ['Adam m an Int32Array', (_h, t) => { t.m = new Int32Array(t.m.length); }],
    ['Adam NaN in m', (_h, t) => { t.m[1] = NaN; }],
    ['Adam v negative', (_h, t) => { t.v[2] = -1e-3; }],
  ];
  test.each(cases)('%s', async (_name, edit) => {
    const file = await craft('adam', edit);
    expect(await codeOf(() => mixprec.Trainer.load(file))).toBe('E_CHECKPOINT');
  });

  test('SGD with momentum after a step needs its momentum buffer; an SGD file has no v', async () => {
    expect(await codeOf(async () => mixprec.Trainer.load(await craft('sgd', (_h, t) => { delete t.m; })))).toBe('E_CHECKPOINT');
    expect(await codeOf(async () => mixprec.Trainer.load(await craft('sgd', (_h, t) => { t.v = new Float32Array(t.m.length); })))).toBe('E_CHECKPOINT');
  });

  test('an error names the field', async () => {
    const msg = async (edit: (h: Header, t: Tensors) => void) => (await errorOf(async () => mixprec.Trainer.load(await craft('adam', edit)))).message;
    expect(await msg(opt('precision', 'fp8'))).toMatch(/options\.precision/);
    expect(await msg(opt('labelSmoothing', 2))).toMatch(/options\.labelSmoothing/);
    expect(await msg(del('optimizer'))).toMatch(/optimizer/);
    expect(await msg((h) => { h.scaler.scale = 'x'; })).toMatch(/scaler/);
    expect(await msg((_h, t) => { t.master[5] = NaN; })).toMatch(/master weight 5 is NaN/);
    expect(await msg((_h, t) => { delete t.m; delete t.v; })).toMatch(/adam after 2 steps needs its moments/);
  });

  test('a header claiming a huge model is rejected before the model is built (time and memory stay small)', async () => {
    const initSpy = jest.spyOn(mixprec.nn.Linear.prototype, 'initParameters');
    const before = mixprec.memoryStats().cpu.bytes, rss = process.resourceUsage().maxRSS, t0 = Date.now();
    // 2^17 x 2^17: 64 GiB of weights; 8192 x 4096: 128 MiB — either would be built, then rejected.
    for (const [inF, outF] of [[2 ** 17, 2 ** 17], [4096, 8192]]) {
      const file = await craft('adam', (h) => { h.model.layers[0].inFeatures = inF; h.model.layers[0].outFeatures = outF; h.model.inFeatures = inF; });
      const e = await errorOf(() => mixprec.Trainer.load(file));
      expect(e.code).toBe('E_CHECKPOINT');
      expect(e.message).toMatch(/parameter values, the file holds 40: not building it/);
    }
    // A GPT whose config says nEmbd 1024 (25M values) over a file of a 4-wide one.
    const gptFile = await craft('gpt', (h) => { h.model.nEmbd = 1024; h.model.nLayer = 2; });
    expect(await codeOf(() => mixprec.Trainer.load(gptFile))).toBe('E_CHECKPOINT');
    expect(initSpy).not.toHaveBeenCalled();
    initSpy.mockRestore();
    expect(mixprec.memoryStats().cpu.bytes - before).toBeLessThan(1 << 20);
    expect(process.resourceUsage().maxRSS - rss).toBeLessThan(64 * 1024); // KiB: no 100+ MiB peak
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  test("a file saved on 'cuda' loads on the CPU where CUDA is not available, when the caller names no device", async () => {
    const devices = cudaAvailable ? ['cuda:9999'] : ['cuda', 'cuda:1', 'cuda:9999'];
    for (const device of devices) {
      const file = await craft('adam', opt('device', device));
      const t = await mixprec.Trainer.load(file);
      expect(t.device).toBe('cpu');
      const { x, y } = batch();
      expect((await t.step(x, y)).skipped).toBe(false);
      t.dispose();
      // Asked for explicitly, an unavailable device stays the caller's error.
      if (!cudaAvailable) expect(await codeOf(() => mixprec.Trainer.load(file, { device: 'cuda' }))).toBe('E_NO_CUDA');
    }
  });

  test('restore() checks the file whole too, and leaves the trainer as it was', async () => {
    const t = new mixprec.Trainer(small(), { precision: 'fp16', device: 'cpu', optimizer: 'adam' });
    const { x, y } = batch();
    await t.step(x, y);
    const params = t.model.parameters(), opt0 = t.optimizer.stateDict(), it = t.iteration;
    for (const edit of [(_h: Header, tt: Tensors) => { tt.master[3] = NaN; }, (_h: Header, tt: Tensors) => { delete tt.v; }, del('options'), (h: Header) => { h.scaler.version = 7; }]) {
      const file = await craft('adam', edit);
      expect(await codeOf(() => t.restore(file))).toBe('E_CHECKPOINT');
    }
    expect(t.model.parameters()).toEqual(params);
    expect(t.optimizer.stateDict()).toEqual(opt0);
    expect(t.iteration).toBe(it);
    t.dispose();
  });
});

describe('finding 15: oversized layers, missing datasets, and options that throw are typed errors', () => {
  test('a layer too large for memory is E_OOM naming the bytes; one beyond any limit is E_SHAPE', async () => {
    const big = await errorOf(() => mixprec.sequential([mixprec.layers.linear(2 ** 17, 2 ** 17)]));
    expect(big.code).toBe('E_OOM');
    expect(big.message).toMatch(/68719476736 bytes/); // 2^34 FP32 values
    expect(await codeOf(() => mixprec.layers.linear(2 ** 31, 2 ** 31))).toBe('E_SHAPE'); // 2^64 bytes
    expect(await codeOf(() => mixprec.layers.embedding(2 ** 31, 2 ** 31))).toBe('E_SHAPE');
    expect(await codeOf(() => mixprec.layers.layerNorm(2 ** 33))).toBe('E_SHAPE');
    expect(await codeOf(() => mixprec.sequential([mixprec.layers.layerNorm(2 ** 33)]))).toBe('E_SHAPE');
  });

  test('fit / evaluate without a dataset or with null options are E_ARG', async () => {
    const t = new mixprec.Trainer(small(), { device: 'cpu' });
    const ds = { n: 8, features: 4, x: new Float32Array(32), y: new Int32Array(8) };
    expect(await codeOf(() => t.fit(null as never, { epochs: 1, batchSize: 4 }))).toBe('E_ARG');
    expect(await codeOf(() => t.evaluate(null as never))).toBe('E_ARG');
    expect(await codeOf(() => t.fit(ds, null as never))).toBe('E_ARG');
    expect(await codeOf(() => t.evaluate(ds, null as never))).toBe('E_ARG');
    expect(await codeOf(() => t.evaluate(ds, { batchSize: 0 }))).toBe('E_ARG');
    expect(await codeOf(() => t.fit(ds, { epochs: 1, batchSize: 4, callbacks: { onStep: 5 as never } }))).toBe('E_ARG');
    t.dispose();
  });

  const throwing = <T extends object>(obj: T, key: string): T =>
    Object.defineProperty({ ...obj }, key, { enumerable: true, get() { throw new Error(`getter ${key} exploded`); } }) as T;
  const trapped = (trap: 'get' | 'ownKeys', target: object = {}) =>
    new Proxy(target, { [trap]() { throw new Error(`${trap} trap exploded`); } });

  test('Trainer options: a throwing getter or Proxy trap is E_ARG naming the option', async () => {
    const cases: [unknown, RegExp][] = [
      [throwing({ device: 'cpu' }, 'precision'), /precision/],
      [throwing({ device: 'cpu' }, 'seed'), /seed/],
      [trapped('ownKeys'), /Trainer options/],
      [trapped('get'), /Trainer option '\w+'/],
      [{ device: 'cpu', optimizer: throwing({ type: 'adam' }, 'lr') }, /optimizer option 'lr'/],
      [{ device: 'cpu', optimizer: trapped('ownKeys', { type: 'adam' }) }, /optimizer/],
      [{ device: 'cpu', lossScale: throwing({}, 'initScale') }, /lossScale option 'initScale'/],
      [{ device: 'cpu', lrSchedule: throwing({ type: 'cosine' }, 'totalSteps') }, /lrSchedule option 'totalSteps'/],
    ];
    for (const [opts, re] of cases) {
      const e = await errorOf(() => new mixprec.Trainer(small(), opts as never));
      expect(e.code).toBe('E_ARG');
      expect(e.message).toMatch(re);
    }
  });

  test('fit / evaluate / load / save options and optimizer options: a throwing getter or Proxy trap is E_ARG naming the option', async () => {
    const t = new mixprec.Trainer(small(), { device: 'cpu' });
    const ds = { n: 8, features: 4, x: new Float32Array(32), y: new Int32Array(8) };
    const cases: [() => unknown, RegExp][] = [
      [() => t.fit(ds, throwing({ epochs: 1, batchSize: 4 }, 'epochs')), /fit option 'epochs'/],
      [() => t.fit(ds, trapped('get') as never), /fit option/],
      [() => t.fit(ds, { epochs: 1, batchSize: 4, callbacks: throwing({}, 'onStep') }), /fit callbacks option 'onStep'/],
      [() => t.evaluate(ds, throwing({}, 'batchSize')), /evaluate option 'batchSize'/],
      [() => t.save(path.join(dir, 'never.mpk'), throwing({}, 'metadata')), /save option 'metadata'/],
      [() => mixprec.Trainer.load(path.join(dir, 'adam.mpk'), throwing({}, 'device')), /Trainer\.load option 'device'/],
      [() => mixprec.optim.adam(throwing({}, 'lr')), /adam option 'lr'/],
      [() => mixprec.optim.adamw(throwing({}, 'eps')), /adamw option 'eps'/],
      [() => mixprec.optim.adam({ betas: trapped('get', [0.9, 0.99]) as never }), /betas/],
      [() => mixprec.optim.sgd(throwing({}, 'momentum')), /sgd option 'momentum'/],
      [() => mixprec.optim.sgd(trapped('ownKeys')), /sgd options/],
      [() => mixprec.layers.linear(2, 2, throwing({}, 'bias')), /Linear option 'bias'/],
    ];
    for (const [f, re] of cases) {
      const e = await errorOf(f);
      expect(e.code).toBe('E_ARG');
      expect(e.message).toMatch(re);
    }
    expect(fs.existsSync(path.join(dir, 'never.mpk'))).toBe(false);
    t.dispose();
  });
});

test('save() refuses NaN / Inf master weights and keeps the checkpoint already there', async () => {
  const file = path.join(dir, 'diverged.mpk');
  const t = new mixprec.Trainer(small(3), { precision: 'fp32', device: 'cpu', optimizer: 'sgd' });
  await t.save(file);
  const before = fs.readFileSync(file);
  const names = t.store.parameters().map((p) => p.name);
  t.store.loadParameters([{ name: names[1], data: Float32Array.from(t.store.parameters()[1].data, (v, i) => (i === 1 ? NaN : v)) }]);
  await expect(t.save(file)).rejects.toMatchObject({ code: 'E_STATE', message: expect.stringContaining(`'${names[1]}'`) });
  expect(fs.readFileSync(file).equals(before)).toBe(true);
  expect((await mixprec.Trainer.load(file)).iteration).toBe(0);
  t.dispose();
});

test('data options that cannot be read (a throwing getter, a Proxy trap) are E_ARG', () => {
  const ds = mixprec.data.arrayDataset(new Float32Array(8), new Int32Array(4), { features: 2, classes: 2 });
  const boom = { get batchSize(): number { throw new Error('boom'); } };
  const trap = new Proxy({}, { ownKeys() { throw new Error('boom'); }, get() { throw new Error('boom'); } });
  const codeOf = (f: () => unknown) => { try { f(); } catch (e) { return (e as mixprec.MixprecError).code; } return 'no error'; };
  expect(codeOf(() => mixprec.data.batches(ds, boom as never).next())).toBe('E_ARG');
  expect(codeOf(() => mixprec.data.batches(ds, trap as never).next())).toBe('E_ARG');
  expect(codeOf(() => mixprec.data.arrayDataset(new Float32Array(8), new Int32Array(4), trap as never))).toBe('E_ARG');
  expect(codeOf(() => mixprec.data.text(trap as never))).toBe('E_ARG');
  expect(codeOf(() => mixprec.data.loadMnist({ get dir(): string { throw new Error('boom'); } }))).toBe('E_ARG');
});

test('a Proxy whose getPrototypeOf trap throws, given as a model, optimizer or loss scale, is E_ARG', () => {
  const trap = new Proxy({}, { getPrototypeOf() { throw new Error('boom'); } });
  const codeOf = (f: () => unknown) => { try { f(); } catch (e) { return (e as mixprec.MixprecError).code; } return 'no error'; };
  expect(codeOf(() => new mixprec.Trainer(trap as never))).toBe('E_ARG');
  expect(codeOf(() => new mixprec.Trainer(small(), { optimizer: trap as never, device: 'cpu' }))).toBe('E_ARG');
  expect(codeOf(() => new mixprec.Trainer(small(), { lossScale: trap as never, device: 'cpu' }))).toBe('E_ARG');
  expect(codeOf(() => mixprec.amp.GradScaler.from(trap as never))).toBe('E_ARG');
});
