#!/usr/bin/env node
// Parity with PyTorch: the same GPT config, the same initial weights (exported from mixprec by
// nanoGPT's state-dict names into a PyTorch nanoGPT), the same batches, dropout 0 -> per-step
// losses of 50 FP32 steps (AdamW, warm-up + cosine LR, clipping) from mixprec and from
// bench/gpt_torch_ref.py in float32 and float64. Goal: equal to 1e-4 relative.
//
//   node bench/gpt_parity.js [--steps 50] [--out bench/results/gpt-parity.json]
//
// Needs the built package (npm install) and PyTorch (Debian: apt-get install python3-torch).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const mp = require('..');
const { trainBatch } = require('../dist/train/cli_gpt');
const { referenceEnv } = require('../dist/bench/gpt');
const { findPython } = require('../dist/bench/reference');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const steps = Number(arg('--steps', 50));
const outFile = arg('--out');

(async () => {
  const data = mp.data.text({ corpus: 'sotu' });
  const cfg = { vocabSize: data.vocabSize, blockSize: 64, nLayer: 4, nHead: 4, nEmbd: 128, bias: true };
  const train = { lr: 1e-3, minLr: 1e-4, warmupIters: 10, iters: steps, betas: [0.9, 0.99], weightDecay: 0.1, decay: 'matrices', clip: 1.0, batchSize: 12, steps };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-parity-'));
  // 1. The initial weights, by nanoGPT name, little-endian float32.
  const model = mp.models.gpt(cfg, { seed: 0 });
  const params = model.parameters();
  let offset = 0;
  const index = params.map((p) => { const e = { name: p.name, shape: p.shape, offset }; offset += p.data.length; return e; });
  fs.writeFileSync(path.join(dir, 'weights.json'), JSON.stringify(index));
  fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.concat(params.map((p) => Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength))));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, ...train }));
  // 2. The batches: the training job's own (one seeded stream per iteration).
  const B = train.batchSize, T = cfg.blockSize;
  const all = new Int32Array(steps * 2 * B * T);
  const batches = [];
  for (let t = 0; t < steps; t++) {
    const b = trainBatch(data, t, B, T, 0);
    all.set(b.x, t * 2 * B * T);
    all.set(b.y, (t * 2 + 1) * B * T);
    batches.push(b);
  }
  fs.writeFileSync(path.join(dir, 'batches.bin'), Buffer.from(all.buffer));
  // 3. mixprec, FP32 on the CPU.
  const trainer = new mp.Trainer(model, {
    precision: 'fp32', device: 'cpu', optimizer: { type: 'adamw', lr: train.lr, betas: train.betas, weightDecay: train.weightDecay, decayParameters: 'matrices' },
    maxGradNorm: train.clip, lrSchedule: { type: 'cosine', totalSteps: train.iters, warmupSteps: train.warmupIters, minLr: train.minLr },
  });
  const ours = [];
  for (const b of batches) {
    const x = mp.tensor(b.x, [B, T], { dtype: 'int32', device: 'cpu' });
    ours.push((await trainer.step(x, b.y)).loss);
    x.dispose();
  }
  trainer.dispose();
  // 4. PyTorch on the same files.
  const py = findPython(['torch']);
  if (!py) throw new Error('no python3 with torch: apt-get install python3-torch');
  const r = spawnSync(py, [path.join(__dirname, 'gpt_torch_ref.py'), 'parity', dir], { encoding: 'utf8', env: referenceEnv(), timeout: 1_800_000 });
  if (r.status !== 0) throw new Error(`gpt_torch_ref.py failed: ${r.stderr}`);
  const ref = JSON.parse(r.stdout.trim().split('\n').pop());
  const rel = (a, b) => a.map((v, i) => Math.abs(v - b[i]) / Math.abs(b[i]));
  const vs32 = rel(ours, ref.float32), vs64 = rel(ours, ref.float64), torch32vs64 = rel(ref.float32, ref.float64);
  const max = (a) => Math.max(...a);
  const result = {
    what: `GPT ${cfg.nLayer}x${cfg.nHead}x${cfg.nEmbd}, block ${T}, batch ${B}, ${steps} FP32 steps, dropout 0, same init and batches`,
    date: new Date().toISOString(), cpu: os.cpus()[0]?.model, torch: ref.torch, config: { ...cfg, ...train },
    maxRelDiff: { oursVsTorchFloat32: max(vs32), oursVsTorchFloat64: max(vs64), torchFloat32VsFloat64: max(torch32vs64) },
    goal: 1e-4, pass: max(vs32) <= 1e-4,
    losses: { mixprec: ours, torchFloat32: ref.float32, torchFloat64: ref.float64 },
  };
  console.log('step  mixprec     torch fp32  torch fp64  rel(ours, fp32)  rel(ours, fp64)');
  for (let t = 0; t < steps; t++)
    console.log(`${String(t).padStart(4)}  ${ours[t].toFixed(6)}  ${ref.float32[t].toFixed(6)}  ${ref.float64[t].toFixed(6)}  ${vs32[t].toExponential(2).padStart(15)}  ${vs64[t].toExponential(2).padStart(15)}`);
  console.log(`max relative difference: ours vs torch float32 ${max(vs32).toExponential(2)}, ours vs float64 ${max(vs64).toExponential(2)} (torch float32 vs float64: ${max(torch32vs64).toExponential(2)}); goal 1e-4: ${result.pass ? 'met' : 'NOT met'}`);
  if (outFile) {
    fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
    fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
    console.log(`wrote ${outFile}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
})().catch((e) => { console.error(e); process.exit(1); });
