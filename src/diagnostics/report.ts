// The self-contained HTML report of `mixprec diagnose`: inline SVG only (no script, no external
// CSS, fonts or images), so it opens anywhere offline.
import type { AblationRun, DiagnoseResult, GroupReport, HistogramMap } from './diagnose';
import type { Fp16Fractions } from './histogram';
import { formatPercent as pct, histogramChart, smooth } from './plots';
import { esc, lineChart, PALETTE } from './svg';

export const RUN_COLORS: Record<AblationRun['name'], string> = {
  fp32: PALETTE[0], fp16: PALETTE[1], 'fp16-no-loss-scaling': PALETTE[2], 'fp16-no-master-weights': PALETTE[4],
};

export function scaleLabel(s: number | null | undefined): string {
  if (s === null || s === undefined) return 'none';
  const k = Math.log2(s);
  return Number.isInteger(k) ? `2^${k}` : String(s);
}

function fracCells(f: Fp16Fractions | null): string {
  if (!f) return '<td>-</td><td>-</td><td>-</td>';
  const cell = (x: number, bad: boolean) => `<td class="num${bad && x > 0 ? ' bad' : ''}">${esc(pct(x))}</td>`;
  return cell(f.underflow, f.underflow >= 0.001) + cell(f.subnormal, false) + cell(f.overflow, true);
}

function groupTitle(g: GroupReport): string {
  return g.kind === 'weight' ? `weight gradient ${g.name}${g.shape ? ` [${g.shape.join('×')}]` : ''}`
    : g.kind === 'activation' ? `activation gradient at ${g.name}${g.shape?.length ? ` [${g.shape.join('×')}]` : ''}` : g.name;
}

/** Identical curves would hide each other: wide and pale under narrow and dashed. */
const LINE_STYLE: Record<AblationRun['name'], { width: number; opacity?: number; dashed?: boolean }> = {
  fp32: { width: 7, opacity: 0.45 }, fp16: { width: 3 }, 'fp16-no-loss-scaling': { width: 2, dashed: true }, 'fp16-no-master-weights': { width: 2 },
};

/** Loss curves of the ablation runs side by side, and the fp16 run's loss scale with skipped steps. */
export function ablationCharts(runs: readonly AblationRun[]): { loss: string; scale: string } {
  const steps = runs[0]?.losses.length ?? 0;
  const win = Math.max(1, Math.min(25, Math.round(steps / 15)));
  const series = runs.flatMap((r) => {
    const pts = r.losses.map((l, i) => [i + 1, l] as const);
    return [
      { name: r.label, points: smooth(pts, win), color: RUN_COLORS[r.name], ...LINE_STYLE[r.name] },
      { name: `${r.label} (per step)`, points: pts, color: RUN_COLORS[r.name], faint: true },
    ];
  });
  const loss = lineChart({
    title: `Training loss, same init and batches (mean of the last ${win} steps; per-step loss faint)`, series, xLabel: 'step', yLabel: 'cross-entropy loss',
    width: 860, height: 400, desc: 'Loss curves of the four ablation runs',
  });
  const scaled = runs.filter((r) => r.precision === 'fp16');
  const scale = lineChart({
    title: 'Loss scale per step (fp16 runs), skipped steps marked', xLabel: 'step', yLabel: 'loss scale', yLog2: true, width: 860, height: 300,
    series: scaled.map((r) => ({ name: r.label, points: r.scales.map((s, i) => [i + 1, s] as const), color: RUN_COLORS[r.name], dashed: r.name === 'fp16-no-master-weights' })),
    markers: scaled.flatMap((r) => r.skipped.map((st) => ({ x: st, y: r.scales[st - 1], label: `${r.label}: step ${st} skipped` }))),
    markerLegend: `skipped step (inf/NaN gradients, update not applied): ${scaled.map((r) => `${r.name} ${r.skipped.length}`).join(', ')}`,
  });
  return { loss, scale };
}

const CSS = `
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px; color: #111; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 13px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 170px; }
.card .v { font-size: 22px; font-weight: bold; } .card .k { font-size: 12px; color: #555; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.bad { color: #b00020; font-weight: bold; }
tr.total td { font-weight: bold; background: #fafafa; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
svg { max-width: 100%; height: auto; display: block; }
.note { font-size: 13px; color: #333; max-width: 900px; }
`;

/** The report page. */
export function reportHtml(r: DiagnoseResult, hs: HistogramMap): string {
  const overall = r.groups.find((g) => g.name === 'all gradients')!;
  const sugg = r.suggestedLossScale;
  const cur = scaleLabel(r.currentLossScale);
  const card = (k: string, v: string) => `<div class="card"><div class="v">${esc(v)}</div><div class="k">${esc(k)}</div></div>`;
  let body = `<h1>mixprec diagnose: gradients in FP16</h1>
<p class="meta">${esc(r.dataset)}, ${esc(modelName(r))} (${r.parameters.toLocaleString('en-US')} parameters), trained ${r.steps} steps in FP32 without loss scaling (${esc(r.optimizer)}, lr ${r.lr}, batch ${r.batchSize}, seed ${r.seed}, ${esc(r.device)}). Every weight gradient and every activation gradient of every step is counted.</p>
<div class="cards">${card('of the nonzero gradients round to 0 in FP16, unscaled', pct(r.underflowFraction))}${card(`… with the current loss scale ${cur}`, pct(r.atCurrentScale.underflow))}${card('suggested loss scale (smallest power of two losing < 0.1%, no overflow)', scaleLabel(sugg))}${card('largest scale without overflow', scaleLabel(r.maxSafeLossScale))}${card('of the gradients are exactly 0 (e.g. behind a ReLU)', pct(r.zeroFraction))}</div>
${r.suggestedLossScaleReason ? `<p class="note"><b>No suggestion:</b> ${esc(r.suggestedLossScaleReason)}</p>` : ''}
<h2>All gradients</h2>
<p class="note">Bars: the share of all gradient values whose magnitude falls in [2<sup>e</sup>, 2<sup>e+1</sup>), e = floor(log2|g|); the grey bar on the left counts exact zeros. Shaded: what FP16 does to a value there — red: rounds to 0 (|g| ≤ 2<sup>-25</sup>, round-to-nearest-even), orange: rounds up to the smallest subnormal 2<sup>-24</sup>, yellow: subnormal (2<sup>-24</sup> to 2<sup>-14</sup>, fewer significant bits), green: normal, red on the right: overflows to inf (≥ 65520; the largest FP16 value is 65504). The outlines are the same histogram multiplied by a loss scale (the suggested one, dashed, unless it is 1; the current one, dotted): multiplying by 2<sup>k</sup> shifts it k buckets to the right.</p>
${histogramChart(hs.get('all gradients')!, { title: 'All weight and activation gradients (FP32 training, unscaled)', overlays: [{ scale: sugg, label: 'suggested loss scale' }, { scale: r.currentLossScale, label: 'current loss scale' }], width: 1000 })}
<h2>Per parameter and per layer</h2>
<table><tr><th rowspan="2">gradient</th><th rowspan="2">values</th><th rowspan="2">exactly 0</th><th colspan="3">unscaled: % of nonzero</th><th colspan="3">× current ${esc(cur)}</th><th colspan="3">× suggested</th><th rowspan="2">suggested scale</th><th rowspan="2">max safe scale</th></tr>
<tr><th>→ 0</th><th>subnormal</th><th>→ inf</th><th>→ 0</th><th>subnormal</th><th>→ inf</th><th>→ 0</th><th>subnormal</th><th>→ inf</th></tr>
${r.groups.map((g) => `<tr${g.kind === 'all' ? ' class="total"' : ''}><td>${esc(groupTitle(g))}</td><td class="num">${g.values.toLocaleString('en-US')}</td><td class="num">${esc(pct(g.zeroFraction))}</td>${fracCells(g.unscaled)}${fracCells(g.current)}${fracCells(g.suggested.at)}<td>${esc(scaleLabel(g.suggested.scale))}</td><td>${esc(scaleLabel(g.suggested.maxSafeScale))}</td></tr>`).join('\n')}
</table>
<p class="note">"→ 0": rounds to zero in FP16 (the update loses it); "subnormal": kept with reduced precision; "→ inf": overflows (the dynamic scaler would skip the step and halve the scale). Fractions are of the nonzero finite values. Red: at least 0.1% lost, or any overflow.</p>
<div class="grid">
${r.groups.filter((g) => g.kind !== 'all' || g.name !== 'all gradients').map((g) => histogramChart(hs.get(g.name)!, { title: groupTitle(g), overlays: [{ scale: g.suggested.scale, label: 'its suggested scale' }], width: 540 })).join('\n')}
</div>`;
  if (r.ablation) {
    const a = r.ablation;
    const c = ablationCharts(a.runs);
    body += `
<h2>Ablations: what each part of mixed precision is for</h2>
<p class="note">${a.options.steps} steps of ${esc(a.options.optimizer)} at lr ${a.options.lr} on the first ${a.options.subset.toLocaleString('en-US')} training rows (batch ${a.options.batchSize ?? r.batchSize}), from the same initial weights and the same batches. <b>Without loss scaling</b> (a static scale of 1), gradients below 2<sup>-25</sup> become zero — ${esc(pct(r.underflowFraction))} of the nonzero gradients in this model (measured above), so its curve tells how much that costs here. <b>Without FP32 master weights</b> the update is added to the FP16 weight directly and rounded: an update smaller than half a unit in the last place (2<sup>-12</sup> to 2<sup>-11</sup> of the weight) is lost, so at a small learning rate training stalls. Curves that coincide are drawn on top of each other: fp32 wide and pale, fp16 above it, fp16 without loss scaling dashed on top.</p>
${c.loss}
<table><tr><th>run</th><th>loss, first ${Math.max(1, Math.round(a.options.steps / 10))} steps</th><th>loss, last ${Math.max(1, Math.round(a.options.steps / 10))} steps</th><th>decrease</th><th>test accuracy</th><th>skipped steps</th><th>final loss scale</th><th>seconds</th></tr>
${a.runs.map((x) => `<tr><td>${esc(x.label)}</td><td class="num">${x.firstLoss.toFixed(4)}</td><td class="num">${x.lastLoss.toFixed(4)}</td><td class="num">${(x.firstLoss - x.lastLoss).toFixed(4)}</td><td class="num">${x.testAccuracy === undefined ? '-' : esc(pct(x.testAccuracy))}</td><td class="num">${x.skipped.length}</td><td>${esc(scaleLabel(x.scales[x.scales.length - 1]))}</td><td class="num">${x.seconds.toFixed(1)}</td></tr>`).join('\n')}
</table>
${c.scale}`;
  }
  body += `\n<p class="meta">Generated by mixprec diagnose in ${r.seconds.toFixed(1)} s. JSON: <code>mixprec diagnose --json</code>.</p>`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mixprec diagnose: ${esc(r.dataset)} ${esc(modelName(r))}</title>
<style>${CSS}</style></head>
<body>
${body}
</body></html>
`;
}

/** The model's name in titles: the GPT's own, or "MLP" and its widths. */
export function modelName(r: DiagnoseResult): string {
  return r.modelName ?? `MLP ${r.model.join('-')}`;
}
