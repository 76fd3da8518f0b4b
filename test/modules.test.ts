// nn.Module: registration by property name, dotted names, tied weights, train / eval, a
// user-defined module trained by the Trainer in fp16 with checkpoints (load with { model }),
// E_CHECKPOINT naming the parameter on a mismatch, and loss functions.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mixprec from '../src';
import { describeEachBackend } from './helpers/backends';
import { makeRng } from './helpers/random';

const { nn, ops } = mixprec;
const rng = makeRng('modules.test');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-modules-'));
const codeOf = async (f: () => unknown) => {
  try { await f(); } catch (e) { expect(e).toBeInstanceOf(mixprec.MixprecError); return (e as mixprec.MixprecError).code; }
  return 'no error';
};

class Block extends nn.Module {
  ln = new nn.LayerNorm(8);
  fc = new nn.Linear(8, 8, { activation: 'gelu' });
  forward(x: mixprec.Tensor): mixprec.Tensor {
    return ops.add(x, this.fc.forward(this.ln.forward(x))); // a residual branch: x used twice
  }
}

class Net extends nn.Module {
  embed = new nn.Linear(6, 8);
  blocks = new nn.ModuleList([new Block(), new Block()]);
  unused = new nn.Linear(8, 3); // never called: its parameters get no gradient
  head = new nn.Linear(8, 4);
  forward(x: mixprec.Tensor): mixprec.Tensor {
    let h = this.embed.forward(x);
    for (const b of this.blocks) h = (b as Block).forward(h);
    return this.head.forward(h);
  }
}

/** A tied model: the output projection reuses the embedding matrix (as GPT's LM head). */
class Tied extends nn.Module {
  wte = new nn.Embedding(5, 4);
  forward(ids: mixprec.Tensor): mixprec.Tensor {
    const h = this.wte.forward(ids);                           // [n, 4]
    return ops.matmul(h, this.wte.weight, { transB: true });  // [n, 5] = h @ wte^T
  }
}

test('parameters are registered by property name, in order, with dotted names', () => {
  const net = new Net();
  expect(net.parameterSpecs().map((p) => p.name)).toEqual([
    'embed.weight', 'embed.bias',
    'blocks.0.ln.weight', 'blocks.0.ln.bias', 'blocks.0.fc.weight', 'blocks.0.fc.bias',
    'blocks.1.ln.weight', 'blocks.1.ln.bias', 'blocks.1.fc.weight', 'blocks.1.fc.bias',
    'unused.weight', 'unused.bias', 'head.weight', 'head.bias',
  ]);
  expect(net.parameterSpecs()[0].shape).toEqual([8, 6]);
  net.eval();
  expect((net.blocks.at(1) as Block).fc.training).toBe(false);
  net.train();
  expect((net.blocks.at(1) as Block).fc.training).toBe(true);
  net.dispose();
});

test('a tied weight is listed once and receives the sum of both paths', async () => {
  const m = new Tied();
  expect(m.parameterSpecs().map((p) => p.name)).toEqual(['wte.weight']);
  const W = Float64Array.from((await m.wte.weight.toFloat32()));
  const ids = [1, 3, 1];
  const out = m.forward(mixprec.tensor(Int32Array.from(ids), [3], { device: 'cpu' }));
  const loss = ops.sum(ops.mul(out, out));
  await loss.backward();
  const g = await m.wte.weight.grad!.toFloat32();
  // Reference: L = sum_i sum_v (h_i . W_v)^2, h_i = W[ids_i]; dL/dW_v = sum_i 2 (h_i.W_v) h_i (head path)
  // and dL/dW[ids_i] += sum_v 2 (h_i.W_v) W_v (embedding path).
  const ref = new Float64Array(20);
  for (const id of ids) {
    for (let v = 0; v < 5; v++) {
      let dot = 0;
      for (let c = 0; c < 4; c++) dot += W[id * 4 + c] * W[v * 4 + c];
      for (let c = 0; c < 4; c++) {
        ref[v * 4 + c] += 2 * dot * W[id * 4 + c];
        ref[id * 4 + c] += 2 * dot * W[v * 4 + c];
      }
    }
  }
  for (let i = 0; i < 20; i++) expect(Math.abs(g[i] - ref[i])).toBeLessThan(1e-4 * (1 + Math.abs(ref[i])));
  m.dispose();
});

describeEachBackend('a user-defined module with the Trainer', (device) => {
  const data = (n: number) => {
    const x = Float32Array.from({ length: n * 6 }, () => rng() * 2 - 1);
    const y = Int32Array.from({ length: n }, (_, i) => (x[i * 6] > 0 ? 1 : 0) + (x[i * 6 + 1] > 0 ? 2 : 0));
    return { x: mixprec.tensor(x, [n, 6], { device }), y };
  };

  test('trains in fp16, a branch off the loss gets zero gradients, checkpoints by name', async () => {
    mixprec.manualSeed(3);
    const trainer = new mixprec.Trainer(new Net(), { precision: 'fp16', device, optimizer: { type: 'adamw', lr: 1e-2 }, seed: 2 });
    const { x, y } = data(64);
    const first = await trainer.step(x, y);
    for (let i = 0; i < 60; i++) await trainer.step(x, y);
    const last = await trainer.step(x, y);
    expect(first.skipped).toBe(false);
    expect(last.loss).toBeLessThan(first.loss * 0.7);
    await trainer.backward(x, y);
    const grads = new Map(trainer.store.gradients().map((g) => [g.name, g.data]));
    expect(grads.get('unused.weight')!.every((v) => v === 0)).toBe(true);
    expect(grads.get('head.weight')!.some((v) => v !== 0)).toBe(true);
    expect(grads.get('blocks.0.ln.weight')!.some((v) => v !== 0)).toBe(true);

    const dir = tmp(), file = path.join(dir, 'net.mpk');
    await trainer.save(file);
    expect(await codeOf(() => mixprec.Trainer.load(file))).toBe('E_CHECKPOINT'); // not a built-in: needs { model }
    const again = await mixprec.Trainer.load(file, { model: new Net() });
    expect(again.model.parameters()).toEqual(trainer.model.parameters());
    const [a, b] = [await trainer.step(x, y), await again.step(x, y)];
    if (device === 'cpu') expect(b).toEqual(a); // bitwise on the CPU
    else expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-3);

    // A model with another shape or another name: E_CHECKPOINT naming the parameter.
    class Wider extends Net { head = new nn.Linear(8, 5); }
    let err: unknown;
    try { await mixprec.Trainer.load(file, { model: new Wider() }); } catch (e) { err = e; }
    expect((err as mixprec.MixprecError).code).toBe('E_CHECKPOINT');
    expect((err as Error).message).toContain("'head.weight'");
    class Renamed extends nn.Module {
      embed = new nn.Linear(6, 8); blocks = new nn.ModuleList([new Block(), new Block()]); unused = new nn.Linear(8, 3); out = new nn.Linear(8, 4);
      forward(x: mixprec.Tensor) { return this.out.forward(this.embed.forward(x)); }
    }
    err = undefined;
    try { await mixprec.Trainer.load(file, { model: new Renamed() }); } catch (e) { err = e; }
    expect((err as mixprec.MixprecError).code).toBe('E_CHECKPOINT');
    expect((err as Error).message).toMatch(/'out\.weight'|'head\.weight'/);
    trainer.dispose();
    again.dispose();
  });

  test('a loss function (output, target) => scalar trains like the built-in loss', async () => {
    const seedModel = () => mixprec.sequential([mixprec.layers.linear(6, 8, { activation: 'relu' }), mixprec.layers.linear(8, 4)], { seed: 4 });
    const { x, y } = data(32);
    const builtin = new mixprec.Trainer(seedModel(), { precision: 'fp32', device, lossScale: 'none' });
    const custom = new mixprec.Trainer(seedModel(), { precision: 'fp32', device, lossScale: 'none', loss: (out, t) => ops.crossEntropy(out, t as Int32Array) });
    for (let i = 0; i < 3; i++) {
      const [a, b] = [await builtin.step(x, y), await custom.step(x, y)];
      expect(Math.abs(a.loss - b.loss)).toBeLessThan(1e-6 * Math.max(1, a.loss));
    }
    expect(await codeOf(() => custom.save(path.join(tmp(), 'x.mpk')))).toBe('E_STATE');
    builtin.dispose();
    custom.dispose();
  });
});

test('built-in Sequential models still load without { model }, and a sequential of built-ins records its config', async () => {
  const model = mixprec.sequential([mixprec.layers.linear(6, 5, { activation: 'relu' }), mixprec.layers.layerNorm(5), mixprec.layers.dropout(0.1), mixprec.layers.linear(5, 3)], { seed: 9 });
  expect(model.config).not.toBeNull();
  const t = new mixprec.Trainer(model, { precision: 'bf16', device: 'cpu' });
  const x = mixprec.tensor(Float32Array.from({ length: 40 * 6 }, () => rng() - 0.5), [40, 6], { device: 'cpu' });
  const y = Int32Array.from({ length: 40 }, (_, i) => i % 3);
  await t.step(x, y);
  const file = path.join(tmp(), 'seq.mpk');
  await t.save(file);
  const back = await mixprec.Trainer.load(file);
  expect(back.model.parameters()).toEqual(t.model.parameters());
  expect(await back.step(x, y)).toEqual(await t.step(x, y));
  t.dispose();
  back.dispose();
});

test('a version-1 checkpoint (written by the layer-based build) loads and continues bitwise as it would have there', async () => {
  // test/fixtures/trainer-v1.mpk: sequential([linear(6, 5, relu), linear(5, 3)], { seed: 2 }), fp16, one
  // step on this batch, saved by the previous release; its next step there gave exactly these values.
  const t = await mixprec.Trainer.load(path.join(__dirname, 'fixtures', 'trainer-v1.mpk'), { device: 'cpu' });
  const x = mixprec.tensor(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [4, 6], { device: 'cpu' });
  const s = await t.step(x, Int32Array.from([0, 1, 2, 1]));
  expect(s).toEqual({ loss: 1.2290236949920654, skipped: false, scale: 65536, gradNorm: 0.567597508430481, lr: 0.001, consecutiveSkipped: 0 });
  t.dispose();
});
