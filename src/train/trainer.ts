// The Trainer: mixed-precision training steps over any Module — forward under autocast in the
// compute precision, the loss in FP32, backward on the tape seeded with the loss scale (applied
// inside the loss kernel that writes the low-precision logits' gradient), then the fused
// unscale / check / clip / optimizer / scale-update step — plus fit / evaluate, LR schedules,
// and checkpoints (save / load / continue bitwise identically).
import { types } from 'node:util';
import { GradScaler, GradScalerOptions, GradScalerStateDict } from '../amp/grad_scaler';
import { METRIC_SLOTS, METRICS_OFFSET, ParameterStore, Precision, PRECISIONS } from '../amp/store';
import { Device, resolveDevice } from '../backends';
import { batches, Dataset } from '../data';
import { shardBatches } from '../data/dataset';
import * as dist from '../distributed/group';
import { broadcastParameters, GradientReducer } from '../distributed/reducer';
import { DType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { adam, adamw, AdamOptions, checkOptimizerState, Optimizer, OptimizerKind, sgd, SGDOptions } from '../optim';
import { hash32 } from '../rng';
import { empty, fillTensor, Tensor, tensor } from '../tensor';
import { Module } from '../nn/module';
import { ModelConfig, Sequential } from '../nn/sequential';
import { GPT, GPTConfig } from '../models/gpt';
import { autocast } from '../amp/autocast';
import { noGrad, tidy } from '../autograd/scope';
import { backwardFrom } from '../autograd/tape';
import { withSeed } from '../random';
import { copyInto, filled } from '../ops/kernels';
import { crossEntropyInto, MetricsSlot, mseLossInto } from '../ops/loss';
import { readCheckpointFile, writeCheckpointFile } from './checkpoint_file';
import { checkSchedule, LrSchedule, lrAt } from './schedule';
import { isInstance, readOptions } from '../util/options';
import { show } from '../util/show';

export type LossKind = 'softmaxCrossEntropy' | 'mse';
/** A loss as a function: (model output, batch target) -> a scalar Tensor (a mean over the batch). */
export type LossFn = (output: Tensor, target: Int32Array | Tensor) => Tensor;
export type OptimizerSpec = Optimizer | OptimizerKind | ({ type: 'sgd' } & SGDOptions) | ({ type: 'adam' | 'adamw' } & AdamOptions);

export interface TrainerOptions {
  optimizer?: OptimizerSpec;
  /** 'softmaxCrossEntropy' (default; targets: Int32Array of class ids), 'mse' (targets: a Tensor), or a function. */
  loss?: LossKind | LossFn;
  /** Cross-entropy label smoothing (PyTorch's label_smoothing). */
  labelSmoothing?: number;
  precision?: Precision;
  /** 'dynamic' (default for fp16), 'none' (default for bf16 / fp32), a static scale, or GradScaler options. */
  lossScale?: 'dynamic' | 'none' | number | GradScalerOptions;
  /** Clip the global gradient norm to this (0: off). */
  maxGradNorm?: number;
  /** Micro-batches per optimizer step: each step's batch is split into this many, gradients accumulated in FP32. */
  gradAccumulation?: number;
  lrSchedule?: LrSchedule;
  device?: Device | 'auto';
  seed?: number;
  /**
   * false: an ablation that keeps no FP32 master copy — each update is rounded to the working
   * precision at once (FP16 weights updated directly), so updates below ~2^-11 of a weight vanish.
   * Default true. Only meaningful for fp16 / bf16.
   */
  masterWeights?: boolean;
  /** Receives the Trainer's warnings (TrainerWarningCode); default: process.emitWarning with type 'MixprecWarning'. */
  onWarning?: (code: TrainerWarningCode, message: string) => void;
  /**
   * Data-parallel over the process group (mixprec.distributed.init()): default true once it is
   * initialized. Then rank 0's parameters are broadcast at construction, each step all-reduces
   * the gradients (mean, in ~25 MB FP32 buckets overlapped with the backward) and the inf/NaN
   * flag, fit() trains on this rank's shard, metrics are averaged over the ranks, and save()
   * writes from rank 0 only. batchSize is per rank (as DDP's).
   */
  distributed?: boolean | { bucketBytes?: number };
}

export interface StepInfo {
  loss: number; skipped: boolean; scale: number; gradNorm: number; lr: number;
  /** Skipped steps in a row up to this one (0 after an applied step). */
  consecutiveSkipped: number;
}

/**
 * What the Trainer warns about (process.emitWarning, type 'MixprecWarning', with this code; see
 * process.on('warning')): a non-finite loss (the FP32 forward itself produced inf / NaN — a data
 * or model bug, not an FP16 overflow, and loss scaling cannot fix it), a run of skipped steps (10,
 * 100, 1000, ... in a row: the updates have stopped), and the loss scale reaching its floor.
 */
export type TrainerWarningCode = 'MIXPREC_NONFINITE_LOSS' | 'MIXPREC_SKIPPED_STEPS' | 'MIXPREC_MIN_SCALE';
export interface EpochInfo { epoch: number; loss: number; steps: number; skippedSteps: number; scale: number; minScale: number; seconds: number; samplesPerSecond: number }
export interface FitOptions {
  epochs: number;
  batchSize: number;
  shuffle?: boolean;
  callbacks?: {
    onStep?: (info: StepInfo & { step: number; epoch: number; batch: number; batches: number }) => void | Promise<void>;
    onEpochEnd?: (info: EpochInfo) => void | Promise<void>;
  };
}

const LOW: Record<Precision, DType> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };
const CHECKPOINT_KIND = 'mixprec.Trainer';
const CHECKPOINT_VERSION = 2;

function makeOptimizer(spec: OptimizerSpec | undefined): Optimizer {
  if (isInstance(spec, Optimizer, 'optimizer')) return spec;
  if (spec === undefined || typeof spec === 'string') {
    const kind = spec ?? 'adam';
    if (kind === 'sgd') return sgd();
    if (kind === 'adam') return adam();
    if (kind === 'adamw') return adamw();
    throw new MixprecError('E_ARG', `optimizer must be 'sgd', 'adam' or 'adamw' (got ${show(kind)})`);
  }
  if (typeof spec !== 'object' || spec === null) throw new MixprecError('E_ARG', 'optimizer must be an Optimizer, a name, or { type, ...options }');
  const { type, ...opts } = readOptions<{ type: unknown } & Record<string, unknown>>(spec, 'optimizer', null);
  if (type === 'sgd') return sgd(opts as SGDOptions);
  if (type === 'adam') return adam(opts as AdamOptions);
  if (type === 'adamw') return adamw(opts as AdamOptions);
  throw new MixprecError('E_ARG', `optimizer.type must be 'sgd', 'adam' or 'adamw' (got ${show(type)})`);
}

function makeScaler(lossScale: TrainerOptions['lossScale'], precision: Precision): GradScaler {
  if (lossScale === undefined) return new GradScaler(precision === 'fp16' ? {} : { enabled: false });
  if (lossScale === 'dynamic') return new GradScaler();
  if (lossScale === 'none') return new GradScaler({ enabled: false });
  if (typeof lossScale === 'number') {
    if (!(lossScale > 0) || !Number.isFinite(lossScale)) throw new MixprecError('E_ARG', 'lossScale must be > 0');
    return GradScaler.static(lossScale);
  }
  if (isInstance(lossScale, GradScaler, 'lossScale')) return lossScale;
  if (typeof lossScale === 'object' && lossScale !== null) return new GradScaler(readOptions<GradScalerOptions>(lossScale, 'lossScale', null));
  throw new MixprecError('E_ARG', "lossScale must be 'dynamic', 'none', a number or GradScaler options");
}

const TRAINER_KEYS = ['optimizer', 'loss', 'labelSmoothing', 'precision', 'lossScale', 'maxGradNorm', 'gradAccumulation', 'lrSchedule', 'device', 'seed', 'masterWeights', 'onWarning', 'distributed'];

export class Trainer<M extends Module = Sequential> {
  readonly model: M;
  readonly store: ParameterStore;
  readonly optimizer: Optimizer;
  readonly scaler: GradScaler;
  readonly precision: Precision;
  /** The loss kind, or 'custom' for a loss function. */
  readonly loss: LossKind | 'custom';
  readonly options: Readonly<Required<Omit<TrainerOptions, 'optimizer' | 'lossScale' | 'device' | 'loss' | 'onWarning' | 'distributed'>>> & { device: Device; loss: LossKind | 'custom' };
  /** Data-parallel: the gradient all-reduce (null in a single-process Trainer). */
  readonly reducer: GradientReducer | null;
  #lossFn: LossFn | null;
  #baseLr: number;
  #iteration = 0;
  #epoch = 0;
  #batchInEpoch = 0;
  #batchSize: number | null = null;
  #stopRequested = false;
  /** Where the loss kernels write { loss, correct } per micro-batch: after the store's AmpState. */
  #metrics: { tensor: Tensor; offset: number; owned: boolean };
  #input: Tensor | null = null;
  #consecutiveSkipped = 0;
  #warned = new Set<TrainerWarningCode>();
  /** How often each warning's condition occurred (every step counted; the warnings themselves are rate-limited). */
  readonly warningCounts: Record<TrainerWarningCode, number> = { MIXPREC_NONFINITE_LOSS: 0, MIXPREC_SKIPPED_STEPS: 0, MIXPREC_MIN_SCALE: 0 };
  #onWarning: (code: TrainerWarningCode, message: string) => void;
  #minScaleHits = 0;
  /** JSON saved with the checkpoint (e.g. a text model's vocabulary): save(path, { metadata }) sets it, Trainer.load restores it. */
  metadata: Record<string, unknown> | null = null;

  constructor(model: M, options: TrainerOptions = {}) {
    if (!isInstance(model, Module, 'the model')) throw new MixprecError('E_ARG', 'Trainer needs a model: a mixprec.nn.Module (e.g. mixprec.sequential([...]))');
    // Each option read once (a throwing getter / Proxy trap is E_ARG naming it), then validated.
    const opts = readOptions<TrainerOptions>(options, 'Trainer', TRAINER_KEYS);
    const precision = opts.precision ?? 'fp16';
    if (!PRECISIONS.includes(precision)) throw new MixprecError('E_ARG', `precision must be 'fp32', 'fp16' or 'bf16'`);
    const lossOpt = opts.loss ?? 'softmaxCrossEntropy';
    if (lossOpt !== 'softmaxCrossEntropy' && lossOpt !== 'mse' && typeof lossOpt !== 'function') throw new MixprecError('E_ARG', `loss must be 'softmaxCrossEntropy', 'mse' or a function (output, target) => Tensor`);
    const loss = typeof lossOpt === 'function' ? 'custom' : lossOpt;
    const labelSmoothing = opts.labelSmoothing ?? 0;
    if (typeof labelSmoothing !== 'number' || !(labelSmoothing >= 0 && labelSmoothing <= 1)) throw new MixprecError('E_ARG', 'labelSmoothing must be in [0, 1]');
    const maxGradNorm = opts.maxGradNorm ?? 0;
    if (typeof maxGradNorm !== 'number' || !(maxGradNorm >= 0) || !Number.isFinite(maxGradNorm)) throw new MixprecError('E_ARG', 'maxGradNorm must be a finite number >= 0');
    const gradAccumulation = opts.gradAccumulation ?? 1;
    // Bounded: each micro-batch has a metrics slot (and more micro-batches than samples are never used).
    if (!Number.isSafeInteger(gradAccumulation) || gradAccumulation < 1 || gradAccumulation > 65536) throw new MixprecError('E_ARG', 'gradAccumulation must be an integer in [1, 65536]');
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new MixprecError('E_ARG', 'seed must be a non-negative integer');
    const lrSchedule = checkSchedule(copyObject(opts.lrSchedule, 'lrSchedule'));
    const masterWeights = opts.masterWeights ?? true;
    if (typeof masterWeights !== 'boolean') throw new MixprecError('E_ARG', 'masterWeights must be a boolean');
    if (opts.onWarning !== undefined && typeof opts.onWarning !== 'function') throw new MixprecError('E_ARG', 'onWarning must be a function (code, message) => void');
    this.#onWarning = opts.onWarning ?? ((code, message) => process.emitWarning(message, { type: 'MixprecWarning', code }));
    const distOpt = opts.distributed ?? dist.isInitialized();
    if (typeof distOpt !== 'boolean' && (typeof distOpt !== 'object' || distOpt === null)) throw new MixprecError('E_ARG', 'distributed must be a boolean or { bucketBytes }');
    if (distOpt !== false && !dist.isInitialized()) throw new MixprecError('E_STATE', 'distributed: the process group is not initialized (call mixprec.distributed.init() first)');
    const optimizer = makeOptimizer(opts.optimizer);
    const scaler = makeScaler(opts.lossScale, precision);
    // Data-parallel: 'auto' is the group's device (cpu for Gloo, cuda:LOCAL_RANK for NCCL).
    const device = distOpt !== false && (opts.device === undefined || opts.device === 'auto') ? dist.group().device : opts.device ?? 'auto';
    this.store = model.bind(precision, device);
    this.reducer = null;
    if (distOpt !== false) {
      const g = dist.group();
      if ((g.device === 'cpu') !== (this.store.device === 'cpu'))
        throw new MixprecError('E_DEVICE', `distributed: the process group (${g.backend}) reduces ${g.device === 'cpu' ? 'host' : 'CUDA'} memory, the model is on ${this.store.device}`);
      this.reducer = new GradientReducer(this.store, typeof distOpt === 'object' ? readOptions<{ bucketBytes: number }>(distOpt, 'distributed', ['bucketBytes'], 'ignore').bucketBytes : undefined);
      this.store.distributed = true;
      broadcastParameters(this.store);
    }
    this.model = model;
    this.optimizer = optimizer;
    this.scaler = scaler;
    this.precision = precision;
    this.loss = loss;
    this.#lossFn = typeof lossOpt === 'function' ? lossOpt : null;
    this.#baseLr = optimizer.lr;
    this.options = Object.freeze({ loss, labelSmoothing, precision, maxGradNorm, gradAccumulation, lrSchedule, seed, masterWeights, device: this.store.device });
    // Per micro-batch: FP32 loss and int32 correct count (8 bytes each), beside the AmpState so that
    // a step reads both back in one transfer (a separate buffer past METRIC_SLOTS micro-batches).
    this.#metrics = gradAccumulation <= METRIC_SLOTS
      ? { tensor: this.store.ampState, offset: METRICS_OFFSET, owned: false }
      : { tensor: empty([2 * gradAccumulation], { dtype: 'float32', device: this.store.device }), offset: 0, owned: true };
  }

  get device(): Device { return this.store.device; }
  /** The optimizer's learning rate before the schedule. */
  get baseLr(): number { return this.#baseLr; }
  /** Optimizer steps attempted (applied or skipped). */
  get iteration(): number { return this.#iteration; }
  /** Completed epochs (fit). */
  get epoch(): number { return this.#epoch; }
  /** The batch size of the last fit (saved in checkpoints: a resumed fit continues with it). */
  get batchSize(): number | null { return this.#batchSize; }
  get computeDtype(): DType { return LOW[this.precision]; }

  /** Ask fit() to stop after the current step (data-parallel: every rank stops after the same step). */
  stop(): void { this.#stopRequested = true; }
  /** Whether stop() was called (data-parallel: on any rank, as of the last step). Cleared when fit() starts. */
  get stopRequested(): boolean { return this.#stopRequested; }

  /**
   * Forward + loss + backward on a batch, without an optimizer step: leaves the gradients (times
   * the current loss scale) in `store.grads` — or, with gradAccumulation > 1, accumulated in FP32.
   * Returns the batch-mean loss (FP32). x [batch, ...]; y class labels (Int32Array) or targets (mse).
   * `observe` (a Sequential model) sees the scaled gradient arriving at each child's output.
   */
  async backward(x: Tensor, y: Int32Array | Tensor, options: { observe?: (layer: number, grad: Tensor) => void } = {}): Promise<number> {
    const { observe } = readOptions<{ observe: (layer: number, grad: Tensor) => void }>(options, 'backward', ['observe'], 'ignore');
    if (observe !== undefined && typeof observe !== 'function') throw new MixprecError('E_ARG', 'backward: observe must be a function (layer, grad) => void');
    const { B, N } = this.#forwardBackward(x, y, observe);
    return this.#readLoss(B, N).loss;
  }

  /** One optimizer step on a batch: backward, then the fused unscale / check / clip / optimizer / scale update, with one read-back. */
  async step(x: Tensor, y: Int32Array | Tensor): Promise<StepInfo> {
    const lr = lrAt(this.options.lrSchedule, this.#baseLr, this.#iteration);
    this.optimizer.lr = lr;
    const { B, N } = this.#forwardBackward(x, y, undefined, true);
    const shared = !this.#metrics.owned;
    const r = this.scaler.step(this.store, this.optimizer, { maxNorm: this.options.maxGradNorm, update: true, readExtra: shared ? 8 * N : 0 });
    const w = this.store.working;
    if (!this.options.masterWeights && w) copyInto(this.store.master, w); // ablation: the master is only ever the rounded weight
    this.#iteration += 1;
    let loss = this.#readLoss(B, N, shared ? r.extra : undefined).loss;
    if (this.reducer) {
      // The mean loss over the ranks' batches; and stop() on any rank (Ctrl-C reaches them at
      // slightly different steps) stops every rank after this same step.
      const v = dist.allReduceNumbers(Float64Array.of(loss, this.#stopRequested ? 1 : 0), 'sum');
      loss = v[0] / dist.worldSize();
      if (v[1] > 0) this.#stopRequested = true;
    }
    this.#consecutiveSkipped = r.skipped ? this.#consecutiveSkipped + 1 : 0;
    this.#warnAbout(loss, r.skipped);
    return { loss, skipped: r.skipped, scale: r.scale, gradNorm: r.gradNorm, lr, consecutiveSkipped: this.#consecutiveSkipped };
  }

  /** The step's warnings: each code once per Trainer, the skipped-step run again at each power of ten. */
  #warnAbout(loss: number, skipped: boolean): void {
    const warn = (code: TrainerWarningCode, msg: string, emit: boolean) => {
      this.warningCounts[code] += 1;
      if (emit) this.#onWarning(code, msg);
    };
    const n = this.#consecutiveSkipped, first = (code: TrainerWarningCode) => !this.#warned.has(code) && this.#warned.add(code) !== null;
    if (!Number.isFinite(loss))
      warn('MIXPREC_NONFINITE_LOSS', `step ${this.#iteration}: the loss itself is ${loss} in the FP32 forward, before any loss scaling — a data or model bug (inputs, labels, learning rate), not an FP16 overflow; the step was skipped`, first('MIXPREC_NONFINITE_LOSS'));
    if (skipped && n >= 10)
      warn('MIXPREC_SKIPPED_STEPS', `${n} steps in a row were skipped (inf/NaN gradients); the loss scale is ${this.scaler.scale}${Number.isFinite(loss) ? '' : ' and the loss itself is not finite'}: the weights are not changing`, Number.isInteger(Math.log10(n)));
    if (this.scaler.counters.minScaleHits > this.#minScaleHits)
      warn('MIXPREC_MIN_SCALE', `the loss scale reached its floor ${this.scaler.scale} after repeated overflows: gradients this small flush to zero in FP16, so updates are lost`, first('MIXPREC_MIN_SCALE'));
    this.#minScaleHits = this.scaler.counters.minScaleHits;
  }

  #forwardBackward(x: Tensor, y: Int32Array | Tensor, observe?: (layer: number, grad: Tensor) => void, reduce = false): { B: number; N: number } {
    const B = this.#checkBatch(x, y);
    // A batch smaller than gradAccumulation (an epoch's last) is split into B micro-batches of one.
    const N = Math.min(this.options.gradAccumulation, B);
    // Data-parallel: the seed also divides by the world size, so the all-reduced sum is the mean
    // (exact for a power-of-two world: every gradient is scaled by 2^-k; FP16 gradients lose
    // log2(W) bits of headroom at the bottom, which the dynamic loss scale gives back).
    const S = this.scaler.scale / (reduce && this.reducer ? dist.worldSize() : 1);
    const xin = this.#inputIn(x);
    const stepSeed = hash32(this.options.seed, this.#iteration);
    const seq = this.model instanceof Sequential ? this.model : null;
    if (observe && !seq) throw new MixprecError('E_ARG', 'observe needs a Sequential model');
    this.model.train();
    // Data-parallel: with one micro-batch, buckets are all-reduced as the backward completes them.
    const reducer = reduce ? this.reducer : null;
    const overlap = reducer !== null && N === 1;
    if (overlap) reducer.begin();
    const onLeafReady = overlap ? (leaf: Tensor) => reducer.leafReady(leaf) : undefined;
    let start = 0;
    try {
      if (seq) seq.observe = observe ?? null;
      for (let k = 0; k < N; k++) {
        const Bk = Math.floor(B / N) + (k < B % N ? 1 : 0);
        this.store.newGradGeneration();
        tidy(() => {
          const xk = N === 1 ? xin : xin.narrow(0, start, Bk);
          const per = (y instanceof Tensor ? y.size : y.length) / B; // labels per sample
          const yk = N === 1 ? y : y instanceof Tensor ? y.narrow(0, start, Bk) : y.subarray(start * per, (start + Bk) * per);
          const out = this.#forward(xk, hash32(stepSeed, k));
          const loss = this.#lossOp(out, yk, k);
          // The seed gradient carries the loss scale and this micro-batch's share of the batch mean.
          backwardFrom(loss, filled([], S * (Bk / B), 'float32', this.device), { onLeafReady });
        });
        this.#zeroUnreached();
        if (N > 1) this.store.accumulate();
        start += Bk;
      }
    } finally {
      if (seq) seq.observe = null;
    }
    if (overlap) reducer.finish();
    else if (reducer) reducer.allReduce(); // micro-batches: the accumulated FP32 sum, after the last one
    return { B, N };
  }

  /** The model's forward in the compute precision (autocast), dropout masks from `seed`. */
  #forward(x: Tensor, seed: number): Tensor {
    const p = this.precision;
    return withSeed(seed, () => autocast(p, () => {
      const out = this.model.forward(x);
      if (!(out instanceof Tensor)) throw new MixprecError('E_ARG', 'the model\'s forward must return a Tensor');
      return out;
    }));
  }

  /** Parameters no gradient reached this pass (a branch off the loss) get zeros, not stale values. */
  #zeroUnreached(): void {
    const gen = this.store.gradGeneration;
    for (const [, p] of this.model.namedParameters())
      if (p.gradSink && p.gradSink.generation !== gen) fillTensor(p.gradSink.tensor, 0);
  }

  /** The loss (and accuracy for cross-entropy, per label) of one batch in eval mode: no dropout, no gradients, no step. */
  async evaluateBatch(x: Tensor, y: Int32Array | Tensor): Promise<{ loss: number; accuracy?: number }> {
    this.#checkBatch(x, y);
    const xin = this.#inputIn(x);
    const wasTraining = this.model.training;
    this.model.eval();
    try {
      tidy(() => noGrad(() => this.#lossOp(this.#forward(xin, 0), y, 0)));
    } finally {
      if (wasTraining) this.model.train();
    }
    const m = this.#readLoss(1, 1);
    if (this.loss !== 'softmaxCrossEntropy') return { loss: m.loss };
    return { loss: m.loss, accuracy: m.correct / (y instanceof Tensor ? y.size : y.length) };
  }

  /** Mean loss (and accuracy for cross-entropy) over a dataset, in eval mode (no dropout, no gradients). */
  async evaluate(data: Dataset, options: { batchSize?: number } = {}): Promise<{ loss: number; accuracy?: number }> {
    checkDataset(data, 'evaluate');
    const batchSize = readOptions<{ batchSize: number }>(options, 'evaluate', ['batchSize'], 'ignore').batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new MixprecError('E_ARG', 'evaluate: batchSize must be a positive integer');
    let lossSum = 0, correct = 0;
    // Data-parallel: each rank evaluates its shard (no padding: every row once), the sums are reduced.
    const shard = this.reducer ? { rank: dist.rank(), worldSize: dist.worldSize(), pad: false } : undefined;
    for (const b of batches(data, { batchSize, shuffle: false, shard })) {
      const x = tensor(b.x, [b.size, data.features], { dtype: this.computeDtype, device: this.device });
      const y = types.isInt32Array(b.y) ? b.y : tensor(b.y, [b.size, b.y.length / b.size], { device: this.device });
      this.#checkBatch(x, y);
      this.model.eval();
      tidy(() => noGrad(() => this.#lossOp(this.#forward(x, 0), y, 0)));
      const m = this.#readLoss(b.size, 1);
      lossSum += m.loss * b.size;
      correct += m.correct;
      x.dispose();
      if (y instanceof Tensor) y.dispose();
      await new Promise((r) => setImmediate(r));
    }
    if (this.reducer) [lossSum, correct] = dist.allReduceNumbers(Float64Array.of(lossSum, correct), 'sum');
    const result: { loss: number; accuracy?: number } = { loss: lossSum / data.n };
    if (this.loss === 'softmaxCrossEntropy') result.accuracy = correct / data.n;
    return result;
  }

  /** Trains `epochs` epochs (finishing a partly done one first, after a load). The event loop stays live between steps. */
  async fit(data: Dataset, options: FitOptions): Promise<EpochInfo[]> {
    checkDataset(data, 'fit');
    if (options === undefined) throw new MixprecError('E_ARG', 'fit options must be an object');
    const opts = readOptions<FitOptions>(options, 'fit', ['epochs', 'batchSize', 'shuffle', 'callbacks'], 'ignore');
    const { shuffle = true } = opts;
    const epochs = opts.epochs as number, batchSize = opts.batchSize as number;
    const callbacks = readOptions<NonNullable<FitOptions['callbacks']>>(opts.callbacks, 'fit callbacks', ['onStep', 'onEpochEnd'], 'ignore');
    for (const k of ['onStep', 'onEpochEnd'] as const)
      if (callbacks[k] !== undefined && typeof callbacks[k] !== 'function') throw new MixprecError('E_ARG', `fit: callbacks.${k} must be a function`);
    if (typeof shuffle !== 'boolean') throw new MixprecError('E_ARG', 'fit: shuffle must be a boolean');
    if (!Number.isSafeInteger(epochs) || epochs < 0) throw new MixprecError('E_ARG', 'epochs must be a non-negative integer');
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new MixprecError('E_ARG', 'batchSize must be a positive integer');
    const inFeatures = this.#inFeatures();
    if (inFeatures !== null && data.features !== inFeatures) throw new MixprecError('E_SHAPE', `data has ${data.features} features, the model takes ${inFeatures}`);
    if (this.#batchInEpoch > 0 && this.#batchSize !== batchSize)
      throw new MixprecError('E_ARG', `resuming mid-epoch needs the same batch size (${this.#batchSize}), got ${batchSize}`);
    this.#batchSize = batchSize;
    this.#stopRequested = false;
    const history: EpochInfo[] = [];
    const worldSize = this.reducer ? dist.worldSize() : 1;
    const shard = this.reducer ? { rank: dist.rank(), worldSize } : undefined;
    const nBatches = shardBatches(data.n, batchSize, worldSize);
    for (let e = 0; e < epochs && !this.#stopRequested; e++) {
      const t0 = process.hrtime.bigint();
      let lossSum = 0, steps = 0, skipped = 0, minScale = this.scaler.scale, samples = 0;
      let index = 0;
      for (const b of batches(data, { batchSize, shuffle, seed: this.options.seed, epoch: this.#epoch, shard })) {
        if (index++ < this.#batchInEpoch) continue; // resuming mid-epoch
        const x = tensor(b.x, [b.size, data.features], { dtype: this.computeDtype, device: this.device });
        const y = types.isInt32Array(b.y) ? b.y : tensor(b.y, [b.size, b.y.length / b.size], { device: this.device });
        const info = await this.step(x, y);
        x.dispose();
        if (y instanceof Tensor) y.dispose();
        this.#batchInEpoch = index;
        steps++;
        samples += b.size * worldSize; // every rank's batch has this size (the shards are padded)
        if (info.skipped) skipped++;
        else lossSum += info.loss;
        minScale = Math.min(minScale, info.scale);
        await callbacks.onStep?.({ ...info, step: this.#iteration, epoch: this.#epoch, batch: index, batches: nBatches });
        await new Promise((r) => setImmediate(r)); // keep the event loop live (progress bars, Ctrl-C)
        if (this.#stopRequested) break;
      }
      if (this.#batchInEpoch < nBatches) break; // stopped mid-epoch: the epoch is not complete
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const info: EpochInfo = {
        // NaN (null in JSON) when every step was skipped: there is no loss to average.
        epoch: this.#epoch + 1, loss: steps > skipped ? lossSum / (steps - skipped) : NaN, steps, skippedSteps: skipped,
        scale: this.scaler.scale, minScale, seconds, samplesPerSecond: samples / seconds,
      };
      this.#epoch += 1;
      this.#batchInEpoch = 0;
      history.push(info);
      await callbacks.onEpochEnd?.(info);
    }
    return history;
  }

  /**
   * Writes a checkpoint atomically: masters (by parameter name and shape), optimizer state, scaler
   * state, step, epoch, seed, precision, and the model's config when it is a Sequential of
   * built-ins (then Trainer.load rebuilds it; other models are passed to Trainer.load).
   */
  async save(path: string, options: { metadata?: Record<string, unknown> } = {}): Promise<void> {
    const metadata = readOptions<{ metadata: Record<string, unknown> }>(options, 'save', ['metadata'], 'ignore').metadata ?? this.metadata;
    if (metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) throw new MixprecError('E_ARG', 'save: metadata must be a plain object (JSON)');
    if (this.loss === 'custom') throw new MixprecError('E_STATE', 'save: a Trainer with a loss function cannot be checkpointed yet (the function is code); use a built-in loss');
    const opt = this.optimizer.stateDict();
    const header = {
      kind: CHECKPOINT_KIND,
      version: CHECKPOINT_VERSION,
      model: this.model instanceof Sequential || this.model instanceof GPT ? this.model.config : null,
      ...(this.model instanceof GPT ? { modelKind: 'gpt' } : {}),
      metadata,
      parameters: this.model.parameterSpecs(),
      options: { ...this.options, baseLr: this.#baseLr },
      optimizer: { kind: opt.kind, hyper: opt.hyper, step: opt.step },
      scaler: this.scaler.stateDict(),
      iteration: this.#iteration,
      epoch: this.#epoch,
      batchInEpoch: this.#batchInEpoch,
      batchSize: this.#batchSize,
      storeLength: this.store.length,
      worldSize: this.reducer ? dist.worldSize() : 1,
    };
    const tensors: Record<string, Float32Array> = { master: this.store.masterFlat() };
    // A diverged run (NaN / Inf masters) would replace the last good checkpoint, atomically, by one
    // that load() rejects: the run would be lost. Refuse it, and keep the file that is there.
    const bad = tensors.master.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      const p = this.store.views.find((v) => bad >= v.offset && bad < v.offset + v.size);
      throw new MixprecError('E_STATE', `save: the master weights hold ${tensors.master[bad]}${p ? ` (in '${p.name}')` : ''}: the run diverged; ${path} was not written, so what it held is kept`);
    }
    if (opt.m) tensors.m = opt.m;
    if (opt.v) tensors.v = opt.v;
    // Data-parallel: the ranks hold the same state; rank 0 writes, and no rank goes on (to load
    // it, say) before the file is complete. A failed write fails rank 0 only (the others wait at
    // the barrier until E_DIST names it).
    if (!this.reducer || dist.rank() === 0) await writeCheckpointFile(path, header, tensors);
    if (this.reducer) dist.barrier();
  }

  /**
   * A ready Trainer from a checkpoint. A Sequential of built-ins or a GPT is rebuilt from the file;
   * any other model is given as `model` (freshly built: its parameters are overwritten by name, as
   * PyTorch's load_state_dict). `device` overrides the saved one. Without `device`, the checkpoint
   * loads on the device it was saved from — or on the CPU when that device is not available here
   * (a checkpoint saved on 'cuda' loads on a machine without CUDA: checkpoints are
   * device-independent); `t.device` says which.
   *
   * The whole file is checked before anything is built (E_CHECKPOINT naming what is wrong):
   * kind and version, the model config (and that the model it describes is no larger than the
   * weights the file holds), every option, the optimizer (kind, hyper-parameters, step, and for
   * Adam / AdamW after a step its moments m and v, finite, v >= 0), the loss scaler's state,
   * iteration / epoch / batch counters, metadata, and finite master weights of the saved length.
   */
  static async load<T extends Module = Sequential>(path: string, options: { device?: Device | 'auto'; model?: T } = {}): Promise<Trainer<T>> {
    const opts = readOptions<{ device: Device | 'auto'; model: T }>(options, 'Trainer.load', ['device', 'model'], 'ignore');
    if (opts.model !== undefined && !isInstance(opts.model, Module, 'Trainer.load: model')) throw new MixprecError('E_ARG', 'Trainer.load: model must be a mixprec.nn.Module');
    const { header, tensors } = await readCheckpointFile(path);
    const c = checkCheckpoint(header, tensors, path);
    let model: Module;
    const built = opts.model === undefined;
    if (opts.model !== undefined) model = opts.model;
    else if (c.model) model = buildModel(c.model, path);
    else throw new MixprecError('E_CHECKPOINT', `${path} holds a model that is not a built-in Sequential: pass it as Trainer.load(path, { model })`);
    let trainer: Trainer<T> | null = null;
    try {
      checkParameters(c.parameters, model, path);
      const o = c.options;
      trainer = new Trainer(model as T, {
        optimizer: makeOptimizer(c.optimizer.kind), loss: o.loss, labelSmoothing: o.labelSmoothing, precision: o.precision, maxGradNorm: o.maxGradNorm,
        gradAccumulation: o.gradAccumulation, lrSchedule: o.lrSchedule, seed: o.seed, device: opts.device ?? savedDevice(o.device),
        masterWeights: o.masterWeights,
        lossScale: { enabled: true },
      });
      trainer.#restore(c, path);
      return trainer;
    } catch (e) {
      if (built) (trainer ?? model).dispose(); // a caller's model is the caller's
      throw e;
    }
  }

  /** Loads a checkpoint of the same model into this trainer (a different model is E_CHECKPOINT; the file is checked whole first, as by Trainer.load). */
  async restore(path: string): Promise<void> {
    const { header, tensors } = await readCheckpointFile(path);
    const c = checkCheckpoint(header, tensors, path);
    const config = this.model instanceof Sequential || this.model instanceof GPT ? this.model.config : null;
    if (c.model && config && JSON.stringify(c.model.config) !== JSON.stringify(config))
      throw new MixprecError('E_CHECKPOINT', `${path} holds a different model (${JSON.stringify((c.model.config as { layers?: unknown }).layers ?? c.model.config)}) than this trainer's`);
    checkParameters(c.parameters, this.model, path);
    this.#restore(c, path);
  }

  /** Frees the model's store, activations and the trainer's buffers. */
  dispose(): void {
    this.model.dispose();
    this.optimizer.dispose();
    if (this.#metrics.owned) this.#metrics.tensor.dispose();
    this.#input?.dispose();
  }

  // --- internals ---

  /** Sets this trainer's state from a checked checkpoint (checkCheckpoint): nothing changes unless its parameters fit this store. */
  #restore(c: Checkpoint, path: string): void {
    if (c.master.length !== this.store.length)
      throw new MixprecError('E_CHECKPOINT', `${path}: parameters do not match the model (${c.master.length} values, model has ${this.store.length})`);
    if (c.optimizer.kind !== this.optimizer.kind) throw new MixprecError('E_CHECKPOINT', `${path}: optimizer is '${c.optimizer.kind}', this trainer's is '${this.optimizer.kind}'`);
    this.optimizer.loadStateDict(c.optimizer, this.device);
    this.scaler.loadStateDict(c.scaler);
    this.store.loadMasterFlat(c.master);
    this.#baseLr = c.options.baseLr ?? this.optimizer.lr;
    this.#iteration = c.iteration;
    this.#epoch = c.epoch;
    // Resumed mid-epoch with another world size: the epoch's first batchInEpoch·B·W rows (of its
    // order) were seen; go on from the last batch boundary of the new shards within them (at most
    // one global batch is seen twice).
    const world = this.reducer ? dist.worldSize() : 1;
    this.#batchInEpoch = c.worldSize === world ? c.batchInEpoch : Math.floor((c.batchInEpoch * c.worldSize) / world);
    this.#batchSize = c.batchSize;
    this.metadata = c.metadata;
    this.#minScaleHits = this.scaler.counters.minScaleHits; // warn about new floor hits, not the saved ones
  }

  #inFeatures(): number | null {
    const n = (this.model as unknown as { inFeatures?: unknown }).inFeatures;
    return typeof n === 'number' && Number.isSafeInteger(n) ? n : null;
  }
  #outFeatures(): number | null {
    const n = (this.model as unknown as { outFeatures?: unknown }).outFeatures;
    return typeof n === 'number' && Number.isSafeInteger(n) ? n : null;
  }

  /** The batch size; checks x (and y against the model's output size where it is known). */
  #checkBatch(x: Tensor, y: Int32Array | Tensor): number {
    if (!(x instanceof Tensor)) throw new MixprecError('E_ARG', 'x must be a Tensor [batch, ...]');
    const nin = this.#inFeatures();
    if (nin !== null && (x.shape.length !== 2 || x.shape[1] !== nin || x.shape[0] < 1))
      throw new MixprecError('E_SHAPE', `x must be [batch, ${nin}], got [${x.shape.join(', ')}]`);
    if (x.ndim < 1 || x.shape[0] < 1) throw new MixprecError('E_SHAPE', `x must be [batch, ...] with batch >= 1, got [${x.shape.join(', ')}]`);
    if (x.device !== this.device) throw new MixprecError('E_DEVICE', `x is on ${x.device}, the trainer on ${this.device}`);
    const B = x.shape[0], C = this.#outFeatures();
    if (this.loss === 'softmaxCrossEntropy') {
      // One label per sample ([B] for a classifier) or per position ([B, T] for a language model).
      const isIds = Object.prototype.toString.call(y) === '[object Int32Array]';
      if (!isIds && !(y instanceof Tensor && y.dtype === 'int32'))
        throw new MixprecError('E_ARG', 'cross-entropy needs y as class labels: an Int32Array or an int32 Tensor');
      const n = isIds ? (y as Int32Array).length : (y as Tensor).size;
      if (n < B || n % B !== 0) throw new MixprecError('E_SHAPE', `${n} labels for a batch of ${B} (need ${B} or a multiple of it)`);
      if (y instanceof Tensor) {
        if (y.shape[0] !== B) throw new MixprecError('E_SHAPE', `labels [${y.shape.join(', ')}] for a batch of ${B}`);
        if (y.device !== this.device) throw new MixprecError('E_DEVICE', `y is on ${y.device}, the trainer on ${this.device}`);
        const r = y.intRange;
        if (C !== null && (!r || r[0] < 0 || r[1] >= C)) throw new MixprecError('E_DATA', `labels must lie in [0, ${C})${r ? ` (they span [${r[0]}, ${r[1]}])` : ' (unknown values: make y with mixprec.tensor)'}`);
      } else if (C !== null) {
        const labels = y as Int32Array;
        for (let i = 0; i < n; i++)
          if (!(labels[i] >= 0 && labels[i] < C)) throw new MixprecError('E_DATA', `label ${labels[i]} at ${i} is outside [0, ${C})`);
      }
    } else if (this.loss === 'mse') {
      if (!(y instanceof Tensor)) throw new MixprecError('E_ARG', 'mse needs y as a Tensor [batch, outputs]');
      if (y.shape[0] !== B || (C !== null && (y.shape.length !== 2 || y.shape[1] !== C)))
        throw new MixprecError('E_SHAPE', `y must be [${B}, ${C ?? '...'}], got [${y.shape.join(', ')}]`);
      if (y.device !== this.device) throw new MixprecError('E_DEVICE', `y is on ${y.device}, the trainer on ${this.device}`);
    } else {
      // A loss function takes the batch's targets as they are, but they are split per micro-batch.
      const isIds = Object.prototype.toString.call(y) === '[object Int32Array]';
      if (!isIds && !(y instanceof Tensor)) throw new MixprecError('E_ARG', `the targets y must be an Int32Array or a Tensor (got ${show(y)})`);
      const n = isIds ? (y as Int32Array).length : (y as Tensor).shape[0] ?? 0;
      if (y instanceof Tensor ? n !== B : n < B || n % B !== 0) throw new MixprecError('E_SHAPE', `${y instanceof Tensor ? `targets [${y.shape.join(', ')}]` : `${n} targets`} for a batch of ${B}`);
    }
    return B;
  }

  /** x in the compute dtype (cast once when it comes in another dtype). */
  #inputIn(x: Tensor): Tensor {
    if (x.dtype === this.computeDtype || x.dtype === 'int32') return x;
    this.#input?.dispose();
    this.#input = noGrad(() => x.cast(this.computeDtype));
    return this.#input;
  }

  /** Micro-batch k's loss, written into metrics slot k (loss, and the correct count for cross-entropy). */
  #lossOp(out: Tensor, y: Int32Array | Tensor, k: number): Tensor {
    const m = this.#metrics;
    const slot: MetricsSlot = { tensor: m.tensor, lossOffset: (m.offset + 8 * k) / 4, correctOffset: (m.offset + 8 * k + 4) / 4 };
    if (this.loss === 'softmaxCrossEntropy') {
      const logits = out.ndim === 2 ? out : out.reshape([-1, out.shape[out.ndim - 1]]);
      const n = y instanceof Tensor ? y.size : y.length;
      if (logits.ndim !== 2 || logits.shape[0] !== n)
        throw new MixprecError('E_SHAPE', `cross-entropy: the model's output [${out.shape.join(', ')}] has ${logits.shape[0]} rows of logits for ${n} labels`);
      return crossEntropyInto(logits, y instanceof Tensor ? y.reshape([-1]) : y, { labelSmoothing: this.options.labelSmoothing }, slot);
    }
    if (this.loss === 'mse') return mseLossInto(out, y as Tensor, slot);
    const loss = this.#lossFn!(out, y);
    if (!(loss instanceof Tensor) || loss.size !== 1 || loss.dtype === 'int32') throw new MixprecError('E_ARG', 'the loss function must return a scalar float Tensor');
    copyInto(new Tensor(m.tensor.storage, [], 'float32', [], slot.lossOffset), loss.reshape([]));
    return loss;
  }

  /** The metrics of N micro-batches of a batch of B: the batch-mean loss and the correct count. */
  #readLoss(B: number, N: number, read?: Uint8Array): { loss: number; correct: number } {
    const m = this.#metrics;
    const bytes = read ?? native().readBytes(m.tensor.handle(), m.offset + 8 * N).subarray(m.offset);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let loss = 0, correct = 0, start = 0;
    for (let k = 0; k < N && start < B; k++) {
      const Bk = Math.floor(B / N) + (k < B % N ? 1 : 0);
      loss += dv.getFloat32(8 * k, true) * (Bk / B);
      if (this.loss === 'softmaxCrossEntropy') correct += dv.getInt32(8 * k + 4, true);
      start += Bk;
    }
    return { loss, correct };
  }
}

/** An object option read once into a plain copy (readOptions); any other value as it is, for the caller's type check. */
function copyObject(v: unknown, what: string): unknown {
  return typeof v === 'object' && v !== null ? readOptions(v, what, null) : v;
}

/** A checkpoint's header and tensors, checked whole (checkCheckpoint). */
interface Checkpoint {
  model: { kind: 'sequential'; config: ModelConfig } | { kind: 'gpt'; config: GPTConfig } | null;
  /** The parameters' names and shapes, in order (null in version 1, which compared the model config instead). */
  parameters: { name: string; shape: number[] }[] | null;
  options: {
    loss: LossKind; labelSmoothing: number; precision: Precision; maxGradNorm: number; gradAccumulation: number;
    lrSchedule: LrSchedule; seed: number; masterWeights: boolean; device: string; baseLr: number | undefined;
  };
  optimizer: ReturnType<typeof checkOptimizerState>;
  scaler: GradScalerStateDict;
  iteration: number; epoch: number; batchInEpoch: number; batchSize: number | null; worldSize: number;
  metadata: Record<string, unknown> | null;
  master: Float32Array;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const showJson = (v: unknown): string => { try { return JSON.stringify(v) ?? show(v); } catch { return show(v); } };
const DEVICE_RE = /^(cpu|auto|cuda(:\d{1,4})?)$/;

/**
 * Checks a checkpoint whole, before anything is built: every failure is E_CHECKPOINT naming the
 * field. The model config must describe a model no larger than the master weights the file holds
 * (so a crafted header cannot make Trainer.load build a huge model before rejecting it).
 */
function checkCheckpoint(header: unknown, tensors: Record<string, unknown>, path: string): Checkpoint {
  const bad = (what: string) => new MixprecError('E_CHECKPOINT', `${path}: ${what}`);
  if (!isRecord(header) || header.kind !== CHECKPOINT_KIND) throw new MixprecError('E_CHECKPOINT', `${path} is not a mixprec Trainer checkpoint`);
  const h = header;
  if (h.version !== 1 && h.version !== CHECKPOINT_VERSION)
    throw bad(`Trainer checkpoint version ${showJson(h.version)} is not supported (expected 1 or ${CHECKPOINT_VERSION})`);
  const int = (v: unknown, what: string, min: number): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw bad(`${what} must be an integer >= ${min} (got ${showJson(v)})`);
    return v;
  };
  const num = (v: unknown, what: string, ok: (x: number) => boolean, rule: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw bad(`${what} must be ${rule} (got ${showJson(v)})`);
    return v;
  };

  // The weights first: every size below is compared with what the file holds.
  const master = tensors.master;
  if (!types.isFloat32Array(master)) throw bad('no FP32 master weights (tensor "master")');
  const storeLength = int(h.storeLength, 'storeLength', 1);
  if (storeLength !== master.length) throw bad(`storeLength ${storeLength} does not match the ${master.length} master values`);
  for (let i = 0; i < master.length; i++) if (!Number.isFinite(master[i])) throw bad(`master weight ${i} is ${master[i]} (must be finite)`);

  // The model: its config, and how many values the model it describes has, before building it.
  if (h.modelKind !== undefined && h.modelKind !== 'gpt') throw bad(`modelKind ${showJson(h.modelKind)} is not a known model ('gpt', or none for a Sequential)`);
  let model: Checkpoint['model'] = null;
  if (h.modelKind === 'gpt') {
    if (!isRecord(h.model)) throw bad('model: a GPT checkpoint needs its config');
    model = { kind: 'gpt', config: h.model as unknown as GPTConfig };
  } else if (h.model !== null && h.model !== undefined) {
    if (!isRecord(h.model)) throw bad(`model must be a Sequential config or null (got ${showJson(h.model)})`);
    model = { kind: 'sequential', config: h.model as unknown as ModelConfig };
  } else if (h.version === 1) throw bad('model: a version-1 checkpoint needs its model config');
  if (model) {
    let count: number;
    try {
      count = model.kind === 'gpt' ? gptParameterCount(model.config) : Sequential.configParameterCount(model.config);
    } catch (e) {
      throw bad(`bad model config: ${(e as Error).message}`);
    }
    if (!(count <= master.length))
      throw bad(`the model config describes ${count} parameter values, the file holds ${master.length}: not building it`);
  }
  let parameters: Checkpoint['parameters'] = null;
  if (h.version !== 1) {
    if (!Array.isArray(h.parameters)) throw bad('parameters must be a list of { name, shape }');
    const names = new Set<string>();
    let total = 0;
    parameters = h.parameters.map((p: unknown, i: number) => {
      if (!isRecord(p) || typeof p.name !== 'string' || p.name === '' || names.has(p.name)) throw bad(`parameters[${i}] must be { name, shape } with a unique non-empty name (got ${showJson(p)})`);
      names.add(p.name);
      const shape = p.shape;
      if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        throw bad(`parameters[${i}] ('${p.name}'): shape must be at most 8 non-negative integers (got ${showJson(shape)})`);
      total += shape.reduce((a: number, b: number) => a * b, 1);
      if (!(total <= master.length)) throw bad(`parameters: more values than the ${master.length} master values`);
      return { name: p.name, shape: [...shape] as number[] };
    });
  }

  // The Trainer's options, as the constructor would check them.
  if (!isRecord(h.options)) throw bad('options missing (or not an object)');
  const o = h.options;
  if (o.loss !== 'softmaxCrossEntropy' && o.loss !== 'mse') throw bad(`options.loss must be 'softmaxCrossEntropy' or 'mse' (got ${showJson(o.loss)})`);
  if (!PRECISIONS.includes(o.precision as Precision)) throw bad(`options.precision must be 'fp32', 'fp16' or 'bf16' (got ${showJson(o.precision)})`);
  if (o.masterWeights !== undefined && typeof o.masterWeights !== 'boolean') throw bad(`options.masterWeights must be a boolean (got ${showJson(o.masterWeights)})`);
  if (typeof o.device !== 'string' || !DEVICE_RE.test(o.device)) throw bad(`options.device must be 'cpu', 'cuda' or 'cuda:N' (got ${showJson(o.device)})`);
  let lrSchedule: LrSchedule;
  try {
    if (!isRecord(o.lrSchedule)) throw new Error(`must be an object (got ${showJson(o.lrSchedule)})`);
    lrSchedule = checkSchedule(o.lrSchedule);
  } catch (e) {
    throw bad(`options.lrSchedule: ${(e as Error).message}`);
  }
  const options: Checkpoint['options'] = {
    loss: o.loss,
    labelSmoothing: num(o.labelSmoothing, 'options.labelSmoothing', (x) => x >= 0 && x <= 1, 'in [0, 1]'),
    precision: o.precision as Precision,
    maxGradNorm: num(o.maxGradNorm, 'options.maxGradNorm', (x) => x >= 0, 'a finite number >= 0'),
    gradAccumulation: int(o.gradAccumulation, 'options.gradAccumulation', 1),
    lrSchedule,
    seed: int(o.seed, 'options.seed', 0),
    masterWeights: o.masterWeights ?? true,
    device: o.device,
    baseLr: o.baseLr === undefined ? undefined : num(o.baseLr, 'options.baseLr', (x) => x >= 0, 'a finite number >= 0'),
  };

  // The optimizer (its moments against the weights) and the loss scaler.
  if (!isRecord(h.optimizer)) throw bad('optimizer missing (or not an object)');
  let optimizer: Checkpoint['optimizer'];
  try {
    optimizer = checkOptimizerState({ kind: h.optimizer.kind, hyper: h.optimizer.hyper, step: h.optimizer.step, m: tensors.m, v: tensors.v }, master.length);
  } catch (e) {
    throw bad(`optimizer: ${(e as Error).message}`);
  }
  try {
    new GradScaler().loadStateDict(h.scaler as GradScalerStateDict);
  } catch (e) {
    throw bad(`scaler: ${(e as Error).message}`);
  }

  // Where training stood.
  const batchSize = h.batchSize === null || h.batchSize === undefined ? null : int(h.batchSize, 'batchSize', 1);
  const batchInEpoch = int(h.batchInEpoch, 'batchInEpoch', 0);
  if (batchInEpoch > 0 && batchSize === null) throw bad(`batchInEpoch ${batchInEpoch} (mid-epoch) needs the batchSize it was trained with`);
  if (h.metadata !== undefined && h.metadata !== null && !isRecord(h.metadata)) throw bad(`metadata must be an object or null (got ${showJson(h.metadata)})`);
  return {
    model, parameters, options, optimizer, master,
    scaler: h.scaler as GradScalerStateDict,
    iteration: int(h.iteration, 'iteration', 0),
    epoch: int(h.epoch, 'epoch', 0),
    batchInEpoch, batchSize,
    worldSize: h.worldSize === undefined ? 1 : int(h.worldSize, 'worldSize', 1),
    metadata: (h.metadata as Record<string, unknown> | null | undefined) ?? null,
  };
}

/**
 * At least the parameter values of a GPT config — the token and position tables and each block's
 * attention and MLP weights (12·C² per block); LayerNorms and biases come on top — without
 * building it. Its other fields are checked by the GPT constructor.
 */
function gptParameterCount(c: GPTConfig): number {
  const dim = (k: 'vocabSize' | 'blockSize' | 'nLayer' | 'nEmbd') => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new MixprecError('E_CHECKPOINT', `gpt: ${k} must be a positive integer (got ${showJson(v)})`);
    return v;
  };
  const C = dim('nEmbd');
  return (dim('vocabSize') + dim('blockSize')) * C + dim('nLayer') * 12 * C * C;
}

/** The model of a checked config (sizes already bounded by the file): its constructor's errors as E_CHECKPOINT (E_OOM stays: a real shortage, not the file's fault). */
function buildModel(m: NonNullable<Checkpoint['model']>, path: string): Module {
  try {
    return m.kind === 'gpt' ? new GPT(m.config) : Sequential.fromConfig(m.config);
  } catch (e) {
    if (e instanceof MixprecError && e.code === 'E_OOM') throw e;
    throw new MixprecError('E_CHECKPOINT', `${path}: bad ${m.kind === 'gpt' ? 'GPT' : 'model'} config: ${(e as Error).message}`);
  }
}

/** The device a checkpoint loads on when the caller names none: the saved one, or the CPU where that is not available here. */
function savedDevice(d: string): Device {
  try {
    return resolveDevice(d);
  } catch (e) {
    if (e instanceof MixprecError && e.code === 'E_NO_CUDA') return 'cpu';
    throw e;
  }
}

/** The file's parameters (names and shapes, in order) must be the model's: E_CHECKPOINT naming the first that is not. */
function checkParameters(theirs: Checkpoint['parameters'], model: Module, path: string): void {
  if (theirs === null) return; // version 1: the model config was compared instead
  const mine = model.parameterSpecs();
  const names = new Set(theirs.map((p) => p.name));
  for (const p of mine) if (!names.has(p.name)) throw new MixprecError('E_CHECKPOINT', `${path}: the model's parameter '${p.name}' is not in the checkpoint`);
  const byName = new Map(mine.map((p) => [p.name, p]));
  theirs.forEach((p, i) => {
    const m = byName.get(p.name);
    if (!m) throw new MixprecError('E_CHECKPOINT', `${path}: parameter '${p.name}' in the checkpoint is not in the model`);
    if (p.shape.length !== m.shape.length || p.shape.some((d, j) => d !== m.shape[j]))
      throw new MixprecError('E_CHECKPOINT', `${path}: parameter '${p.name}' is [${p.shape.join(', ')}] in the checkpoint, [${m.shape.join(', ')}] in the model`);
    if (mine[i].name !== p.name) throw new MixprecError('E_CHECKPOINT', `${path}: parameter '${p.name}' is at position ${i} in the checkpoint, '${mine[i].name}' in the model`);
  });
}

function checkDataset(data: unknown, what: string): void {
  const d = data as Partial<Dataset> | null;
  if (typeof d !== 'object' || d === null || !Number.isSafeInteger(d.n) || !Number.isSafeInteger(d.features) || !d.x || !d.y)
    throw new MixprecError('E_ARG', `${what}: data must be a dataset { n, features, x, y } (e.g. from mixprec.data.loadMnist())`);
}
