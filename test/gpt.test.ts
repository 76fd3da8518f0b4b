// The GPT (src/models/gpt.ts): nanoGPT's names, shapes and init; its gradients against finite
// differences; the tied embedding / head gradient as the sum of both paths; the Trainer on
// [B, T] token targets; save -> load -> continue bitwise equal to an uninterrupted run; sampling
// reproducible from its seed; and the attention op as the GPT calls it (strided heads of one QKV).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mp from '../src';
import { describeEachBackend } from './helpers/backends';
import { codeOf, codeOfAsync } from './helpers/tensors';
import { Rng } from '../src/rng';
import { makeRng as seededRandom } from './helpers/random';

const { gpt, generate } = mp.models;
const tiny = { vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 8 };

function nanoGptNames(L: number): string[] {
  const names = ['transformer.wte.weight', 'transformer.wpe.weight'];
  for (let i = 0; i < L; i++)
    for (const n of ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias', 'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'])
      names.push(`transformer.h.${i}.${n}`);
  return [...names, 'transformer.ln_f.weight', 'transformer.ln_f.bias'];
}

const ids = (B: number, T: number, V: number, rand: () => number) => Int32Array.from({ length: B * T }, () => Math.floor(rand() * V));

describe('GPT module', () => {
  test("nanoGPT's state-dict names and layouts, the tied head listed once, and its init", () => {
    const m = gpt({ vocabSize: 65, blockSize: 32, nLayer: 3, nHead: 4, nEmbd: 64 }, { seed: 1 });
    const specs = m.parameterSpecs();
    expect(specs.map((s) => s.name)).toEqual(nanoGptNames(3));
    const shape = Object.fromEntries(specs.map((s) => [s.name, s.shape]));
    expect(shape['transformer.wte.weight']).toEqual([65, 64]);
    expect(shape['transformer.wpe.weight']).toEqual([32, 64]);
    expect(shape['transformer.h.0.attn.c_attn.weight']).toEqual([192, 64]);
    expect(shape['transformer.h.0.attn.c_proj.weight']).toEqual([64, 64]);
    expect(shape['transformer.h.2.mlp.c_fc.weight']).toEqual([256, 64]);
    expect(shape['transformer.h.2.mlp.c_proj.weight']).toEqual([64, 256]);
    // 12 L C^2 + 13 L C (biases, norms) + V C + T C + 2 C (nanoGPT's count, the tied head once).
    expect(m.numParameters()).toBe(12 * 3 * 64 * 64 + 13 * 3 * 64 + 65 * 64 + 32 * 64 + 2 * 64);
    const p = Object.fromEntries(m.parameters().map((e) => [e.name, e.data]));
    const std = (a: Float32Array) => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
    const mean = (a: Float32Array) => a.reduce((s, x) => s + x, 0) / a.length;
    // N(0, 0.02) and N(0, 0.02 / sqrt(2 L)): the sample std of n values is within ~3 / sqrt(2n) relative.
    for (const [name, s] of [['transformer.wte.weight', 0.02], ['transformer.h.1.attn.c_attn.weight', 0.02], ['transformer.h.1.mlp.c_fc.weight', 0.02],
      ['transformer.h.1.attn.c_proj.weight', 0.02 / Math.sqrt(6)], ['transformer.h.0.mlp.c_proj.weight', 0.02 / Math.sqrt(6)]] as const) {
      const a = p[name];
      expect(Math.abs(std(a) / s - 1)).toBeLessThan(4 / Math.sqrt(2 * a.length));
      expect(Math.abs(mean(a))).toBeLessThan((4 * s) / Math.sqrt(a.length));
    }
    for (const name of ['transformer.h.0.attn.c_attn.bias', 'transformer.h.2.mlp.c_proj.bias', 'transformer.ln_f.bias']) expect(p[name].every((x) => x === 0)).toBe(true);
    expect(p['transformer.h.1.ln_2.weight'].every((x) => x === 1)).toBe(true);
    // The seed decides the init; another seed gives other weights.
    const again = gpt({ vocabSize: 65, blockSize: 32, nLayer: 3, nHead: 4, nEmbd: 64 }, { seed: 1 }).parameters();
    expect(again.map((e) => Array.from(e.data.subarray(0, 8)))).toEqual(m.parameters().map((e) => Array.from(e.data.subarray(0, 8))));
    const other = gpt({ vocabSize: 65, blockSize: 32, nLayer: 3, nHead: 4, nEmbd: 64 }, { seed: 2 }).parameters();
    expect(other[0].data[0]).not.toBe(p['transformer.wte.weight'][0]);
  });

  test('bias: false drops every Linear and LayerNorm bias', () => {
    const m = gpt({ ...tiny, bias: false });
    expect(m.parameterSpecs().some((s) => s.name.endsWith('.bias'))).toBe(false);
    expect(m.parameterSpecs()).toHaveLength(2 + 6 * tiny.nLayer + 1);
  });

  test('bad configs and inputs are typed errors', () => {
    expect(codeOf(() => gpt({ ...tiny, nEmbd: 9 }))).toBe('E_ARG');
    expect(codeOf(() => gpt({ ...tiny, vocabSize: 0 }))).toBe('E_ARG');
    expect(codeOf(() => gpt({ ...tiny, dropout: 1 }))).toBe('E_ARG');
    expect(codeOf(() => gpt({ ...tiny, bogus: 1 } as never))).toBe('E_ARG');
    const m = gpt(tiny);
    expect(codeOf(() => m.forward(mp.tensor(new Int32Array(9), [1, 9], { dtype: 'int32' })))).toBe('E_SHAPE');
    expect(codeOf(() => m.forward(mp.zeros([1, 4])))).toBe('E_ARG');
    expect(codeOf(() => mp.tidy(() => m.forward(mp.tensor(Int32Array.of(0, 11), [1, 2], { dtype: 'int32' }))))).toBe('E_ARG');
  });
});

describeEachBackend('GPT gradients', (device) => {
  test('every parameter gradient matches central finite differences of the FP32 loss', () => {
    const rand = seededRandom('gpt-fd');
    const m = gpt({ ...tiny, nLayer: 2 }, { seed: 5 });
    const B = 2, T = 7; // T < blockSize: the position table is narrowed
    const x = mp.tensor(ids(B, T, tiny.vocabSize, rand), [B, T], { dtype: 'int32', device });
    const y = ids(B, T, tiny.vocabSize, rand);
    const store = m.bind('fp32', device);
    const named = m.namedParameters();
    // Spread the weights out so every path carries a gradient well above FP32 noise.
    m.loadParameters(m.parameters().map((e) => ({ name: e.name, data: e.data.map(() => (rand() - 0.5) * 0.6) })));
    const lossOf = async () => {
      const l = mp.noGrad(() => mp.tidy(() => mp.ops.crossEntropy(m.forward(x).reshape([-1, tiny.vocabSize]), y)));
      const v = (await l.toFloat32())[0];
      l.dispose();
      return v;
    };
    store.newGradGeneration();
    mp.tidy(() => { mp.ops.crossEntropy(m.forward(x).reshape([-1, tiny.vocabSize]), y).backward(); });
    return (async () => {
      const grads = new Map<string, Float32Array>();
      for (const [name, p] of named) grads.set(name, await p.grad!.toFloat32());
      const base = m.parameters();
      const h = 1e-2;
      const rel: [string, number, number][] = [];
      for (const e of base) {
        // Along u = g / |g| (plus noise): dL/du = g . u is large, so FP32 differences resolve it to
        // ~1e-3; a wrong mask, scale or dropped path moves it by far more.
        const g = grads.get(e.name)!;
        const gn = Math.sqrt(g.reduce((a, v) => a + v * v, 0)) || 1;
        const u = g.map((v) => v / gn + (rand() * 2 - 1) * 0.3 / Math.sqrt(g.length));
        const analytic = g.reduce((a, v, i) => a + v * u[i], 0);
        const at = async (s: number) => {
          m.loadParameters([{ name: e.name, data: e.data.map((v, i) => v + s * h * u[i]) }]);
          return lossOf();
        };
        const fd = ((await at(1)) - (await at(-1))) / (2 * h);
        m.loadParameters([{ name: e.name, data: e.data }]);
        rel.push([e.name, Math.abs(fd - analytic) / Math.abs(analytic), analytic]);
        // Measured: truncation O(h^2) ~1e-3 relative, FP32 loss noise ~2e-5 absolute.
        expect({ name: e.name, ok: Math.abs(fd - analytic) <= 1e-2 * Math.abs(analytic) + 5e-5 }).toEqual({ name: e.name, ok: true });
      }
      if (process.env.MIXPREC_TEST_VERBOSE) console.log(rel.map(([n, r, a]) => `${n} ${r.toExponential(2)} ${a.toExponential(2)}`).join('\n'));
      x.dispose();
      m.dispose();
    })();
  });

  test('the tied weight gets the embedding gradient plus the LM head gradient', async () => {
    const rand = seededRandom('gpt-tied');
    const m = gpt(tiny, { seed: 3 });
    m.bind('fp32', device).newGradGeneration();
    const B = 2, T = 5;
    const x = mp.tensor(ids(B, T, tiny.vocabSize, rand), [B, T], { dtype: 'int32', device });
    const y = ids(B, T, tiny.vocabSize, rand);
    mp.tidy(() => { mp.ops.crossEntropy(m.forward(x).reshape([-1, tiny.vocabSize]), y).backward(); });
    const tied = await m.transformer.wte.weight.grad!.toFloat32();
    // The same network with two untied copies of the table: one for the lookup, one for the head.
    const w = await m.transformer.wte.weight.toFloat32();
    const e1 = mp.tensor(w, [tiny.vocabSize, tiny.nEmbd], { device }), e2 = mp.tensor(w, [tiny.vocabSize, tiny.nEmbd], { device });
    e1.requiresGrad = true; e2.requiresGrad = true;
    const tr = m.transformer;
    mp.tidy(() => {
      let h = mp.ops.add(mp.ops.embedding(x, e1), tr.wpe.weight.narrow(0, 0, T));
      for (const b of tr.h) h = b.forward(h);
      mp.ops.crossEntropy(mp.ops.linear(tr.ln_f.forward(h), e2, null).reshape([-1, tiny.vocabSize]), y).backward();
    });
    const g1 = await e1.grad!.toFloat32(), g2 = await e2.grad!.toFloat32();
    let maxAbs = 0;
    for (let i = 0; i < tied.length; i++) maxAbs = Math.max(maxAbs, Math.abs(g1[i] + g2[i]));
    for (let i = 0; i < tied.length; i++) expect(Math.abs(tied[i] - (g1[i] + g2[i]))).toBeLessThanOrEqual(1e-6 * maxAbs + 1e-12);
    // Both paths carry gradient (neither alone is the tied one).
    const diff = (a: Float32Array) => a.reduce((s, v, i) => Math.max(s, Math.abs(v - tied[i])), 0);
    expect(diff(g1)).toBeGreaterThan(1e-3 * maxAbs);
    expect(diff(g2)).toBeGreaterThan(1e-3 * maxAbs);
    x.dispose(); e1.dispose(); e2.dispose(); m.dispose();
  });
  test("the fused attention and the unfused 'math' path (matmul, mask, softmax, matmul) give the same logits and gradients", async () => {
    const rand = seededRandom('gpt-math');
    const m = gpt({ ...tiny, nEmbd: 16, nHead: 4 }, { seed: 8 });
    const store = m.bind('fp32', device);
    m.loadParameters(m.parameters().map((e) => ({ name: e.name, data: e.data.map(() => (rand() - 0.5) * 0.8) })));
    const B = 3, T = 8;
    const x = mp.tensor(ids(B, T, tiny.vocabSize, rand), [B, T], { dtype: 'int32', device });
    const y = ids(B, T, tiny.vocabSize, rand);
    const run = async (path: 'fused' | 'math') => {
      m.attention = path;
      store.newGradGeneration();
      const logits = mp.tidy(() => {
        const out = m.forward(x);
        mp.ops.crossEntropy(out.reshape([-1, tiny.vocabSize]), y).backward();
        return out.detach();
      });
      const l = await logits.toFloat32();
      logits.dispose();
      return { l, g: store.gradients().map((p) => p.data) };
    };
    const a = await run('fused'), b = await run('math');
    const close = (u: ArrayLike<number>, v: ArrayLike<number>, what: string) => {
      let mx = 0;
      for (let i = 0; i < u.length; i++) mx = Math.max(mx, Math.abs(v[i]));
      for (let i = 0; i < u.length; i++) expect({ what, i, ok: Math.abs(u[i] - v[i]) <= 2e-5 * mx + 1e-7 }).toEqual({ what, i, ok: true });
    };
    close(a.l, b.l, 'logits');
    a.g.forEach((g, i) => close(g, b.g[i], `gradient ${i}`));
    x.dispose(); m.dispose();
  });
});

describeEachBackend('GPT training', (device) => {
  const cfg = { vocabSize: 13, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };
  const batches = (n: number, seed: string) => {
    const rand = seededRandom(seed);
    return Array.from({ length: n }, () => ({ x: ids(4, 8, cfg.vocabSize, rand), y: ids(4, 8, cfg.vocabSize, rand) }));
  };
  const newTrainer = () => new mp.Trainer(gpt(cfg, { seed: 7 }), {
    precision: 'fp16', optimizer: { type: 'adamw', lr: 3e-3, betas: [0.9, 0.99], weightDecay: 0.1 }, maxGradNorm: 1,
    lrSchedule: { type: 'cosine', totalSteps: 8, warmupSteps: 2, minLr: 1e-4 }, device, seed: 1,
  });
  const step = (t: mp.Trainer<mp.models.GPT>, b: { x: Int32Array; y: Int32Array }) => {
    const x = mp.tensor(b.x, [4, 8], { dtype: 'int32', device });
    return t.step(x, b.y).finally(() => x.dispose());
  };

  test('the Trainer takes [B, T] targets over [B, T, V] logits: the loss is the mean over B*T positions', async () => {
    const t = newTrainer();
    const [b] = batches(1, 'gpt-loss');
    const x = mp.tensor(b.x, [4, 8], { dtype: 'int32', device });
    const ev = await t.evaluateBatch(x, b.y);
    const ref = await mp.tidy(() => mp.noGrad(() => mp.autocast('fp16', () => mp.ops.crossEntropy(t.model.forward(x).reshape([-1, cfg.vocabSize]), b.y)))).toFloat32();
    expect(ev.loss).toBeCloseTo(ref[0], 5);
    expect(ev.loss).toBeGreaterThan(Math.log(cfg.vocabSize) - 0.5); // an untrained model is near uniform
    // A label outside the vocabulary is E_DATA, a wrong count E_SHAPE; as an int32 Tensor too.
    expect(await codeOfAsync(() => t.step(x, b.y.map((v, i) => (i === 5 ? cfg.vocabSize : v))))).toBe('E_DATA');
    expect(await codeOfAsync(() => t.step(x, b.y.subarray(0, 31)))).toBe('E_SHAPE');
    const yt = mp.tensor(b.y, [4, 8], { dtype: 'int32', device });
    const s = await t.step(x, yt);
    expect(Number.isFinite(s.loss)).toBe(true);
    expect(s.loss).toBeCloseTo(ev.loss, 5); // dropout 0: train-mode forward = eval-mode forward
    x.dispose(); yt.dispose(); t.dispose();
  });

  test('loss falls on a repeated batch (fp16, dynamic loss scale, AdamW, clipping, cosine LR)', async () => {
    const t = new mp.Trainer(gpt(cfg, { seed: 2 }), { precision: 'fp16', optimizer: { type: 'adamw', lr: 1e-2 }, maxGradNorm: 1, device });
    const [b] = batches(1, 'gpt-fall');
    const first = (await step(t, b)).loss;
    let last = first;
    for (let i = 0; i < 30; i++) last = (await step(t, b)).loss;
    expect(last).toBeLessThan(first * 0.5);
    t.dispose();
  });

  if (device === 'cpu')
    test('save -> load -> continue is bitwise the uninterrupted run', async () => {
      const bs = batches(8, 'gpt-resume');
      const a = newTrainer();
      const lossesA: number[] = [];
      for (const b of bs) lossesA.push((await step(a, b)).loss);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-gpt-'));
      const file = path.join(dir, 'gpt.mpk');
      const b1 = newTrainer();
      const lossesB: number[] = [];
      for (const b of bs.slice(0, 4)) lossesB.push((await step(b1, b)).loss);
      await b1.save(file, { metadata: { vocab: ['a', 'b'] } });
      b1.dispose();
      const b2 = await mp.Trainer.load<mp.models.GPT>(file, { device });
      expect(b2.model).toBeInstanceOf(mp.models.GPT);
      expect(b2.model.config).toEqual({ ...cfg, dropout: 0, bias: true });
      expect(b2.metadata).toEqual({ vocab: ['a', 'b'] });
      for (const b of bs.slice(4)) lossesB.push((await step(b2, b)).loss);
      expect(lossesB).toEqual(lossesA);
      const pa = a.model.parameters(), pb = b2.model.parameters();
      pa.forEach((e, i) => expect(Buffer.compare(Buffer.from(e.data.buffer), Buffer.from(pb[i].data.buffer))).toBe(0));
      expect(b2.scaler.stateDict()).toEqual(a.scaler.stateDict());
      a.dispose(); b2.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    });

  test('sampling with a fixed seed is reproducible; another seed samples another text', async () => {
    const m = gpt(cfg, { seed: 4 });
    m.bind('fp32', device);
    const prompt = Int32Array.of(1, 2, 3);
    const a = await generate(m, prompt, { maxNewTokens: 20, temperature: 0.8, topK: 5, seed: 9 });
    const b = await generate(m, prompt, { maxNewTokens: 20, temperature: 0.8, topK: 5, seed: 9 });
    const c = await generate(m, prompt, { maxNewTokens: 20, temperature: 0.8, topK: 5, seed: 10 });
    expect(Array.from(a.subarray(0, 3))).toEqual([1, 2, 3]);
    expect(a.length).toBe(23);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    expect(a.every((v) => v >= 0 && v < cfg.vocabSize)).toBe(true);
    // Longer than blockSize: the context is cropped to the last blockSize tokens.
    expect((await generate(m, prompt, { maxNewTokens: 12, seed: 1 })).length).toBe(15);
    expect(await codeOfAsync(() => generate(m, Int32Array.of(99), { maxNewTokens: 1 }))).toBe('E_ARG');
    expect(await codeOfAsync(() => generate(m, prompt, { maxNewTokens: 1, temperature: 0 }))).toBe('E_ARG');
    m.dispose();
  });

  test("AdamW with decayParameters 'matrices' decays the 2-D parameters only (nanoGPT's two groups); 'all' decays every one", async () => {
    for (const decayParameters of ['matrices', 'all'] as const) {
      const t = new mp.Trainer(gpt(cfg), { precision: 'fp32', optimizer: { type: 'adamw', lr: 0.1, weightDecay: 0.5, decayParameters }, device });
      t.store.loadParameters(t.model.parameters().map((e) => ({ name: e.name, data: new Float32Array(e.data.length).fill(1) })));
      t.store.loadGradients(t.model.parameters().map((e) => ({ name: e.name, data: new Float32Array(e.data.length) })));
      t.scaler.step(t.store, t.optimizer, { maxNorm: 0, update: true }); // zero gradients: only the decay moves a weight
      for (const e of t.store.parameters()) {
        const decays = decayParameters === 'all' || e.shape.length >= 2;
        expect({ name: e.name, value: e.data[0], same: e.data.every((v) => v === e.data[0]) }).toEqual({ name: e.name, value: decays ? Math.fround(1 - Math.fround(0.1 * 0.5)) : 1, same: true });
      }
      expect(t.optimizer.stateDict().hyper.decayParameters).toBe(decayParameters);
      t.dispose();
    }
    expect(codeOf(() => mp.optim.adamw({ decayParameters: 'some' as never }))).toBe('E_ARG');
  });

  test('top-k sampling draws only among the k largest logits', () => {
    const z = Float32Array.of(0.1, 3, -1, 2.5, 2.9);
    const rng = new Rng(1, 0);
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) seen.add(mp.models.sampleLogits(z, 1, 2, rng));
    expect([...seen].sort()).toEqual([1, 4]);
  });
});
