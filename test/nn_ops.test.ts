// The layers' and losses' ops through the raw binding (activation forward / backward, columnSum,
// softmax cross-entropy, MSE, LayerNorm forward / backward, dropout), on every available backend,
// against float64 references written here from the textbook formulas (PyTorch's semantics), plus
// finite differences of those references for the backward ops. Inputs are drawn fresh each run
// (the seed is logged); every output is poisoned with NaN first, with a few poisoned elements past
// its end that must stay untouched.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as mixprec from '../src';
import type { ActCode, StorageHandle } from '../binding';
import { dtypeCode } from '../src/dtype';
import { native } from '../src/native';
import { int32Storage } from '../src/tensor';
import { describeEachBackend } from './helpers/backends';
import { makeRng } from './helpers/random';
import { erf, gelu64 } from './helpers/reference';

type DType = mixprec.DType;
type Device = mixprec.Device;
const rng = makeRng('nn_ops.test');
// Math's functions held locally: a global lookup inside jest's sandbox is slow in hot loops.
const { abs, cos, exp, floor, fround, imul, log, log2, max, min, sqrt } = Math;
const TWO_PI = 2 * Math.PI;
/** Bulk randomness: a local mulberry32 seeded from the logged test rng (so a run still replays). */
const fastRng = (() => {
  let s = floor(rng() * 2 ** 32) >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
})();
const F32: DType = 'float32', F16: DType = 'float16', BF16: DType = 'bfloat16';
const EPS32 = 2 ** -24; // FP32 unit roundoff (the ops compute in FP32)
/** Unit roundoff of a store into each dtype (RNE), and the absolute rounding floor (half the smallest subnormal). */
const U: Record<DType, number> = { float32: 2 ** -24, float16: 2 ** -11, bfloat16: 2 ** -8 };
const TINY: Record<DType, number> = { float32: 2 ** -150, float16: 2 ** -25, bfloat16: 2 ** -134 };
const dc = dtypeCode;
const PAD = 3; // poisoned elements past each output's end

// ---------------------------------------------------------------------------------------------
// Plumbing: tracked tensors (disposed after each test), inputs as stored, poisoned outputs.

let live: mixprec.Tensor[] = [];
let liveHandles: StorageHandle[] = [];
afterEach(() => {
  for (const t of live) t.dispose();
  for (const h of liveHandles) native().release(h);
  live = [];
  liveHandles = [];
});
function track(t: mixprec.Tensor): mixprec.Tensor {
  live.push(t);
  return t;
}

/** A device tensor holding `values` rounded to dtype; v = the values it actually holds. */
async function inp(values: Float32Array, dtype: DType, device: Device): Promise<{ h: StorageHandle; v: Float32Array }> {
  const t = track(mixprec.tensor(values, [values.length], { dtype, device }));
  return { h: t.handle(), v: await t.toFloat32() };
}
/** An output of n elements (+ PAD), every element NaN. */
function out(n: number, dtype: DType, device: Device): mixprec.Tensor {
  return track(mixprec.full([n + PAD], NaN, { dtype, device }));
}
/** The first n elements of an output; the poisoned tail must be intact. */
async function read(t: mixprec.Tensor, n: number, what: string): Promise<Float32Array> {
  const all = await t.toFloat32();
  for (let i = n; i < all.length; i++) if (!Number.isNaN(all[i])) throw new Error(`${what}: element ${i} past the end was written`);
  return all.slice(0, n);
}
function labelsOn(labels: Int32Array, device: Device): StorageHandle {
  const h = int32Storage(labels, device);
  liveHandles.push(h);
  return h;
}
/** Metrics storage: 4 slots of 4 bytes, all NaN bits. */
function metricsOut(device: Device): mixprec.Tensor {
  return track(mixprec.full([4], NaN, { dtype: 'float32', device }));
}
function readMetrics(t: mixprec.Tensor): { f: Float32Array; i: Int32Array } {
  const buf = native().readBytes(t.handle(), 16).slice().buffer;
  return { f: new Float32Array(buf), i: new Int32Array(buf) };
}
const NAN_BITS = new Int32Array(new Float32Array([NaN]).buffer)[0];

/** Asserts |got[i] - ref[i]| <= tol(i) for every i (NaN never passes); reports the worst element. */
function expectClose(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: (i: number) => number): void {
  expect(got.length).toBe(ref.length);
  let worst = -1, worstRatio = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = abs(got[i] - ref[i]), t = tol(i);
    if (e <= t) continue;
    const ratio = Number.isNaN(e) ? Infinity : e / t;
    if (worst < 0 || ratio > worstRatio) { worst = i; worstRatio = ratio; }
  }
  if (worst >= 0)
    throw new Error(`${what}: element ${worst} of ${ref.length}: got ${got[worst]}, expected ${ref[worst]} ± ${tol(worst)}`);
}
function expectExact(what: string, got: ArrayLike<number>, ref: ArrayLike<number>): void {
  expect(got.length).toBe(ref.length);
  for (let i = 0; i < ref.length; i++)
    if (!Object.is(got[i], ref[i]) && !(got[i] === 0 && ref[i] === 0))
      throw new Error(`${what}: element ${i}: got ${got[i]}, expected exactly ${ref[i]}`);
}

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof mixprec.MixprecError) return e.code;
    return `not a MixprecError: ${String(e)}`;
  }
  return 'no error';
}

/** Values as a dtype stores them (RNE). */
function roundTo(dtype: DType, x: Float32Array): Float32Array {
  if (dtype === 'float16') return mixprec.float16.toFloat32(mixprec.float16.fromFloat32(x));
  if (dtype === 'bfloat16') return mixprec.bfloat16.toFloat32(mixprec.bfloat16.fromFloat32(x));
  return Float32Array.from(x);
}

function normal(n: number, scale = 1, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = fastRng() || 1e-12, v = fastRng();
    a[i] = offset + scale * sqrt(-2 * log(u)) * cos(TWO_PI * v);
  }
  return a;
}
const randInt = (n: number) => min(n - 1, floor(rng() * n));
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = max(m, abs(a[i])); return m; };

// ---------------------------------------------------------------------------------------------
// Float64 references (textbook formulas).

const phi = (z: number) => exp(-0.5 * z * z) / sqrt(2 * Math.PI);
const Phi = (z: number) => 0.5 * (1 + erf(z / Math.SQRT2));
const ACTS: { name: string; code: ActCode; f: (x: number) => number; df: (z: number) => number }[] = [
  { name: 'none', code: 0, f: (x) => x, df: () => 1 },
  { name: 'relu', code: 1, f: (x) => (x < 0 ? 0 : x), df: (z) => (z > 0 ? 1 : 0) },
  { name: 'gelu', code: 2, f: gelu64, df: (z) => Phi(z) + z * phi(z) },
];

/** PyTorch's CrossEntropyLoss(label_smoothing=eps), mean over rows: loss, correct (first argmax), dLoss/dz. */
function crossEntropy64(z: ArrayLike<number>, labels: Int32Array, B: number, C: number, eps: number) {
  let total = 0, correct = 0;
  const grad = new Float64Array(B * C), prob = new Float64Array(B * C), target = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    let mx = -Infinity, arg = -1;
    for (let c = 0; c < C; c++) if (z[b * C + c] > mx) { mx = z[b * C + c]; arg = c; }
    if (arg === labels[b]) correct++;
    let s = 0;
    for (let c = 0; c < C; c++) s += exp(z[b * C + c] - mx);
    const lse = mx + log(s);
    for (let c = 0; c < C; c++) {
      const i = b * C + c;
      const t = (c === labels[b] ? 1 - eps : 0) + eps / C; // smoothed one-hot
      const logp = z[i] - lse;
      total -= t * logp;
      prob[i] = exp(logp);
      target[i] = t;
      grad[i] = (prob[i] - t) / B;
    }
  }
  return { loss: total / B, correct, grad, prob, target };
}

/** LayerNorm over rows of x [M, N]: biased variance, y = (x - mean) / sqrt(var + eps) * gamma + beta. */
function layerNorm64(x: ArrayLike<number>, gamma: ArrayLike<number>, beta: ArrayLike<number>, M: number, N: number, eps: number) {
  const y = new Float64Array(M * N), xhat = new Float64Array(M * N), mean = new Float64Array(M), rstd = new Float64Array(M);
  const meanAbs = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    let s = 0, sa = 0;
    for (let j = 0; j < N; j++) { s += x[m * N + j]; sa += abs(x[m * N + j]); }
    const mu = s / N;
    let v = 0;
    for (let j = 0; j < N; j++) v += (x[m * N + j] - mu) ** 2;
    const r = 1 / sqrt(v / N + eps);
    for (let j = 0; j < N; j++) {
      xhat[m * N + j] = (x[m * N + j] - mu) * r;
      y[m * N + j] = xhat[m * N + j] * gamma[j] + beta[j];
    }
    mean[m] = mu; rstd[m] = r; meanAbs[m] = sa / N;
  }
  return { y, xhat, mean, rstd, meanAbs };
}

/** The LayerNorm backward (as in PyTorch's native_layer_norm_backward) given the statistics. */
function layerNormBackward64(dy: ArrayLike<number>, x: ArrayLike<number>, gamma: ArrayLike<number>, mean: ArrayLike<number>,
                             rstd: ArrayLike<number>, M: number, N: number) {
  const dx = new Float64Array(M * N), dgamma = new Float64Array(N), dbeta = new Float64Array(N);
  const xhat = new Float64Array(M * N), g = new Float64Array(M * N);
  const rowA = new Float64Array(M), rowB = new Float64Array(M); // mean |g|, mean |g * xhat|
  for (let m = 0; m < M; m++) {
    let a = 0, b = 0, aa = 0, ba = 0;
    for (let j = 0; j < N; j++) {
      const i = m * N + j;
      xhat[i] = (x[i] - mean[m]) * rstd[m];
      g[i] = dy[i] * gamma[j];
      a += g[i]; b += g[i] * xhat[i]; aa += abs(g[i]); ba += abs(g[i] * xhat[i]);
      dgamma[j] += dy[i] * xhat[i];
      dbeta[j] += dy[i];
    }
    a /= N; b /= N;
    for (let j = 0; j < N; j++) dx[m * N + j] = rstd[m] * (g[m * N + j] - a - xhat[m * N + j] * b);
    rowA[m] = aa / N; rowB[m] = ba / N;
  }
  return { dx, dgamma, dbeta, xhat, g, rowA, rowB };
}

// The documented dropout mask (native/shared/nn.h): splitmix64 finaliser of seed + (i + 1) * golden
// ratio, top 32 bits; keep iff (bits >> 8) / 2^24 >= p. Re-derived here in BigInt.
const MASK64 = (1n << 64n) - 1n;
function keepRef(seedHi: number, seedLo: number, i: number, p: number): boolean {
  const seed = (BigInt(seedHi) << 32n) | BigInt(seedLo);
  let z = (seed + (BigInt(i) + 1n) * 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  const bits = Number((z ^ (z >> 31n)) >> 32n);
  return (bits >>> 8) / 2 ** 24 >= fround(p);
}
const randU32 = () => floor(rng() * 2 ** 32) >>> 0;

// ---------------------------------------------------------------------------------------------

const SIZES = [1, 7, 33, 257, 40000]; // 40000: several element blocks

describeEachBackend('activation forward / backward', (device) => {
  const PAIRS: [DType, DType][] = [[F32, F32], [F16, F16], [BF16, BF16], [F16, F32], [F32, BF16], [BF16, F16]];
  for (const act of ACTS) {
    test(`forward ${act.name}: dtype pairs, sizes ${SIZES.join(', ')}, vs float64`, async () => {
      for (const [xt, yt] of PAIRS) for (const n of SIZES) {
        const x = await inp(normal(n, 3), xt, device);
        const y = out(n, yt, device);
        native().activationForward({ act: act.code, x: x.h, xType: dc(xt), y: y.handle(), yType: dc(yt), n });
        const got = await read(y, n, `${act.name} ${xt}->${yt} n=${n}`);
        const ref = Array.from(x.v, act.f);
        if (act.name === 'gelu') {
          // erf-based FP32 GELU: a few ulps of |x| (1 + erf cancels for negative x), then the store's rounding.
          expectClose(`gelu ${xt}->${yt} n=${n}`, got, ref, (i) => U[yt] * abs(ref[i]) + 8 * EPS32 * (abs(x.v[i]) + abs(ref[i])) + TINY[yt]);
        } else {
          expectExact(`${act.name} ${xt}->${yt} n=${n}`, got, roundTo(yt, Float32Array.from(ref)));
        }
      }
    });
  }

  const TRIPLES: [DType, DType, DType][] = [[F32, F32, F32], [F16, F16, F16], [BF16, BF16, BF16], [F16, F32, F16], [F32, BF16, F32]];
  for (const act of ACTS) {
    test(`backward ${act.name}: dx = dy * act'(z), dtype triples, sizes ${SIZES.join(', ')}, vs float64`, async () => {
      for (const [dyt, zt, dxt] of TRIPLES) for (const n of SIZES) {
        const zv = normal(n, 3);
        for (let i = 0; i < n; i += 5) zv[i] = 0; // ReLU's gradient at 0 is 0
        const dy = await inp(normal(n), dyt, device), z = await inp(zv, zt, device);
        const dx = out(n, dxt, device);
        native().activationBackward({ act: act.code, dy: dy.h, dyType: dc(dyt), z: z.h, zType: dc(zt), dx: dx.handle(), dxType: dc(dxt), n });
        const what = `${act.name}' ${dyt},${zt}->${dxt} n=${n}`;
        const got = await read(dx, n, what);
        const ref = Array.from(dy.v, (d, i) => d * act.df(z.v[i]));
        if (act.name === 'gelu')
          expectClose(what, got, ref, (i) => U[dxt] * abs(ref[i]) + 8 * EPS32 * abs(dy.v[i]) * (1 + abs(z.v[i])) + TINY[dxt]);
        else expectExact(what, got, roundTo(dxt, Float32Array.from(ref)));
      }
    });
  }

  test("GELU's gradient matches central differences of the float64 GELU", async () => {
    const n = 2001;
    const zv = new Float32Array(n);
    for (let i = 0; i < n; i++) zv[i] = -7 + (14 * i) / (n - 1) + (rng() - 0.5) * 1e-3;
    const z = await inp(zv, F32, device), dy = await inp(new Float32Array(n).fill(1), F32, device);
    const dx = out(n, F32, device);
    native().activationBackward({ act: 2, dy: dy.h, dyType: 0, z: z.h, zType: 0, dx: dx.handle(), dxType: 0, n });
    const got = await read(dx, n, 'gelu fd');
    const h = 1e-4;
    const fd = Array.from(z.v, (v) => (gelu64(v + h) - gelu64(v - h)) / (2 * h));
    expectClose('gelu_grad vs finite differences', got, fd, (i) => 1e-6 + 1e-6 * abs(fd[i]));
  });

  test('hand-worked values', async () => {
    const x = await inp(new Float32Array([-2, -0, 0, 1, 3]), F32, device);
    const y = out(5, F32, device);
    native().activationForward({ act: 1, x: x.h, xType: 0, y: y.handle(), yType: 0, n: 5 });
    expectExact('relu', await read(y, 5, 'relu'), [0, 0, 0, 1, 3]);
    native().activationForward({ act: 2, x: x.h, xType: 0, y: y.handle(), yType: 0, n: 5 });
    // GELU(1) = Phi(1) = 0.841344746..., GELU(3) = 3 * 0.998650102 = 2.995950..., GELU(-2) = -2 * 0.0227501319
    expectClose('gelu', await read(y, 5, 'gelu'), [-0.0455002638, 0, 0, 0.8413447461, 2.9959503068], () => 1e-6);
    // gelu'(0) = 0.5, gelu'(1) = Phi(1) + phi(1) = 0.8413447 + 0.2419707 = 1.0833155
    const dy = await inp(new Float32Array([2, 2, 2, 2, 2]), F32, device);
    native().activationBackward({ act: 2, dy: dy.h, dyType: 0, z: x.h, zType: 0, dx: y.handle(), dxType: 0, n: 5 });
    expectClose("gelu'", await read(y, 5, "gelu'"), [2 * (0.0227501319 - 2 * 0.0539909665), 1, 1, 2 * 1.0833154705, 2 * (0.9986501020 + 3 * 0.0044318484)], () => 2e-6);
    native().activationBackward({ act: 1, dy: dy.h, dyType: 0, z: x.h, zType: 0, dx: y.handle(), dxType: 0, n: 5 });
    expectExact("relu'", await read(y, 5, "relu'"), [0, 0, 0, 2, 2]);
  });

  test('n = 0 writes nothing', async () => {
    const x = await inp(new Float32Array([1]), F32, device);
    const y = out(0, F32, device);
    native().activationForward({ act: 2, x: x.h, xType: 0, y: y.handle(), yType: 0, n: 0 });
    await read(y, 0, 'n=0');
  });
});

describeEachBackend('columnSum', (device) => {
  const Ms = [1, 7, 33, 300, 5000], Ns = [1, 7, 33, 257];
  const PAIRS: [DType, DType][] = [[F32, F32], [F16, F32], [BF16, BF16], [F16, F16]];
  test(`out[n] = sum_m x[m, n] for M in ${Ms.join(', ')}, N in ${Ns.join(', ')}, vs float64`, async () => {
    for (const [xt, ot] of PAIRS) for (const M of Ms) for (const N of Ns) {
      const x = await inp(normal(M * N, 1, rng() - 0.5), xt, device);
      const o = out(N, ot, device);
      native().columnSum({ x: x.h, xType: dc(xt), M, N, out: o.handle(), outType: dc(ot) });
      const what = `columnSum ${xt}->${ot} ${M}x${N}`;
      const got = await read(o, N, what);
      const ref = new Float64Array(N), sumAbs = new Float64Array(N);
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { ref[n] += x.v[m * N + n]; sumAbs[n] += abs(x.v[m * N + n]); }
      // FP32 accumulation: rounding error bounded by ~sqrt(M) ulps of the running sums, then the store.
      expectClose(what, got, ref, (n) => U[ot] * abs(ref[n]) + 8 * sqrt(M) * EPS32 * sumAbs[n] + TINY[ot]);
    }
  });
  test('hand-worked: [[1, 2, 3], [4, 5, 6]] -> [5, 7, 9]; M = 0 -> zeros', async () => {
    const x = await inp(new Float32Array([1, 2, 3, 4, 5, 6]), F32, device);
    const o = out(3, F32, device);
    native().columnSum({ x: x.h, xType: 0, M: 2, N: 3, out: o.handle(), outType: 0 });
    expectExact('columnSum', await read(o, 3, 'columnSum'), [5, 7, 9]);
    const z = out(5, BF16, device);
    native().columnSum({ x: x.h, xType: 0, M: 0, N: 5, out: z.handle(), outType: 2 });
    expectExact('columnSum M=0', await read(z, 5, 'M=0'), [0, 0, 0, 0, 0]);
  });
});

describeEachBackend('softmaxCrossEntropy', (device) => {
  type CeCase = { B: number; C: number; lt: DType; dt: DType | null; eps: number; lossScale: number; scale?: number; offset?: number; withCorrect?: boolean };
  async function runCase(k: CeCase): Promise<void> {
    const { B, C, lt, eps, lossScale } = k;
    const logits = await inp(normal(B * C, k.scale ?? 3, k.offset ?? 0), lt, device);
    const labels = Int32Array.from({ length: B }, () => randInt(C));
    const d = k.dt ? out(B * C, k.dt, device) : null;
    const metrics = metricsOut(device);
    native().softmaxCrossEntropy({
      logits: logits.h, logitsType: dc(lt), labels: labelsOn(labels, device), B, C, smoothing: eps, lossScale,
      ...(d && k.dt ? { dlogits: d.handle(), dType: dc(k.dt) } : {}),
      metrics: metrics.handle(), lossOffset: 8, ...(k.withCorrect === false ? {} : { correctOffset: 4 }),
    });
    const what = `CE ${lt}->${k.dt ?? 'none'} B=${B} C=${C} eps=${eps} scale=${lossScale}${k.offset ? ` offset=${k.offset}` : ''}`;
    const ref = crossEntropy64(logits.v, labels, B, C, fround(eps));
    const m = readMetrics(metrics);
    expect(m.i[0]).toBe(NAN_BITS); // untouched slots
    expect(m.i[3]).toBe(NAN_BITS);
    const zmax = maxAbs(logits.v);
    // FP32: lse = max + log(sum) is off by a few ulps of |max|; the terms t_c (lse - z_c) are >= 0 and
    // summed over C classes and B rows, a relative error growing slowly with C and B.
    const lossTol = 4 * EPS32 * (1 + zmax + log(C)) + 8 * EPS32 * abs(ref.loss) * (log2(2 * C) + log2(2 * B));
    expectClose(`${what}: loss`, [m.f[2]], [ref.loss], () => lossTol);
    if (k.withCorrect === false) expect(m.i[1]).toBe(NAN_BITS);
    else if (m.i[1] !== ref.correct) throw new Error(`${what}: correct ${m.i[1]}, expected ${ref.correct}`);
    if (d && k.dt) {
      const dt = k.dt;
      const got = await read(d, B * C, what);
      const kScale = lossScale; // ref.grad already carries 1 / B
      const refD = Array.from(ref.grad, (g) => g * kScale);
      expectClose(`${what}: dlogits`, got, refD, (i) =>
        (kScale / B) * 8 * EPS32 * (ref.prob[i] * (1 + 2 * zmax) + ref.target[i]) + U[dt] * abs(refD[i]) + TINY[dt]);
    }
  }

  const Bs = [1, 7, 65, 300], Cs = [1, 2, 7, 33, 257, 1000];
  const CONFIGS: [DType, DType][] = [[F32, F32], [F16, F16], [BF16, BF16], [F16, F32], [BF16, F32]];
  test(`loss, correct and fused dlogits for B in ${Bs.join(', ')}, C in ${Cs.join(', ')}, smoothing and loss scale, vs float64`, async () => {
    let k = 0;
    for (const [lt, dt] of CONFIGS) for (const B of Bs) for (const C of Cs) {
      const eps = [0, 0.1, fround(rng() * 0.6)][k % 3];
      const lossScale = [1, 1024, 0.25 + rng() * 4][(k >> 1) % 3];
      await runCase({ B, C, lt, dt, eps, lossScale });
      k++;
    }
  });

  test('large logits: the softmax is shifted by the row max (no overflow); evaluation without dlogits / correct', async () => {
    await runCase({ B: 7, C: 33, lt: F32, dt: F32, eps: 0.1, lossScale: 1, offset: 200 });
    await runCase({ B: 9, C: 40, lt: BF16, dt: BF16, eps: 0, lossScale: 8, offset: -1000, scale: 20 });
    await runCase({ B: 5, C: 17, lt: F16, dt: F32, eps: 0.2, lossScale: 1, offset: 3e4, scale: 50 });
    await runCase({ B: 65, C: 33, lt: F16, dt: null, eps: 0.3, lossScale: 1 });
    await runCase({ B: 33, C: 7, lt: F32, dt: null, eps: 0, lossScale: 1, withCorrect: false });
  });

  test('hand-worked: logits [0, 0] -> ln 2; smoothing; ties count the first maximum', async () => {
    const run = async (logits: number[], labels: number[], C: number, eps: number, lossScale: number) => {
      const B = labels.length;
      const z = await inp(Float32Array.from(logits), F32, device);
      const d = out(B * C, F32, device), metrics = metricsOut(device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 0, labels: labelsOn(Int32Array.from(labels), device), B, C, smoothing: eps,
        lossScale, dlogits: d.handle(), dType: 0, metrics: metrics.handle(), correctOffset: 4 });
      const m = readMetrics(metrics);
      return { loss: m.f[0], correct: m.i[1], d: await read(d, B * C, 'hand CE') };
    };
    let r = await run([0, 0], [0], 2, 0, 1);
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(1);
    expectClose('dlogits', r.d, [-0.5, 0.5], () => 1e-7);
    r = await run([0, 0], [1], 2, 0, 4); // a tie: argmax is index 0, label 1 is not counted
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(0);
    expectClose('dlogits x4', r.d, [2, -2], () => 1e-6);
    // softmax([ln 3, 0]) = [3/4, 1/4]; label 1, eps = 0.5: target = [0.25, 0.75];
    // loss = -(0.25 ln 0.75 + 0.75 ln 0.25); dlogits = [0.75 - 0.25, 0.25 - 0.75].
    r = await run([log(3), 0], [1], 2, 0.5, 1);
    expect(r.loss).toBeCloseTo(-(0.25 * log(0.75) + 0.75 * log(0.25)), 6);
    expectClose('smoothed dlogits', r.d, [0.5, -0.5], () => 1e-6);
    // Two rows, mean over the batch: row 0 = ln 2 (logits [0, 0]); row 1 = ln(1 + e^-2) (label 0 of [2, 0]).
    r = await run([0, 0, 2, 0], [1, 0], 2, 0, 1);
    expect(r.loss).toBeCloseTo((Math.LN2 + log(1 + exp(-2))) / 2, 6);
    expect(r.correct).toBe(1);
    const p = 1 / (1 + exp(-2));
    expectClose('two rows', r.d, [0.25, -0.25, (p - 1) / 2, (1 - p) / 2], () => 1e-7);
    // Ties: rows [1,1,0] label 1 (no), [1,1,0] label 0 (yes), [0,2,2] label 2 (no), [5,-1,5] label 0 (yes).
    r = await run([1, 1, 0, 1, 1, 0, 0, 2, 2, 5, -1, 5], [1, 0, 2, 0], 3, 0, 1);
    expect(r.correct).toBe(2);
    // A -inf logit off the label (masking): probability 0, finite loss and gradient without smoothing
    // (as PyTorch); with smoothing its share of the target makes the loss +inf.
    r = await run([0, -Infinity, 0], [0], 3, 0, 1);
    expect(r.loss).toBeCloseTo(Math.LN2, 6);
    expect(r.correct).toBe(1);
    expectExact('-inf logit', r.d, [-0.5, 0, 0.5]);
    r = await run([0, -Infinity, 0], [0], 3, 0.3, 1);
    expect(r.loss).toBe(Infinity);
    expectClose('-inf logit, smoothed', r.d, [0.5 - (0.7 + 0.1), -0.1, 0.5 - 0.1], () => 1e-6);
    // A +inf logit (an FP16 overflow upstream) makes that row's loss and gradient NaN, which the
    // scaler's overflow check then sees; other rows are unaffected.
    r = await run([1, Infinity, 0, 2, 0, 0], [0, 0], 3, 0, 1);
    expect(Number.isNaN(r.loss)).toBe(true);
    expect(Array.from(r.d.subarray(0, 3)).every(Number.isNaN)).toBe(true);
    const e2 = exp(2) + 2;
    expectClose('finite row', r.d.subarray(3), [(exp(2) / e2 - 1) / 2, 1 / e2 / 2, 1 / e2 / 2], () => 1e-7);
    // C = 1: the only class has probability 1: loss 0, gradient 0 (with or without smoothing).
    r = await run([3.5, -2], [0, 0], 1, 0.3, 1);
    expect(r.loss).toBe(0);
    expect(r.correct).toBe(2);
    expectClose('C=1', r.d, [0, 0], () => 1e-7);
  });

  test('dlogits match central differences of the float64 mean loss', async () => {
    for (const eps of [0, 0.25]) {
      const B = 3, C = 5;
      const z = await inp(normal(B * C, 2), F32, device);
      const labels = Int32Array.from({ length: B }, () => randInt(C));
      const d = out(B * C, F32, device), metrics = metricsOut(device);
      native().softmaxCrossEntropy({ logits: z.h, logitsType: 0, labels: labelsOn(labels, device), B, C, smoothing: eps, lossScale: 1,
        dlogits: d.handle(), dType: 0, metrics: metrics.handle() });
      const got = await read(d, B * C, 'CE fd');
      const h = 1e-5, zz = Float64Array.from(z.v);
      const fd = Array.from(zz, (_, i) => {
        const p = Float64Array.from(zz), q = Float64Array.from(zz);
        p[i] += h; q[i] -= h;
        return (crossEntropy64(p, labels, B, C, eps).loss - crossEntropy64(q, labels, B, C, eps).loss) / (2 * h);
      });
      expectClose(`CE dlogits vs finite differences (eps=${eps})`, got, fd, () => 1e-6);
    }
  });
});

describeEachBackend('mseLoss', (device) => {
  const CONFIGS: [DType, DType, DType][] = [[F32, F32, F32], [F16, F16, F16], [BF16, BF16, BF16], [F16, F32, F32], [BF16, F16, BF16]];
  test(`loss = mean (p - t)^2, dpred = 2 (p - t) / n * lossScale, sizes ${SIZES.join(', ')}, vs float64`, async () => {
    let k = 0;
    for (const [pt, tt, dt] of CONFIGS) for (const n of SIZES) {
      const lossScale = [1, 1024, 0.5 + rng() * 8][k++ % 3];
      const p = await inp(normal(n), pt, device), t = await inp(normal(n, 0.5, 0.3), tt, device);
      const d = out(n, dt, device), metrics = metricsOut(device);
      native().mseLoss({ pred: p.h, predType: dc(pt), target: t.h, targetType: dc(tt), n, lossScale, dpred: d.handle(), dType: dc(dt),
        metrics: metrics.handle(), lossOffset: 4 });
      const what = `MSE ${pt},${tt}->${dt} n=${n} scale=${lossScale}`;
      let s = 0;
      for (let i = 0; i < n; i++) s += (p.v[i] - t.v[i]) ** 2;
      const m = readMetrics(metrics);
      expect([m.i[0], m.i[2], m.i[3]]).toEqual([NAN_BITS, NAN_BITS, NAN_BITS]);
      expectClose(`${what}: loss`, [m.f[1]], [s / n], () => (s / n) * EPS32 * 4 * (8 + sqrt(n)));
      const got = await read(d, n, what);
      const ref = Array.from(p.v, (pv, i) => (2 * (pv - t.v[i])) / n * lossScale);
      expectClose(`${what}: dpred`, got, ref, (i) => U[dt] * abs(ref[i]) + 4 * EPS32 * abs(ref[i]) + TINY[dt]);
    }
  });
  test('hand-worked: p = [1, 2, 3], t = [1, 0, 0] -> 13 / 3, dpred = [0, 4, 6] / 3 * lossScale; evaluation without dpred', async () => {
    const p = await inp(new Float32Array([1, 2, 3]), F32, device), t = await inp(new Float32Array([1, 0, 0]), F32, device);
    const d = out(3, F32, device), metrics = metricsOut(device);
    native().mseLoss({ pred: p.h, predType: 0, target: t.h, targetType: 0, n: 3, lossScale: 3, dpred: d.handle(), dType: 0, metrics: metrics.handle() });
    expect(readMetrics(metrics).f[0]).toBeCloseTo(13 / 3, 6);
    expectClose('dpred', await read(d, 3, 'dpred'), [0, 4, 6], () => 1e-6);
    const m2 = metricsOut(device);
    native().mseLoss({ pred: p.h, predType: 0, target: t.h, targetType: 0, n: 2, lossScale: 1, metrics: m2.handle(), lossOffset: 12 });
    const r = readMetrics(m2);
    expect(r.f[3]).toBeCloseTo(2, 6);
    expect([r.i[0], r.i[1], r.i[2]]).toEqual([NAN_BITS, NAN_BITS, NAN_BITS]);
  });
});

describeEachBackend('layerNorm', (device) => {
  const Ms = [1, 7, 33, 300], Ns = [1, 7, 33, 257];
  const FWD: [DType, DType, DType][] = [[F32, F32, F32], [F16, F32, F16], [BF16, BF16, BF16], [F16, F16, F32]];

  async function forwardCase(M: number, N: number, xt: DType, gt: DType, yt: DType, eps: number, offset = 0) {
    const x = await inp(normal(M * N, 0.5 + rng() * 2, offset || rng() - 0.5), xt, device);
    const gamma = await inp(normal(N, 0.5, 1), gt, device), beta = await inp(normal(N, 0.5), gt, device);
    const y = out(M * N, yt, device), mean = out(M, F32, device), rstd = out(M, F32, device);
    native().layerNormForward({ x: x.h, xType: dc(xt), gamma: gamma.h, beta: beta.h, gType: dc(gt), M, N, eps,
      y: y.handle(), yType: dc(yt), mean: mean.handle(), rstd: rstd.handle() });
    const what = `LN ${xt},${gt}->${yt} ${M}x${N} eps=${eps}${offset ? ` offset=${offset}` : ''}`;
    const ref = layerNorm64(x.v, gamma.v, beta.v, M, N, fround(eps));
    // FP32 statistics: the mean is off by ~sqrt(N) ulps of the row's magnitude; the variance's error
    // is second order in it (two passes).
    const errMean = (m: number) => (4 + sqrt(N)) * 2 * EPS32 * ref.meanAbs[m];
    expectClose(`${what}: mean`, await read(mean, M, what), ref.mean, (m) => errMean(m) + EPS32 * abs(ref.mean[m]));
    expectClose(`${what}: rstd`, await read(rstd, M, what), ref.rstd, (m) =>
      ref.rstd[m] * (8 * EPS32 * (4 + sqrt(N)) + (errMean(m) * ref.rstd[m]) ** 2));
    const got = await read(y, M * N, what);
    expectClose(`${what}: y`, got, ref.y, (i) => {
      const m = floor(i / N), j = i % N;
      const errXhat = errMean(m) * ref.rstd[m] + 16 * EPS32 * (abs(ref.xhat[i]) + 1);
      return abs(gamma.v[j]) * errXhat + 4 * EPS32 * (abs(ref.xhat[i] * gamma.v[j]) + abs(beta.v[j])) + U[yt] * abs(ref.y[i]) + TINY[yt];
    });
  }

  test(`forward: y, mean, rstd for M in ${Ms.join(', ')}, N in ${Ns.join(', ')}, vs float64`, async () => {
    let k = 0;
    for (const [xt, gt, yt] of FWD) for (const M of Ms) for (const N of Ns) await forwardCase(M, N, xt, gt, yt, [1e-5, 1e-3, 0.1][k++ % 3]);
  });
  test('forward: rows offset far from 0 (the variance is taken about the mean, in two passes)', async () => {
    await forwardCase(33, 257, F32, F32, F32, 1e-5, 1000);
    await forwardCase(7, 33, F32, F16, BF16, 1e-5, -300);
  });
  test('forward hand-worked: [1, 2, 3, 4] -> (x - 2.5) / sqrt(1.25) (biased variance); N = 1 -> beta', async () => {
    const x = await inp(new Float32Array([1, 2, 3, 4, 7]), F32, device);
    const g = await inp(new Float32Array([1, 1, 1, 1]), F32, device), b = await inp(new Float32Array([0, 0, 0, 0]), F32, device);
    const y = out(4, F32, device), mean = out(1, F32, device), rstd = out(1, F32, device);
    native().layerNormForward({ x: x.h, xType: 0, gamma: g.h, beta: b.h, gType: 0, M: 1, N: 4, eps: 0, y: y.handle(), yType: 0, mean: mean.handle(), rstd: rstd.handle() });
    const r = 1 / sqrt(1.25);
    expectClose('y', await read(y, 4, 'y'), [-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r], () => 4e-7);
    expectExact('mean', await read(mean, 1, 'mean'), [2.5]);
    expectClose('rstd', await read(rstd, 1, 'rstd'), [r], () => 2e-7);
    // N = 1: var = 0, xhat = 0, y = beta; rstd = 1 / sqrt(eps)
    const g1 = await inp(new Float32Array([3]), F32, device), b1 = await inp(new Float32Array([0.625]), F32, device);
    const y1 = out(5, F32, device), mean1 = out(5, F32, device), rstd1 = out(5, F32, device);
    native().layerNormForward({ x: x.h, xType: 0, gamma: g1.h, beta: b1.h, gType: 0, M: 5, N: 1, eps: 0.25, y: y1.handle(), yType: 0, mean: mean1.handle(), rstd: rstd1.handle() });
    expectExact('y N=1', await read(y1, 5, 'y1'), [0.625, 0.625, 0.625, 0.625, 0.625]);
    expectExact('mean N=1', await read(mean1, 5, 'mean1'), [1, 2, 3, 4, 7]);
    expectExact('rstd N=1', await read(rstd1, 5, 'rstd1'), [2, 2, 2, 2, 2]);
  });

  const BMs = [1, 7, 33, 300, 3000];
  const BWD: [DType, DType, DType, DType, DType][] = [
    [F32, F32, F32, F32, F32], [F16, F16, F32, F16, F32], [BF16, BF16, BF16, BF16, BF16], [F16, F32, F16, F32, F16]];
  test(`backward: dx, dgamma, dbeta for M in ${BMs.join(', ')}, N in ${Ns.join(', ')} (given statistics), vs float64`, async () => {
    for (const [dyt, xt, gt, dxt, dgt] of BWD) for (const M of BMs) for (const N of Ns) {
      const x = await inp(normal(M * N, 1 + rng(), rng() - 0.5), xt, device);
      const gamma = await inp(normal(N, 0.5, 1), gt, device), dy = await inp(normal(M * N), dyt, device);
      const stats = layerNorm64(x.v, gamma.v, gamma.v, M, N, 1e-5);
      const mean = await inp(Float32Array.from(stats.mean), F32, device), rstd = await inp(Float32Array.from(stats.rstd), F32, device);
      const dx = out(M * N, dxt, device), dgamma = out(N, dgt, device), dbeta = out(N, dgt, device);
      native().layerNormBackward({ dy: dy.h, dyType: dc(dyt), x: x.h, xType: dc(xt), gamma: gamma.h, gType: dc(gt), mean: mean.h, rstd: rstd.h,
        M, N, dx: dx.handle(), dxType: dc(dxt), dgamma: dgamma.handle(), dbeta: dbeta.handle(), dgType: dc(dgt) });
      const what = `LN backward ${dyt},${xt},${gt}->${dxt},${dgt} ${M}x${N}`;
      // The reference uses the FP32 statistics the op was given.
      const ref = layerNormBackward64(dy.v, x.v, gamma.v, mean.v, rstd.v, M, N);
      const c = 8 * EPS32 * (4 + sqrt(N));
      expectClose(`${what}: dx`, await read(dx, M * N, what), ref.dx, (i) => {
        const m = floor(i / N);
        const xhatErr = 4 * EPS32 * (abs(ref.xhat[i]) + abs(mean.v[m]) * rstd.v[m]);
        return rstd.v[m] * (c * (abs(ref.g[i]) + ref.rowA[m] + abs(ref.xhat[i]) * ref.rowB[m]) + xhatErr * ref.rowB[m] * 2) +
          U[dxt] * abs(ref.dx[i]) + TINY[dxt];
      });
      const sDx = new Float64Array(N), sDy = new Float64Array(N);
      for (let m = 0; m < M; m++) for (let j = 0; j < N; j++) {
        const i = m * N + j;
        sDx[j] += abs(dy.v[i]) * (abs(ref.xhat[i]) + 4 * EPS32 * abs(mean.v[m]) * rstd.v[m]);
        sDy[j] += abs(dy.v[i]);
      }
      expectClose(`${what}: dgamma`, await read(dgamma, N, what), ref.dgamma, (j) => U[dgt] * abs(ref.dgamma[j]) + (8 * sqrt(M) + 8) * EPS32 * sDx[j] + TINY[dgt]);
      expectClose(`${what}: dbeta`, await read(dbeta, N, what), ref.dbeta, (j) => U[dgt] * abs(ref.dbeta[j]) + 8 * sqrt(M) * EPS32 * sDy[j] + TINY[dgt]);
    }
  });

  test('backward after forward (saved statistics) matches central differences of the float64 forward', async () => {
    for (const [M, N] of [[3, 7], [2, 1], [4, 33]]) {
      const eps = 1e-5;
      const x = await inp(normal(M * N, 1.5, 0.3), F32, device);
      const gamma = await inp(normal(N, 0.5, 1), F32, device), beta = await inp(normal(N), F32, device);
      const w = await inp(normal(M * N), F32, device); // L = sum w * y, so dy = w
      const y = out(M * N, F32, device), mean = out(M, F32, device), rstd = out(M, F32, device);
      native().layerNormForward({ x: x.h, xType: 0, gamma: gamma.h, beta: beta.h, gType: 0, M, N, eps, y: y.handle(), yType: 0, mean: mean.handle(), rstd: rstd.handle() });
      const dx = out(M * N, F32, device), dgamma = out(N, F32, device), dbeta = out(N, F32, device);
      native().layerNormBackward({ dy: w.h, dyType: 0, x: x.h, xType: 0, gamma: gamma.h, gType: 0, mean: mean.handle(), rstd: rstd.handle(),
        M, N, dx: dx.handle(), dxType: 0, dgamma: dgamma.handle(), dbeta: dbeta.handle(), dgType: 0 });
      const L = (xv: Float64Array, gv: Float64Array, bv: Float64Array) => {
        const r = layerNorm64(xv, gv, bv, M, N, fround(eps)).y;
        let s = 0;
        for (let i = 0; i < M * N; i++) s += w.v[i] * r[i];
        return s;
      };
      const X = Float64Array.from(x.v), G = Float64Array.from(gamma.v), Bv = Float64Array.from(beta.v);
      const h = 1e-5;
      const fdOf = (arr: Float64Array) => Array.from(arr, (_, i) => {
        const old = arr[i];
        arr[i] = old + h; const lp = L(X, G, Bv);
        arr[i] = old - h; const lm = L(X, G, Bv);
        arr[i] = old;
        return (lp - lm) / (2 * h);
      });
      const what = `LN fd ${M}x${N}`;
      expectClose(`${what}: dx`, await read(dx, M * N, what), fdOf(X), (i) => 2e-5 * (1 + abs(gamma.v[i % N])));
      expectClose(`${what}: dgamma`, await read(dgamma, N, what), fdOf(G), () => 1e-5 * M);
      expectClose(`${what}: dbeta`, await read(dbeta, N, what), fdOf(Bv), () => 1e-5 * M);
    }
  });
});

describeEachBackend('dropout', (device) => {
  const run = async (x: { h: StorageHandle }, xt: DType, yt: DType, n: number, p: number, seedHi: number, seedLo: number) => {
    const y = out(n, yt, device);
    native().dropout({ x: x.h, xType: dc(xt), y: y.handle(), yType: dc(yt), n, p, seedHi, seedLo });
    return read(y, n, `dropout n=${n} p=${p}`);
  };
  const nonZero = (n: number) => Float32Array.from(normal(n), (v) => (v < 0 ? -0.5 : 0.5) + v);

  test('the mask is the documented counter hash of (seed, index), whatever the size or dtype', async () => {
    for (const p of [0.5, fround(rng() * 0.98)]) {
      const seedHi = randU32(), seedLo = randU32(), n = 40000; // several element blocks
      const ones = await inp(new Float32Array(n).fill(1), F32, device);
      const got = await run(ones, F32, F32, n, p, seedHi, seedLo);
      const scale = fround(1 / fround(1 - fround(p)));
      expectExact(`mask p=${p}`, got, Array.from(got, (_, i) => (keepRef(seedHi, seedLo, i, p) ? scale : 0)));
      // a prefix of a longer call, in bfloat16, has the same mask
      const got2 = await run(await inp(new Float32Array(70001).fill(1), BF16, device), BF16, F16, 70001, p, seedHi, seedLo);
      for (let i = 0; i < n; i++) if ((got2[i] !== 0) !== (got[i] !== 0)) throw new Error(`mask differs at ${i} between calls`);
    }
  });

  test('kept fraction ~ 1 - p (5 sigma), kept values exactly x * (1 / (1 - p)) in float32, dropped exactly 0', async () => {
    const n = 200000;
    const x = await inp(nonZero(n), F32, device);
    for (const p of [0.1, 0.5, 0.9, fround(rng() * 0.95)]) {
      const got = await run(x, F32, F32, n, p, randU32(), randU32());
      const scale = fround(1 / fround(1 - fround(p)));
      let kept = 0;
      for (let i = 0; i < n; i++) {
        if (got[i] === 0) continue;
        kept++;
        if (got[i] !== fround(x.v[i] * scale)) throw new Error(`p=${p}: element ${i}: ${got[i]} != ${x.v[i]} * ${scale}`);
      }
      const mu = n * (1 - p), sigma = sqrt(n * p * (1 - p));
      if (!(abs(kept - mu) <= 5 * sigma)) throw new Error(`p=${p}: kept ${kept} of ${n}, expected ${mu} ± ${5 * sigma}`);
      // each half separately (the blocks beyond the first are drawn too)
      const half = got.subarray(n / 2).reduce((a, v) => a + (v !== 0 ? 1 : 0), 0);
      if (!(abs(half - mu / 2) <= 5 * sqrt((n / 2) * p * (1 - p)))) throw new Error(`p=${p}: second half kept ${half}`);
    }
    // p = 0.5 and 0.75: the multiplier is exact, so kept = x / (1 - p) exactly
    for (const p of [0.5, 0.75]) {
      const got = await run(x, F32, F32, 1000, p, 7, 9);
      for (let i = 0; i < 1000; i++) if (got[i] !== 0 && got[i] !== fround(x.v[i] / (1 - p))) throw new Error(`p=${p}: ${i}`);
    }
  });

  test('same seed: same output; other seeds (low or high word): other masks; backward = same call on dy', async () => {
    const n = 50000, p = 0.3;
    const x = await inp(nonZero(n), F32, device), dy = await inp(nonZero(n), F32, device);
    const hi = randU32(), lo = randU32();
    const a = await run(x, F32, F32, n, p, hi, lo), b = await run(x, F32, F32, n, p, hi, lo);
    expectExact('same seed', b, a);
    const differ = (u: Float32Array, v: Float32Array) => u.reduce((s, _, i) => s + ((u[i] === 0) !== (v[i] === 0) ? 1 : 0), 0);
    const expected = n * 2 * p * (1 - p); // independent masks disagree with probability 2p(1-p)
    for (const [h2, l2] of [[hi, (lo + 1) >>> 0], [(hi + 1) >>> 0, lo], [(hi ^ 0x80000000) >>> 0, lo]]) {
      const c = await run(x, F32, F32, n, p, h2, l2);
      const dcount = differ(a, c);
      if (!(abs(dcount - expected) < 5 * sqrt(expected))) throw new Error(`seed ${h2}:${l2}: ${dcount} mask differences, expected ~${expected}`);
    }
    const dx = await run(dy, F32, F32, n, p, hi, lo);
    const scale = fround(1 / fround(1 - p));
    expectExact('backward', dx, Array.from(dy.v, (v, i) => (a[i] === 0 ? 0 : fround(v * scale))));
  });

  test('p = 0 is the identity (bitwise); low-precision dtypes round x * scale once', async () => {
    const xs = nonZero(1000);
    xs[3] = -0; xs[4] = 1e-30; xs[5] = -3.4e38;
    const x = await inp(xs, F32, device);
    const got = await run(x, F32, F32, 1000, 0, randU32(), randU32());
    expectExact('p=0', got, x.v);
    expect(Object.is(got[3], -0)).toBe(true);
    for (const [xt, yt] of [[F16, F16], [BF16, BF16], [F32, F16], [BF16, F32]] as [DType, DType][]) {
      const xl = await inp(nonZero(3000), xt, device);
      const hi = randU32(), lo = randU32(), p = 0.4;
      const ref32 = await run(xl, xt, F32, 3000, p, hi, lo);
      const got2 = await run(xl, xt, yt, 3000, p, hi, lo);
      const scale = fround(1 / fround(1 - p));
      expectExact(`dropout ${xt}->${yt} (f32 path)`, ref32, Array.from(xl.v, (v, i) => (keepRef(hi, lo, i, p) ? fround(v * scale) : 0)));
      expectExact(`dropout ${xt}->${yt}`, got2, roundTo(yt, ref32));
    }
  });
});

describeEachBackend('bad arguments through the raw binding', (device) => {
  test('buffers too small are E_SHAPE; bad p / smoothing / eps / act are E_ARG; bad dtype E_DTYPE; outputs untouched', async () => {
    const b = native();
    const x = await inp(normal(12), F32, device);
    const y = out(12, F32, device), small = track(mixprec.full([5], NaN, { device }));
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 0, y: small.handle(), yType: 0, n: 12 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.activationForward({ act: 3 as ActCode, x: x.h, xType: 0, y: y.handle(), yType: 0, n: 12 }))).toBe('E_ARG');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 5 as 0, y: y.handle(), yType: 0, n: 12 }))).toBe('E_DTYPE');
    expect(codeOf(() => b.activationBackward({ act: 2, dy: x.h, dyType: 0, z: small.handle(), zType: 0, dx: y.handle(), dxType: 0, n: 12 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.activationForward({ act: 1, x: x.h, xType: 0, y: y.handle(), yType: 0, n: -1 }))).toBe('E_SHAPE');
    expect(codeOf(() => (b.activationForward as (a: unknown) => void)(7))).toBe('E_ARG');
    expect(codeOf(() => b.columnSum({ x: x.h, xType: 0, M: 4, N: 4, out: y.handle(), outType: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.columnSum({ x: x.h, xType: 0, M: 2, N: 6, out: small.handle(), outType: 0 }))).toBe('E_SHAPE');

    const labels = labelsOn(new Int32Array([0, 1, 2]), device), metrics = metricsOut(device);
    const ce = { logits: x.h, logitsType: 0 as const, labels, B: 3, C: 4, smoothing: 0, lossScale: 1, dlogits: y.handle(), dType: 0 as const, metrics: metrics.handle(), correctOffset: 4 };
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, C: 5 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, B: 4, C: 3 }))).toBe('E_SHAPE'); // labels hold 3
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, dlogits: small.handle() }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, correctOffset: 16 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, lossOffset: 2 }))).toBe('E_ARG');
    expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, B: 0 }))).toBe('E_SHAPE');
    for (const s of [1.5, -0.1, NaN]) expect(codeOf(() => b.softmaxCrossEntropy({ ...ce, smoothing: s }))).toBe('E_ARG');
    expect(codeOf(() => b.mseLoss({ pred: x.h, predType: 0, target: small.handle(), targetType: 0, n: 12, lossScale: 1, metrics: metrics.handle() }))).toBe('E_SHAPE');
    expect(codeOf(() => b.mseLoss({ pred: x.h, predType: 0, target: x.h, targetType: 0, n: 12, lossScale: 1, dpred: small.handle(), dType: 0, metrics: metrics.handle() }))).toBe('E_SHAPE');

    const g = await inp(normal(4), F32, device), mean = out(3, F32, device), rstd = out(3, F32, device);
    const ln = { x: x.h, xType: 0 as const, gamma: g.h, beta: g.h, gType: 0 as const, M: 3, N: 4, eps: 1e-5, y: y.handle(), yType: 0 as const, mean: mean.handle(), rstd: rstd.handle() };
    expect(codeOf(() => b.layerNormForward({ ...ln, M: 4 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.layerNormForward({ ...ln, N: 6, M: 2, gamma: g.h }))).toBe('E_SHAPE'); // gamma holds 4
    expect(codeOf(() => b.layerNormForward({ ...ln, eps: -1 }))).toBe('E_ARG');
    const lnb = { dy: x.h, dyType: 0 as const, x: x.h, xType: 0 as const, gamma: g.h, gType: 0 as const, mean: mean.handle(), rstd: small.handle(),
      M: 3, N: 4, dx: y.handle(), dxType: 0 as const, dgamma: small.handle(), dbeta: small.handle(), dgType: 0 as const };
    expect(codeOf(() => b.layerNormBackward({ ...lnb, M: 6, N: 2 }))).toBe('E_SHAPE'); // rstd holds 5 < 6
    expect(codeOf(() => b.layerNormBackward({ ...lnb, N: 6, M: 2, gamma: x.h }))).toBe('E_SHAPE'); // dgamma holds 5 < 6
    for (const p of [1, -0.1, NaN, 2]) expect(codeOf(() => b.dropout({ x: x.h, xType: 0, y: y.handle(), yType: 0, n: 12, p, seedHi: 0, seedLo: 1 }))).toBe('E_ARG');
    expect(codeOf(() => b.dropout({ x: x.h, xType: 0, y: small.handle(), yType: 0, n: 12, p: 0.5, seedHi: 0, seedLo: 1 }))).toBe('E_SHAPE');

    // nothing was written by the rejected calls
    for (const t of [y, small, mean, rstd]) expect(Array.from(await t.toFloat32()).every(Number.isNaN)).toBe(true);
    const m = readMetrics(metrics);
    expect(Array.from(m.i)).toEqual([NAN_BITS, NAN_BITS, NAN_BITS, NAN_BITS]);
  });
});

// CPU only: the reductions have a fixed order, so the bits do not depend on the thread count.
test('cpu: every op gives the same bits with 1, 2, 3 and 8 threads (fixed reduction order)', () => {
  const root = path.join(__dirname, '..');
  const seed = randU32();
  const script = `
    const b = require('bindings')({ bindings: 'mixprec', module_root: ${JSON.stringify(root)} });
    let s = ${seed} >>> 0;
    const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 4294967296) * 2 - 1; };
    const up = (n, dt, k = 1) => { const h = b.alloc('cpu', n * (dt ? 2 : 4)); const v = new Float32Array(n); for (let i = 0; i < n; i++) v[i] = rnd() * k; b.upload(h, v, dt); return h; };
    const outs = [];
    const out = (bytes) => { const h = b.alloc('cpu', bytes); outs.push([h, bytes]); return h; };
    b.columnSum({ x: up(5000 * 33, 1), xType: 1, M: 5000, N: 33, out: out(33 * 4), outType: 0 });
    const lab = new Int32Array(300); for (let i = 0; i < 300; i++) lab[i] = Math.floor((rnd() + 1) / 2 * 257) % 257;
    const hl = b.alloc('cpu', 1200); b.writeBytes(hl, new Uint8Array(lab.buffer));
    b.softmaxCrossEntropy({ logits: up(300 * 257, 0, 4), logitsType: 0, labels: hl, B: 300, C: 257, smoothing: 0.1, lossScale: 1,
      dlogits: out(300 * 257 * 4), dType: 0, metrics: out(8), lossOffset: 0, correctOffset: 4 });
    b.mseLoss({ pred: up(100000, 0), predType: 0, target: up(100000, 2), targetType: 2, n: 100000, lossScale: 2, dpred: out(200000), dType: 1, metrics: out(4) });
    const x = up(5000 * 33, 0, 3), g = up(33, 0), mean = out(20000), rstd = out(20000);
    b.layerNormForward({ x, xType: 0, gamma: g, beta: up(33, 0), gType: 0, M: 5000, N: 33, eps: 1e-5, y: out(5000 * 33 * 4), yType: 0, mean, rstd });
    b.layerNormBackward({ dy: up(5000 * 33, 0), dyType: 0, x, xType: 0, gamma: g, gType: 0, mean, rstd, M: 5000, N: 33,
      dx: out(5000 * 33 * 4), dxType: 0, dgamma: out(33 * 4), dbeta: out(33 * 4), dgType: 0 });
    b.layerNormForward({ x: up(300 * 257, 1), xType: 1, gamma: up(257, 0), beta: up(257, 0), gType: 0, M: 300, N: 257, eps: 1e-5,
      y: out(300 * 257 * 2), yType: 1, mean: out(1200), rstd: out(1200) });
    b.dropout({ x: up(100000, 0), xType: 0, y: out(400000), yType: 0, n: 100000, p: 0.3, seedHi: 1, seedLo: 2 });
    const hash = require('crypto').createHash('sha256');
    for (const [h, n] of outs) hash.update(b.readBytes(h, n));
    console.log(hash.digest('hex'));`;
  const digests = [1, 2, 3, 8].map((threads) => {
    const r = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, MIXPREC_NUM_THREADS: String(threads) } });
    if (r.status !== 0) throw new Error(`child with ${threads} threads failed: ${r.stderr}`);
    return r.stdout.trim();
  });
  expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
  expect(new Set(digests).size).toBe(1);
});
