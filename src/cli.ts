#!/usr/bin/env node
// The `mixprec` command: info | bench | train | sample | diagnose | launch. Argument parsing by commander.
import { Command, InvalidArgumentError } from 'commander';
import { execSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { backends } from './backends';
import { benchAmp } from './bench/amp';
import { cpuIsa } from './cpu';
import { benchGemm, GemmShapeItem, parseGemmShapes, shapeLabel } from './bench/gemm';
import { benchTrain } from './bench/train';
import { describeReference } from './bench/reference';
import { benchTape } from './bench/tape';
import { benchGpt } from './bench/gpt';
import { benchDist } from './bench/dist';
import { resolveDevice } from './backends';
import { MixprecError } from './errors';
import { addTrainCommand } from './train/cli_train';
import { addDiagnoseCommand } from './diagnostics/cli_diagnose';
import { addSampleCommand } from './train/cli_sample';
import { addLaunchCommand } from './distributed/launch';
import { benchChart } from './diagnostics/plots';
import { writeOutput } from './util/files';
import { available } from './distributed/group';

const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };

function intList(v: string): number[] {
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (!xs.every((x) => Number.isInteger(x) && x > 0)) throw new InvalidArgumentError('expected positive integers, e.g. 256,512');
  return xs;
}

function machine() {
  let commit: string | undefined;
  try {
    commit = execSync('git rev-parse --short HEAD', { cwd: path.join(__dirname, '..'), stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch { /* not a checkout */ }
  return { date: new Date().toISOString(), mixprec: pkg.version, commit, node: process.version, cpu: os.cpus()[0]?.model, cores: os.cpus().length, backends: backends() };
}

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

const program = new Command('mixprec')
  .description('mixed-precision neural-network training for Node.js')
  .version(pkg.version)
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2)); // usage errors exit 2

program
  .command('info')
  .description('which backends are compiled and available (and why not), the device, the CPU GEMM path')
  .option('--json', 'print JSON')
  .action((o: { json?: boolean }) => {
    const list = backends();
    const distributed = available();
    const isa = cpuIsa();
    if (o.json) return console.log(JSON.stringify({ mixprec: pkg.version, node: process.version, backends: list, cpuIsa: isa, distributed }, null, 2));
    console.log(`mixprec ${pkg.version} (node ${process.version})`);
    for (const b of list) {
      const state = b.available ? 'available' : b.compiled ? 'compiled, unavailable' : 'not compiled';
      const extra = b.device ? ` — ${b.device.name}, compute ${b.device.computeCapability}, ${(b.device.totalMemory / 2 ** 30).toFixed(1)} GiB` : b.features ? ` — GEMM: ${b.features}` : '';
      console.log(`  ${b.name.padEnd(5)} ${state}${extra}${b.reason ? `\n        ${b.reason}` : ''}`);
    }
    const kib = (n: number) => (n >= 2 ** 20 ? `${n / 2 ** 20} MiB` : `${n / 2 ** 10} KiB`);
    console.log(`CPU kernels: ${isa.active}${isa.active !== isa.best ? ` (lowered from ${isa.best})` : ''}; this CPU has ${isa.available.join(', ')} (MIXPREC_CPU_ISA to choose)`);
    console.log(`  features ${isa.cpuFeatures.join(' ') || '-'}; caches L1d ${kib(isa.cacheBytes.l1d)}, L2 ${kib(isa.cacheBytes.l2)}, L3 ${kib(isa.cacheBytes.l3)}`);
    console.log('distributed (mixprec launch, mixprec.distributed):');
    console.log(`  gloo  ${distributed.gloo ? 'available (CPU tensors over TCP)' : `unavailable\n        ${distributed.glooReason}`}`);
    console.log(`  nccl  ${distributed.nccl ? `loaded, version ${distributed.ncclVersion} (CUDA tensors)` : `not loadable\n        ${distributed.ncclReason}`}`);
  });

program
  .command('bench')
  .description('benchmarks: gemm (GFLOP/s for fp32/fp16/bf16, ratios to fp32 and to a reference BLAS measured in the same run); amp (fused unscale/check/norm and AdamW as GB/s and as a ratio to a copy, vs the unfused passes)')
  .argument('[sections...]', 'sections to run: gemm, amp, train, gpt, tape (default: all of these); dist (all-reduce bandwidth and 1x2 vs 2x1 training scaling; spawns processes, runs only when named)', ['gemm', 'amp', 'train', 'gpt', 'tape'])
  .option('--dist-sizes <list>', 'dist: all-reduce buffer sizes in MB', intList, [1, 4, 16, 64, 256])
  .option('--widths <list>', 'train, dist: MLP widths', intList, [784, 1024, 1024, 10])
  .option('--batch <n>', 'train: batch size (dist: the global batch)', (v) => intList(v)[0], 256)
  .option('--params <n>', 'amp: parameters in the store (default 2^24 on the CPU, 2^28 on CUDA)', (v) => intList(v)[0])
  .option('--sizes <list>', 'GEMM sizes (n for n x n x n)', intList, [256, 512, 1024, 2048])
  .option('--shapes <list>', "gemm: also these M x N x K GEMMs, MxNxK[:nn|nt|tn|tt] (t: that operand transposed, a stored [K, M] / b stored [N, K]; default nn), or 'mlp' (the 784-1024-1024-10 MLP's training-step GEMMs at batch 256), e.g. mlp,256x1024x784:nt", (v) => {
    try {
      return parseGemmShapes(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message.replace(/^--shapes: /, ''));
    }
  })
  .option('--device <device>', "only this backend: 'cpu' or 'cuda'")
  .option('--isa <list>', "gemm, train: run our CPU rows at each of these kernel levels, e.g. auto,avx2 (auto, avx512bf16, avx512, avx2, scalar; default: the active one)", (v) => v.split(',').map((s) => s.trim()).filter(Boolean))
  .option('--no-reference', 'skip the reference measurements (numpy / PyTorch GEMMs, PyTorch training steps)')
  .option('--json <file>', 'also write the results as JSON to FILE, and a bar chart (SVG) of the fp32 / fp16 / bf16 figures beside it (FILE with .json replaced by .svg)')
  .option('--chart <file>', 'write the bar chart (SVG) here instead (works without --json too)')
  .action(async (sections: string[], o: { sizes: number[]; shapes?: GemmShapeItem[]; device?: string; isa?: string[]; reference: boolean; json?: string; chart?: string; params?: number; widths: number[]; batch: number; distSizes: number[] }) => {
    for (const s of sections) if (!['gemm', 'amp', 'train', 'gpt', 'tape', 'dist'].includes(s)) throw new InvalidArgumentError(`unknown bench section '${s}' (available: gemm, amp, train, gpt, tape, dist)`);
    if (o.device && o.device !== 'cpu' && o.device !== 'cuda') throw new InvalidArgumentError("--device must be 'cpu' or 'cuda'");
    const devices = o.device ? [o.device as 'cpu' | 'cuda'] : undefined;
    if (o.device === 'cuda') resolveDevice('cuda'); // E_NO_CUDA (exit 1) rather than empty tables
    const result: Record<string, unknown> = { machine: machine() };
    if (sections.includes('gemm')) {
      const { rows, references, cpu } = await benchGemm(o.sizes, devices, o.reference, { isa: o.isa, shapes: o.shapes });
      result.gemm = { rows, references, cpu };
      // One GFLOP/s + ratio column pair per reference library found (numpy, torch).
      const refNames = [...new Set(rows.flatMap((r) => (r.references ?? []).map((x) => x.name)))];
      const withIsa = rows.some((r) => r.isa);
      // --shapes rows: the shape column reads "MxNxK tt" (transA, transB: n or t), and a last column names the preset's GEMMs.
      const shaped = rows.some((r) => r.size === undefined), withRole = rows.some((r) => r.role);
      const label = (r: (typeof rows)[number]) => (r.size !== undefined ? String(r.size) : shapeLabel(r.shape));
      const w = Math.max(10, ...rows.map((r) => label(r).length));
      console.log(shaped
        ? 'GEMM (n: n x n x n; MxNxK tt: M x N x K with transA, transB n / t), GFLOP/s = 2MNK / t; x fp32 = ratio to our fp32, x <ref> = ours / the reference, all measured side by side in this run'
        : 'GEMM (n x n x n), GFLOP/s; x fp32 = ratio to our fp32, x <ref> = ours / the reference, all measured side by side in this run');
      const pad = (cells: string[], i: number) => cells.map((c, j) => c.padStart(j === i ? w : 10)).join(' ');
      const shapeCol = withIsa ? 2 : 1;
      console.log(pad(['device', ...(withIsa ? ['isa'] : []), shaped ? 'n / shape' : 'n', 'dtype', 'GFLOP/s', 'x fp32', ...refNames.flatMap((n) => [n, `x ${n}`])], shapeCol) + (withRole ? '  gemm' : ''));
      for (const r of rows) {
        const refCols = refNames.flatMap((n) => {
          const x = r.references?.find((y) => y.name === n);
          return [fmt(x?.gflops), fmt(x?.ratio, 2)];
        });
        console.log(pad([r.device, ...(withIsa ? [r.isa ?? '-'] : []), label(r), r.dtype, fmt(r.gflops), fmt(r.ratioToFp32, 2), ...refCols], shapeCol) + (r.role ? `  ${r.role}` : ''));
      }
      if (cpu) console.log(`ours on cpu: ${cpu.model ?? 'unknown CPU'}, ${cpu.threads} thread${cpu.threads === 1 ? '' : 's'} (MIXPREC_NUM_THREADS, else all cores); ${cpu.levels.map((l) => l.gemm).join('; ')}`);
      for (const [dev, ref] of Object.entries(references)) {
        for (const lib of ref.references) console.log(`reference on ${dev}: ${describeReference(lib)}`);
        if (dev === 'cpu' && ref.unset) console.log(`  (reference commands run with ${ref.unset.join(' / ')} unset and ${ref.threads} thread${ref.threads === 1 ? '' : 's'}: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, torch.set_num_threads)`);
      }
    }
    if (sections.includes('amp')) {
      const rows = await benchAmp(devices, o.params);
      result.amp = { rows };
      console.log('\nFused AMP kernels (effective GB/s = bytes the pass must move / time; x copy = ratio to a plain copy, same run)');
      console.log(['device', 'params', 'ms', 'GB/s', 'x copy', 'x unfused', 'kernel'].map((h) => h.padStart(9)).join(' '));
      for (const r of rows)
        console.log([r.device, String(r.params), fmt(r.ms, 2), fmt(r.gbPerS), fmt(r.ratioToCopy, 2), fmt(r.speedupVsUnfused, 2)].map((c) => c.padStart(9)).join(' ') + `  ${r.kernel}`);
    }
    if (sections.includes('train')) {
      const { rows, reference } = await benchTrain({ widths: o.widths, batch: o.batch, devices, reference: o.reference, isa: o.isa });
      result.train = { rows, reference };
      const withIsa = rows.some((r) => r.isa);
      console.log(`\nTraining step, MLP ${o.widths.join('-')}, batch ${o.batch}, AdamW (x fp32 = samples/s ratio to our fp32 step; x torch = ours / PyTorch's mode of the same precision: fp32 / torch-fp32, bf16 / torch-autocast-bf16 on the CPU, fp16 / torch-amp on CUDA; same run)`);
      const precCol = withIsa ? 2 : 1; // wide enough for 'torch-autocast-bf16'
      const line = (cells: string[]) => console.log(cells.map((c, i) => c.padStart(i === precCol ? 20 : 10)).join(' '));
      line(['device', ...(withIsa ? ['isa'] : []), 'precision', 'ms/step', 'samples/s', 'x fp32', 'x torch', 'MiB', 'B/param']);
      for (const r of rows)
        line([r.device, ...(withIsa ? [r.isa ?? '-'] : []), r.precision, fmt(r.msPerStep, 2), fmt(r.samplesPerSecond, 0), fmt(r.ratioToOurFp32, 2), fmt(r.ratioToTorch, 2), fmt(r.trainingBytes === undefined ? undefined : r.trainingBytes / 2 ** 20, 1), fmt(r.bytesPerParameter, 0)]);
      for (const [dev, ref] of Object.entries(reference ?? {})) {
        if (ref.error) { console.log(`reference on ${dev}: none (${ref.error})`); continue; }
        const bt = [...new Set((ref.results ?? []).map((m) => m.blasThreads).filter((t) => t !== undefined))];
        const wait = ref.env?.OMP_WAIT_POLICY ? `, OMP_WAIT_POLICY=${ref.env.OMP_WAIT_POLICY}` : '';
        console.log(`reference on ${dev}: ${ref.library ?? 'torch'} (bench/torch_train_ref.py), ${ref.interpreter ?? '?'}${ref.python ? ` (Python ${ref.python})` : ''}, ${ref.threads ?? '?'} threads${wait}${bt.length ? `, OpenBLAS threads ${bt.join('/')} (the faster of ${ref.threads} and 1, per mode)` : ''}; BLAS: ${ref.blas?.summary ?? 'unknown'}`);
        if (dev === 'cpu') console.log(`  (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for the reference command)`);
      }
    }
    if (sections.includes('gpt')) {
      const g = await benchGpt({ devices, reference: o.reference });
      result.gpt = g;
      const c = g.config;
      console.log(`\nGPT training step, ${c.nLayer} layers / ${c.nHead} heads / ${c.nEmbd} wide, block ${c.blockSize}, batch ${g.batch}, AdamW + clipping (x fp32 = tokens/s ratio to our fp32, same run)`);
      console.log(['device', 'precision', 'ms/step', 'tokens/s', 'x fp32', 'act MiB'].map((h) => h.padStart(10)).join(' '));
      for (const r of g.rows)
        console.log([r.device, r.precision, fmt(r.msPerStep, 1), fmt(r.tokensPerSecond, 0), fmt(r.ratioToOurFp32, 2), fmt(r.activationBytes === undefined ? undefined : r.activationBytes / 2 ** 20, 2)].map((x) => x.padStart(10)).join(' '));
      const ref = (g.reference as { cpu?: { error?: string; torch?: string; blas?: string } } | undefined)?.cpu;
      if (ref) console.log(`reference on cpu: ${ref.error ? `none (${ref.error})` : `PyTorch ${ref.torch ?? ''} (bench/gpt_torch_ref.py), BLAS ${ref.blas ?? 'unknown'}`}`);
    }
    if (sections.includes('tape')) {
      const rows = await benchTape(devices);
      result.tape = { rows };
      console.log('\nTape overhead, 4 x (linear + relu) + cross-entropy (9 ops), width 64, batch 32: us; "js/op" = time outside native calls per op');
      console.log(['device', 'fwd nograd', 'fwd rec', 'backward', 'rec/op', 'js/op fwd', 'js/op rec', 'js/op bwd'].map((h) => h.padStart(10)).join(' '));
      for (const r of rows)
        console.log([r.device, fmt(r.forwardNoGradUs, 1), fmt(r.forwardRecordedUs, 1), fmt(r.backwardUs, 1), fmt(r.recordUsPerOp, 2), fmt(r.jsNoGradUsPerOp, 2), fmt(r.jsRecordedUsPerOp, 2), fmt(r.jsBackwardUsPerOp, 2)].map((c) => c.padStart(10)).join(' '));
    }
    if (sections.includes('dist')) {
      const d = await benchDist({ sizesMb: o.distSizes, widths: o.widths, batch: o.batch });
      result.dist = d;
      if (d.skipped) console.log(`\nData-parallel (dist): skipped: ${d.skipped}`);
      else {
        const m = d.machine;
        const ar = d.allReduce!;
        console.log(`\nAll-reduce (sum, float32), ${ar.ranks} ranks, ${ar.transport}, on ${m?.cpu ?? 'unknown CPU'}${m?.cpuFamily !== undefined ? ` (family ${m.cpuFamily} model ${m.cpuModel})` : ''}, ${m?.cores} cores`);
        console.log('busbw = algbw x 2(n-1)/n (nccl-tests); memcpy = Float32Array.set of the same buffer in one process, same run; GB/s = 1e9 B/s');
        console.log(['MB', 'reps', 'ms', 'algbw GB/s', 'busbw GB/s', 'memcpy GB/s', 'x memcpy'].map((h) => h.padStart(11)).join(' '));
        for (const r of ar.rows)
          console.log([String(r.sizeMb), String(r.reps), fmt(r.ms, 2), fmt(r.algbwGBs, 2), fmt(r.busbwGBs, 2), fmt(r.memcpyGBs, 2), fmt(r.ratioToMemcpy, 3)].map((c) => c.padStart(11)).join(' '));
        const t = d.train!;
        console.log(`\nData-parallel training step, MLP ${t.widths.join('-')}, global batch ${t.globalBatch}, AdamW: 1 process x 2 threads vs 2 ranks x 1 thread (batch ${t.globalBatch / 2} each); median of ${t.steps} steps`);
        console.log(['precision', '1x2 ms', '1x2 samp/s', '2x1 ms', '2x1 samp/s', '2x1 / 1x2'].map((h) => h.padStart(11)).join(' '));
        for (const r of t.rows)
          console.log([r.precision, fmt(r.oneByTwo.msPerStep, 2), fmt(r.oneByTwo.samplesPerSecond, 0), fmt(r.twoByOne.msPerStep, 2), fmt(r.twoByOne.samplesPerSecond, 0), fmt(r.ratio, 2)].map((c) => c.padStart(11)).join(' '));
      }
    }
    if (o.json) {
      writeOutput(o.json, JSON.stringify(result, null, 2) + '\n');
      console.log(`wrote ${o.json}`);
    }
    const chartFile = o.chart ?? (o.json ? o.json.replace(/\.json$/i, '') + '.svg' : undefined);
    if (chartFile) {
      // The chart's GEMM bars are per n: the --shapes rows (no `size`) stay in the table and the JSON.
      const gemm = result.gemm as { rows: { size?: number }[] } | undefined;
      const charted = gemm ? { ...result, gemm: { ...gemm, rows: gemm.rows.filter((r) => r.size !== undefined) } } : result;
      const svg = benchChart(charted as Parameters<typeof benchChart>[0]);
      if (svg) {
        writeOutput(chartFile, svg);
        console.log(`wrote ${chartFile}`);
      } else console.log(`no fp32 / fp16 figures to chart (run the gemm or train section): ${chartFile} not written`);
    }
  });

addTrainCommand(program);
addDiagnoseCommand(program);
addSampleCommand(program);
addLaunchCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof MixprecError) {
    console.error(`mixprec: ${err.code}: ${err.message}`);
    process.exit(1);
  }
  if (err instanceof InvalidArgumentError) {
    console.error(`mixprec: ${err.message}`);
    process.exit(2);
  }
  throw err;
});
