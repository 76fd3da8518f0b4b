#!/usr/bin/env node
// The default GPT run (`mixprec train --model gpt`) in fp32, fp16 and bf16, one after another on
// this machine, then a sample from the fp16 checkpoint: writes the summaries (and PyTorch's runs
// from bench/results/gpt-torch-*.json when given) as JSON, and the loss curves as one SVG.
//
//   node bench/gpt_runs.js --out bench/results/gpt-runs-DATE.json --svg docs/gpt-curves.svg [--iters 2000] [--torch FILE ...]
//   node bench/gpt_runs.js --from bench/results/gpt-runs-DATE.json --svg ... --torch FILE ...   (redraw, no training)
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { lineChart } = require('../dist/diagnostics/svg');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const torchFiles = args.flatMap((a, i) => (a === '--torch' ? [args[i + 1]] : []));
const iters = opt('--iters', '2000'), outFile = opt('--out'), svgFile = opt('--svg');
const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-gpt-runs-'));

const from = opt('--from');
const saved = from ? JSON.parse(fs.readFileSync(from, 'utf8')) : null;
const runs = saved ? saved.runs : {};
for (const precision of saved ? [] : ['fp32', 'fp16', 'bf16']) {
  const ckpt = path.join(dir, `${precision}.mpk`);
  process.stderr.write(`training ${precision} ...\n`);
  const r = spawnSync(process.execPath, [cli, 'train', '--model', 'gpt', '--precision', precision, '--iters', iters, '--json', '--save', ckpt, '--device', 'cpu'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${precision}: ${r.stderr}`);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop());
  runs[precision] = { ...summary, checkpoint: path.basename(ckpt) };
  process.stderr.write(`  val ${summary.finalValLoss.toFixed(4)}, ${summary.tokensPerSecond.toFixed(0)} tokens/s, ${summary.wallSeconds.toFixed(0)} s\n`);
}
const s = saved ? { stdout: saved.sample } : spawnSync(process.execPath, [cli, 'sample', '--checkpoint', path.join(dir, 'fp16.mpk'), '--prompt', 'Fellow-Citizens', '--tokens', '500', '--temperature', '0.8', '--top-k', '40', '--seed', '0', '--device', 'cpu'], { encoding: 'utf8' });
const torch = Object.fromEntries(torchFiles.map((f) => { const t = JSON.parse(fs.readFileSync(f, 'utf8')); return [t.precision, t]; }));
const result = {
  date: saved?.date ?? new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, iters: saved?.iters ?? Number(iters),
  runs: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, { finalValLoss: v.finalValLoss, val: v.val, tokensPerSecond: v.tokensPerSecond, trainSeconds: v.trainSeconds, wallSeconds: v.wallSeconds, lossScale: v.lossScale, skippedSteps: v.skippedSteps, trainCurve: v.trainCurve }])),
  torch: Object.fromEntries(Object.entries(torch).map(([k, v]) => [k, { finalValLoss: v.finalValLoss, val: v.val, tokensPerSecond: v.tokensPerSecond, seconds: v.seconds, torch: v.torch }])),
  sample: s.stdout,
};
const colors = { fp32: '#1f77b4', fp16: '#d62728', bf16: '#2ca02c' };
const series = [];
for (const [p, v] of Object.entries(runs)) {
  series.push({ name: `mixprec ${p}: training loss (mean of 10 steps)`, points: v.trainCurve, color: colors[p], faint: true });
  series.push({ name: `mixprec ${p}: validation loss (final ${v.finalValLoss.toFixed(3)})`, points: v.val, color: colors[p] });
}
for (const [p, v] of Object.entries(torch)) series.push({ name: `PyTorch ${p}: validation loss (final ${v.finalValLoss.toFixed(3)})`, points: v.val.filter(([i]) => i > 0), color: colors[p], dashed: true });
const svg = lineChart({
  title: `GPT 4 layers x 4 heads x 128, block 64, batch 12, State of the Union: loss per precision (${result.cpu}, ${result.cores} cores)`,
  xLabel: 'iteration', yLabel: 'loss (nats per character)', width: 900, height: 460, yRange: [1.4, 3.6], series,
});
if (svgFile) { fs.mkdirSync(path.dirname(path.resolve(svgFile)), { recursive: true }); fs.writeFileSync(svgFile, svg); }
if (outFile) { fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true }); fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n'); }
console.log(JSON.stringify({ ...result, runs: Object.fromEntries(Object.entries(result.runs).map(([k, v]) => [k, { finalValLoss: v.finalValLoss, tokensPerSecond: v.tokensPerSecond, wallSeconds: v.wallSeconds, skippedSteps: v.skippedSteps }])) }, null, 2));
fs.rmSync(dir, { recursive: true, force: true });
