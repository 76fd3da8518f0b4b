// An independent float64 implementation of the layers' forward passes and the losses, used for
// finite-difference gradient checks (test/layers.test.ts).
import { erf } from './reference';

export type RefLayer =
  | { type: 'linear'; inFeatures: number; outFeatures: number; bias: boolean; activation: 'none' | 'relu' | 'gelu' }
  | { type: 'activation'; activation: 'relu' | 'gelu' }
  | { type: 'layerNorm'; features: number; eps: number };

const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
const act = (a: string, x: number) => (a === 'relu' ? Math.max(0, x) : a === 'gelu' ? gelu(x) : x);

/** Forward of one layer on rows x [B, n]; params by local name. */
function layer(l: RefLayer, x: Float64Array[], p: Map<string, Float64Array>): Float64Array[] {
  if (l.type === 'linear') {
    const W = p.get('weight')!, b = p.get('bias');
    return x.map((row) => {
      const y = new Float64Array(l.outFeatures);
      for (let o = 0; o < l.outFeatures; o++) {
        let s = b ? b[o] : 0;
        for (let i = 0; i < l.inFeatures; i++) s += W[o * l.inFeatures + i] * row[i];
        y[o] = act(l.activation, s);
      }
      return y;
    });
  }
  if (l.type === 'activation') return x.map((row) => row.map((v) => act(l.activation, v)));
  const g = p.get('weight')!, b = p.get('bias')!;
  return x.map((row) => {
    const n = row.length;
    const mean = row.reduce((a, v) => a + v, 0) / n;
    const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
    const rstd = 1 / Math.sqrt(variance + l.eps);
    return row.map((v, i) => (v - mean) * rstd * g[i] + b[i]);
  });
}

export function forward64(layers: RefLayer[], params: Map<string, Float64Array>, x: Float64Array[]): Float64Array[] {
  let h = x;
  layers.forEach((l, i) => {
    const local = new Map<string, Float64Array>();
    for (const [k, v] of params) if (k.startsWith(`${i}.`)) local.set(k.slice(String(i).length + 1), v);
    h = layer(l, h, local);
  });
  return h;
}

/** Mean cross-entropy with label smoothing eps (PyTorch's definition). */
export function crossEntropy64(logits: Float64Array[], labels: Int32Array, eps = 0): number {
  let total = 0;
  logits.forEach((z, r) => {
    const C = z.length;
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
    for (let c = 0; c < C; c++) total -= ((c === labels[r] ? 1 - eps : 0) + eps / C) * (z[c] - lse);
  });
  return total / logits.length;
}

export function mse64(pred: Float64Array[], target: Float64Array[]): number {
  let s = 0, n = 0;
  pred.forEach((row, r) => row.forEach((v, c) => { s += (v - target[r][c]) ** 2; n++; }));
  return s / n;
}
