// `mixprec diagnose`: train an MLP in FP32 for a few steps, histogram every weight gradient and
// every activation gradient (log2|g| per integer exponent), and say what FP16 would do to them —
// unscaled, with the current loss scale, and with the smallest power-of-two scale that keeps the
// values lost to zero under 0.1% without overflowing. Then short ablation runs side by side:
// fp32, fp16 mixed precision, fp16 without loss scaling, fp16 without FP32 master weights.
import type { Device } from '../backends';
import { batches, Dataset } from '../data';
import { dtypeCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { tensor } from '../tensor';
import { Linear } from '../nn';
import { mlp } from '../train/cli_train';
import { Trainer, TrainerOptions } from '../train/trainer';
import { Fp16Fractions, HistogramJSON, Log2Histogram, ScaleSuggestion, suggestLossScale } from './histogram';

export type OptimizerName = 'sgd' | 'adam' | 'adamw';

export interface DiagnoseOptions {
  /** Training rows (MNIST's by default), and optionally test rows for the ablations' accuracy. */
  data: { train: Dataset; test?: Dataset };
  datasetName?: string;
  steps: number;
  batchSize: number;
  hidden: number[];
  seed: number;
  device?: Device | 'auto';
  optimizer?: OptimizerName;
  lr?: number;
  /** The loss scale to compare with (GradScaler's initial 2^16 by default); a power of two. */
  currentScale?: number;
  /** Short runs of the four configurations (null or steps 0: none). */
  ablation?: AblationOptions | null;
  /** Progress lines (to stderr in the CLI). */
  log?: (s: string) => void;
}

export interface AblationOptions { steps: number; lr: number; optimizer: OptimizerName; subset: number; batchSize?: number; testRows?: number }

export interface GroupReport {
  name: string;
  kind: 'weight' | 'activation' | 'all';
  shape?: number[];
  /** Values seen over all steps (zeros, inf, NaN included). */
  values: number;
  zeroFraction: number;
  inf: number;
  nan: number;
  unscaled: Fp16Fractions;
  current: Fp16Fractions;
  suggested: ScaleSuggestion;
  histogram: HistogramJSON;
}

export interface AblationRun {
  name: 'fp32' | 'fp16' | 'fp16-no-loss-scaling' | 'fp16-no-master-weights';
  label: string;
  precision: 'fp32' | 'fp16';
  lossScale: 'none' | 'dynamic' | number;
  masterWeights: boolean;
  losses: number[];
  scales: number[];
  /** Steps (1-based) whose update was skipped (inf/NaN gradients). */
  skipped: number[];
  firstLoss: number;
  lastLoss: number;
  testAccuracy?: number;
  /** The GPT's validation loss after the run. */
  valLoss?: number;
  seconds: number;
}

export interface DiagnoseResult {
  event: 'diagnose';
  dataset: string;
  /** The MLP's widths (a GPT: [layers, heads, width, block]). */
  model: number[];
  /** The model as the report names it, e.g. "MLP 784-512-512-10" or "GPT 4 x 4 heads x 128". */
  modelName?: string;
  parameters: number;
  steps: number;
  batchSize: number;
  optimizer: OptimizerName;
  lr: number;
  seed: number;
  device: Device;
  currentLossScale: number;
  /** Over all weight and activation gradients: the nonzero finite values FP16 rounds to zero, unscaled (0..1). */
  underflowFraction: number;
  subnormalFraction: number;
  overflowFraction: number;
  zeroFraction: number;
  suggestedLossScale: number | null;
  suggestedLossScaleReason?: string;
  maxSafeLossScale: number | null;
  atCurrentScale: Fp16Fractions;
  atSuggestedScale: Fp16Fractions | null;
  groups: GroupReport[];
  ablation: { options: AblationOptions; runs: AblationRun[] } | null;
  seconds: number;
}

/** The histograms themselves (for the pictures), by group name. */
export type HistogramMap = Map<string, Log2Histogram>;

const OVERALL = 'all gradients';
const ALL_W = 'all weight gradients';
const ALL_A = 'all activation gradients';

function groupReport(name: string, kind: GroupReport['kind'], h: Log2Histogram, current: number, shape?: number[]): GroupReport {
  const total = h.total;
  return {
    name, kind, ...(shape ? { shape } : {}), values: total, zeroFraction: total ? h.zero / total : 0, inf: h.inf, nan: h.nan,
    unscaled: h.fp16(1), current: h.fp16(current), suggested: suggestLossScale(h), histogram: h.toJSON(),
  };
}

export function checkPositiveInt(v: unknown, what: string): void {
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new MixprecError('E_ARG', `${what} must be a positive integer`);
}

/** The first `n` rows of a dataset (all of them when it has fewer). */
export function subset(ds: Dataset, n: number): Dataset {
  const m = Math.min(n, ds.n);
  const per = ds.y.length / ds.n;
  return { ...ds, n: m, x: ds.x.subarray(0, m * ds.features), y: ds.y.subarray(0, m * per) as Int32Array | Float32Array };
}

/** The options both diagnoses check alike: the start time, the loss scale to judge (a power of two) and the log. */
export function diagnoseStart(o: Pick<DiagnoseOptions, 'steps' | 'batchSize' | 'currentScale' | 'log'>): { t0: bigint; current: number; log: (s: string) => void } {
  const t0 = process.hrtime.bigint();
  checkPositiveInt(o.steps, 'steps');
  checkPositiveInt(o.batchSize, 'batchSize');
  const current = o.currentScale ?? 2 ** 16;
  new Log2Histogram().fp16(current); // E_ARG unless a power of two
  return { t0, current, log: o.log ?? (() => {}) };
}

/** Trains `steps` FP32 steps and histograms the gradients; then the ablation runs. */
export async function diagnose(o: DiagnoseOptions): Promise<{ result: DiagnoseResult; histograms: HistogramMap }> {
  const { t0, current, log } = diagnoseStart(o);
  const optimizer = o.optimizer ?? 'adam';
  const lr = o.lr ?? 1e-3;
  const train = o.data.train;
  const model = mlp(train.features, o.hidden, train.classes ?? 10, 'relu', o.seed);
  const trainer = new Trainer(model, { precision: 'fp32', lossScale: 'none', optimizer: { type: optimizer, lr }, seed: o.seed, device: o.device ?? 'auto' });
  const device = trainer.device;
  const specs = model.parameterSpecs();
  const widths = [train.features, ...model.layers.flatMap((l) => (l instanceof Linear ? [l.config.outFeatures] : []))];
  const wHist = new Map(specs.map((s) => [s.name, new Log2Histogram()]));
  const aHist = model.layers.map(() => new Log2Histogram());
  const aShape: number[][] = model.layers.map(() => []);
  log(`mixprec diagnose: ${o.datasetName ?? 'data'} (${train.n} rows), MLP ${widths.join('-')}, fp32 without loss scaling, ${o.steps} steps of batch ${o.batchSize} on ${device}`);
  let step = 0;
  try {
    for (let epoch = 0; step < o.steps; epoch++) {
      for (const b of batches(train, { batchSize: o.batchSize, shuffle: true, seed: o.seed, epoch })) {
        if (step >= o.steps) break;
        const x = tensor(b.x, [b.size, train.features], { dtype: trainer.computeDtype, device: trainer.device });
        const y = b.y as Int32Array;
        // The gradient arriving at each layer's output (a reused buffer: read it now).
        await trainer.backward(x, y, {
          observe: (layer, g) => {
            aHist[layer].add(native().download(g.handle(), dtypeCode(g.dtype), g.size));
            aShape[layer] = [...g.shape];
          },
        });
        for (const p of trainer.store.gradients()) wHist.get(p.name)!.add(p.data);
        await trainer.step(x, y); // recomputes the same gradients, then updates
        x.dispose();
        step++;
        if (step % 25 === 0 || step === o.steps) log(`  step ${step}/${o.steps}`);
        await new Promise((r) => setImmediate(r));
      }
    }
  } finally {
    trainer.dispose();
  }
  const report = gradientReport(
    specs.map((s) => ({ name: s.name, shape: [...s.shape], hist: wHist.get(s.name)! })),
    model.layers.map((_, i) => ({ name: `layer ${i} output`, shape: aShape[i], hist: aHist[i] })), current);

  let ablation: DiagnoseResult['ablation'] = null;
  if (o.ablation && o.ablation.steps > 0) ablation = { options: o.ablation, runs: await ablations(o, o.ablation, log) };

  const result = diagnoseResult(report, {
    dataset: o.datasetName ?? 'data', model: widths, parameters: specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0),
    steps: step, batchSize: o.batchSize, optimizer, lr, seed: o.seed, device, currentLossScale: current,
    ablation, seconds: Number(process.hrtime.bigint() - t0) / 1e9,
  });
  const histograms = report.histograms;
  return { result, histograms };
}

/** The groups (each weight, each activation, the totals) and their histograms, from what a run counted. */
export function gradientReport(weights: readonly { name: string; shape?: number[]; hist: Log2Histogram }[], activations: readonly { name: string; shape?: number[]; hist: Log2Histogram }[], current: number): { groups: GroupReport[]; histograms: HistogramMap; overall: GroupReport } {
  const histograms: HistogramMap = new Map();
  const groups: GroupReport[] = [];
  for (const [kind, list] of [['weight', weights], ['activation', activations]] as const)
    for (const g of list) {
      histograms.set(g.name, g.hist);
      groups.push(groupReport(g.name, kind, g.hist, current, g.shape));
    }
  const allW = Log2Histogram.merged(weights.map((g) => g.hist)), allA = Log2Histogram.merged(activations.map((g) => g.hist));
  const all = Log2Histogram.merged([allW, allA]);
  histograms.set(ALL_W, allW).set(ALL_A, allA).set(OVERALL, all);
  groups.push(groupReport(ALL_W, 'all', allW, current), groupReport(ALL_A, 'all', allA, current));
  const overall = groupReport(OVERALL, 'all', all, current);
  groups.push(overall);
  return { groups, histograms, overall };
}

/** The result object: the run's description plus the overall figures of its report. */
export function diagnoseResult(r: { groups: GroupReport[]; overall: GroupReport }, meta: Omit<DiagnoseResult, 'event' | 'underflowFraction' | 'subnormalFraction' | 'overflowFraction' | 'zeroFraction' | 'suggestedLossScale' | 'suggestedLossScaleReason' | 'maxSafeLossScale' | 'atCurrentScale' | 'atSuggestedScale' | 'groups'>): DiagnoseResult {
  const o = r.overall;
  return {
    event: 'diagnose', ...meta,
    underflowFraction: o.unscaled.underflow, subnormalFraction: o.unscaled.subnormal, overflowFraction: o.unscaled.overflow,
    zeroFraction: o.zeroFraction, suggestedLossScale: o.suggested.scale,
    ...(o.suggested.reason ? { suggestedLossScaleReason: o.suggested.reason } : {}),
    maxSafeLossScale: o.suggested.maxSafeScale, atCurrentScale: o.current, atSuggestedScale: o.suggested.at, groups: r.groups,
  };
}

export const ABLATION_CONFIGS: readonly { name: AblationRun['name']; label: string; opts: Pick<TrainerOptions, 'precision' | 'lossScale' | 'masterWeights'> }[] = [
  { name: 'fp32', label: 'fp32', opts: { precision: 'fp32', lossScale: 'none' } },
  { name: 'fp16', label: 'fp16 mixed precision (FP32 masters, dynamic loss scale)', opts: { precision: 'fp16', lossScale: 'dynamic' } },
  { name: 'fp16-no-loss-scaling', label: 'fp16 without loss scaling (--loss-scale 1)', opts: { precision: 'fp16', lossScale: 1 } },
  { name: 'fp16-no-master-weights', label: 'fp16 without master weights (--no-master-weights)', opts: { precision: 'fp16', lossScale: 'dynamic', masterWeights: false } },
];

/** The four short runs: same init, same batches, same optimizer; only the precision policy differs. */
export async function ablations(o: DiagnoseOptions, a: AblationOptions, log: (s: string) => void = () => {}): Promise<AblationRun[]> {
  checkPositiveInt(a.steps, 'ablation steps');
  checkPositiveInt(a.subset, 'ablation subset');
  const data = subset(o.data.train, a.subset);
  const test = o.data.test ? subset(o.data.test, a.testRows ?? 2000) : undefined;
  const batchSize = a.batchSize ?? o.batchSize;
  const runs: AblationRun[] = [];
  for (const c of ABLATION_CONFIGS) {
    const t0 = process.hrtime.bigint();
    const model = mlp(data.features, o.hidden, data.classes ?? 10, 'relu', o.seed);
    const trainer = new Trainer(model, { ...c.opts, optimizer: { type: a.optimizer, lr: a.lr }, seed: o.seed, device: o.device ?? 'auto' });
    const losses: number[] = [], scales: number[] = [], skipped: number[] = [];
    try {
      let step = 0;
      for (let epoch = 0; step < a.steps; epoch++) {
        for (const b of batches(data, { batchSize, shuffle: true, seed: o.seed, epoch })) {
          if (step >= a.steps) break;
          const x = tensor(b.x, [b.size, data.features], { dtype: trainer.computeDtype, device: trainer.device });
          const r = await trainer.step(x, b.y as Int32Array);
          x.dispose();
          step++;
          losses.push(r.loss);
          scales.push(r.scale);
          if (r.skipped) skipped.push(step);
          await new Promise((res) => setImmediate(res));
        }
      }
      const k = Math.max(1, Math.round(a.steps / 10));
      const mean = (xs: number[]) => { const f = xs.filter(Number.isFinite); return f.length ? f.reduce((s, v) => s + v, 0) / f.length : NaN; };
      const run: AblationRun = {
        name: c.name, label: c.label, precision: c.opts.precision as 'fp32' | 'fp16', lossScale: c.opts.lossScale as AblationRun['lossScale'],
        masterWeights: c.opts.masterWeights ?? true, losses, scales, skipped,
        firstLoss: mean(losses.slice(0, k)), lastLoss: mean(losses.slice(-k)), seconds: 0,
      };
      if (test) run.testAccuracy = (await trainer.evaluate(test)).accuracy;
      run.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      runs.push(run);
      log(`  ${c.label}: loss ${run.firstLoss.toFixed(4)} -> ${run.lastLoss.toFixed(4)} (mean of the first / last ${k} steps), ${skipped.length} skipped, ${run.seconds.toFixed(1)} s`);
    } finally {
      trainer.dispose();
    }
  }
  return runs;
}
