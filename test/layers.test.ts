// Every layer and loss: analytical gradients (our backward, FP32) against float64 central finite
// differences of an independent float64 forward (test/helpers/mlp_ref.ts), on every backend.
import * as mixprec from '../src';
import { describeEachBackend } from './helpers/backends';
import { crossEntropy64, forward64, mse64, RefLayer } from './helpers/mlp_ref';
import { makeRng } from './helpers/random';

const rng = makeRng('layers.test');

const CASES: { name: string; layers: RefLayer[]; loss: 'softmaxCrossEntropy' | 'mse'; smoothing?: number }[] = [
  { name: 'linear (no bias) + cross-entropy', layers: [{ type: 'linear', inFeatures: 6, outFeatures: 5, bias: false, activation: 'none' }], loss: 'softmaxCrossEntropy' },
  { name: 'linear+relu (fused) -> linear + cross-entropy with label smoothing', layers: [{ type: 'linear', inFeatures: 7, outFeatures: 9, bias: true, activation: 'relu' }, { type: 'linear', inFeatures: 9, outFeatures: 4, bias: true, activation: 'none' }], loss: 'softmaxCrossEntropy', smoothing: 0.1 },
  { name: 'linear+gelu (fused, pre-activation kept) -> linear + mse', layers: [{ type: 'linear', inFeatures: 5, outFeatures: 8, bias: true, activation: 'gelu' }, { type: 'linear', inFeatures: 8, outFeatures: 3, bias: true, activation: 'none' }], loss: 'mse' },
  { name: 'linear -> relu -> linear -> gelu -> linear (separate activation layers)', layers: [{ type: 'linear', inFeatures: 4, outFeatures: 6, bias: true, activation: 'none' }, { type: 'activation', activation: 'relu' }, { type: 'linear', inFeatures: 6, outFeatures: 6, bias: true, activation: 'none' }, { type: 'activation', activation: 'gelu' }, { type: 'linear', inFeatures: 6, outFeatures: 3, bias: true, activation: 'none' }], loss: 'softmaxCrossEntropy' },
  { name: 'linear -> layerNorm -> gelu -> linear', layers: [{ type: 'linear', inFeatures: 5, outFeatures: 7, bias: true, activation: 'none' }, { type: 'layerNorm', features: 7, eps: 1e-5 }, { type: 'activation', activation: 'gelu' }, { type: 'linear', inFeatures: 7, outFeatures: 3, bias: true, activation: 'none' }], loss: 'mse' },
];

function build(layers: RefLayer[], seed: number): mixprec.Sequential {
  return mixprec.sequential(layers.map((l) =>
    l.type === 'linear' ? mixprec.layers.linear(l.inFeatures, l.outFeatures, { bias: l.bias, activation: l.activation })
      : l.type === 'activation' ? (l.activation === 'relu' ? mixprec.layers.relu() : mixprec.layers.gelu())
        : mixprec.layers.layerNorm(l.features, { eps: l.eps })), { seed, inFeatures: layers[0].type === 'linear' ? layers[0].inFeatures : undefined });
}

describeEachBackend('layer gradients vs float64 finite differences', (device) => {
  for (const c of CASES) {
    test(c.name, async () => {
      const model = build(c.layers, Math.floor(rng() * 1e6));
      // Random non-trivial parameters (layer-norm weights away from 1, biases away from 0).
      model.loadParameters(model.parameters().map((p) => ({ name: p.name, data: p.data.map(() => (rng() * 2 - 1) * 0.8) })));
      const trainer = new mixprec.Trainer(model, { precision: 'fp32', loss: c.loss, labelSmoothing: c.smoothing ?? 0, device, lossScale: 'none' });
      const B = 5, nin = model.inFeatures, nout = model.outFeatures;
      const xv = Float32Array.from({ length: B * nin }, () => rng() * 2 - 1);
      const x = mixprec.tensor(xv, [B, nin], { device });
      const labels = Int32Array.from({ length: B }, () => Math.floor(rng() * nout));
      const tv = Float32Array.from({ length: B * nout }, () => rng() * 2 - 1);
      const y = c.loss === 'mse' ? mixprec.tensor(tv, [B, nout], { device }) : labels;
      const loss = await trainer.backward(x, y);
      const grads = trainer.store.gradients();

      const params = new Map(model.parameters().map((p) => [p.name, Float64Array.from(p.data)]));
      const rows = Array.from({ length: B }, (_, r) => Float64Array.from(xv.subarray(r * nin, (r + 1) * nin)));
      const trows = Array.from({ length: B }, (_, r) => Float64Array.from(tv.subarray(r * nout, (r + 1) * nout)));
      const lossOf = () => {
        const out = forward64(c.layers, params, rows);
        return c.loss === 'mse' ? mse64(out, trows) : crossEntropy64(out, labels, c.smoothing ?? 0);
      };
      expect(Math.abs(loss - lossOf())).toBeLessThan(1e-5 * Math.max(1, Math.abs(lossOf())));
      const h = 1e-6;
      for (const g of grads) {
        const p = params.get(g.name)!;
        const fd = new Float64Array(p.length);
        for (let i = 0; i < p.length; i++) {
          const v = p[i];
          p[i] = v + h; const up = lossOf();
          p[i] = v - h; const dn = lossOf();
          p[i] = v;
          fd[i] = (up - dn) / (2 * h);
        }
        let num = 0, den = 0;
        for (let i = 0; i < p.length; i++) { num += (g.data[i] - fd[i]) ** 2; den += fd[i] ** 2; }
        const rel = Math.sqrt(num / Math.max(den, 1e-30));
        if (!(rel < 1e-3)) throw new Error(`${g.name}: relative gradient error ${rel} (ours ${Array.from(g.data.slice(0, 4))}, fd ${Array.from(fd.slice(0, 4))})`);
      }
      trainer.dispose();
    });
  }

  test('the loss gradient carries the loss scale: fp16 gradients / S equal the fp32 ones', async () => {
    // GELU, not ReLU: a ReLU input near 0 can change sign between the fp16 and fp32 forwards and
    // move a whole row of the gradient (seen in about 5% of random draws); GELU is smooth, so
    // the two differ by rounding only (over 400 draws: median 1.1, max 3.2 fp16 roundoffs).
    const layers: RefLayer[] = [{ type: 'linear', inFeatures: 8, outFeatures: 16, bias: true, activation: 'gelu' }, { type: 'linear', inFeatures: 16, outFeatures: 4, bias: true, activation: 'none' }];
    const seed = Math.floor(rng() * 1e6);
    const xv = Float32Array.from({ length: 32 * 8 }, () => rng() * 2 - 1);
    const labels = Int32Array.from({ length: 32 }, () => Math.floor(rng() * 4));
    const grads = async (precision: 'fp32' | 'fp16', lossScale: number | 'none') => {
      const t = new mixprec.Trainer(build(layers, seed), { precision, device, lossScale });
      await t.backward(mixprec.tensor(xv, [32, 8], { device }), labels);
      const g = t.store.gradients();
      t.dispose();
      return g;
    };
    const ref = await grads('fp32', 'none');
    const scaled = await grads('fp16', 1024);
    ref.forEach((r, i) => {
      const s = scaled[i].data.map((v) => v / 1024);
      let num = 0, den = 0;
      r.data.forEach((v, j) => { num += (v - s[j]) ** 2; den += v * v; });
      expect(Math.sqrt(num / den)).toBeLessThan(16 * 2 ** -11); // 16 fp16 roundoffs: fp16 activations and weights
    });
  });
}, { everyCpuIsa: true });

test('PyTorch-shaped parameters: names, order (weight before bias), Linear weight [out, in], Kaiming-uniform bounds', () => {
  const m = mixprec.sequential([mixprec.layers.linear(20, 30, { activation: 'relu' }), mixprec.layers.layerNorm(30), mixprec.layers.dropout(0.1), mixprec.layers.linear(30, 10)], { seed: 3 });
  expect(m.parameters().map((p) => [p.name, p.shape])).toEqual([
    ['0.weight', [30, 20]], ['0.bias', [30]], ['1.weight', [30]], ['1.bias', [30]], ['3.weight', [10, 30]], ['3.bias', [10]],
  ]);
  const w0 = m.parameters()[0].data;
  const bound = 1 / Math.sqrt(20);
  expect(Math.max(...w0)).toBeLessThanOrEqual(bound);
  expect(Math.min(...w0)).toBeGreaterThanOrEqual(-bound);
  expect(Math.max(...w0)).toBeGreaterThan(0.9 * bound); // actually spread over the range
  expect(m.parameters()[2].data.every((v) => v === 1)).toBe(true);
  // the same seed gives the same init; another seed another one
  expect(mixprec.sequential([mixprec.layers.linear(20, 30)], { seed: 3 }).parameters()[0].data).toEqual(w0);
  expect(mixprec.sequential([mixprec.layers.linear(20, 30)], { seed: 4 }).parameters()[0].data).not.toEqual(w0);
  expect(() => mixprec.sequential([mixprec.layers.linear(20, 30), mixprec.layers.linear(31, 2)])).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
});
