// The raw native attention ops (attentionForward / attentionBackward, AttentionArgs and
// AttentionBackwardArgs in native/core/op_args.h) through the binding, on every available backend,
// against a float64 reference written here: naive softmax attention (the whole score matrix, the
// causal mask j > i, the documented dropout mask re-derived in BigInt from native/shared/nn.h) and
// its analytic gradient (dS = P * (dP - rowsum(dP * P)), with the dropout mask on dP).
//
// Inputs are drawn fresh each run (the seed is logged); the storage around every strided view is
// NaN, so a read outside a view poisons the result, and every output starts as NaN, so a write
// outside its view (or a missed element) is seen. Tolerances come from the FP32 error of each
// sum (unit roundoff times the number of terms times the sum of |terms|) plus the rounding of a
// stored output to its dtype; FP16 / BF16 inputs are compared against the reference on the values
// as stored. On CUDA, FP16 / BF16 inputs also have P (forward), Pd and dS (backward) rounded to the
// input dtype before the products (AttentionArgs' contract): that rounding adds U * sum |terms| (and
// half the smallest subnormal per term) to those tolerances; the CPU's stay those of FP32 math.
//
// Imports only src/native, src/float16 (through test/helpers/raw) and test/helpers.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import type { AttentionArgs, AttentionBackwardArgs, StorageHandle } from '../binding';
import { native } from '../src/native';
import { fastRandom } from './helpers/random';
import {
  BF16, DType, Device, EPS32, F16, F32, TINY, U, alloc, bytesOf, codeOf, dc, describeEachBackend, expectClose,
  expectExact, makeRng, releaseAll, roundTo,
} from './helpers/raw';

const rng = makeRng('attention_native.test');
// Math's functions held locally: a global lookup inside jest's sandbox is slow in hot loops.
const { abs, cos, exp, floor, fround, log, max, min, sqrt } = Math;
const TWO_PI = 2 * Math.PI;
/** Bulk randomness: a local mulberry32 seeded from the logged test rng (so a run still replays). */
const fastRng = fastRandom(rng);
function normal(n: number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = fastRng() || 1e-12, v = fastRng();
    a[i] = scale * sqrt(-2 * log(u)) * cos(TWO_PI * v);
  }
  return a;
}
const randU32 = () => floor(rng() * 2 ** 32) >>> 0;

afterEach(releaseAll);

// ---------------------------------------------------------------------------------------------
// The dropout mask (native/shared/nn.h): probability (b, h, i, j) is kept iff
// (hash_u32(seed, ((b*H + h)*Tq + i)*Tk + j) >> 8) / 2^24 >= p, hash_u32 the splitmix64 finaliser
// of seed + (index + 1) * golden ratio, top 32 bits. Re-derived here in BigInt.

const MASK64 = (1n << 64n) - 1n;
function keepMask(seedHi: number, seedLo: number, n: number, p: number): Uint8Array {
  const keep = new Uint8Array(n);
  const seed = (BigInt(seedHi) << 32n) | BigInt(seedLo), pf = fround(p);
  let z0 = seed;
  for (let i = 0; i < n; i++) {
    z0 = (z0 + 0x9e3779b97f4a7c15n) & MASK64; // seed + (i + 1) * golden ratio
    let z = z0;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    const bits = Number((z ^ (z >> 31n)) >> 32n);
    keep[i] = (bits >>> 8) / 2 ** 24 >= pf ? 1 : 0;
  }
  return keep;
}
/** dropout_scale(p) as the kernels compute it: 1 / (1 - p) in FP32. */
const dropScale = (p: number) => fround(1 / fround(1 - fround(p)));

// ---------------------------------------------------------------------------------------------
// Strided [B, H, T, D] views in storage that is NaN everywhere else.

type Layout = 'bhtd' | 'bthd' | 'padded';
interface ViewSpec { offset: number; strides: number[]; storage: number }
function viewSpec(layout: Layout, B: number, H: number, T: number, D: number): ViewSpec {
  if (layout === 'bhtd') return { offset: 0, strides: [H * T * D, T * D, D], storage: B * H * T * D };
  if (layout === 'bthd') return { offset: 0, strides: [T * H * D, D, H * D], storage: B * T * H * D };
  // rows D + 3 apart, heads 5 more than their rows, batch items 2 more, 7 elements before the first
  const st = D + 3, sh = T * st + 5, sb = H * sh + 2;
  return { offset: 7, strides: [sb, sh, st], storage: 7 + (B - 1) * sb + (H - 1) * sh + (T - 1) * st + D };
}
/** Calls f(storage index, logical index) for every element of the view, logical = ((b*H + h)*T + t)*D + d. */
function forView(v: ViewSpec, B: number, H: number, T: number, D: number, f: (s: number, l: number) => void): void {
  let l = 0;
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let t = 0; t < T; t++) {
    const base = v.offset + b * v.strides[0] + h * v.strides[1] + t * v.strides[2];
    for (let d = 0; d < D; d++) f(base + d, l++);
  }
}
interface Tensor4 { h: StorageHandle; spec: ViewSpec; dtype: DType; B: number; H: number; T: number; D: number }
/** Storage holding the given views (each logical [B, H, T, D] values, rounded to dtype), NaN elsewhere. */
function storageWith(device: Device, dtype: DType, size: number, parts: { spec: ViewSpec; vals: Float64Array; B: number; H: number; T: number; D: number }[]): StorageHandle {
  const all = new Float32Array(size).fill(NaN);
  for (const p of parts) forView(p.spec, p.B, p.H, p.T, p.D, (s, l) => { all[s] = p.vals[l]; });
  const h = alloc(device, size * bytesOf(dtype));
  native().upload(h, roundTo(dtype, all), dc(dtype));
  return h;
}
/** The values a dtype stores, as float64. */
const stored = (dtype: DType, x: Float64Array) => Float64Array.from(roundTo(dtype, x));
/** An output view, all NaN (3 more NaN elements past its end). */
function outView(device: Device, dtype: DType, layout: Layout, B: number, H: number, T: number, D: number): Tensor4 {
  const spec = viewSpec(layout, B, H, T, D);
  const size = spec.storage + 3;
  const h = alloc(device, size * bytesOf(dtype));
  native().upload(h, new Float32Array(size).fill(NaN), dc(dtype));
  return { h, spec: { ...spec, storage: size }, dtype, B, H, T, D };
}
/** The view's elements (logical order); every other element of the storage must still be NaN. */
function readView(t: Tensor4, what: string): Float64Array {
  const all = native().download(t.h, dc(t.dtype), t.spec.storage);
  const res = new Float64Array(t.B * t.H * t.T * t.D), inView = new Uint8Array(all.length);
  forView(t.spec, t.B, t.H, t.T, t.D, (s, l) => { res[l] = all[s]; inView[s] = 1; });
  for (let s = 0; s < all.length; s++)
    if (!inView[s] && !Number.isNaN(all[s])) throw new Error(`${what}: storage element ${s} outside the view was written`);
  return res;
}
function nanFloats(device: Device, n: number): StorageHandle {
  const h = alloc(device, n * 4);
  native().upload(h, new Float32Array(n).fill(NaN), 0);
  return h;
}
const readFloats = (h: StorageHandle, n: number) => Float64Array.from(native().download(h, 0, n));

// ---------------------------------------------------------------------------------------------
// The float64 reference

interface Case {
  B: number; H: number; Tq: number; Tk: number; D: number; causal: boolean; p: number; scale: number;
  type: DType; dType: DType;
  /** q / k / v layout ('packed': one [B, T, 3, H, D] buffer, Tq = Tk), and that of out / dout and of the gradients. */
  inLayout: Layout | 'packed'; outLayout: Layout; gradLayout: Layout;
  /** Standard deviation of q and k (large values: scores far apart, the online max moves). */
  mag?: number;
}
const caseName = (c: Case) =>
  `B=${c.B} H=${c.H} Tq=${c.Tq} Tk=${c.Tk} D=${c.D}${c.causal ? ' causal' : ''}${c.p ? ` p=${c.p}` : ''} scale=${c.scale} ${c.type}->${c.dType} ${c.inLayout}/${c.outLayout}/${c.gradLayout}`;

interface Forward64 {
  out: Float64Array; outTol: Float64Array; lse: Float64Array; lseTol: Float64Array;
  P: Float64Array; Pd: Float64Array; relP: Float64Array; // [B, H, Tq, Tk]; relP: per row, the relative error bound of P
}
/**
 * Whether the backend rounds the probabilities (forward), Pd and dS (backward) to the input dtype
 * before the products: CUDA with FP16 / BF16 inputs (the CPU keeps them in FP32).
 */
const roundsProbs = (device: Device, c: Case) => device === 'cuda' && c.type !== F32;

/** Visible keys of query i: j < keyEnd (causal: j <= i). */
const keyEnd = (c: Case, i: number) => (c.causal ? min(c.Tk, i + 1) : c.Tk);

function forward64(c: Case, q: Float64Array, k: Float64Array, v: Float64Array, keep: Uint8Array | null, roundP = false): Forward64 {
  const { B, H, Tq, Tk, D } = c, sc = fround(c.scale), ds = c.p ? dropScale(c.p) : 1;
  const out = new Float64Array(B * H * Tq * D), outTol = new Float64Array(out.length);
  const lse = new Float64Array(B * H * Tq), lseTol = new Float64Array(lse.length), relP = new Float64Array(lse.length);
  const P = new Float64Array(B * H * Tq * Tk), Pd = new Float64Array(P.length);
  const s = new Float64Array(Tk);
  for (let bh = 0; bh < B * H; bh++) {
    const qo = bh * Tq * D, ko = bh * Tk * D;
    for (let i = 0; i < Tq; i++) {
      const row = bh * Tq + i, pr = row * Tk, end = keyEnd(c, i);
      let m = -Infinity, qk = 0;
      for (let j = 0; j < end; j++) {
        let acc = 0, a = 0;
        for (let d = 0; d < D; d++) { const t = q[qo + i * D + d] * k[ko + j * D + d]; acc += t; a += abs(t); }
        s[j] = sc * acc;
        qk = max(qk, abs(sc) * a);
        m = max(m, s[j]);
      }
      let l = 0;
      for (let j = 0; j < end; j++) l += exp(s[j] - m);
      for (let j = 0; j < end; j++) {
        P[pr + j] = exp(s[j] - m) / l;
        Pd[pr + j] = keep && !keep[pr + j] ? 0 : P[pr + j] * ds;
      }
      lse[row] = m + log(l);
      // FP32: each score within (D + 1) u sum|q k| |scale|; the max, the exps, the rescales and the
      // sum of `end` terms add a few such errors and `end` roundings to each probability.
      const rel = EPS32 * (3 * (D + 4) * qk + 2 * end + 32);
      relP[row] = rel;
      lseTol[row] = rel + 2 * EPS32 * abs(lse[row]);
      for (let d = 0; d < D; d++) {
        let acc = 0, a = 0;
        for (let j = 0; j < end; j++) { const t = Pd[pr + j] * v[ko + j * D + d]; acc += t; a += abs(t); }
        out[qo + i * D + d] = acc;
        outTol[qo + i * D + d] = 2 * (rel + EPS32 * (end + 2)) * a + U[c.type] * abs(acc) + TINY[c.type];
        if (roundP) {
          // P * keep rounded to the input dtype (the 1 / (1 - p) applied after): U |Pd v| per term, or
          // half the smallest subnormal times ds |v| for a kept subnormal probability.
          let av = 0;
          for (let j = 0; j < end; j++) if (!keep || keep[pr + j]) av += abs(v[ko + j * D + d]);
          outTol[qo + i * D + d] += U[c.type] * a + TINY[c.type] * ds * av;
        }
      }
    }
  }
  return { out, outTol, lse, lseTol, P, Pd, relP };
}

interface Backward64 { dq: Float64Array; dk: Float64Array; dv: Float64Array; dqTol: Float64Array; dkTol: Float64Array; dvTol: Float64Array }
/** The analytic gradient, with Di = sum_d dout * out over the given (stored) out. */
function backward64(c: Case, f: Forward64, q: Float64Array, k: Float64Array, v: Float64Array, out: Float64Array, dout: Float64Array,
  keep: Uint8Array | null, roundP = false): Backward64 {
  const { B, H, Tq, Tk, D } = c, sc = fround(c.scale), ds = c.p ? dropScale(c.p) : 1;
  const dq = new Float64Array(B * H * Tq * D), dqA = new Float64Array(dq.length), dqE = new Float64Array(dq.length);
  const dk = new Float64Array(B * H * Tk * D), dkA = new Float64Array(dk.length), dkE = new Float64Array(dk.length);
  const dv = new Float64Array(B * H * Tk * D), dvA = new Float64Array(dv.length), dvE = new Float64Array(dv.length);
  const dS = new Float64Array(Tk), eS = new Float64Array(Tk);
  // roundP: sum over the terms of |the other factor| (kept terms only for dv), the subnormal floor of
  // the rounding of Pd / dS.
  const dqF = roundP ? new Float64Array(dq.length) : null, dkF = roundP ? new Float64Array(dk.length) : null;
  const dvF = roundP ? new Float64Array(dv.length) : null;
  for (let bh = 0; bh < B * H; bh++) {
    const qo = bh * Tq * D, ko = bh * Tk * D;
    for (let i = 0; i < Tq; i++) {
      const row = bh * Tq + i, pr = row * Tk, end = keyEnd(c, i);
      let Di = 0, DiA = 0;
      for (let d = 0; d < D; d++) { const t = dout[qo + i * D + d] * out[qo + i * D + d]; Di += t; DiA += abs(t); }
      const eDi = (D + 2) * EPS32 * DiA;
      // P in the backward comes from the forward's lse: its error adds to the scores'.
      const relP = f.relP[row] + f.lseTol[row];
      for (let j = 0; j < end; j++) {
        let dpd = 0, a = 0;
        for (let d = 0; d < D; d++) { const t = dout[qo + i * D + d] * v[ko + j * D + d]; dpd += t; a += abs(t); }
        const kept = !keep || keep[pr + j];
        const dp = kept ? dpd * ds : 0, edp = kept ? ((D + 2) * EPS32 * a + EPS32 * abs(dpd)) * ds : 0;
        const p = f.P[pr + j];
        dS[j] = p * (dp - Di);
        eS[j] = p * (relP * abs(dp - Di) + edp + eDi + 2 * EPS32 * abs(dp - Di));
        const pd = f.Pd[pr + j], epd = relP * pd;
        for (let d = 0; d < D; d++) {
          const g = dout[qo + i * D + d];
          dv[ko + j * D + d] += pd * g; dvA[ko + j * D + d] += abs(pd * g); dvE[ko + j * D + d] += epd * abs(g);
        }
        if (dvF && kept) for (let d = 0; d < D; d++) dvF[ko + j * D + d] += ds * abs(dout[qo + i * D + d]);
      }
      for (let j = 0; j < end; j++)
        for (let d = 0; d < D; d++) {
          const kv = k[ko + j * D + d], qv = q[qo + i * D + d];
          dq[qo + i * D + d] += dS[j] * kv; dqA[qo + i * D + d] += abs(dS[j] * kv); dqE[qo + i * D + d] += eS[j] * abs(kv);
          dk[ko + j * D + d] += dS[j] * qv; dkA[ko + j * D + d] += abs(dS[j] * qv); dkE[ko + j * D + d] += eS[j] * abs(qv);
          if (dqF && dkF) { dqF[qo + i * D + d] += abs(kv); dkF[ko + j * D + d] += abs(qv); }
        }
    }
  }
  const u = U[c.dType], tiny = TINY[c.dType], uIn = U[c.type], tinyIn = TINY[c.type];
  const finish = (g: Float64Array, A: Float64Array, E: Float64Array, F: Float64Array | null, n: number, factor: number) => {
    const tol = new Float64Array(g.length);
    for (let x = 0; x < g.length; x++) {
      g[x] *= factor;
      tol[x] = 2 * abs(factor) * (E[x] + (n + 2) * EPS32 * A[x]) + u * abs(g[x]) + tiny;
      // Pd / dS rounded to the input dtype before the product: U per term of the sum, or the
      // subnormal floor times the other factor.
      if (F) tol[x] += abs(factor) * (uIn * A[x] + tinyIn * F[x]);
    }
    return tol;
  };
  const dqTol = finish(dq, dqA, dqE, dqF, Tk, sc), dkTol = finish(dk, dkA, dkE, dkF, Tq, sc), dvTol = finish(dv, dvA, dvE, dvF, Tq, 1);
  return { dq, dk, dv, dqTol, dkTol, dvTol };
}

// ---------------------------------------------------------------------------------------------
// One case end to end: upload, forward (with and without lse), backward, compare.

interface Inputs { q: Tensor4; k: Tensor4; v: Tensor4; qv: Float64Array; kv: Float64Array; vv: Float64Array }
function makeInputs(device: Device, c: Case): Inputs {
  const { B, H, Tq, Tk, D, type } = c, mag = c.mag ?? 1;
  const qv = stored(type, normal(B * H * Tq * D, mag)), kv = stored(type, normal(B * H * Tk * D, mag)), vv = stored(type, normal(B * H * Tk * D));
  if (c.inLayout === 'packed') {
    if (Tq !== Tk) throw new Error('packed q / k / v need Tq = Tk');
    const T = Tq, st = [T * 3 * H * D, D, 3 * H * D], size = B * T * 3 * H * D;
    const specs = [0, 1, 2].map((s) => ({ offset: s * H * D, strides: st, storage: size }));
    const h = storageWith(device, type, size, [qv, kv, vv].map((vals, s) => ({ spec: specs[s], vals, B, H, T, D })));
    const t = (s: number): Tensor4 => ({ h, spec: specs[s], dtype: type, B, H, T, D });
    return { q: t(0), k: t(1), v: t(2), qv, kv, vv };
  }
  const one = (vals: Float64Array, T: number): Tensor4 => {
    const spec = viewSpec(c.inLayout as Layout, B, H, T, D);
    return { h: storageWith(device, type, spec.storage, [{ spec, vals, B, H, T, D }]), spec, dtype: type, B, H, T, D };
  };
  return { q: one(qv, Tq), k: one(kv, Tk), v: one(vv, Tk), qv, kv, vv };
}
function forwardArgs(c: Case, x: Inputs, o: Tensor4, lse: StorageHandle | null, seedHi: number, seedLo: number): AttentionArgs {
  return {
    B: c.B, H: c.H, Tq: c.Tq, Tk: c.Tk, D: c.D, scale: c.scale, causal: c.causal, dropoutP: c.p, seedHi, seedLo, type: dc(c.type),
    qStrides: x.q.spec.strides, kStrides: x.k.spec.strides, vStrides: x.v.spec.strides, outStrides: o.spec.strides,
    q: x.q.h, qOffset: x.q.spec.offset, k: x.k.h, kOffset: x.k.spec.offset, v: x.v.h, vOffset: x.v.spec.offset,
    out: o.h, outOffset: o.spec.offset, lse,
  };
}

function runCase(device: Device, c: Case): void {
  const name = caseName(c), { B, H, Tq, Tk, D } = c;
  const x = makeInputs(device, c);
  const seedHi = randU32(), seedLo = randU32();
  const keep = c.p ? keepMask(seedHi, seedLo, B * H * Tq * Tk, c.p) : null;
  const o = outView(device, c.type, c.outLayout, B, H, Tq, D), lse = nanFloats(device, B * H * Tq + 3);
  native().attentionForward(forwardArgs(c, x, o, lse, seedHi, seedLo));
  const got = readView(o, `${name}: out`), gotLse = readFloats(lse, B * H * Tq + 3);
  for (let i = B * H * Tq; i < gotLse.length; i++) if (!Number.isNaN(gotLse[i])) throw new Error(`${name}: lse past its end was written`);
  const roundP = roundsProbs(device, c);
  const ref = forward64(c, x.qv, x.kv, x.vv, keep, roundP);
  expectClose(`${name}: out`, got, ref.out, (i) => ref.outTol[i]);
  expectClose(`${name}: lse`, gotLse.subarray(0, B * H * Tq), ref.lse, (i) => ref.lseTol[i]);
  // without lse: the same bits
  const o2 = outView(device, c.type, c.outLayout, B, H, Tq, D);
  native().attentionForward(forwardArgs(c, x, o2, null, seedHi, seedLo));
  expectExact(`${name}: out without lse`, readView(o2, `${name}: out without lse`), got);

  const doutVals = stored(c.type, normal(B * H * Tq * D));
  const doSpec = viewSpec(c.outLayout, B, H, Tq, D);
  const dout = storageWith(device, c.type, doSpec.storage, [{ spec: doSpec, vals: doutVals, B, H, T: Tq, D }]);
  const dq = outView(device, c.dType, c.gradLayout, B, H, Tq, D), dk = outView(device, c.dType, c.gradLayout, B, H, Tk, D);
  const dv = outView(device, c.dType, c.gradLayout, B, H, Tk, D);
  const bargs: AttentionBackwardArgs = {
    ...forwardArgs(c, x, o, null, seedHi, seedLo), dType: dc(c.dType), doutStrides: doSpec.strides, dqStrides: dq.spec.strides,
    dkStrides: dk.spec.strides, dvStrides: dv.spec.strides, dout, doutOffset: doSpec.offset, lse,
    dq: dq.h, dqOffset: dq.spec.offset, dk: dk.h, dkOffset: dk.spec.offset, dv: dv.h, dvOffset: dv.spec.offset,
  };
  native().attentionBackward(bargs);
  const g = backward64(c, ref, x.qv, x.kv, x.vv, got, doutVals, keep, roundP);
  expectClose(`${name}: dv`, readView(dv, `${name}: dv`), g.dv, (i) => g.dvTol[i]);
  expectClose(`${name}: dk`, readView(dk, `${name}: dk`), g.dk, (i) => g.dkTol[i]);
  expectClose(`${name}: dq`, readView(dq, `${name}: dq`), g.dq, (i) => g.dqTol[i]);
}

const base: Case = { B: 1, H: 1, Tq: 1, Tk: 1, D: 8, causal: false, p: 0, scale: 1, type: F32, dType: F32, inLayout: 'bhtd', outLayout: 'bhtd', gradLayout: 'bhtd' };
const make = (o: Partial<Case>): Case => {
  const c = { ...base, ...o };
  return { ...c, scale: o.scale ?? 1 / sqrt(c.D) };
};

describeEachBackend('attention forward / backward vs float64', (device) => {
  test('T = 1, 7, 65, 130 (not multiples of the 64-row blocks), causal and not, several D', () => {
    for (const T of [1, 7, 65, 130]) for (const causal of [false, true]) for (const D of T === 130 ? [64] : [5, 16, 40]) {
      runCase(device, make({ Tq: T, Tk: T, D, causal }));
    }
  });

  test('Tq != Tk (non-causal, and causal: top-left aligned, keys past the last query get no gradient)', () => {
    for (const [Tq, Tk] of [[1, 9], [5, 70], [130, 3], [70, 129], [64, 65]]) for (const causal of [false, true])
      runCase(device, make({ Tq, Tk, D: 24, causal }));
  });

  test('several heads and batch items; strided views (padded rows / heads, [B, T, H, D] out)', () => {
    runCase(device, make({ B: 2, H: 3, Tq: 33, Tk: 33, D: 16, causal: true }));
    runCase(device, make({ B: 3, H: 2, Tq: 20, Tk: 71, D: 12, inLayout: 'padded', outLayout: 'bthd', gradLayout: 'padded' }));
    runCase(device, make({ B: 2, H: 2, Tq: 66, Tk: 66, D: 8, causal: true, inLayout: 'bthd', outLayout: 'padded', gradLayout: 'bthd' }));
  });

  test('q, k, v slices of one packed [B, T, 3, H, D] buffer, out and grads in [B, T, H, D]', () => {
    for (const causal of [true, false]) runCase(device, make({ B: 2, H: 4, Tq: 70, Tk: 70, D: 16, causal, inLayout: 'packed', outLayout: 'bthd', gradLayout: 'bthd' }));
  });

  test('scale: negative, large (scores far apart: the running max moves between key blocks), tiny', () => {
    runCase(device, make({ B: 1, H: 2, Tq: 130, Tk: 130, D: 16, causal: true, scale: -0.6 }));
    runCase(device, make({ B: 1, H: 2, Tq: 140, Tk: 200, D: 16, scale: 2, mag: 2 }));
    runCase(device, make({ B: 1, H: 1, Tq: 9, Tk: 140, D: 16, scale: 1e-3 }));
  });

  test('float16 / bfloat16 inputs and outputs (reference on the stored values)', () => {
    for (const [type, dType] of [[F16, F16], [BF16, BF16], [F16, F32], [BF16, F16], [F32, BF16]] as [DType, DType][])
      runCase(device, make({ B: 2, H: 2, Tq: 67, Tk: 67, D: 20, causal: true, type, dType, inLayout: 'packed', outLayout: 'bthd', gradLayout: 'bthd' }));
    runCase(device, make({ B: 1, H: 3, Tq: 5, Tk: 80, D: 32, type: BF16, dType: F32, inLayout: 'padded' }));
  });

  test('dropout p = 0.3: forward (kept probabilities scaled by 1 / (1 - p)) and backward (the same mask on dP)', () => {
    runCase(device, make({ B: 2, H: 2, Tq: 70, Tk: 70, D: 16, causal: true, p: 0.3 }));
    runCase(device, make({ B: 1, H: 3, Tq: 20, Tk: 130, D: 8, p: 0.3, inLayout: 'padded', outLayout: 'bthd', gradLayout: 'padded' }));
    runCase(device, make({ B: 2, H: 2, Tq: 65, Tk: 65, D: 16, causal: true, p: 0.3, type: BF16, dType: F32, inLayout: 'packed', outLayout: 'bthd', gradLayout: 'bthd' }));
  });

  test('dropout: lse is that of the undropped softmax (the same bits as p = 0); seeds change the output; same call, same bits', () => {
    const c = make({ B: 2, H: 2, Tq: 70, Tk: 90, D: 16, p: 0.3 }), { B, H, Tq, D } = c;
    const x = makeInputs(device, c);
    const run = (p: number, hi: number, lo: number) => {
      const o = outView(device, F32, 'bhtd', B, H, Tq, D), lse = nanFloats(device, B * H * Tq);
      native().attentionForward(forwardArgs({ ...c, p }, x, o, lse, hi, lo));
      return { out: readView(o, 'out'), lse: readFloats(lse, B * H * Tq) };
    };
    const hi = randU32(), lo = randU32();
    const a = run(0.3, hi, lo), b = run(0.3, hi, lo), z = run(0, hi, lo), other = run(0.3, hi, (lo + 1) >>> 0);
    expectExact('same call', b.out, a.out);
    expectExact('lse with dropout', a.lse, z.lse);
    let differ = 0;
    for (let i = 0; i < a.out.length; i++) if (a.out[i] !== other.out[i]) differ++;
    expect(differ).toBeGreaterThan(a.out.length * 0.9);
    // the kept fraction of the mask the reference uses is ~ 1 - p (5 sigma)
    const keep = keepMask(hi, lo, B * H * Tq * c.Tk, 0.3), n = keep.length;
    const kept = keep.reduce((s, k) => s + k, 0), sigma = sqrt(n * 0.3 * 0.7);
    expect(abs(kept - 0.7 * n)).toBeLessThan(5 * sigma);
  });

  test('typed errors: dropoutP outside [0, 1), bad scale, overlaps, too-small storage, bad strides', () => {
    const b = native();
    const c = make({ B: 2, H: 2, Tq: 5, Tk: 6, D: 4 }), { B, H, Tq, Tk, D } = c;
    const x = makeInputs(device, c);
    const o = outView(device, F32, 'bhtd', B, H, Tq, D), lse = nanFloats(device, B * H * Tq);
    const fa = forwardArgs(c, x, o, lse, 1, 2);
    for (const p of [1, 1.5, -0.1, NaN]) expect(codeOf(() => b.attentionForward({ ...fa, dropoutP: p }))).toBe('E_ARG');
    for (const s of [NaN, Infinity]) expect(codeOf(() => b.attentionForward({ ...fa, scale: s }))).toBe('E_ARG');
    const big = nanFloats(device, 200); // q at 0..80, out at 60..140: a partial overlap
    expect(codeOf(() => b.attentionForward({ ...fa, q: big, qOffset: 0, out: big, outOffset: 60 }))).toBe('E_ARG');
    expect(codeOf(() => b.attentionForward({ ...fa, out: x.q.h, outOffset: 0 }))).toBe('E_ARG'); // out is q
    expect(codeOf(() => b.attentionForward({ ...fa, q: big, qOffset: 80, out: big, outOffset: 0, lse: null }))).toBe('no error'); // adjacent: fine
    expect(codeOf(() => b.attentionForward({ ...fa, lse: x.k.h }))).toBe('E_ARG'); // lse overlaps k
    expect(codeOf(() => b.attentionForward({ ...fa, lse: o.h, lseOffset: 4 }))).toBe('E_ARG'); // lse overlaps out
    // out overlapping itself: a zero head stride, rows closer than D, batch items on top of each other
    for (const outStrides of [[H * Tq * D, 0, D], [H * Tq * D, Tq * D, D - 1], [0, Tq * D, D], [D, Tq * D, H * D]])
      expect(codeOf(() => b.attentionForward({ ...fa, outStrides }))).toBe('E_ARG');
    expect(codeOf(() => b.attentionForward({ ...fa, Tq: Tq + 1 }))).toBe('E_SHAPE'); // q's storage holds Tq rows
    expect(codeOf(() => b.attentionForward({ ...fa, lse: nanFloats(device, B * H * Tq - 1) }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionForward({ ...fa, qOffset: 1 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionForward({ ...fa, kStrides: [Tk * D, D] }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionForward({ ...fa, Tk: 0 }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionForward({ ...fa, seedHi: 2 ** 32 }))).toBe('E_ARG');
    expect(codeOf(() => b.attentionForward({ ...fa, type: 3 as 0 }))).toBe('E_DTYPE');

    const dq = outView(device, F32, 'bhtd', B, H, Tq, D), dk = outView(device, F32, 'bhtd', B, H, Tk, D), dv = outView(device, F32, 'bhtd', B, H, Tk, D);
    const st = (T: number) => [H * T * D, T * D, D];
    const ba: AttentionBackwardArgs = {
      ...forwardArgs(c, x, o, null, 1, 2), dType: 0, doutStrides: st(Tq), dqStrides: st(Tq), dkStrides: st(Tk), dvStrides: st(Tk),
      dout: x.q.h, lse, dq: dq.h, dk: dk.h, dv: dv.h,
    };
    expect(codeOf(() => b.attentionBackward({ ...ba, dropoutP: 1 }))).toBe('E_ARG');
    expect(codeOf(() => b.attentionBackward({ ...ba, dq: dk.h }))).toBe('E_ARG'); // dq overlaps dk
    expect(codeOf(() => b.attentionBackward({ ...ba, dv: x.v.h }))).toBe('E_ARG'); // dv overlaps v
    expect(codeOf(() => b.attentionBackward({ ...ba, dq: x.k.h }))).toBe('E_ARG'); // dq overlaps k
    expect(codeOf(() => b.attentionBackward({ ...ba, dq: x.q.h, dqOffset: 0 }))).toBe('E_ARG'); // dq overlaps dout (and q)
    expect(codeOf(() => b.attentionBackward({ ...ba, dkStrides: [H * Tk * D, 0, D] }))).toBe('E_ARG'); // dk overlaps itself
    expect(codeOf(() => b.attentionBackward({ ...ba, dqStrides: [H * Tq * D, Tq * D, 2] }))).toBe('E_ARG');
    expect(codeOf(() => b.attentionBackward({ ...ba, lse: nanFloats(device, B * H * Tq - 1) }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionBackward({ ...ba, dv: nanFloats(device, B * H * Tk * D - 1) }))).toBe('E_SHAPE');
    expect(codeOf(() => b.attentionBackward({ ...ba, dType: 7 as 0 }))).toBe('E_DTYPE');
    // nothing was written by the rejected calls
    for (const t of [o, dq, dk, dv]) expect(Array.from(native().download(t.h, 0, t.spec.storage)).every(Number.isNaN)).toBe(true);
    expect(Array.from(readFloats(lse, B * H * Tq)).every(Number.isNaN)).toBe(true);
  });
}, { everyCpuIsa: true });

// CPU only: each output element's sums have a fixed order, so the bits do not depend on the thread count.
test('cpu: attention forward / backward give the same bits with 1, 2 and 3 threads', () => {
  const root = path.join(__dirname, '..');
  const seed = floor(rng() * 2 ** 32) >>> 0;
  const script = `
    const b = require('bindings')({ bindings: 'mixprec', module_root: ${JSON.stringify(root)} });
    let s = ${seed} >>> 0;
    const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 4294967296) * 2 - 1; };
    const up = (n, dt) => { const h = b.alloc('cpu', n * (dt ? 2 : 4)); const v = new Float32Array(n); for (let i = 0; i < n; i++) v[i] = rnd(); b.upload(h, v, dt); return h; };
    const outs = [];
    const out = (bytes) => { const h = b.alloc('cpu', bytes); outs.push([h, bytes]); return h; };
    for (const [B, H, T, D, causal, p, type, dType] of [[2, 3, 200, 40, true, 0.2, 1, 0], [3, 2, 130, 64, false, 0, 0, 0], [1, 5, 70, 16, true, 0, 2, 2]]) {
      const n = B * H * T * D, es = type ? 2 : 4, gs = dType ? 2 : 4, st = [H * T * D, T * D, D];
      const a = { B, H, Tq: T, Tk: T, D, scale: 0.2, causal, dropoutP: p, seedHi: 3, seedLo: 4, type, qStrides: st, kStrides: st, vStrides: st, outStrides: st,
        q: up(n, type), k: up(n, type), v: up(n, type), out: out(n * es), lse: out(B * H * T * 4) };
      b.attentionForward(a);
      b.attentionBackward({ ...a, dType, doutStrides: st, dqStrides: st, dkStrides: st, dvStrides: st, dout: up(n, type),
        dq: out(n * gs), dk: out(n * gs), dv: out(n * gs) });
    }
    const hash = require('crypto').createHash('sha256');
    for (const [h, n] of outs) hash.update(b.readBytes(h, n));
    console.log(hash.digest('hex'));`;
  const digests = [1, 2, 3].map((threads) => {
    const r = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, MIXPREC_NUM_THREADS: String(threads) } });
    if (r.status !== 0) throw new Error(`child with ${threads} threads failed: ${r.stderr}`);
    return r.stdout.trim();
  });
  expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
  expect(new Set(digests).size).toBe(1);
});
