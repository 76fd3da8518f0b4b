// One rank of a data-parallel test job (test/distributed.test.ts starts 1-3 of them with
// mixprec launch). Plain JS on the compiled package, so that each rank starts in well under a
// second. argv[2]: JSON { scenario, dir, ... }; the rank writes what it saw to dir/rank<R>.json.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const mp = require(path.join(__dirname, '..', '..', 'dist'));

const cfg = JSON.parse(process.argv[2]);
// Written whole or not at all (temp file + rename): launch may SIGTERM a rank while it writes.
const out = (rank, obj) => {
  const f = path.join(cfg.dir, `rank${rank}.json`);
  fs.writeFileSync(`${f}.tmp`, JSON.stringify(obj));
  fs.renameSync(`${f}.tmp`, f);
};

// A fixed synthetic classification task (the same rows on every rank): features from a seeded
// stream, labels from a random linear teacher.
function dataset(n, features, classes, seed, oneHot = false) {
  const rng = new mp.Rng(seed);
  const x = new Float32Array(n * features), y = new Int32Array(n);
  const w = Float32Array.from({ length: features * classes }, () => rng.uniform(-1, 1));
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let f = 0; f < features; f++) x[i * features + f] = rng.uniform(-1, 1);
    for (let c = 0; c < classes; c++) {
      let s = 0;
      for (let f = 0; f < features; f++) s += w[c * features + f] * x[i * features + f];
      if (s > best) { best = s; y[i] = c; }
    }
  }
  if (!oneHot) return mp.data.arrayDataset(x, y, { features, classes });
  const t = new Float32Array(n * classes); // mse targets
  for (let i = 0; i < n; i++) t[i * classes + y[i]] = 1;
  return mp.data.arrayDataset(x, t, { features });
}

const b64 = (f32) => Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength).toString('base64');

async function main() {
  const g = mp.distributed.init();
  const rank = g.rank;
  const record = { rank, worldSize: g.worldSize, steps: [] };
  try {
    if (cfg.scenario === 'train' || cfg.scenario === 'die' || cfg.scenario === 'hang') {
      const model = cfg.linear
        ? mp.sequential([mp.layers.linear(cfg.features, cfg.classes)], { seed: 5 + rank }) // different per rank: the broadcast must fix it
        : mp.sequential([mp.layers.linear(cfg.features, 48, { activation: 'gelu' }), mp.layers.linear(48, 32, { activation: 'relu' }), mp.layers.linear(32, cfg.classes)], { seed: 5 + rank });
      const trainer = new mp.Trainer(model, {
        precision: cfg.precision, seed: 3, optimizer: cfg.optimizer ?? { type: 'adamw', lr: 3e-3 },
        gradAccumulation: cfg.gradAccumulation ?? 1, distributed: { bucketBytes: cfg.bucketBytes ?? 256 },
        loss: cfg.loss ?? 'softmaxCrossEntropy', maxGradNorm: cfg.maxGradNorm ?? 0,
      });
      record.buckets = trainer.reducer.buckets.length;
      record.initial = b64(trainer.store.masterFlat());
      const ds = dataset(cfg.n, cfg.features, cfg.classes, 11, cfg.loss === 'mse');
      await trainer.fit(ds, {
        epochs: cfg.epochs ?? 1, batchSize: cfg.batchSize,
        callbacks: {
          onStep: (s) => {
            record.steps.push({ loss: s.loss, skipped: s.skipped, scale: s.scale, gradNorm: s.gradNorm });
            record.overlapped = Math.max(record.overlapped ?? 0, trainer.reducer.launchedDuringBackward);
            if (s.step === cfg.failAt && rank === cfg.failRank) {
              if (cfg.scenario === 'die') process.kill(process.pid, 'SIGKILL');
              if (cfg.scenario === 'hang') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000); // alive, not answering
            }
          },
        },
      });
      record.final = b64(trainer.store.masterFlat());
      record.scale = trainer.scaler.scale;
      if (cfg.loss !== 'mse') record.eval = await trainer.evaluate(ds, { batchSize: 50 });
      if (cfg.save) await trainer.save(path.join(cfg.dir, 'ckpt.mpk'));
    } else if (cfg.scenario === 'inf') {
      // fp16, mse: on rank 1 alone, one step's targets are huge, so only its scaled FP16 gradient overflows.
      const model = mp.sequential([mp.layers.linear(8, 16, { activation: 'relu' }), mp.layers.linear(16, 4)], { seed: 1 });
      const trainer = new mp.Trainer(model, { precision: 'fp16', loss: 'mse', seed: 1, optimizer: { type: 'sgd', lr: 0.01 }, distributed: { bucketBytes: 256 } });
      const rng = new mp.Rng(100 + rank);
      for (let step = 0; step < 6; step++) {
        const x = mp.tensor(Float32Array.from({ length: 32 * 8 }, () => rng.uniform(-1, 1)), [32, 8], { dtype: 'float16' });
        const big = step === cfg.failAt && rank === 1 ? 3e4 : 1;
        const y = mp.tensor(Float32Array.from({ length: 32 * 4 }, () => big * rng.uniform(-1, 1)), [32, 4]);
        const s = await trainer.step(x, y);
        record.steps.push({ loss: s.loss, skipped: s.skipped, scale: s.scale, gradNorm: s.gradNorm });
        x.dispose(); y.dispose();
      }
      record.final = b64(trainer.store.masterFlat());
      record.counters = trainer.scaler.counters;
    } else if (cfg.scenario === 'resume') {
      const trainer = await mp.Trainer.load(path.join(cfg.dir, 'ckpt.mpk'));
      record.loadedIteration = trainer.iteration;
      record.loaded = b64(trainer.store.masterFlat());
      const ds = dataset(cfg.n, cfg.features, cfg.classes, 11);
      const hist = await trainer.fit(ds, { epochs: 1, batchSize: cfg.batchSize });
      record.history = hist;
      record.iteration = trainer.iteration;
      record.final = b64(trainer.store.masterFlat());
    }
    mp.distributed.destroy();
  } catch (e) {
    record.error = { code: e.code, message: e.message };
    out(rank, record);
    process.exit(3);
  }
  out(rank, record);
}

main();
