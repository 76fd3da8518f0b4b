// `mixprec bench dist`: the data-parallel backend on this machine. (1) All-reduce bus bandwidth,
// 2 ranks over loopback (Gloo TCP), for float32 buffers of 1..256 MiB, beside a plain memcpy of the
// same buffer in one process. (2) The MLP training step at one global batch, 1 process x 2 threads
// vs 2 ranks x 1 thread (half the batch each), samples/s. Every measurement runs in processes
// started by launch() (bench/dist_worker.js on the compiled package), so both layouts are measured
// alike; rank 0 prints one JSON line, read here from launch()'s stdout.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import type { Precision } from '../amp/store';
import { available } from '../distributed/group';
import { launch } from '../distributed/launch';
import { MixprecError } from '../errors';
import { freePort } from '../util/ports';

export interface AllReduceRow {
  sizeMb: number; bytes: number; reps: number;
  /** Median over the timed calls of the slowest rank's time for that call. */
  ms: number;
  /** bytes / time (nccl-tests' algbw), GB/s = 1e9 B/s. */
  algbwGBs: number;
  /** algbw x 2(n-1)/n (nccl-tests' busbw: what each rank's link carries for a ring all-reduce). */
  busbwGBs: number;
  /** Float32Array.set of the same buffer in one process (bytes copied / time), measured in this run. */
  memcpyMs: number; memcpyGBs: number;
  /** busbw / memcpy bandwidth. */
  ratioToMemcpy: number;
}

export interface DistTrainSide {
  ranks: number; threadsPerRank: number; batchPerRank: number; msPerStep: number; samplesPerSecond: number; skippedSteps: number;
  /** Rank 0's 10th / 90th percentile step time: the spread (noise) of the measurement. */
  msP10: number; msP90: number;
}

export interface DistTrainRow {
  precision: Precision;
  /** (a) 1 process, MIXPREC_NUM_THREADS=2, the whole batch. */
  oneByTwo: DistTrainSide;
  /** (b) 2 ranks, MIXPREC_NUM_THREADS=1 each, half the batch each (data-parallel Trainer, Gloo). */
  twoByOne: DistTrainSide;
  /** (b) samples/s / (a) samples/s. */
  ratio: number;
}

export interface DistBenchResult {
  skipped?: string;
  machine?: { cpu?: string; cpuFamily?: number; cpuModel?: number; cores: number; hypervisor?: string; flags: string[] };
  allReduce?: { ranks: number; backend: string; transport: string; rows: AllReduceRow[] };
  train?: { widths: number[]; globalBatch: number; optimizer: 'adamw'; warmup: number; steps: number; rows: DistTrainRow[] };
  /** os.loadavg()[0] before and after the section: other work on the machine shows here. */
  loadAverage?: { before: number; after: number };
}

const WORKER = path.join(__dirname, '..', '..', 'bench', 'dist_worker.js');
const PRECISIONS: Precision[] = ['fp32', 'bf16', 'fp16'];
const TRAIN_WARMUP = 5, TRAIN_STEPS = 50;

/** Runs the worker on `nproc` ranks with `threads` CPU threads each; returns rank 0's JSON line. */
async function runWorker<T>(nproc: number, threads: number, config: object): Promise<T> {
  const stdout = new PassThrough(), stderr = new PassThrough();
  let out = '', err = '';
  stdout.setEncoding('utf8');
  stderr.setEncoding('utf8');
  stdout.on('data', (s: string) => { out += s; });
  stderr.on('data', (s: string) => { err += s; });
  const env = { ...process.env, MIXPREC_NUM_THREADS: String(threads) };
  const status = await launch(
    { nprocPerNode: nproc, masterPort: await freePort(), timeoutMs: 180_000, env, stdout, stderr, forwardSignals: true },
    [process.execPath, WORKER, JSON.stringify(config)],
  );
  const lines = out.split('\n').filter((l) => l.startsWith('[rank 0] ')).map((l) => l.slice('[rank 0] '.length).trim());
  const json = lines.reverse().find((l) => l.startsWith('{'));
  if (status !== 0 || json === undefined) {
    const tail = err.trim().split('\n').slice(-12).join('\n');
    throw new MixprecError('E_DIST', `bench dist: ${nproc} rank(s) of bench/dist_worker.js ${status !== 0 ? `exited with status ${status}` : 'printed no result'}${tail ? `:\n${tail}` : ''}`);
  }
  return JSON.parse(json) as T;
}

/** Median seconds of dst.set(src) for `bytes` of float32, after warm-up (both buffers touched first). */
function memcpySeconds(bytes: number, reps: number): number {
  const n = Math.max(1, Math.floor(bytes / 4));
  const src = new Float32Array(n).fill(1), dst = new Float32Array(n).fill(0);
  for (let i = 0; i < 2; i++) dst.set(src);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    dst.set(src);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  if (dst[n - 1] !== 1) throw new Error('memcpy check failed');
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

function cpuInfo(): DistBenchResult['machine'] {
  const info: NonNullable<DistBenchResult['machine']> = { cpu: os.cpus()[0]?.model, cores: os.cpus().length, flags: [] };
  try {
    const txt = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(txt)?.[1]?.trim();
    const fam = Number(field('cpu family')), model = Number(field('model'));
    if (Number.isFinite(fam)) info.cpuFamily = fam;
    if (Number.isFinite(model)) info.cpuModel = model;
    const flags = (field('flags') ?? '').split(/\s+/);
    info.flags = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16'].filter((f) => flags.includes(f));
    if (flags.includes('hypervisor')) info.hypervisor = 'yes (virtual machine)';
  } catch { /* not Linux */ }
  return info;
}

interface WorkerAllReduce { worldSize: number; backend: string; rows: { sizeMb: number; bytes: number; reps: number; seconds: number }[] }
interface WorkerTrain { rows: { precision: Precision; ranks: number; threadsPerRank: number; batchPerRank: number; msPerStep: number; samplesPerSecond: number; skippedSteps: number; msP10Rank0: number; msP90Rank0: number }[] }

export async function benchDist(opts: { sizesMb: number[]; widths: number[]; batch: number }): Promise<DistBenchResult> {
  const av = available();
  if (!av.gloo) return { skipped: `Gloo is not available in this build${av.glooReason ? ` (${av.glooReason})` : ''}` };
  if (!fs.existsSync(WORKER)) return { skipped: `${WORKER} not found (bench/dist_worker.js ships with the repository, not the npm package)` };
  const { sizesMb, widths, batch } = opts;
  if (!sizesMb.length || !sizesMb.every((s) => s > 0 && Number.isFinite(s))) throw new MixprecError('E_ARG', '--dist-sizes: positive sizes in MB');
  if (batch % 2 !== 0) throw new MixprecError('E_ARG', `bench dist: the global batch must be even (2 ranks x batch/2), got ${batch}`);
  const result: DistBenchResult = { machine: cpuInfo() };
  const load0 = os.loadavg()[0];

  // (1) All-reduce over loopback, then memcpy here with no rank running.
  const ar = await runWorker<WorkerAllReduce>(2, 1, { mode: 'allreduce', sizesMb });
  const n = ar.worldSize;
  result.allReduce = {
    ranks: n, backend: ar.backend, transport: 'Gloo TCP over loopback (127.0.0.1)',
    rows: ar.rows.map((r) => {
      const algbw = r.bytes / r.seconds / 1e9, busbw = (algbw * 2 * (n - 1)) / n;
      const mc = memcpySeconds(r.bytes, Math.max(5, Math.min(50, Math.round(2 ** 32 / r.bytes))));
      const memcpyGBs = r.bytes / mc / 1e9;
      return { sizeMb: r.sizeMb, bytes: r.bytes, reps: r.reps, ms: r.seconds * 1e3, algbwGBs: algbw, busbwGBs: busbw, memcpyMs: mc * 1e3, memcpyGBs, ratioToMemcpy: busbw / memcpyGBs };
    }),
  };

  // (2) The training step, the same global batch both ways, each in its own launched processes;
  // (a) and (b) alternate per precision so that a change in the machine's load hits both alike.
  const base = { mode: 'train', widths, warmup: TRAIN_WARMUP, steps: TRAIN_STEPS };
  const side = (r: WorkerTrain['rows'][number]): DistTrainSide => ({
    ranks: r.ranks, threadsPerRank: r.threadsPerRank, batchPerRank: r.batchPerRank, msPerStep: r.msPerStep, samplesPerSecond: r.samplesPerSecond, skippedSteps: r.skippedSteps,
    msP10: r.msP10Rank0, msP90: r.msP90Rank0,
  });
  const rows: DistTrainRow[] = [];
  for (const p of PRECISIONS) {
    const [ra] = (await runWorker<WorkerTrain>(1, 2, { ...base, precisions: [p], batch, distributed: false })).rows;
    const [rb] = (await runWorker<WorkerTrain>(2, 1, { ...base, precisions: [p], batch: batch / 2, distributed: true })).rows;
    rows.push({ precision: p, oneByTwo: side(ra), twoByOne: side(rb), ratio: rb.samplesPerSecond / ra.samplesPerSecond });
  }
  result.train = { widths, globalBatch: batch, optimizer: 'adamw', warmup: TRAIN_WARMUP, steps: TRAIN_STEPS, rows };
  result.loadAverage = { before: load0, after: os.loadavg()[0] };
  return result;
}
