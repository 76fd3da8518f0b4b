#!/usr/bin/env node
// One rank of `mixprec bench dist` (src/bench/dist.ts starts it through launch()): argv[2] is a
// JSON config. Rank 0 prints one JSON line on stdout with its measurements; nothing else goes to
// stdout. Every rank runs the same fixed number of collectives / steps (a time-based loop could
// stop on one rank and not the other, leaving it blocked in a collective).
//   { mode: 'allreduce', sizesMb: number[], warmup?: number }
//   { mode: 'train', widths: number[], batch: number (per rank), precisions: string[], warmup: number, steps: number, distributed: boolean }
'use strict';
const path = require('node:path');
const mixprec = require(path.join(__dirname, '..', 'dist'));

const { distributed: dist } = mixprec;
const now = () => process.hrtime.bigint();
const secs = (t0, t1) => Number(t1 - t0) / 1e9;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const quantile = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };

/** Element-wise max over the ranks of a list of numbers (the collective ends when the slowest rank's call does). */
async function maxOverRanks(values) {
  if (!dist.isInitialized() || dist.worldSize() === 1) return values;
  const t = mixprec.tensor(Float32Array.from(values), [values.length]);
  try {
    dist.allReduce(t, 'max');
    return Array.from(await t.toFloat32());
  } finally {
    t.dispose();
  }
}

/** Fewer repetitions for the big buffers: ~4 GiB reduced per size, 5..50 calls. */
function repsFor(bytes) {
  return Math.max(5, Math.min(50, Math.round(2 ** 32 / bytes)));
}

async function allReduceBench(cfg) {
  const g = dist.init();
  const rows = [];
  for (const mb of cfg.sizesMb) {
    const bytes = Math.round(mb * 2 ** 20);
    const n = Math.max(1, Math.floor(bytes / 4));
    const t = mixprec.full([n], g.rank + 1);
    // Correctness once: sum of (rank + 1) over the ranks, at both ends of the buffer.
    dist.allReduce(t, 'sum');
    const want = (g.worldSize * (g.worldSize + 1)) / 2;
    const [first] = await t.narrow(0, 0, 1).toFloat32();
    const [last] = await t.narrow(0, n - 1, 1).toFloat32();
    if (first !== want || last !== want) throw new Error(`allReduce(sum) of ${mb} MB: got ${first} / ${last}, expected ${want}`);
    for (let i = 0; i < (cfg.warmup ?? 2); i++) dist.allReduce(t, 'sum');
    const reps = repsFor(n * 4);
    const times = [];
    for (let i = 0; i < reps; i++) {
      dist.barrier(); // both ranks start each timed call together
      const t0 = now();
      dist.allReduce(t, 'sum');
      times.push(secs(t0, now()));
    }
    t.dispose();
    const slowest = await maxOverRanks(times);
    rows.push({ sizeMb: mb, bytes: n * 4, reps, seconds: median(slowest), secondsRank0: median(times), minSeconds: Math.min(...slowest) });
  }
  dist.barrier();
  if (g.rank === 0) process.stdout.write(JSON.stringify({ mode: 'allreduce', worldSize: g.worldSize, backend: g.backend, rows }) + '\n');
  dist.destroy();
}

async function trainBench(cfg) {
  const g = cfg.distributed ? dist.init() : { rank: 0, worldSize: 1, backend: null };
  const { widths, batch } = cfg;
  const rows = [];
  for (const precision of cfg.precisions) {
    mixprec.manualSeed(1234 + g.rank);
    const x = Float32Array.from({ length: batch * widths[0] }, () => Math.random() * 2 - 1);
    const y = Int32Array.from({ length: batch }, () => Math.floor(Math.random() * widths[widths.length - 1]));
    const ls = widths.slice(1).map((w, i) => mixprec.layers.linear(widths[i], w, { activation: i < widths.length - 2 ? 'relu' : 'none' }));
    const trainer = new mixprec.Trainer(mixprec.sequential(ls), { precision, device: 'cpu', optimizer: 'adamw', seed: 1234 });
    const xt = mixprec.tensor(x, [batch, widths[0]], { dtype: trainer.computeDtype, device: 'cpu' });
    for (let i = 0; i < cfg.warmup; i++) await trainer.step(xt, y);
    const times = [];
    let skipped = 0, loss = NaN;
    for (let i = 0; i < cfg.steps; i++) {
      const t0 = now();
      const r = await trainer.step(xt, y); // reads the loss back: the step has finished on return
      times.push(secs(t0, now()));
      if (r.skipped) skipped += 1;
      loss = r.loss;
    }
    const slowest = await maxOverRanks([median(times)]);
    const seconds = slowest[0];
    rows.push({
      precision, ranks: g.worldSize, threadsPerRank: Number(process.env.MIXPREC_NUM_THREADS) || null, batchPerRank: batch,
      globalBatch: batch * g.worldSize, steps: cfg.steps, warmup: cfg.warmup, msPerStep: seconds * 1e3,
      msPerStepRank0: median(times) * 1e3, msP10Rank0: quantile(times, 0.1) * 1e3, msP90Rank0: quantile(times, 0.9) * 1e3, samplesPerSecond: (batch * g.worldSize) / seconds, skippedSteps: skipped, finalLoss: loss,
      dataParallel: trainer.reducer !== null,
    });
    xt.dispose();
    trainer.dispose();
  }
  if (cfg.distributed) dist.barrier();
  if (g.rank === 0) process.stdout.write(JSON.stringify({ mode: 'train', worldSize: g.worldSize, backend: g.backend, rows }) + '\n');
  if (cfg.distributed) dist.destroy();
}

async function main() {
  const cfg = JSON.parse(process.argv[2] ?? '{}');
  if (cfg.mode === 'allreduce') await allReduceBench(cfg);
  else if (cfg.mode === 'train') await trainBench(cfg);
  else throw new Error(`dist_worker: unknown mode ${JSON.stringify(cfg.mode)}`);
}

main().catch((e) => {
  process.stderr.write(`dist_worker: ${e && e.stack ? e.stack : String(e)}\n`);
  process.exit(1);
});
