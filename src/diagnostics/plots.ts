// The pictures: a gradient-magnitude histogram with FP16's ranges marked, training curves (loss
// and loss scale with skipped steps), and the bench bar chart.
import { Log2Histogram } from './histogram';
import { BarGroup, barChart, esc, lineChart, n, svgDoc, text } from './svg';
import { show } from '../util/show';

const pct = (x: number) => (x === 0 ? '0%' : x < 0.001 ? `${(x * 100).toPrecision(2)}%` : `${(x * 100).toFixed(x < 0.1 ? 2 : 1)}%`);
export { pct as formatPercent };

export interface HistogramOverlay {
  /** A power of two: the histogram after multiplying by it is drawn as an outline (skipped for 1 / null). */
  scale: number | null;
  label: string;
  color?: string;
  dash?: string;
}

export interface HistogramChartOptions {
  title: string;
  overlays?: readonly HistogramOverlay[];
  width?: number;
  height?: number;
  /** The x axis covers at least these exponents. */
  minExponent?: number;
  maxExponent?: number;
  desc?: string;
}

/**
 * Bars: the share of all values (zeros included) per exponent bucket floor(log2|x|), with a
 * separate bar for exact zeros (and inf / NaN when present). Shaded: what FP16 does there —
 * rounds to zero (|x| <= 2^-25), to the smallest subnormal (2^-25 < |x| < 2^-24), subnormal
 * (2^-24 .. 2^-14), normal (2^-14 .. 65504), overflow (>= 65520). The legend gives the
 * fractions of the nonzero values per region, unscaled and for each overlay scale.
 */
export function histogramChart(h: Log2Histogram, o: HistogramChartOptions): string {
  const W = o.width ?? 760;
  const seen = new Set<number>([0]);
  const overlays = (o.overlays ?? []).flatMap((ov, i) => {
    if (!ov.scale) return [];
    const k = Math.round(Math.log2(ov.scale));
    if (seen.has(k)) return [];
    seen.add(k);
    return [{ ...ov, k, color: ov.color ?? ['#ff7f0e', '#9467bd'][i % 2], dash: ov.dash ?? ['6 3', '2 3'][i % 2] }];
  });
  const r = h.range() ?? { min: -30, max: 0 };
  const lo = Math.min(r.min, ...overlays.map((ov) => r.min + ov.k), o.minExponent ?? -30) - 1;
  const hi = Math.max(r.max, ...overlays.map((ov) => r.max + ov.k), o.maxExponent ?? 18) + 2;
  const extra = [{ label: '= 0', count: h.zero }, ...(h.inf ? [{ label: 'inf', count: h.inf }] : []), ...(h.nan ? [{ label: 'NaN', count: h.nan }] : [])];
  const total = Math.max(1, h.total);
  const narrow = W < 800;
  const u = h.fp16(1);
  const legend: { text: string; color?: string; dash?: string }[] = [];
  const region = (f: { underflow: number; subnormal: number; overflow: number }) => `${pct(f.underflow)} → 0, ${pct(f.subnormal)} subnormal, ${pct(f.overflow)} → inf`;
  if (narrow) {
    legend.push({ text: `${h.total.toLocaleString('en-US')} values, ${pct(h.zero / total)} exactly zero` });
    legend.push({ text: `nonzero, unscaled: ${region(u)}` });
  } else legend.push({ text: `${h.total.toLocaleString('en-US')} values, ${pct(h.zero / total)} exactly zero; of the nonzero, in FP16 unscaled: ${region(u)}` });
  for (const ov of overlays) legend.push({ text: `× 2^${ov.k} (${ov.label}): ${region(h.fp16(2 ** ov.k))}`, color: ov.color, dash: ov.dash });
  const plotH = o.height ?? (narrow ? 200 : 240);
  const f = { x: 110, y: 58, w: W - 130, h: plotH };
  const H = f.y + f.h + 40 + legend.length * 16 + 6;
  const xs = (e: number) => f.x + ((e - lo) / (hi - lo)) * f.w;
  const shares: number[] = [];
  for (let e = lo; e < hi; e++) shares.push(h.count(e) / total);
  const ymax = Math.max(0.01, ...shares, ...extra.map((x) => x.count / total));
  const top = ymax <= 0.05 ? Math.ceil(ymax * 100) / 100 : Math.ceil(ymax * 20) / 20;
  const ys = (v: number) => f.y + f.h - (Math.min(v, top) / top) * f.h;
  let s = text(W / 2, 18, o.title, { 'text-anchor': 'middle', 'font-size': 14, 'font-weight': 'bold', fill: '#111' });
  // FP16 regions
  const regions = [
    { from: lo, to: -25, fill: '#f4b6b6', label: '→ 0' },
    { from: -25, to: -24, fill: '#f9d3b4', label: '' },
    { from: -24, to: -14, fill: '#fbe9a6', label: 'subnormal' },
    { from: -14, to: 16, fill: '#d4edd0', label: 'normal FP16' },
    { from: 16, to: hi, fill: '#f4b6b6', label: '→ inf' },
  ];
  for (const g of regions) {
    const a = Math.max(lo, g.from), b = Math.min(hi, g.to);
    if (b <= a) continue;
    s += `<rect x="${n(xs(a))}" y="${n(f.y)}" width="${n(xs(b) - xs(a))}" height="${n(f.h)}" fill="${g.fill}" fill-opacity="0.6"/>`;
    if (g.label && xs(b) - xs(a) > g.label.length * 6 + 4) s += text((xs(a) + xs(b)) / 2, f.y + 14, g.label, { 'text-anchor': 'middle', 'font-size': 11, fill: '#333' });
  }
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    s += `<line x1="${n(f.x)}" x2="${n(f.x + f.w)}" y1="${n(ys(v))}" y2="${n(ys(v))}" stroke="#000" stroke-opacity="0.08"/>`;
    s += text(f.x - 6, ys(v) + 4, pct(v), { 'text-anchor': 'end', 'font-size': 11, fill: '#333' });
  }
  for (let e = lo; e < hi; e++) {
    const v = shares[e - lo];
    if (v <= 0) continue;
    const x0 = xs(e), x1 = xs(e + 1);
    s += `<rect x="${n(x0 + 0.5)}" y="${n(ys(v))}" width="${n(Math.max(0.5, x1 - x0 - 1))}" height="${n(f.y + f.h - ys(v))}" fill="#1f4e79"><title>${esc(`[2^${e}, 2^${e + 1}): ${h.count(e)} values (${pct(v)})`)}</title></rect>`;
  }
  for (const ov of overlays) {
    let d = '';
    for (let e = lo; e < hi; e++) {
      const v = h.count(e - ov.k) / total;
      d += `${e === lo ? 'M' : 'L'}${n(xs(e))} ${n(ys(v))}L${n(xs(e + 1))} ${n(ys(v))}`;
    }
    s += `<path d="${d}" fill="none" stroke="${esc(ov.color)}" stroke-width="2" stroke-dasharray="${esc(ov.dash)}"/>`;
  }
  const marks: [number, string][] = [[-24, '2^-24'], [-14, '2^-14'], [16, '65504']];
  for (const [e, label] of marks) {
    if (e <= lo || e >= hi) continue;
    s += `<line x1="${n(xs(e))}" x2="${n(xs(e))}" y1="${n(f.y)}" y2="${n(f.y + f.h)}" stroke="#555" stroke-dasharray="3 3"/>`;
    s += text(xs(e), f.y - 4, label, { 'text-anchor': 'middle', 'font-size': 10, fill: '#555' });
  }
  // exact zeros (and inf / NaN) apart, left of the log axis
  extra.forEach((x, i) => {
    const bx = 14 + i * 30, v = x.count / total;
    s += `<rect x="${n(bx)}" y="${n(ys(v))}" width="22" height="${n(f.y + f.h - ys(v))}" fill="#7f7f7f"><title>${esc(`${x.label}: ${x.count} values (${pct(v)})`)}</title></rect>`;
    s += text(bx + 11, f.y + f.h + 16, x.label, { 'text-anchor': 'middle', 'font-size': 11, fill: '#333' });
  });
  s += `<rect x="${n(f.x)}" y="${n(f.y)}" width="${n(f.w)}" height="${n(f.h)}" fill="none" stroke="#333"/>`;
  const step = hi - lo > 60 ? 8 : hi - lo > 30 ? 4 : 2;
  for (let e = Math.ceil(lo / step) * step; e <= hi; e += step) {
    s += `<line x1="${n(xs(e))}" x2="${n(xs(e))}" y1="${n(f.y + f.h)}" y2="${n(f.y + f.h + 4)}" stroke="#333"/>`;
    s += text(xs(e), f.y + f.h + 16, String(e), { 'text-anchor': 'middle', 'font-size': 11, fill: '#333' });
  }
  s += text(f.x + f.w / 2, f.y + f.h + 32, 'log2 |value| (bucket: floor(log2|x|))', { 'text-anchor': 'middle', fill: '#111' });
  s += text(0, 0, 'share of values', { 'text-anchor': 'middle', fill: '#111', transform: `translate(${n(f.x - 52)} ${n(f.y + f.h / 2)}) rotate(-90)` });
  legend.forEach((l, i) => {
    const y = f.y + f.h + 52 + i * 16;
    if (l.color) s += `<line x1="${n(f.x)}" x2="${n(f.x + 22)}" y1="${n(y - 4)}" y2="${n(y - 4)}" stroke="${esc(l.color)}" stroke-width="2" stroke-dasharray="${esc(l.dash ?? '')}"/>`;
    s += text(f.x + (l.color ? 28 : 0), y, l.text, { 'font-size': 11, fill: '#111' });
  });
  return svgDoc(W, H, o.title, s, o.desc);
}

export interface StepRecord { step: number; loss: number; scale: number; skipped: boolean }

/** Mean of the finite values in a trailing window (a readable curve under the noisy per-step loss). */
export function smooth(points: readonly (readonly [number, number])[], window: number): [number, number][] {
  const out: [number, number][] = [];
  const q: number[] = [];
  let sum = 0;
  for (const [x, y] of points) {
    if (!Number.isFinite(y)) continue;
    q.push(y);
    sum += y;
    if (q.length > window) sum -= q.shift()!;
    out.push([x, sum / q.length]);
  }
  return out;
}

/** Loss (per step, faint, and smoothed) above the loss scale (log2 axis) with skipped steps marked: one SVG. */
export function trainingCurves(records: readonly StepRecord[], title: string): string {
  const W = 720;
  const lossPts = records.filter((r) => !r.skipped).map((r) => [r.step, r.loss] as const);
  const win = Math.max(1, Math.min(50, Math.round(records.length / 30)));
  const loss = lineChart({
    title: `${title}: training loss`, xLabel: 'step', yLabel: 'loss', width: W, height: 300,
    series: [{ name: 'loss per step', points: lossPts, faint: true, color: '#1f77b4' }, { name: `loss, mean of the last ${win} steps`, points: smooth(lossPts, win), color: '#1f77b4' }],
  });
  const skipped = records.filter((r) => r.skipped);
  const scale = lineChart({
    title: `${title}: loss scale`, xLabel: 'step', yLabel: 'loss scale', width: W, height: 260, yLog2: true,
    series: [{ name: 'loss scale (after the step)', points: records.map((r) => [r.step, r.scale] as const), color: '#9467bd' }],
    markers: skipped.map((r) => ({ x: r.step, y: r.scale, label: `step ${r.step} skipped (inf/NaN gradient)` })),
    markerLegend: `skipped step (inf/NaN gradients): ${skipped.length}`,
  });
  return stack([loss, scale], title);
}

/** Stacks standalone SVGs vertically into one. */
export function stack(svgs: readonly string[], title: string): string {
  let y = 0, W = 0, body = '';
  for (const s of svgs) {
    const m = /^<svg [^>]*width="([\d.]+)" height="([\d.]+)"/.exec(s);
    const w = Number(m?.[1] ?? 0), h = Number(m?.[2] ?? 0);
    body += `<g transform="translate(0 ${n(y)})">${s.replace(/^<svg /, `<svg x="0" y="0" `)}</g>`;
    y += h;
    W = Math.max(W, w);
  }
  return svgDoc(W, y, title, body);
}

// --- bench ---

interface GemmRowLike { device?: unknown; size?: unknown; dtype?: unknown; gflops?: unknown }
interface TrainRowLike { device?: unknown; precision?: unknown; samplesPerSecond?: unknown }
const DTYPE_NAME: Record<string, string> = { float32: 'fp32', float16: 'fp16', bfloat16: 'bf16' };
const PREC_COLORS: Record<string, string> = { fp32: '#1f77b4', fp16: '#ff7f0e', bf16: '#2ca02c' };

/**
 * Bars of the fp32 / fp16 (and bf16) figures in a `mixprec bench` result: GEMM GFLOP/s per device
 * and size, training samples/s per device. Null when the result has none.
 */
export function benchChart(result: { gemm?: { rows?: GemmRowLike[] }; train?: { rows?: TrainRowLike[] }; machine?: { cpu?: unknown; date?: unknown } }): string | null {
  const parts: string[] = [];
  const gemmGroups = new Map<string, BarGroup>();
  for (const r of result.gemm?.rows ?? []) {
    const name = DTYPE_NAME[String(r.dtype)];
    if (!name || typeof r.gflops !== 'number') continue;
    const label = `${show(r.device)} n=${show(r.size)}`;
    if (!gemmGroups.has(label)) gemmGroups.set(label, { label, bars: [] });
    gemmGroups.get(label)!.bars.push({ name, value: r.gflops });
  }
  if (gemmGroups.size) parts.push(barChart({ title: 'GEMM n×n×n: GFLOP/s by precision', groups: [...gemmGroups.values()], yLabel: 'GFLOP/s', colors: PREC_COLORS }));
  const trainGroups = new Map<string, BarGroup>();
  for (const r of result.train?.rows ?? []) {
    const name = String(r.precision);
    if (!(name in PREC_COLORS) || typeof r.samplesPerSecond !== 'number') continue;
    const label = String(r.device);
    if (!trainGroups.has(label)) trainGroups.set(label, { label, bars: [] });
    trainGroups.get(label)!.bars.push({ name, value: r.samplesPerSecond });
  }
  if (trainGroups.size) parts.push(barChart({ title: 'Training step: samples/s by precision', groups: [...trainGroups.values()], yLabel: 'samples/s', colors: PREC_COLORS, width: 480 }));
  if (!parts.length) return null;
  const note = `mixprec bench${result.machine?.cpu ? ` on ${show(result.machine.cpu)}` : ''}${result.machine?.date ? `, ${show(result.machine.date)}` : ''}`;
  const footer = svgDoc(720, 24, note, text(10, 16, note, { 'font-size': 11, fill: '#555' }));
  return stack([...parts, footer], 'mixprec bench: fp32 vs fp16');
}

