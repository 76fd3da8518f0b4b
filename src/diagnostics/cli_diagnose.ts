// `mixprec diagnose`: the command line around diagnose(): a plain-text table (or one JSON line
// with --json), the HTML report (--out) and the overall histogram as an SVG (--svg).
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadMnist } from '../data';
import { diagnoseGpt } from './diagnose_gpt';
import { writeOutput } from '../util/files';
import { AblationOptions, diagnose, DiagnoseResult, GroupReport, HistogramMap, OptimizerName } from './diagnose';
import { Fp16Fractions, scaleExponent } from './histogram';
import { formatPercent as pct, histogramChart } from './plots';
import { modelName, reportHtml, scaleLabel } from './report';

export interface DiagnoseFlags {
  dataset: string; steps: number; batchSize: number; hidden: number[]; seed: number; device: 'auto' | 'cpu' | 'cuda';
  optimizer: OptimizerName; lr: number; currentScale: number; out?: string; svg?: string; json?: boolean;
  ablationSteps: number; ablationLr: number; ablationOptimizer: OptimizerName; ablationSubset: number;
  model: 'mlp' | 'gpt'; layers: number; heads: number; embd: number; blockSize: number; text?: string;
}

function intArg(what: string, min: number) {
  return (v: string) => {
    const x = Number(v);
    if (!Number.isSafeInteger(x) || x < min) throw new InvalidArgumentError(`${what} must be an integer >= ${min}`);
    return x;
  };
}
function positive(what: string) {
  return (v: string) => {
    const x = Number(v);
    if (!(x > 0) || !Number.isFinite(x)) throw new InvalidArgumentError(`${what} must be a number > 0`);
    return x;
  };
}
function powerOfTwo(v: string): number {
  const x = Number(v);
  try {
    scaleExponent(x);
  } catch {
    throw new InvalidArgumentError('--current-scale must be a power of two, e.g. 65536');
  }
  return x;
}

export function addDiagnoseCommand(program: Command): void {
  program
    .command('diagnose')
    .description('train a few steps in FP32 and histogram every weight and activation gradient: what FP16 would round to zero, make subnormal or overflow, unscaled / with the current loss scale / with a suggested one; plus ablation runs (fp32, fp16, fp16 without loss scaling, fp16 without master weights)')
    .addOption(new Option('--model <m>', 'mlp (MNIST) or gpt (a character-level GPT on the State of the Union corpus, or --text)').choices(['mlp', 'gpt']).default('mlp'))
    .addOption(new Option('--dataset <name>', 'data set').choices(['mnist']).default('mnist'))
    .option('--layers <n>', 'gpt: transformer blocks', intArg('--layers', 1), 4)
    .option('--heads <n>', 'gpt: attention heads', intArg('--heads', 1), 4)
    .option('--embd <n>', 'gpt: model width', intArg('--embd', 1), 128)
    .option('--block-size <n>', 'gpt: context length', intArg('--block-size', 1), 64)
    .option('--text <file>', 'gpt: a UTF-8 text file instead of the State of the Union corpus')
    .option('--steps <n>', 'FP32 training steps whose gradients are histogrammed', intArg('--steps', 1), 100)
    .option('--batch-size <n>', 'batch size', intArg('--batch-size', 1), 128)
    .option('--hidden <list>', 'hidden layer widths, e.g. 512,512', (v) => v.split(',').map((s) => intArg('--hidden', 1)(s.trim())), [512, 512])
    .option('--seed <n>', 'seed for init and shuffling', intArg('--seed', 0), 0)
    .addOption(new Option('--device <d>', 'backend').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .addOption(new Option('--optimizer <name>', 'optimizer of the FP32 run').choices(['sgd', 'adam', 'adamw']).default('adam'))
    .option('--lr <x>', 'learning rate of the FP32 run', positive('--lr'), 1e-3)
    .option('--current-scale <s>', 'the loss scale to compare with (a power of two; GradScaler starts at 2^16)', powerOfTwo, 2 ** 16)
    .option('--ablation-steps <n>', 'steps of each ablation run (0: no ablations)', intArg('--ablation-steps', 0), 300)
    .option('--ablation-lr <x>', 'learning rate of the ablation runs (small, so that updates fall below FP16 resolution)', positive('--ablation-lr'), 3e-6)
    .addOption(new Option('--ablation-optimizer <name>', 'optimizer of the ablation runs').choices(['sgd', 'adam', 'adamw']).default('adam'))
    .option('--ablation-subset <n>', 'training rows the ablation runs draw from', intArg('--ablation-subset', 1), 8192)
    .option('--out <file>', 'write the HTML report (self-contained: inline SVG, no scripts) here')
    .option('--svg <file>', 'write the overall gradient histogram as a standalone SVG here')
    .option('--json', 'print one JSON object (the last stdout line); progress goes to stderr')
    .action(async (flags: DiagnoseFlags, cmd: Command) => {
      if (flags.model === 'gpt') {
        // The GPT's defaults where the MLP's differ (flags the user did not give).
        const given = (k: string) => cmd.getOptionValueSource(k) === 'cli';
        if (!given('batchSize')) flags.batchSize = 12;
        if (!given('optimizer')) flags.optimizer = 'adamw';
        if (!given('ablationLr')) flags.ablationLr = 1e-3;
        if (!given('ablationOptimizer')) flags.ablationOptimizer = 'adamw';
        if (!given('ablationSteps')) flags.ablationSteps = 200;
      }
      process.exitCode = await runDiagnose(flags);
    });
}

export async function runDiagnose(f: DiagnoseFlags): Promise<number> {
  const log = (s: string) => (f.json ? process.stderr.write(s + '\n') : console.log(s));
  const ablation: AblationOptions | null = f.ablationSteps > 0
    ? { steps: f.ablationSteps, lr: f.ablationLr, optimizer: f.ablationOptimizer, subset: f.ablationSubset, batchSize: f.batchSize }
    : null;
  if (ablation) log(`then ${ablation.steps} steps each of fp32 / fp16 / fp16 --loss-scale 1 / fp16 --no-master-weights (${ablation.optimizer}, lr ${ablation.lr}, first ${ablation.subset} rows)`);
  const { result, histograms } = f.model === 'gpt'
    ? await diagnoseGpt({
      config: { blockSize: f.blockSize, nLayer: f.layers, nHead: f.heads, nEmbd: f.embd }, textFile: f.text, steps: f.steps, batchSize: f.batchSize,
      seed: f.seed, device: f.device, optimizer: f.optimizer, lr: f.lr, currentScale: f.currentScale, ablation, log,
    })
    : await diagnose({
    data: loadMnist(), datasetName: 'MNIST', steps: f.steps, batchSize: f.batchSize, hidden: f.hidden, seed: f.seed, device: f.device,
    optimizer: f.optimizer, lr: f.lr, currentScale: f.currentScale, ablation, log,
  });
  if (f.out) {
    writeOutput(f.out, reportHtml(result, histograms));
    log(`wrote ${f.out}`);
  }
  if (f.svg) {
    writeOutput(f.svg, overallSvg(result, histograms));
    log(`wrote ${f.svg}`);
  }
  if (f.json) console.log(JSON.stringify({ ...result, ...(f.out ? { report: f.out } : {}), ...(f.svg ? { svg: f.svg } : {}) }));
  else console.log(textReport(result, Boolean(f.out)));
  return 0;
}

/** The picture for the README: all gradients, with the suggested scale's histogram dashed. */
export function overallSvg(r: DiagnoseResult, hs: HistogramMap): string {
  return histogramChart(hs.get('all gradients')!, {
    title: `${r.dataset} ${modelName(r)}: all gradients of ${r.steps} FP32 steps, log2 magnitude`,
    overlays: [{ scale: r.suggestedLossScale, label: 'suggested loss scale' }, { scale: r.currentLossScale, label: 'current loss scale' }], width: 900,
    desc: `Histogram of floor(log2|g|) over all weight and activation gradients, FP16 ranges shaded; unscaled underflow ${pct(r.underflowFraction)}, suggested loss scale ${scaleLabel(r.suggestedLossScale)}`,
  });
}

function fr(f: Fp16Fractions | null): string[] {
  return f ? [pct(f.underflow), pct(f.subnormal), pct(f.overflow)] : ['-', '-', '-'];
}

/** The plain-text table. */
export function textReport(r: DiagnoseResult, wroteReport: boolean): string {
  const name = (g: GroupReport) => (g.kind === 'weight' ? `${g.name} [${g.shape?.join('x')}]` : g.kind === 'activation' ? `d ${g.name} [${g.shape?.join('x')}]` : g.name);
  const rows = r.groups.map((g) => [name(g), String(g.values), pct(g.zeroFraction), ...fr(g.unscaled), ...fr(g.current), ...fr(g.suggested.at), scaleLabel(g.suggested.scale)]);
  const head = ['gradient', 'values', 'zero', 'lost', 'subn', 'inf', 'lost', 'subn', 'inf', 'lost', 'subn', 'inf', 'scale'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const groupHead = (label: string, from: number, to: number) => label.padStart(Math.floor((w.slice(from, to + 1).reduce((a, b) => a + b + 2, -2) + label.length) / 2)).padEnd(w.slice(from, to + 1).reduce((a, b) => a + b + 2, -2));
  const out: string[] = [];
  out.push('');
  out.push(`Gradients as FP16 would store them (% of the nonzero values: lost = rounds to 0, subn = subnormal, inf = overflows)`);
  out.push([' '.repeat(w[0] + 2 + w[1] + 2 + w[2]), groupHead('unscaled', 3, 5), groupHead(`x ${scaleLabel(r.currentLossScale)} (current)`, 6, 8), groupHead('x suggested', 9, 11), 'suggested'].join('  '));
  out.push(line(head));
  for (const row of rows) out.push(line(row));
  out.push('');
  out.push(`Overall: ${pct(r.underflowFraction)} of the nonzero gradients round to zero in FP16 unscaled, ${pct(r.atCurrentScale.underflow)} at the current scale ${scaleLabel(r.currentLossScale)} (${pct(r.atCurrentScale.overflow)} overflow).`);
  if (r.suggestedLossScale !== null)
    out.push(`Suggested loss scale: ${scaleLabel(r.suggestedLossScale)} (the smallest power of two losing < 0.1%: ${pct(r.atSuggestedScale!.underflow)}); anything up to ${scaleLabel(r.maxSafeLossScale)} overflows nothing${r.suggestedLossScale === 1 ? '; 2^0 = 1: these gradients need no loss scaling' : ''}.`);
  else out.push(`No loss scale works: ${r.suggestedLossScaleReason}`);
  if (r.ablation) {
    out.push('');
    const k = Math.max(1, Math.round(r.ablation.options.steps / 10));
    out.push(`Ablations: ${r.ablation.options.steps} steps, ${r.ablation.options.optimizer} lr ${r.ablation.options.lr}${r.modelName?.startsWith('GPT') ? '' : `, first ${r.ablation.options.subset} rows`}, same init and batches`);
    const byVal = r.ablation.runs.some((x) => x.valLoss !== undefined);
    const ar = r.ablation.runs.map((x) => [x.label, x.firstLoss.toFixed(4), x.lastLoss.toFixed(4), (x.firstLoss - x.lastLoss).toFixed(4), byVal ? (x.valLoss?.toFixed(4) ?? '-') : x.testAccuracy === undefined ? '-' : pct(x.testAccuracy), String(x.skipped.length), scaleLabel(x.scales[x.scales.length - 1])]);
    const ah = ['run', `loss first ${k}`, `loss last ${k}`, 'decrease', byVal ? 'val loss' : 'test acc', 'skipped', 'scale'];
    const aw = ah.map((h, i) => Math.max(h.length, ...ar.map((row) => row[i].length)));
    const al = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(aw[i]) : c.padStart(aw[i]))).join('  ');
    out.push(al(ah));
    for (const row of ar) out.push(al(row));
  }
  if (!wroteReport) out.push('', 'Histograms and loss curves: add --out report.html');
  return out.join('\n');
}
