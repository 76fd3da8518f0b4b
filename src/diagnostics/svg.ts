// Small self-contained SVG charts (no library, no external fonts or CSS): line charts, grouped
// bar charts, and the log2-magnitude histogram with FP16's ranges marked. Every piece of text is
// escaped; every number written is finite.

/** Escapes text for XML / HTML text and attribute values. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A coordinate for an attribute: finite, rounded to 0.01. */
export function n(x: number): string {
  if (!Number.isFinite(x)) return '0';
  return String(Math.round(x * 100) / 100);
}

export const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
export const PALETTE = ['#1f77b4', '#ff7f0e', '#d62728', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

export function text(x: number, y: number, s: string, attrs: Record<string, string | number> = {}): string {
  const a = Object.entries({ 'font-size': 12, ...attrs }).map(([k, v]) => ` ${k}="${esc(v)}"`).join('');
  return `<text x="${n(x)}" y="${n(y)}"${a}>${esc(s)}</text>`;
}

/** An <svg> document (standalone: with the XML namespace; also fine inline in HTML). */
export function svgDoc(width: number, height: number, title: string, body: string, desc?: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${n(width)}" height="${n(height)}" viewBox="0 0 ${n(width)} ${n(height)}" role="img" font-family="${esc(FONT)}">` +
    `<title>${esc(title)}</title>${desc ? `<desc>${esc(desc)}</desc>` : ''}<rect width="100%" height="100%" fill="#ffffff"/>${body}</svg>`;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) { hi = lo + 1; lo = lo - 1; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** A short label for a number: 1.5k, 2.3M, 0.012, 3e-7. */
export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 0.01) return String(+v.toPrecision(4));
  return v.toExponential(1);
}

interface Frame { x: number; y: number; w: number; h: number }
type Scale = (v: number) => number;

function axes(f: Frame, xs: Scale, ys: Scale, xTicks: { v: number; label: string }[], yTicks: { v: number; label: string }[], xLabel: string, yLabel: string): string {
  let s = '';
  for (const t of yTicks) {
    const y = ys(t.v);
    s += `<line x1="${n(f.x)}" x2="${n(f.x + f.w)}" y1="${n(y)}" y2="${n(y)}" stroke="#e5e5e5"/>`;
    s += text(f.x - 6, y + 4, t.label, { 'text-anchor': 'end', 'font-size': 11, fill: '#333' });
  }
  for (const t of xTicks) {
    const x = xs(t.v);
    s += `<line x1="${n(x)}" x2="${n(x)}" y1="${n(f.y + f.h)}" y2="${n(f.y + f.h + 4)}" stroke="#333"/>`;
    s += text(x, f.y + f.h + 17, t.label, { 'text-anchor': 'middle', 'font-size': 11, fill: '#333' });
  }
  s += `<rect x="${n(f.x)}" y="${n(f.y)}" width="${n(f.w)}" height="${n(f.h)}" fill="none" stroke="#333"/>`;
  s += text(f.x + f.w / 2, f.y + f.h + 34, xLabel, { 'text-anchor': 'middle', fill: '#111' });
  s += text(0, 0, yLabel, { 'text-anchor': 'middle', fill: '#111', transform: `translate(${n(f.x - 46)} ${n(f.y + f.h / 2)}) rotate(-90)` });
  return s;
}

export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
  color?: string;
  dashed?: boolean;
  /** Thin and faint (e.g. raw values under a smoothed line); not in the legend. */
  faint?: boolean;
  /** Stroke width (default 2; 1 when faint). */
  width?: number;
  opacity?: number;
}
export interface Marker { x: number; y: number; label?: string; color?: string }

export interface LineChartOptions {
  title: string;
  series: readonly Series[];
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  /** y on a log2 axis (ticks at powers of two). */
  yLog2?: boolean;
  markers?: readonly Marker[];
  markerLegend?: string;
  /** Fixed y range (else from the data). */
  yRange?: [number, number];
  desc?: string;
}

function linePath(points: readonly (readonly [number, number])[], xs: Scale, ys: Scale): string {
  let d = '';
  let pen = false;
  for (const [x, y] of points) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) { pen = false; continue; }
    d += `${pen ? 'L' : 'M'}${n(xs(x))} ${n(ys(y))}`;
    pen = true;
  }
  return d;
}

/** Unique ids for clip paths (several charts share one HTML document). */
let clipId = 0;

/** A line chart with a legend; non-finite points break the line. */
export function lineChart(o: LineChartOptions): string {
  const W = o.width ?? 640, H = o.height ?? 320;
  const showMarkerLegend = Boolean(o.markers?.length || o.markerLegend);
  const legendRows = Math.ceil(o.series.filter((s) => !s.faint).length / 2) + (showMarkerLegend ? 1 : 0);
  const f: Frame = { x: 70, y: 34, w: W - 90, h: H - 34 - 48 - legendRows * 16 };
  const tf = (v: number) => (o.yLog2 ? Math.log2(v) : v);
  const pts = o.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(tf(y)));
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => tf(p[1]))), y1 = Math.max(...pts.map((p) => tf(p[1])));
  if (o.yRange) [y0, y1] = [tf(o.yRange[0]), tf(o.yRange[1])];
  if (!pts.length) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 === x0) x1 = x0 + 1;
  if (o.yLog2) { y0 = Math.floor(y0) - 1; y1 = Math.ceil(y1) + 1; }
  else if (y1 === y0) { y0 -= 1; y1 += 1; }
  else { const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad; }
  const xs: Scale = (v) => f.x + ((v - x0) / (x1 - x0)) * f.w;
  const ys: Scale = (v) => f.y + f.h - ((tf(v) - y0) / (y1 - y0)) * f.h;
  const ysRaw: Scale = (t) => f.y + f.h - ((t - y0) / (y1 - y0)) * f.h;
  const xTicks = niceTicks(x0, x1, 6).map((v) => ({ v, label: fmtNum(v) }));
  let yTicks: { v: number; label: string }[];
  if (o.yLog2) {
    const step = Math.max(1, Math.ceil((y1 - y0) / 6));
    yTicks = [];
    for (let e = Math.ceil(y0); e <= y1; e += step) yTicks.push({ v: 2 ** e, label: `2^${e}` });
  } else yTicks = niceTicks(y0, y1, 5).map((v) => ({ v, label: fmtNum(v) }));
  let s = text(W / 2, 20, o.title, { 'text-anchor': 'middle', 'font-size': 14, 'font-weight': 'bold', fill: '#111' });
  s += axes(f, xs, o.yLog2 ? (v) => ysRaw(Math.log2(v)) : ys, xTicks, yTicks, o.xLabel, o.yLabel);
  s += `<clipPath id="mixprec-clip-${clipId}"><rect x="${n(f.x)}" y="${n(f.y)}" width="${n(f.w)}" height="${n(f.h)}"/></clipPath><g clip-path="url(#mixprec-clip-${clipId++})">`;
  o.series.forEach((se, i) => {
    const color = se.color ?? PALETTE[i % PALETTE.length];
    const d = linePath(se.points, xs, ys);
    const op = se.opacity ?? (se.faint ? 0.25 : 1);
    if (d) s += `<path d="${d}" fill="none" stroke="${esc(color)}" stroke-width="${n(se.width ?? (se.faint ? 1 : 2))}"${op < 1 ? ` stroke-opacity="${n(op)}"` : ''}${se.dashed ? ' stroke-dasharray="6 4"' : ''}/>`;
  });
  for (const m of o.markers ?? []) {
    if (!Number.isFinite(m.x) || !Number.isFinite(tf(m.y))) continue;
    s += `<circle cx="${n(xs(m.x))}" cy="${n(ys(m.y))}" r="4" fill="${esc(m.color ?? '#d62728')}" stroke="#fff"><title>${esc(m.label ?? '')}</title></circle>`;
  }
  s += '</g>';
  // legend under the x label, two per row
  let ly = f.y + f.h + 52;
  const legend = o.series.map((se, i) => ({ se, color: se.color ?? PALETTE[i % PALETTE.length] })).filter((e) => !e.se.faint);
  legend.forEach((e, i) => {
    const lx = f.x + (i % 2) * (f.w / 2);
    const y = ly + Math.floor(i / 2) * 16;
    s += `<line x1="${n(lx)}" x2="${n(lx + 24)}" y1="${n(y - 4)}" y2="${n(y - 4)}" stroke="${esc(e.color)}" stroke-width="${n(Math.min(4, e.se.width ?? 2))}"${(e.se.opacity ?? 1) < 1 ? ` stroke-opacity="${n(e.se.opacity!)}"` : ''}${e.se.dashed ? ' stroke-dasharray="6 4"' : ''}/>`;
    s += text(lx + 30, y, e.se.name, { fill: '#111' });
  });
  ly += Math.ceil(legend.length / 2) * 16;
  if (showMarkerLegend) {
    s += `<circle cx="${n(f.x + 12)}" cy="${n(ly - 4)}" r="4" fill="#d62728"/>`;
    s += text(f.x + 30, ly, o.markerLegend ?? 'marked points', { fill: '#111' });
  }
  return svgDoc(W, H, o.title, s, o.desc);
}

export interface BarGroup { label: string; bars: { name: string; value: number }[] }

/** Grouped bars (one color per bar name, shared legend), values labelled on top. */
export function barChart(o: { title: string; groups: readonly BarGroup[]; yLabel: string; width?: number; height?: number; colors?: Record<string, string>; desc?: string }): string {
  const names = [...new Set(o.groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const W = o.width ?? Math.max(480, 110 + o.groups.length * (names.length * 26 + 24)), H = o.height ?? 320;
  const f: Frame = { x: 70, y: 34, w: W - 90, h: H - 34 - 70 };
  const vmax = Math.max(0, ...o.groups.flatMap((g) => g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0))));
  const ticks = niceTicks(0, vmax > 0 ? vmax * 1.12 : 1, 5);
  const tickStep = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  while (ticks[ticks.length - 1] < vmax * 1.12) ticks.push(ticks[ticks.length - 1] + tickStep); // room for the labels above the bars
  const top = ticks[ticks.length - 1] || 1;
  const ys: Scale = (v) => f.y + f.h - (v / top) * f.h;
  const colorOf = (name: string) => o.colors?.[name] ?? PALETTE[names.indexOf(name) % PALETTE.length];
  let s = text(W / 2, 20, o.title, { 'text-anchor': 'middle', 'font-size': 14, 'font-weight': 'bold', fill: '#111' });
  s += axes(f, (v) => v, ys, [], ticks.map((v) => ({ v, label: fmtNum(v) })), '', o.yLabel);
  const gw = f.w / Math.max(1, o.groups.length);
  o.groups.forEach((g, gi) => {
    const bw = Math.min(28, (gw - 16) / Math.max(1, g.bars.length));
    const gx = f.x + gi * gw + (gw - bw * g.bars.length) / 2;
    g.bars.forEach((b, bi) => {
      const v = Number.isFinite(b.value) ? b.value : 0;
      const x = gx + bi * bw;
      s += `<rect x="${n(x + 1)}" y="${n(ys(v))}" width="${n(bw - 2)}" height="${n(f.y + f.h - ys(v))}" fill="${esc(colorOf(b.name))}"><title>${esc(`${g.label} ${b.name}: ${fmtNum(b.value)}`)}</title></rect>`;
      s += text(x + bw / 2, ys(v) - 3, fmtNum(b.value), { 'text-anchor': 'middle', 'font-size': 9, fill: '#333' });
    });
    s += text(f.x + gi * gw + gw / 2, f.y + f.h + 16, g.label, { 'text-anchor': 'middle', 'font-size': 11, fill: '#333' });
  });
  names.forEach((name, i) => {
    const lx = f.x + i * 110, ly = H - 14;
    s += `<rect x="${n(lx)}" y="${n(ly - 10)}" width="14" height="12" fill="${esc(colorOf(name))}"/>`;
    s += text(lx + 20, ly, name, { fill: '#111' });
  });
  return svgDoc(W, H, o.title, s, o.desc);
}
