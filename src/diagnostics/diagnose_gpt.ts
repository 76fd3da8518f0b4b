// `mixprec diagnose --model gpt`: the same report as the MLP's for a character-level GPT — FP32
// steps without loss scaling, every parameter gradient and every activation gradient histogrammed
// (the attention scores and probabilities included: the forward takes the unfused attention path,
// so they exist as tensors), what FP16 would flush, and the ablation runs (fp32 / fp16 / fp16
// without loss scaling / fp16 without master weights) on the same batches.
import { text } from '../data/text';
import { dtypeCode } from '../dtype';
import { gpt, GPT, GPTConfig } from '../models/gpt';
import { native } from '../native';
import { tensor, Tensor } from '../tensor';
import { Trainer } from '../train/trainer';
import { trainBatch, validationLoss } from '../train/cli_gpt';
import {
  ABLATION_CONFIGS, AblationOptions, AblationRun, checkPositiveInt, diagnoseStart, DiagnoseOptions, DiagnoseResult, diagnoseResult, gradientReport, HistogramMap,
} from './diagnose';
import { Log2Histogram } from './histogram';

/** The MLP diagnose's run options, with a GPT config and a text instead of a data set and widths. */
export type GptDiagnoseOptions = Omit<DiagnoseOptions, 'data' | 'datasetName' | 'hidden'> & {
  config: Omit<GPTConfig, 'vocabSize'>;
  textFile?: string;
};

/** Gradient hooks on every activation the GPT shows its observer, histogrammed by name. */
function observeGradients(model: GPT, hist: Map<string, Log2Histogram>, shapes: Map<string, number[]>): void {
  model.attention = 'math';
  model.observe = (name: string, t: Tensor) => {
    if (!t.requiresGrad) return;
    t.registerHook((g) => {
      const c = g.contiguous();
      (hist.get(name) ?? hist.set(name, new Log2Histogram()).get(name)!).add(native().download(c.handle(), dtypeCode(c.dtype), c.size, c.offset));
      if (c !== g) c.dispose();
      shapes.set(name, [...g.shape]);
    });
  };
}

export async function diagnoseGpt(o: GptDiagnoseOptions): Promise<{ result: DiagnoseResult; histograms: HistogramMap }> {
  const { t0, current, log } = diagnoseStart(o);
  const optimizer = o.optimizer ?? 'adamw', lr = o.lr ?? 1e-3;
  const data = text(o.textFile ? { file: o.textFile } : { corpus: 'sotu' });
  const cfg: GPTConfig = { ...o.config, vocabSize: data.vocabSize };
  data.checkBlockSize(cfg.blockSize);
  const model = gpt(cfg, { seed: o.seed });
  const trainer = new Trainer(model, { precision: 'fp32', lossScale: 'none', optimizer: { type: optimizer, lr }, maxGradNorm: 1, seed: o.seed, device: o.device ?? 'auto' });
  const device = trainer.device, B = o.batchSize, T = cfg.blockSize;
  const specs = model.parameterSpecs();
  const wHist = new Map(specs.map((s) => [s.name, new Log2Histogram()]));
  const aHist = new Map<string, Log2Histogram>(), aShape = new Map<string, number[]>();
  const name = `GPT ${cfg.nLayer} layers x ${cfg.nHead} heads x ${cfg.nEmbd}, block ${T}`;
  log(`mixprec diagnose: ${data.source === 'sotu' ? 'State of the Union' : data.source} (${data.train.length} characters), ${name}, fp32 without loss scaling, ${o.steps} steps of batch ${B} on ${device}`);
  try {
    for (let step = 0; step < o.steps; step++) {
      const b = trainBatch(data, step, B, T, o.seed);
      const x = tensor(b.x, [B, T], { dtype: 'int32', device });
      observeGradients(model, aHist, aShape);
      await trainer.backward(x, b.y);
      model.observe = null;
      for (const p of trainer.store.gradients()) wHist.get(p.name)!.add(p.data);
      await trainer.step(x, b.y); // recomputes the same gradients (unobserved), then updates
      x.dispose();
      if ((step + 1) % 25 === 0 || step + 1 === o.steps) log(`  step ${step + 1}/${o.steps}`);
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    trainer.dispose();
  }
  const report = gradientReport(
    specs.map((s) => ({ name: s.name, shape: [...s.shape], hist: wHist.get(s.name)! })),
    [...aHist].map(([n, hist]) => ({ name: n, shape: aShape.get(n), hist })), current);
  let ablation: DiagnoseResult['ablation'] = null;
  if (o.ablation && o.ablation.steps > 0) ablation = { options: o.ablation, runs: await gptAblations(o, cfg, data, o.ablation, log) };
  const result = diagnoseResult(report, {
    dataset: data.source === 'sotu' ? 'State of the Union' : data.source, model: [cfg.nLayer, cfg.nHead, cfg.nEmbd, T], modelName: name,
    parameters: specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0),
    steps: o.steps, batchSize: B, optimizer, lr, seed: o.seed, device, currentLossScale: current, ablation,
    seconds: Number(process.hrtime.bigint() - t0) / 1e9,
  });
  const histograms = report.histograms;
  return { result, histograms };
}

/** The four precision policies on the same init and batches; the validation loss at the end. */
async function gptAblations(o: GptDiagnoseOptions, cfg: GPTConfig, data: ReturnType<typeof text>, a: AblationOptions, log: (s: string) => void): Promise<AblationRun[]> {
  checkPositiveInt(a.steps, 'ablation steps');
  const B = a.batchSize ?? o.batchSize, T = cfg.blockSize;
  const runs: AblationRun[] = [];
  for (const c of ABLATION_CONFIGS) {
    const t0 = process.hrtime.bigint();
    const trainer = new Trainer(gpt(cfg, { seed: o.seed }), { ...c.opts, optimizer: { type: a.optimizer, lr: a.lr }, maxGradNorm: 1, seed: o.seed, device: o.device ?? 'auto' });
    const losses: number[] = [], scales: number[] = [], skipped: number[] = [];
    try {
      for (let step = 0; step < a.steps; step++) {
        const b = trainBatch(data, step, B, T, o.seed);
        const x = tensor(b.x, [B, T], { dtype: 'int32', device: trainer.device });
        const r = await trainer.step(x, b.y);
        x.dispose();
        losses.push(r.loss);
        scales.push(r.scale);
        if (r.skipped) skipped.push(step + 1);
        await new Promise((res) => setImmediate(res));
      }
      const k = Math.max(1, Math.round(a.steps / 10));
      const mean = (xs: number[]) => { const f = xs.filter(Number.isFinite); return f.length ? f.reduce((s, v) => s + v, 0) / f.length : NaN; };
      const val = await validationLoss(trainer, data, 10, B, o.seed);
      const run: AblationRun = {
        name: c.name, label: c.label, precision: c.opts.precision as 'fp32' | 'fp16', lossScale: c.opts.lossScale as AblationRun['lossScale'],
        masterWeights: c.opts.masterWeights ?? true, losses, scales, skipped,
        firstLoss: mean(losses.slice(0, k)), lastLoss: mean(losses.slice(-k)), valLoss: val, seconds: Number(process.hrtime.bigint() - t0) / 1e9,
      };
      runs.push(run);
      log(`  ${c.label}: loss ${run.firstLoss.toFixed(4)} -> ${run.lastLoss.toFixed(4)}, val ${val.toFixed(4)}, ${skipped.length} skipped, ${run.seconds.toFixed(1)} s`);
    } finally {
      trainer.dispose();
    }
  }
  return runs;
}
