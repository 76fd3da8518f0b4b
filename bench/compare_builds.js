#!/usr/bin/env node
// The MLP training step and square GEMMs of two builds of mixprec side by side, in one process,
// interleaved (old, new, old, new, ...) so both see the same machine load: ms/step and GFLOP/s
// for fp32 / fp16 / bf16.
//   node bench/compare_builds.js OLD_CHECKOUT [NEW_CHECKOUT=.] [--widths 784,1024,1024,10] [--batch 256]
//        [--rounds 5] [--gemm 512,1024,2048 | --gemm none]
// Each checkout must be built (npm install: build/Release/mixprec.node and dist/).
'use strict';
const path = require('node:path');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : dflt; };
const widths = opt('--widths', '784,1024,1024,10').split(',').map(Number);
const batch = Number(opt('--batch', '256'));
const rounds = Number(opt('--rounds', '5'));
const gemmSizes = opt('--gemm', '512,1024,2048').split(',').filter((v) => v !== 'none').map(Number);
const [oldDir, newDir = '.'] = args;
if (!oldDir) { console.error('usage: node bench/compare_builds.js OLD_CHECKOUT [NEW_CHECKOUT]'); process.exit(2); }
const load = (dir) => require(path.resolve(dir, 'dist', 'index.js'));
const builds = { old: load(oldDir), new: load(newDir) };

function trainer(mp, precision) {
  const ls = widths.slice(1).map((w, i) => mp.layers.linear(widths[i], w, { activation: i < widths.length - 2 ? 'relu' : 'none' }));
  const t = new mp.Trainer(mp.sequential(ls, { seed: 0 }), { precision, device: 'cpu', optimizer: 'adamw' });
  const x = mp.tensor(Float32Array.from({ length: batch * widths[0] }, (_, i) => Math.sin(i) * 0.5), [batch, widths[0]], { dtype: t.computeDtype, device: 'cpu' });
  const y = Int32Array.from({ length: batch }, (_, i) => i % widths[widths.length - 1]);
  return { step: () => t.step(x, y), dispose: () => { x.dispose(); t.dispose(); } };
}

async function time(fn, reps) {
  const ts = [];
  for (let i = 0; i < reps; i++) { const t0 = process.hrtime.bigint(); await fn(); ts.push(Number(process.hrtime.bigint() - t0) / 1e6); }
  ts.sort((a, b) => a - b);
  return ts[ts.length >> 1];
}

(async () => {
  const rows = [];
  for (const precision of ['fp32', 'fp16', 'bf16']) {
    const t = { old: trainer(builds.old, precision), new: trainer(builds.new, precision) };
    for (const k of ['old', 'new']) for (let i = 0; i < 3; i++) await t[k].step(); // warm up (allocator, thread pool)
    const ms = { old: [], new: [] };
    for (let r = 0; r < rounds; r++) for (const k of r % 2 ? ['new', 'old'] : ['old', 'new']) ms[k].push(await time(t[k].step, 5));
    const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
    rows.push({ precision, oldMs: med(ms.old), newMs: med(ms.new), newOverOld: med(ms.new) / med(ms.old) });
    t.old.dispose(); t.new.dispose();
  }
  console.log(`MLP ${widths.join('-')}, batch ${batch}, AdamW, CPU: ms/step (median of ${rounds} interleaved rounds of 5 steps)`);
  console.log('| precision | old build | new build | new / old |\n| --- | --- | --- | --- |');
  for (const r of rows) console.log(`| ${r.precision} | ${r.oldMs.toFixed(2)} | ${r.newMs.toFixed(2)} | ${r.newOverOld.toFixed(3)} |`);
  const gemm = [];
  for (const n of gemmSizes) for (const dtype of ['float32', 'float16', 'bfloat16']) {
    const v = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i) * 0.5);
    const mk = (mp) => {
      const a = mp.tensor(v, [n, n], { dtype, device: 'cpu' }), b = mp.tensor(v, [n, n], { dtype, device: 'cpu' });
      const out = mp.empty([n, n], { dtype, device: 'cpu' });
      return { run: () => mp.ops.matmul(a, b, { out }), dispose: () => [a, b, out].forEach((x) => x.dispose()) };
    };
    const g = { old: mk(builds.old), new: mk(builds.new) };
    for (const k of ['old', 'new']) g[k].run();
    const ms = { old: [], new: [] };
    for (let r = 0; r < rounds; r++) for (const k of r % 2 ? ['new', 'old'] : ['old', 'new']) ms[k].push(await time(g[k].run, n >= 2048 ? 2 : 5));
    const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
    const gf = (m) => (2 * n ** 3) / (m / 1e3) / 1e9;
    gemm.push({ n, dtype, oldGflops: gf(med(ms.old)), newGflops: gf(med(ms.new)), newOverOld: med(ms.old) / med(ms.new) });
    g.old.dispose(); g.new.dispose();
  }
  if (gemm.length) {
    console.log(`\nGEMM n x n x n, CPU: GFLOP/s (median of ${rounds} interleaved rounds)`);
    console.log('| n | dtype | old build | new build | new / old |\n| --- | --- | --- | --- | --- |');
    for (const r of gemm) console.log(`| ${r.n} | ${r.dtype} | ${r.oldGflops.toFixed(1)} | ${r.newGflops.toFixed(1)} | ${r.newOverOld.toFixed(3)} |`);
  }
  const isa = builds.new.cpuIsa ? builds.new.cpuIsa() : undefined;
  console.log(JSON.stringify({ widths, batch, rounds, rows, gemm, newCpuIsa: isa, cpu: require('node:os').cpus()[0].model }));
})();
