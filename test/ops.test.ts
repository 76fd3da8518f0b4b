// mixprec.ops forward, on every available backend and float dtype, against the float64 reference
// of test/helpers/ref64.ts on fresh random inputs (the seed is logged): broadcasting in every
// position, views (transposed / permuted / narrowed) as inputs, 0-D to 4-D, size-1 and empty
// dims, hand-worked values, and every typed error.
//
// Tolerances. Each op reads its inputs as stored (the reference is float64 on those ROUNDED
// values), computes in FP32 and rounds its output once into the output dtype. So for every
// element
//     |got - ref| <= U[out] * |ref| + c * 2^-24 * S + TINY[out]
// with U = eps/2 of the output dtype (2^-24 float32, 2^-11 float16, 2^-8 bfloat16), TINY half
// its smallest subnormal (the absolute error of a store near zero), and c * 2^-24 * S the FP32
// arithmetic before the store: S is the sum of the magnitudes FP32 rounding acts on and c the
// length of the longest chain of FP32 operations (Higham's gamma_K = K u for a K-term sum,
// plus a few for exp / log / erf / sqrt, each a few ulps). Per op (derivations at each check):
//   add / sub / mul     S = |ref| (+|s| for a JS-number operand rounded to FP32), c = 2..3
//   relu                exact
//   gelu                S = |x| + |ref| (1 + erf(x/sqrt2) cancels for x << 0), c = 8
//   matmul / linear     S = sum_k |a_ik| |b_kj| (+|c| +|bias|), c = K + 2 (gelu: + its chain)
//   sum / mean          S = sum |x| (mean: / R), c = R + 2
//   softmax             S = (N + 24) |y|: N-term FP32 sum, exp of (x - max) with |x - max| <= 8
//   logSoftmax          S = |y| + N + 24 + 2 ln N (absolute: log of an N-term sum), c = 2
//   layerNorm           S from the statistics' error (at the check), c = 2
//   losses              the same pieces summed over the batch (at the checks)
// A K = 1024 matmul test shows the matmul bound rejects FP16 accumulation (it is simulated in JS
// on the same inputs and must violate the bound the library meets).
import * as mp from '../src';
import { BACKENDS, cudaAvailable, describeEachBackend } from './helpers/backends';
import { makeRng } from './helpers/random';
import * as R from './helpers/ref64';
import {
  awayFromZero, bytesOf, codeOf, codeOfAsync, EPS32, errorOf, expectBound, expectClose, expectExact, FLOAT_DTYPES,
  FloatDType, ints, makeInput, permutation, pick, poison, randInt, readAs, roundF16, shapeRe, TINY, U, values, VIEW_KINDS, ViewKind,
} from './helpers/tensors';

const rng = makeRng('ops.test');
const promote = (a: FloatDType, b: FloatDType): FloatDType => (a === b ? a : 'float32');
const view = (): ViewKind => pick(rng, VIEW_KINDS);
/** A random shape of ndim dims in [lo, hi]. */
const randShape = (nd: number, lo = 1, hi = 4) => Array.from({ length: nd }, () => randInt(rng, lo, hi));

describeEachBackend('ops forward', (device) => {
  const inp = (shape: readonly number[], dtype: FloatDType, o: Partial<Parameters<typeof makeInput>[2]> = {}) =>
    makeInput(rng, shape, { dtype, device, view: view(), ...o });

  for (const dt of FLOAT_DTYPES) {
    // -------------------------------------------------------------------------------------------
    test(`${dt}: add / sub / mul broadcast in every position, views, JS-number operands`, async () => {
      const full4 = [3, 4, 2, 5];
      const cases: [number[], number[]][] = [];
      for (let p = 0; p < 4; p++) {
        const s = [...full4];
        s[p] = 1;
        cases.push([full4, s], [s, full4]);
      }
      cases.push([full4, [5]], [[2, 5], full4], [[4, 1, 5], [3, 1, 2, 1]], [[1], [3, 1]], [[], [2, 3]], [[2, 3], []], [[], []],
        [[0, 3], [3]], [[2, 0, 1], [1, 4]], [[7], [7]]);
      for (let r = 0; r < 6; r++) {
        const out = randShape(randInt(rng, 1, 4));
        const side = () => out.slice(randInt(rng, 0, out.length)).map((d) => (rng() < 0.4 ? 1 : d));
        cases.push([side(), side()]);
      }
      const OPS = [['add', mp.ops.add, R.add], ['sub', mp.ops.sub, R.sub], ['mul', mp.ops.mul, R.mul]] as const;
      for (const [sa, sb] of cases) {
        for (const [name, op, ref] of OPS) {
          const a = await inp(sa, dt), b = await inp(sb, dt);
          const expected = ref(a.v, b.v);
          poison(device, bytesOf(expected.shape, dt));
          const y = op(a.t, b.t);
          const got = await readAs(y, expected.shape, dt);
          // One FP32 op, then one store: U[dt]|ref| + 2^-24 |ref| (double rounding), c = 2.
          expectBound(`${dt} ${name} [${sa}] (${a.kind}) with [${sb}] (${b.kind})`, got, expected, dt, 2);
        }
      }
      // A JS number operand: it may be rounded to FP32 first (|s - fround(s)| <= 2^-24 |s|).
      for (const [name, op, ref] of OPS) {
        const a = await inp(randShape(randInt(rng, 0, 4)), dt);
        const s = (rng() * 4 - 2) * (1 + 1e-9);
        const expected = ref(a.v, s);
        const y = op(a.t, s);
        const got = await readAs(y, a.v.shape, dt); // a JS number does not promote (PyTorch)
        const S = expected.data.map((x) => Math.abs(x) + Math.abs(s) * (name === 'mul' ? 0 : 1));
        expectBound(`${dt} ${name}(${a.kind} [${a.v.shape}], ${s})`, got, expected, dt, 3, S);
      }
    });

    test(`${dt}: relu is exact; gelu (erf form) vs float64, views, 1-D to 4-D`, async () => {
      for (let r = 0; r < 8; r++) {
        const shape = randShape(randInt(rng, 1, 4), 1, 5);
        const x = await inp(shape, dt, { lo: -6, hi: 6 });
        poison(device, bytesOf(shape, dt));
        const yr = mp.ops.relu(x.t);
        expectExact(`${dt} relu ${x.kind} [${shape}]`, await readAs(yr, shape, dt), R.relu(x.v).data);
        poison(device, bytesOf(shape, dt));
        const yg = mp.ops.gelu(x.t);
        const ref = R.gelu(x.v);
        // erf in FP32 (a few ulps), 1 + erf cancels for x << 0: absolute error ~ |x| 2^-24; c = 8.
        expectBound(`${dt} gelu ${x.kind} [${shape}]`, await readAs(yg, shape, dt), ref, dt, 8, ref.data.map((g, i) => Math.abs(g) + Math.abs(x.v.data[i])));
      }
    });

    // -------------------------------------------------------------------------------------------
    test(`${dt}: matmul has torch.matmul's shapes (1-D, 2-D, batched with broadcasting) on views`, async () => {
      const [M, N, K, B] = [randInt(rng, 1, 9), randInt(rng, 1, 9), randInt(rng, 1, 17), randInt(rng, 2, 3)];
      const cases: [number[], number[]][] = [
        [[K], [K]], [[M, K], [K]], [[K], [K, N]], [[K], [B, K, N]], [[B, M, K], [K]], [[M, K], [K, N]],
        [[B, M, K], [K, N]], [[M, K], [B, K, N]], [[B, M, K], [B, K, N]], [[2, 1, M, K], [3, K, N]],
        [[1, B, M, K], [2, 1, K, N]], [[1, K], [K, 1]], [[M, 1], [1, N]], [[1, 1, 1], [1, 1, 1]],
      ];
      for (const [sa, sb] of cases) {
        const a = await inp(sa, dt), b = await inp(sb, dt);
        const expected = R.matmul(a.v, b.v);
        const S = R.matmul(R.abs(a.v), R.abs(b.v)).data;
        poison(device, bytesOf(expected.shape, dt));
        const y = mp.ops.matmul(a.t, b.t);
        const got = await readAs(y, expected.shape, dt);
        // FP32 accumulation of K products: Higham's gamma_K bound on sum |a||b|, c = K + 2.
        const k = sa[sa.length - 1];
        expectBound(`${dt} matmul ${a.kind} [${sa}] @ ${b.kind} [${sb}]`, got, expected, dt, k + 2, S);
      }
    });

    test(`${dt}: matmul 2-D options: transA / transB, alpha, beta * c, bias, relu / gelu, outDtype, out and preAct (poisoned)`, async () => {
      for (let r = 0; r < 6; r++) {
        const [M, N, K] = [randInt(rng, 1, 13), randInt(rng, 1, 13), randInt(rng, 1, 40)];
        const transA = rng() < 0.5, transB = rng() < 0.5;
        const activation = pick(rng, ['none', 'relu', 'gelu'] as const);
        const outDtype = pick(rng, FLOAT_DTYPES);
        const a = await inp(transA ? [K, M] : [M, K], dt), b = await inp(transB ? [N, K] : [K, N], dt);
        const c = await inp([M, N], outDtype), bias = await inp([N], dt, { view: 'contiguous' });
        const alpha = 0.5 + rng(), beta = -0.25 - rng();
        const out = mp.full([M, N], NaN, { dtype: outDtype, device });
        const preAct = mp.full([M, N], NaN, { dtype: 'float32', device });
        const y = mp.ops.matmul(a.t, b.t, { transA, transB, alpha, beta, c: c.t, bias: bias.t, activation, outDtype, out, preAct });
        expect(y).toBe(out);
        const z = R.matmulFused(a.v, b.v, { transA, transB, alpha, beta, c: c.v, bias: bias.v });
        const expected = R.activation(z, activation);
        const Sz = R.matmulFused(R.abs(a.v), R.abs(b.v), { transA, transB, alpha, beta: Math.abs(beta), c: R.abs(c.v), bias: R.abs(bias.v) }).data;
        const what = `${dt} matmul ${M}x${N}x${K} tA=${transA} tB=${transB} ${activation} -> ${outDtype}`;
        // z: K products, alpha, beta*c, bias: c = K + 4. The activation: gelu' <= 1.13 and its own
        // FP32 evaluation (c = 8 on |z| + |y|) -> S = 1.2 Sz + |z| + |y|, c = K + 12.
        expectBound(`${what} preAct`, await readAs(preAct, [M, N], 'float32'), z, 'float32', K + 4, Sz);
        const S = Sz.map((s, i) => 1.2 * s + Math.abs(z.data[i]) + Math.abs(expected.data[i]));
        expectBound(what, await readAs(y, [M, N], outDtype), expected, outDtype, K + 12, S);
      }
    });

    test(`${dt}: linear(x [..., in], weight [out, in], bias?, activation) on 1-D to 4-D views`, async () => {
      for (const xs of [[7], [5, 7], [2, 3, 7], [2, 1, 3, 7], [1, 7]]) {
        const inF = xs[xs.length - 1], outF = randInt(rng, 1, 9);
        const x = await inp(xs, dt), w = await inp([outF, inF], dt);
        const withBias = rng() < 0.7;
        const b = withBias ? await inp([outF], dt, { view: 'contiguous' }) : null;
        const activation = pick(rng, ['none', 'relu', 'gelu'] as const);
        const expected = R.linear(x.v, w.v, b?.v, activation);
        const z = R.linear(x.v, w.v, b?.v);
        const Sz = R.linear(R.abs(x.v), R.abs(w.v), b ? R.abs(b.v) : null).data;
        poison(device, bytesOf(expected.shape, dt));
        const y = mp.ops.linear(x.t, w.t, b?.t, { activation });
        const S = Sz.map((s, i) => 1.2 * s + Math.abs(z.data[i]) + Math.abs(expected.data[i]));
        expectBound(`${dt} linear ${x.kind} [${xs}] w ${w.kind} [${outF},${inF}] bias=${withBias} ${activation}`,
          await readAs(y, expected.shape, dt), expected, dt, inF + 12, S);
      }
    });

    // -------------------------------------------------------------------------------------------
    test(`${dt}: sum / mean over all, one, negative and several dims, keepdim, views`, async () => {
      for (let r = 0; r < 10; r++) {
        const nd = randInt(rng, 1, 4), shape = randShape(nd, 1, 5);
        const x = await inp(shape, dt);
        const choice = randInt(rng, 0, 3);
        const dim = choice === 0 ? undefined : choice === 1 ? randInt(rng, -nd, nd - 1)
          : permutation(rng, nd).slice(0, Math.min(nd, 2)).map((d) => (rng() < 0.5 ? d - nd : d));
        const keepdim = dim !== undefined && rng() < 0.5;
        const opts = dim === undefined ? {} : { dim, keepdim };
        const dims = dim === undefined ? [...Array(nd).keys()] : (typeof dim === 'number' ? [dim] : dim).map((d) => (d + nd) % nd);
        const Rn = dims.reduce((p, d) => p * shape[d], 1);
        const s = R.sum(x.v, opts), m = R.mean(x.v, opts);
        const S = R.sum(R.abs(x.v), opts).data;
        const what = `${dt} ${x.kind} [${shape}] dim=${JSON.stringify(dim)} keepdim=${keepdim}`;
        poison(device, bytesOf(s.shape, dt));
        // R-term FP32 sum: c = R + 2 on sum |x|; mean adds one division (on sum |x| / R).
        expectBound(`sum ${what}`, await readAs(mp.ops.sum(x.t, opts), s.shape, dt), s, dt, Rn + 2, S);
        expectBound(`mean ${what}`, await readAs(mp.ops.mean(x.t, opts), m.shape, dt), m, dt, Rn + 3, S.map((v) => v / Rn));
      }
      // no dim: shape [] (PyTorch)
      const x = await inp([3, 4], dt);
      expect(mp.ops.sum(x.t).shape).toEqual([]);
      expect(mp.ops.mean(x.t).shape).toEqual([]);
    });

    test(`${dt}: softmax / logSoftmax along every dim (default -1), views`, async () => {
      for (let r = 0; r < 10; r++) {
        const nd = randInt(rng, 1, 4), shape = randShape(nd, 1, 6);
        const x = await inp(shape, dt, { lo: -4, hi: 4 });
        const dim = r === 0 ? undefined : randInt(rng, -nd, nd - 1);
        const d = dim ?? -1, N = shape[(d + nd) % nd];
        const sm = R.softmax(x.v, d), lsm = R.logSoftmax(x.v, d);
        const what = `${dt} ${x.kind} [${shape}] dim=${dim}`;
        poison(device, bytesOf(shape, dt));
        const y = dim === undefined ? mp.ops.softmax(x.t) : mp.ops.softmax(x.t, { dim });
        // y = exp(x - max) / sum: relative (N + 2 + 2|x - max| + 4 ulps of exp) 2^-24, |x - max| <= 8.
        expectBound(`softmax ${what}`, await readAs(y, shape, dt), sm, dt, 1, sm.data.map((v) => (N + 24) * Math.abs(v)));
        poison(device, bytesOf(shape, dt));
        const ly = dim === undefined ? mp.ops.logSoftmax(x.t) : mp.ops.logSoftmax(x.t, { dim });
        // y = (x - max) - log(s), s in [1, N]: absolute 2^-24 (2|x - max| + 2 ln N + N + 8).
        expectBound(`logSoftmax ${what}`, await readAs(ly, shape, dt), lsm, dt, 2, lsm.data.map((v) => Math.abs(v) + N + 24 + 2 * Math.log(N)));
      }
    });

    test(`${dt}: layerNorm over the last dim, with / without weight and bias, eps, views`, async () => {
      for (const [xs, withW, withB, eps] of [
        [[9], true, true, undefined], [[4, 16], true, false, undefined], [[2, 3, 33], false, true, 1e-3],
        [[2, 1, 3, 8], false, false, undefined], [[5, 1], true, true, 1e-5], [[3, 64], true, true, 0.1],
      ] as [number[], boolean, boolean, number | undefined][]) {
        const N = xs[xs.length - 1];
        const x = await inp(xs, dt, { lo: -1, hi: 2 });
        const w = withW ? await inp([N], dt, { view: 'contiguous', lo: 0.5, hi: 1.5 }) : null;
        const b = withB ? await inp([N], dt, { view: 'contiguous' }) : null;
        const e = eps ?? 1e-5;
        const expected = R.layerNorm(x.v, w?.v ?? null, b?.v ?? null, e);
        // Per row: mu with error (N+1) u M1 (M1 = mean |x|), var (two-pass or Welford) with relative
        // error (N+4) u, rstd (N/2 + 4) u; x - mu: u (|x| + |mu|) + |d mu|. So
        // |d y| <= 2^-24 [ (r (|x| + |mu| + (N+1) M1) + (N + 8) |xhat|) |w| + 2 |b| + 2 |y| ] * 2.
        const S = new Float64Array(expected.data.length);
        for (let row = 0; row < expected.data.length / N; row++) {
          const l = x.v.data.subarray(row * N, row * N + N);
          let mu = 0, M1 = 0;
          for (const v of l) { mu += v; M1 += Math.abs(v); }
          mu /= N; M1 /= N;
          let v2 = 0;
          for (const v of l) v2 += (v - mu) ** 2;
          const rs = 1 / Math.sqrt(v2 / N + e);
          for (let j = 0; j < N; j++) {
            const i = row * N + j, wj = w ? Math.abs(w.v.data[j]) : 1, bj = b ? Math.abs(b.v.data[j]) : 0;
            S[i] = (rs * (Math.abs(l[j]) + Math.abs(mu) + (N + 1) * M1) + (N + 8) * Math.abs((l[j] - mu) * rs)) * wj + 2 * bj + 2 * Math.abs(expected.data[i]);
          }
        }
        poison(device, bytesOf(xs, dt));
        const y = eps === undefined ? mp.ops.layerNorm(x.t, w?.t ?? null, b?.t ?? null) : mp.ops.layerNorm(x.t, w?.t ?? null, b?.t ?? null, { eps });
        expectBound(`${dt} layerNorm ${x.kind} [${xs}] w=${withW} b=${withB} eps=${eps}`, await readAs(y, xs, dt), expected, dt, 2, S);
      }
    });

    test(`${dt}: embedding gathers rows exactly, ids of any shape (duplicates included), weight views`, async () => {
      for (const idsShape of [[], [5], [2, 3], [2, 2, 2], [1], [0]]) {
        const V = randInt(rng, 1, 7), C = randInt(rng, 1, 6);
        const w = await inp([V, C], dt);
        const n = R.numel(idsShape);
        const ids = Array.from({ length: n }, () => randInt(rng, 0, V - 1));
        if (n >= 3) ids[n - 1] = ids[0]; // a duplicate
        const expected = R.embedding(ids, idsShape, w.v);
        poison(device, bytesOf(expected.shape, dt));
        const y = mp.ops.embedding(ints(ids, idsShape, device), w.t);
        expectExact(`${dt} embedding ids [${idsShape}] weight ${w.kind} [${V},${C}]`, await readAs(y, [...idsShape, C], dt), expected.data);
      }
    });

    test(`${dt}: crossEntropy (label smoothing, int32 tensor or Int32Array targets) and mseLoss vs float64`, async () => {
      for (let r = 0; r < 8; r++) {
        const N = randInt(rng, 1, 9), C = randInt(rng, 1, 12);
        const logits = await inp([N, C], dt, { lo: -3, hi: 3 });
        const tg = Int32Array.from({ length: N }, () => randInt(rng, 0, C - 1));
        const labelSmoothing = r % 2 === 0 ? 0 : rng();
        const targets = r % 3 === 0 ? tg : ints(tg, [N], device);
        const expected = R.crossEntropy(logits.v, tg, labelSmoothing);
        const y = mp.ops.crossEntropy(logits.t, targets, { labelSmoothing });
        expect(y.shape).toEqual([]);
        const od = y.dtype as FloatDType; // which dtype: asserted in the 'loss dtypes' test below
        // Per row: logsumexp (the logSoftmax bound, |x| <= 3) + the smoothed sum over C; the mean
        // over N rows: c = 2, S = C + N + 24 + 2 ln C + 4 max|x| + 2 |L|.
        const S = [C + N + 24 + 2 * Math.log(C) + 12 + 2 * Math.abs(expected.data[0])];
        expectBound(`${dt} crossEntropy ${logits.kind} [${N},${C}] smoothing=${labelSmoothing} targets=${r % 3 === 0 ? 'Int32Array' : 'tensor'}`,
          await y.toFloat32(), expected, od, 2, S);
      }
      for (const shape of [[7], [3, 5], [2, 3, 4], [2, 1, 2, 3], []]) {
        const p = await inp(shape, dt), t = await inp(shape, dt);
        const expected = R.mseLoss(p.v, t.v);
        const y = mp.ops.mseLoss(p.t, t.t);
        expect(y.shape).toEqual([]);
        const n = R.numel(shape);
        let m2 = 0;
        for (let i = 0; i < n; i++) m2 += (Math.abs(p.v.data[i]) + Math.abs(t.v.data[i])) ** 2;
        // n squared differences summed in FP32, one division: c = n + 4 on mean (|p| + |t|)^2, x2.
        expectBound(`${dt} mseLoss ${p.kind} / ${t.kind} [${shape}]`, await y.toFloat32(), expected, y.dtype as FloatDType, 2 * (n + 4), [m2 / n]);
      }
    });

    test(`${dt}: dropout: training false and p = 0 are the identity; kept elements are x / (1 - p); kept fraction within a binomial bound; manualSeed repeats the mask`, async () => {
      const n = 20000, p = 0.3;
      const x = await inp([100, 200], dt, { view: 'contiguous', data: (k) => awayFromZero(rng, k, 0.25, 1) });
      expectExact(`${dt} dropout training=false`, await readAs(mp.ops.dropout(x.t, p, { training: false }), [100, 200], dt), x.v.data);
      expectExact(`${dt} dropout p=0`, await readAs(mp.ops.dropout(x.t, 0), [100, 200], dt), x.v.data);
      mp.manualSeed(1234);
      const y = await readAs(mp.ops.dropout(x.t, p), [100, 200], dt);
      let kept = 0;
      const keptRef = new Float64Array(n), keptGot = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        if (y[i] === 0) continue;
        kept++;
        keptRef[i] = x.v.data[i] / (1 - p);
        keptGot[i] = y[i];
      }
      // Kept: x / (1 - p) in FP32, one store.
      expectBound(`${dt} dropout kept values`, keptGot, R.arr(keptRef, [n]), dt, 2);
      // kept ~ Binomial(n, 1 - p): |kept - n(1-p)| <= 6 sd (a false alarm ~ 2e-9).
      const sd = Math.sqrt(n * p * (1 - p));
      expect(Math.abs(kept - n * (1 - p))).toBeLessThanOrEqual(6 * sd);
      mp.manualSeed(1234);
      expectExact(`${dt} dropout after manualSeed(1234) again`, await mp.ops.dropout(x.t, p).toFloat32(), y);
      const y3 = await mp.ops.dropout(x.t, p).toFloat32(); // the generator moved on: another mask
      let same = 0;
      for (let i = 0; i < n; i++) if ((y3[i] === 0) === (y[i] === 0)) same++;
      expect(same).toBeLessThan(n * 0.7); // independent masks agree on ~ p^2 + (1-p)^2 = 58%
    });

    test(`${dt}: dropout p = 1 drops everything (PyTorch allows p in [0, 1])`, async () => {
      const x = await inp([3, 5], dt);
      expectExact(`${dt} dropout p=1`, await readAs(mp.ops.dropout(x.t, 1), [3, 5], dt), new Float64Array(15));
    });

    // -------------------------------------------------------------------------------------------
    test(`${dt}: shape ops (reshape, view, transpose, permute, narrow, cat) move values exactly; strides and contiguity`, async () => {
      for (let r = 0; r < 6; r++) {
        const nd = randInt(rng, 1, 4), shape = randShape(nd, 1, 4);
        const x = await inp(shape, dt);
        // reshape to a random factorisation with -1
        const n = R.numel(shape);
        const target = n % 2 === 0 && rng() < 0.5 ? [2, -1] : [-1];
        const rs = R.reshape(x.v, target);
        expectExact(`${dt} reshape ${x.kind} [${shape}] -> [${target}]`, await readAs(mp.ops.reshape(x.t, target), rs.shape, dt), rs.data);
        expectExact(`${dt} .reshape ${x.kind}`, await readAs(x.t.reshape(target), rs.shape, dt), rs.data);
        if (nd >= 2) {
          const d0 = randInt(rng, -nd, nd - 1), d1 = randInt(rng, 0, nd - 1);
          const tr = R.transpose(x.v, d0, d1);
          expectExact(`${dt} transpose(${d0}, ${d1}) ${x.kind} [${shape}]`, await readAs(mp.ops.transpose(x.t, d0, d1), tr.shape, dt), tr.data);
          expectExact(`${dt} .transpose`, await readAs(x.t.transpose(d0, d1), tr.shape, dt), tr.data);
        }
        const p = permutation(rng, nd);
        const pm = R.permute(x.v, p);
        expectExact(`${dt} permute([${p}]) ${x.kind} [${shape}]`, await readAs(mp.ops.permute(x.t, p), pm.shape, dt), pm.data);
        expectExact(`${dt} .permute`, await readAs(x.t.permute(p), pm.shape, dt), pm.data);
        const d = randInt(rng, 0, nd - 1), start = randInt(rng, 0, shape[d] - 1), len = randInt(rng, 0, shape[d] - start);
        const nw = R.narrow(x.v, d, start, len);
        expectExact(`${dt} narrow(${d}, ${start}, ${len}) ${x.kind} [${shape}]`, await readAs(mp.ops.narrow(x.t, d - nd, start, len), nw.shape, dt), nw.data);
        expectExact(`${dt} .narrow`, await readAs(x.t.narrow(d, start, len), nw.shape, dt), nw.data);
        const c = x.t.contiguous();
        expect(c.isContiguous()).toBe(true);
        // row-major strides (a size-1 dim's stride is free, as in PyTorch)
        const rowMajor = R.stridesOf(shape);
        c.strides.forEach((st, i) => { if (shape[i] !== 1) expect(`stride ${i} of contiguous() [${shape}]: ${st}`).toBe(`stride ${i} of contiguous() [${shape}]: ${rowMajor[i]}`); });
        expectExact(`${dt} contiguous() of ${x.kind}`, await readAs(c, shape, dt), x.v.data);
        // cat along a random dim of 2-3 tensors (views included) that differ only there
        const cd = randInt(rng, 0, nd - 1);
        const parts = [];
        for (let k = randInt(rng, 2, 3); k > 0; k--) {
          const s = [...shape];
          s[cd] = randInt(rng, 0, 3);
          parts.push(await inp(s, dt));
        }
        const ct = R.cat(parts.map((q) => q.v), cd);
        poison(device, bytesOf(ct.shape, dt));
        expectExact(`${dt} cat dim ${cd} of [${parts.map((q) => `${q.kind} [${q.v.shape}]`).join(', ')}]`,
          await readAs(mp.ops.cat(parts.map((q) => q.t), cd - (rng() < 0.5 ? nd : 0)), ct.shape, dt), ct.data);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------
  test('tensor metadata: strides (elements) of contiguous tensors and views, ndim, isContiguous, view vs reshape, int32 tensors', async () => {
    const x = mp.tensor(values(rng, 24), [2, 3, 4], { device });
    expect(x.ndim).toBe(3);
    expect(x.size).toBe(24);
    expect([...x.strides]).toEqual([12, 4, 1]);
    expect(x.isContiguous()).toBe(true);
    const t = x.transpose(0, 2);
    expect([...t.shape]).toEqual([4, 3, 2]);
    expect([...t.strides]).toEqual([1, 4, 12]);
    expect(t.isContiguous()).toBe(false);
    const p = x.permute([2, 0, 1]);
    expect([...p.shape]).toEqual([4, 2, 3]);
    expect([...p.strides]).toEqual([1, 12, 4]);
    const n = x.narrow(1, 1, 2);
    expect([...n.shape]).toEqual([2, 2, 4]);
    expect([...n.strides]).toEqual([12, 4, 1]);
    expect(n.isContiguous()).toBe(false);
    expect(x.narrow(0, 1, 1).isContiguous()).toBe(true);
    expect([...x.view([6, 4]).strides]).toEqual([4, 1]);
    expect([...x.view([2, -1]).shape]).toEqual([2, 12]);
    expect(codeOf(() => t.view([24]))).toBe('E_SHAPE');
    expect(codeOf(() => n.view([16]))).toBe('E_SHAPE');
    const xv = R.arr(await x.toFloat32(), [2, 3, 4]);
    expectExact('reshape of a transposed view', await readAs(t.reshape([24]), [24], 'float32'), R.permute(xv, [2, 1, 0]).data);
    expectExact('reshape of a narrowed view', await readAs(n.reshape([16]), [16], 'float32'), R.narrow(xv, 1, 1, 2).data);
    const tv = t.reshape([4, 6]);
    expect(tv.isContiguous()).toBe(true);
    // 0-d and int32
    const s = mp.tensor([2.5], [], { device });
    expect(s.ndim).toBe(0);
    expect([...s.strides]).toEqual([]);
    const ids = mp.tensor(Int32Array.from([3, -1, 7, 2 ** 31 - 1]), [2, 2], { device });
    expect(ids.dtype).toBe('int32');
    expect(Array.from(await ids.toInt32())).toEqual([3, -1, 7, 2 ** 31 - 1]);
    expect(Array.from(await ids.transpose(0, 1).toInt32())).toEqual([3, 7, -1, 2 ** 31 - 1]);
    const z = mp.zeros([2, 3], { device, dtype: 'bfloat16' });
    expectExact('zeros', await readAs(z, [2, 3], 'bfloat16'), new Float64Array(6));
    expectExact('full', await readAs(mp.full([3], -1.5, { device, dtype: 'float16' }), [3], 'float16'), [-1.5, -1.5, -1.5]);
    expect([...mp.empty([0, 5], { device }).shape]).toEqual([0, 5]);
  });

  test('view of a non-contiguous tensor follows PyTorch\'s stride rule: allowed where the dims it merges or splits are contiguous together', async () => {
    const x = mp.tensor(values(rng, 24), [2, 3, 4], { device });
    const xv = R.arr(await x.toFloat32(), [2, 3, 4]);
    const n = x.narrow(1, 1, 2), t = x.transpose(0, 2);
    const nv = R.narrow(xv, 1, 1, 2);
    // n [2,2,4] strides [12,4,1]: dims 1 and 2 merge (4 = 1 * 4), dims 0 and 1 do not (12 != 4 * 2)
    expect(codeOf(() => n.view([4, 4]))).toBe('E_SHAPE');
    const checks: [string, () => mp.Tensor, number[], R.A64][] = [
      ['narrowed [2,2,4] .view([2, 8])', () => n.view([2, 8]), [12, 1], R.reshape(nv, [2, 8])],
      ['narrowed [2,2,4] .view([2, 2, 2, 2])', () => n.view([2, 2, 2, 2]), [12, 4, 2, 1], R.reshape(nv, [2, 2, 2, 2])],
      ['transposed [4,3,2] .view([4, 3, 2])', () => t.view([4, 3, 2]), [1, 4, 12], R.transpose(xv, 0, 2)],
      ['transposed [4,3,2] .view([4, 3, 1, 2])', () => t.view([4, 3, 1, 2]), [1, 4, 12, 12], R.reshape(R.transpose(xv, 0, 2), [4, 3, 1, 2])],
    ];
    const failures: string[] = [];
    for (const [what, f, strides, ref] of checks) {
      const c = codeOf(f);
      if (c !== 'no error') { failures.push(`${what}: ${c}`); continue; }
      const v = f();
      const st = [...v.strides];
      // a size-1 dim's stride is free (PyTorch puts anything there): compare the others
      if (st.some((s, i) => v.shape[i] !== 1 && s !== strides[i])) failures.push(`${what}: strides [${st}], expected [${strides}]`);
      expectExact(what, await v.toFloat32(), ref.data);
    }
    expect(failures).toEqual([]);
  });

  test('dtype promotion: add / sub / mul of two dtypes give the wider float (float16 with bfloat16: float32)', async () => {
    for (const da of FLOAT_DTYPES) {
      for (const db of FLOAT_DTYPES) {
        const a = await inp([3, 4], da), b = await inp([4], db);
        const od = promote(da, db);
        for (const [name, op, ref] of [['add', mp.ops.add, R.add], ['sub', mp.ops.sub, R.sub], ['mul', mp.ops.mul, R.mul]] as const) {
          const expected = ref(a.v, b.v);
          const y = op(a.t, b.t);
          expectBound(`${da} ${name} ${db}`, await readAs(y, [3, 4], od), expected, od, 2);
        }
      }
    }
  });

  test('loss dtypes outside autocast follow PyTorch: crossEntropy has the logits\' dtype, mseLoss the promoted one', async () => {
    const wrong: string[] = [];
    const check = (what: string, got: string, want: string) => { if (got !== want) wrong.push(`${what}: ${got}, PyTorch ${want}`); };
    for (const dt of FLOAT_DTYPES) {
      const l = await inp([3, 4], dt);
      check(`crossEntropy(${dt})`, mp.ops.crossEntropy(l.t, Int32Array.from([0, 3, 1])).dtype, dt);
      for (const d2 of FLOAT_DTYPES) {
        const p = await inp([5], dt), t = await inp([5], d2);
        check(`mseLoss(${dt}, ${d2})`, mp.ops.mseLoss(p.t, t.t).dtype, promote(dt, d2));
      }
      // and the others keep the input's dtype
      check(`softmax(${dt})`, mp.ops.softmax(l.t).dtype, dt);
      check(`logSoftmax(${dt})`, mp.ops.logSoftmax(l.t).dtype, dt);
      check(`sum(${dt})`, mp.ops.sum(l.t).dtype, dt);
      check(`mean(${dt})`, mp.ops.mean(l.t, { dim: 0 }).dtype, dt);
      check(`layerNorm(${dt})`, mp.ops.layerNorm(l.t, null, null).dtype, dt);
    }
    expect(wrong).toEqual([]);
  });

  // ---------------------------------------------------------------------------------------------
  test('hand-worked values', async () => {
    const T = (v: number[], shape: number[], o: { dtype?: FloatDType } = {}) => mp.tensor(v, shape, { device, ...o });
    const f32 = (t: mp.Tensor) => t.toFloat32();
    const { LN2, log } = Math, LN3 = log(3), LN6 = log(6);
    // ulps of FP32 relative to max(|ref|, floor): a handful of FP32 operations per value.
    const close = (what: string, got: ArrayLike<number>, ref: number[], ulps = 4, floor = 1e-30) =>
      expectClose(what, got, ref, (i) => ulps * EPS32 * Math.max(Math.abs(ref[i]), floor));
    const x = T([0, LN2, LN3], [3]);
    close('softmax([0, ln 2, ln 3]) = [1/6, 1/3, 1/2]', await f32(mp.ops.softmax(x)), [1 / 6, 1 / 3, 1 / 2]);
    close('logSoftmax([0, ln 2, ln 3])', await f32(mp.ops.logSoftmax(x)), [-LN6, LN2 - LN6, LN3 - LN6]);
    close('softmax([1000, 1000, 1000]) (max subtracted)', await f32(mp.ops.softmax(T([1000, 1000, 1000], [3]))), [1 / 3, 1 / 3, 1 / 3]);
    expectExact('softmax([-inf, 0])', await f32(mp.ops.softmax(T([-Infinity, 0], [2]))), [0, 1]);
    close('logSoftmax([0, 200]) (no underflow to -inf)', await f32(mp.ops.logSoftmax(T([0, 200], [2]))), [-200, 0]);
    const inf = await f32(mp.ops.softmax(T([-Infinity, -Infinity, 1, 2], [2, 2])));
    expectExact('softmax of a row of -inf is NaN (PyTorch)', inf.subarray(0, 2), [NaN, NaN]);
    close('softmax of the next row', inf.subarray(2), [1 / (1 + Math.E), Math.E / (1 + Math.E)]);
    close('gelu(-1, 0, 1, 3)', await f32(mp.ops.gelu(T([-1, 0, 1, 3], [4]))), [-0.15865525393145707, 0, 0.8413447460685429, 2.99595030590511]);
    expectExact('relu(-2, 0, 3)', await f32(mp.ops.relu(T([-2, 0, 3], [3]))), [0, 0, 3]);
    close('layerNorm([1, 2, 3, 4], eps 0)', await f32(mp.ops.layerNorm(T([1, 2, 3, 4], [4]), null, null, { eps: 0 })),
      [-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738], 16, 1.5);
    close('layerNorm with weight and bias', await f32(mp.ops.layerNorm(T([1, 2, 3, 4], [1, 4]), T([1, 2, 0, -1], [4]), T([0, 1, 5, 0], [4]), { eps: 0 })),
      [-1.3416407864998738, 1 - 0.8944271909999159, 5, -1.3416407864998738], 16, 1.5);
    const logits = T([0, LN2, LN3, 0, 0, 0], [2, 3]);
    close('crossEntropy: rows [0, ln2, ln3] -> class 2 (ln 2), [0, 0, 0] -> class 0 (ln 3); mean', await f32(mp.ops.crossEntropy(logits, Int32Array.from([2, 0]))), [(LN2 + LN3) / 2], 8);
    // smoothing e: (1 - e) (-log p_y) + e / C sum_c (-log p_c); row 1: -log p = [ln 6, ln 3, ln 2]
    const e = 0.3;
    close('crossEntropy label smoothing 0.3', await f32(mp.ops.crossEntropy(logits, ints([2, 0], [2], device), { labelSmoothing: e })),
      [((1 - e) * LN2 + (e / 3) * (LN6 + LN3 + LN2) + LN3) / 2], 8);
    close('mseLoss([1, 2, 3], [1, 0, 0]) = 13/3', await f32(mp.ops.mseLoss(T([1, 2, 3], [3]), T([1, 0, 0], [3]))), [13 / 3], 2);
    expectExact('matmul [[1,2],[3,4]] @ [[5,6],[7,8]]', await f32(mp.ops.matmul(T([1, 2, 3, 4], [2, 2]), T([5, 6, 7, 8], [2, 2]))), [19, 22, 43, 50]);
    const dot = mp.ops.matmul(T([1, 2, 3], [3]), T([4, 5, 6], [3]));
    expect(dot.shape).toEqual([]);
    expectExact('matmul of two 1-D = dot', await f32(dot), [32]);
    const m = T([1, 2, 3, 4, 5, 6], [2, 3]);
    expectExact('sum dim 0', await f32(mp.ops.sum(m, { dim: 0 })), [5, 7, 9]);
    const sk = mp.ops.sum(m, { dim: -1, keepdim: true });
    expect(sk.shape).toEqual([2, 1]);
    expectExact('sum dim -1 keepdim', await f32(sk), [6, 15]);
    expectExact('sum all', await f32(mp.ops.sum(m)), [21]);
    close('mean all', await f32(mp.ops.mean(m)), [3.5], 2);
    close('mean dims [0, 1]', await f32(mp.ops.mean(m, { dim: [0, 1] })), [3.5], 2);
    expectExact('linear', await f32(mp.ops.linear(T([1, 2], [1, 2]), T([1, 0, 0, 1, 1, 1], [3, 2]), T([10, 20, 30], [3]))), [11, 22, 33]);
    expectExact('embedding', await f32(mp.ops.embedding(ints([2, 0, 2], [3], device), T([1, 2, 3, 4, 5, 6], [3, 2]))), [5, 6, 1, 2, 5, 6]);
    expectExact('cat dim 0', await f32(mp.ops.cat([T([1, 2], [1, 2]), T([3, 4, 5, 6], [2, 2])], 0)), [1, 2, 3, 4, 5, 6]);
    expectExact('cat dim -1', await f32(mp.ops.cat([T([1, 2], [2, 1]), T([3, 4, 5, 6], [2, 2])], -1)), [1, 3, 4, 2, 5, 6]);
    expectExact('add broadcast [2,1] + [3]', await f32(mp.ops.add(T([10, 20], [2, 1]), T([1, 2, 3], [3]))), [11, 12, 13, 21, 22, 23]);
    expectExact('sub scalar', await f32(mp.ops.sub(T([1, 2], [2]), 0.5)), [0.5, 1.5]);
    expectExact('mul fp16 by 3 stays fp16 (RNE of 3 * (1 + 2^-10))', await f32(mp.ops.mul(T([1 + 2 ** -10], [1], { dtype: 'float16' }), 3)), [roundF16(3 * (1 + 2 ** -10))]);
  });

  test('matmul, K = 1024: the FP32-accumulation bound holds, and FP16 accumulation (simulated on the same inputs) violates it', async () => {
    const [M, N, K] = [8, 8, 1024];
    for (const [lo, outDtype] of [[0, 'float16'], [0, 'float32'], [-1, 'float32']] as [number, FloatDType][]) {
      const a = await inp([M, K], 'float16', { view: 'contiguous', lo, hi: 1 });
      const b = await inp([K, N], 'float16', { view: 'contiguous', lo, hi: 1 });
      const ref = R.matmul(a.v, b.v), S = R.matmul(R.abs(a.v), R.abs(b.v)).data;
      const got = await readAs(mp.ops.matmul(a.t, b.t, { outDtype }), [M, N], outDtype);
      expectBound(`fp16 matmul K=1024 -> ${outDtype}, inputs in [${lo}, 1)`, got, ref, outDtype, K + 2, S);
      // FP16 accumulation: acc = rnd16(acc + a*b) at every k (products of two fp16 values are exact in FP32).
      const sim = new Float64Array(M * N);
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let k = 0; k < K; k++) acc = roundF16(acc + a.v.data[m * K + k] * b.v.data[k * N + n]);
          sim[m * N + n] = acc;
        }
      let violations = 0;
      for (let i = 0; i < M * N; i++) if (Math.abs(sim[i] - ref.data[i]) > U[outDtype] * Math.abs(ref.data[i]) + (K + 2) * EPS32 * S[i] + TINY[outDtype]) violations++;
      // a positive sum drifts at ulp(256) = 0.25 per add: nearly every element; mixed signs: many
      expect(violations).toBeGreaterThan(lo === 0 ? (3 * M * N) / 4 : M * N / 4);
      a.t.dispose(); b.t.dispose();
    }
  });

  test('empty dims where PyTorch allows them', async () => {
    const E = (shape: number[]) => mp.zeros(shape, { device });
    expect([...mp.ops.add(E([0, 3]), mp.tensor([1, 2, 3], [3], { device })).shape]).toEqual([0, 3]);
    expect([...mp.ops.mul(E([2, 0, 1]), E([1, 4])).shape]).toEqual([2, 0, 4]);
    expect([...mp.ops.relu(E([0])).shape]).toEqual([0]);
    expectExact('sum over an empty dim is 0', await readAs(mp.ops.sum(E([0, 3]), { dim: 0 }), [3], 'float32'), [0, 0, 0]);
    expectExact('sum of an empty tensor is 0', await readAs(mp.ops.sum(E([2, 0])), [], 'float32'), [0]);
    expectExact('mean of an empty tensor is NaN', await readAs(mp.ops.mean(E([0])), [], 'float32'), [NaN]);
    expectExact('[2,0] @ [0,3] is zeros', await readAs(mp.ops.matmul(E([2, 0]), E([0, 3])), [2, 3], 'float32'), new Float64Array(6));
    expect([...mp.ops.matmul(E([0, 4]), E([4, 3])).shape]).toEqual([0, 3]);
    expect([...mp.ops.matmul(E([2, 0, 4]), E([4, 3])).shape]).toEqual([2, 0, 3]);
    expect([...mp.ops.softmax(E([0, 5])).shape]).toEqual([0, 5]);
    expect([...mp.ops.logSoftmax(E([3, 0])).shape]).toEqual([3, 0]);
    expect([...mp.ops.layerNorm(E([0, 4]), null, null).shape]).toEqual([0, 4]);
    expect([...mp.ops.linear(E([0, 4]), E([3, 4])).shape]).toEqual([0, 3]);
    const c = mp.ops.cat([E([0, 3]), mp.full([2, 3], 7, { device })], 0);
    expectExact('cat with an empty part', await readAs(c, [2, 3], 'float32'), [7, 7, 7, 7, 7, 7]);
    expect([...mp.ops.narrow(E([4, 2]), 0, 1, 0).shape]).toEqual([0, 2]);
    expect([...mp.ops.reshape(E([0, 3]), [3, -1]).shape]).toEqual([3, 0]);
    expect([...mp.ops.transpose(E([0, 3]), 0, 1).shape]).toEqual([3, 0]);
    expect([...mp.ops.embedding(ints([], [0], device), E([5, 2])).shape]).toEqual([0, 2]);
    expect([...mp.ops.dropout(E([0, 2]), 0.5).shape]).toEqual([0, 2]);
  });

  // ---------------------------------------------------------------------------------------------
  test('E_SHAPE: shape rules, with the op and the shapes in the message', () => {
    const T = (shape: number[]) => mp.tensor(values(rng, R.numel(shape)), shape, { device });
    const e = errorOf(() => mp.ops.matmul(T([2, 3, 4]), T([5, 6])));
    expect(e.code).toBe('E_SHAPE');
    expect(e.message).toMatch(new RegExp(`matmul.*${shapeRe([2, 3, 4])}.*${shapeRe([5, 6])}`));
    expect(e.message).toMatch(/4.*5/);
    const shapeCases: [string, () => unknown][] = [
      ['matmul [3] @ [4]', () => mp.ops.matmul(T([3]), T([4]))],
      ['matmul [2,3] @ [2]', () => mp.ops.matmul(T([2, 3]), T([2]))],
      ['matmul 0-d operand', () => mp.ops.matmul(T([]), T([3]))],
      ['matmul batch dims 2 and 3', () => mp.ops.matmul(T([2, 3, 4]), T([3, 4, 5]))],
      ['add [2,3] + [4]', () => mp.ops.add(T([2, 3]), T([4]))],
      ['mul [2,3] * [3,2]', () => mp.ops.mul(T([2, 3]), T([3, 2]))],
      ['sub [0] - [2]', () => mp.ops.sub(T([0]), T([2]))],
      ['linear in-features', () => mp.ops.linear(T([2, 3]), T([4, 5]))],
      ['linear bias', () => mp.ops.linear(T([2, 3]), T([4, 3]), T([3]))],
      ['reshape [2,3] -> [4]', () => mp.ops.reshape(T([2, 3]), [4])],
      ['reshape [2,3] -> [-1, 4]', () => T([2, 3]).reshape([-1, 4])],
      ['view of a transposed [2,3] as [6]', () => T([2, 3]).transpose(0, 1).view([6])],
      ['cat [2,3] with [2,4] on dim 0', () => mp.ops.cat([T([2, 3]), T([2, 4])], 0)],
      ['cat [2,3] with [2,3,1]', () => mp.ops.cat([T([2, 3]), T([2, 3, 1])], 0)],
      ['layerNorm weight [5] for N = 4', () => mp.ops.layerNorm(T([2, 4]), T([5]), null)],
      ['layerNorm bias [4,1]', () => mp.ops.layerNorm(T([2, 4]), null, T([4, 1]))],
      ['crossEntropy targets of length N + 1', () => mp.ops.crossEntropy(T([3, 4]), Int32Array.from([0, 1, 2, 3]))],
      ['crossEntropy target tensor [3,1]', () => mp.ops.crossEntropy(T([3, 4]), ints([0, 1, 2], [3, 1], device))],
      ['mseLoss [3] vs [4]', () => mp.ops.mseLoss(T([3]), T([4]))],
      ['embedding weight 1-D', () => mp.ops.embedding(ints([0], [1], device), T([4]))],
      ['tensor with 5 values for [2,3]', () => mp.tensor([1, 2, 3, 4, 5], [2, 3], { device })],
      ['tensor with a negative dim', () => mp.zeros([2, -1], { device })],
      ['matmul out of the wrong shape', () => mp.ops.matmul(T([2, 3]), T([3, 4]), { out: mp.empty([2, 3], { device }) })],
    ];
    for (const [what, f] of shapeCases) expect(`${what}: ${codeOf(f)}`).toBe(`${what}: E_SHAPE`);
  });

  test('dims and indices out of range, bad permutations: typed errors (E_ARG or E_SHAPE), negative dims accepted', () => {
    const T = (shape: number[]) => mp.tensor(values(rng, R.numel(shape)), shape, { device });
    const x = T([2, 3, 4]);
    const cases: [string, () => unknown][] = [
      ['sum dim 3 of 3-D', () => mp.ops.sum(x, { dim: 3 })],
      ['sum dim -4 of 3-D', () => mp.ops.sum(x, { dim: -4 })],
      ['sum dim [0, 0]', () => mp.ops.sum(x, { dim: [0, 0] })],
      ['mean dim 1.5', () => mp.ops.mean(x, { dim: 1.5 })],
      ['softmax dim 3', () => mp.ops.softmax(x, { dim: 3 })],
      ['logSoftmax dim -4', () => mp.ops.logSoftmax(x, { dim: -4 })],
      ['transpose(0, 3)', () => mp.ops.transpose(x, 0, 3)],
      ['permute [0, 1]', () => mp.ops.permute(x, [0, 1])],
      ['permute [0, 1, 1]', () => mp.ops.permute(x, [0, 1, 1])],
      ['narrow dim 3', () => mp.ops.narrow(x, 3, 0, 1)],
      ['narrow start 2 length 2 of 3', () => mp.ops.narrow(x, 1, 2, 2)],
      ['narrow length -1', () => mp.ops.narrow(x, 1, 0, -1)],
      ['cat dim 2 of 2-D', () => mp.ops.cat([T([2, 2]), T([2, 2])], 2)],
      ['cat of no tensors', () => mp.ops.cat([], 0)],
      ['reshape with two -1', () => mp.ops.reshape(x, [-1, -1])],
    ];
    for (const [what, f] of cases) expect(`${what}: ${['E_ARG', 'E_SHAPE'].includes(codeOf(f)) ? 'typed' : codeOf(f)}`).toBe(`${what}: typed`);
    expect([...mp.ops.sum(x, { dim: -1 }).shape]).toEqual([2, 3]);
    expect([...mp.ops.transpose(x, -1, -3).shape]).toEqual([4, 3, 2]);
    expect([...mp.ops.permute(x, [-1, 0, -2]).shape]).toEqual([4, 2, 3]);
    expect([...mp.ops.narrow(x, -2, 1, 2).shape]).toEqual([2, 2, 4]);
  });

  test('E_DTYPE, E_ARG, E_DEVICE, E_DISPOSED', async () => {
    const T = (shape: number[], dtype: FloatDType = 'float32') => mp.tensor(values(rng, R.numel(shape)), shape, { device, dtype });
    const x = T([3, 4]);
    const dtypeCases: [string, () => unknown][] = [
      ['tensor dtype float64', () => mp.tensor([1], [1], { dtype: 'float64' as never, device })],
      ['embedding float ids', () => mp.ops.embedding(T([2]), T([4, 3]))],
      ['crossEntropy float32 target tensor', () => mp.ops.crossEntropy(x, T([3]))],
      ['softmax of int32', () => mp.ops.softmax(ints([1, 2], [2], device))],
      ['matmul outDtype float64', () => mp.ops.matmul(x, T([4, 2]), { outDtype: 'float64' as never })],
      ['matmul out of another dtype than outDtype', () => mp.ops.matmul(x, T([4, 2]), { out: mp.empty([3, 2], { device, dtype: 'float16' }), outDtype: 'float32' })],
    ];
    for (const [what, f] of dtypeCases) expect(`${what}: ${codeOf(f)}`).toBe(`${what}: E_DTYPE`);
    const argCases: [string, () => unknown][] = [
      ['unknown sum option', () => mp.ops.sum(x, { dims: 0 } as never)],
      ['unknown softmax option', () => mp.ops.softmax(x, { axis: 1 } as never)],
      ['unknown matmul option', () => mp.ops.matmul(x, T([4, 2]), { transpose: true } as never)],
      ['unknown tensor option', () => mp.tensor([1], [1], { device, grad: true } as never)],
      ['dropout p = -0.1', () => mp.ops.dropout(x, -0.1)],
      ['dropout p = 1.5', () => mp.ops.dropout(x, 1.5)],
      ['dropout p = NaN', () => mp.ops.dropout(x, NaN)],
      ['labelSmoothing 1.5', () => mp.ops.crossEntropy(x, Int32Array.from([0, 1, 2]), { labelSmoothing: 1.5 })],
      ['labelSmoothing -0.1', () => mp.ops.crossEntropy(x, Int32Array.from([0, 1, 2]), { labelSmoothing: -0.1 })],
      ['matmul activation tanh', () => mp.ops.matmul(x, T([4, 2]), { activation: 'tanh' as never })],
      ['matmul alpha NaN', () => mp.ops.matmul(x, T([4, 2]), { alpha: NaN })],
      ['matmul with a number[]', () => mp.ops.matmul(x, [1, 2] as never)],
      ['add of a string', () => mp.ops.add(x, 'one' as never)],
      ['int32 tensor requiring grad', () => mp.tensor(Int32Array.from([1, 2]), [2], { device, requiresGrad: true })],
    ];
    for (const [what, f] of argCases) expect(`${what}: ${codeOf(f)}`).toBe(`${what}: E_ARG`);
    // A label / id outside [0, C) / [0, V): PyTorch raises; the README files a label out of range under E_DATA.
    for (const [what, f] of [
      ['crossEntropy target 4 of C = 4', () => mp.ops.crossEntropy(x, Int32Array.from([0, 4, 1]))],
      ['crossEntropy target -1', () => mp.ops.crossEntropy(x, ints([0, -1, 1], [3], device))],
      ['embedding id 4 of V = 4', () => mp.ops.embedding(ints([0, 4], [2], device), T([4, 3]))],
    ] as [string, () => unknown][]) expect(`${what}: ${['E_ARG', 'E_DATA'].includes(codeOf(f)) ? 'typed' : codeOf(f)}`).toBe(`${what}: typed`);
    // 2-D-only matmul options on N-D operands: a typed error
    for (const [what, f] of [
      ['transA on 3-D', () => mp.ops.matmul(T([2, 3, 4]), T([2, 3, 5]), { transA: true })],
      ['transB on 1-D', () => mp.ops.matmul(T([4]), T([2, 4]), { transB: true })],
      ['c on 3-D', () => mp.ops.matmul(T([2, 3, 4]), T([4, 5]), { c: T([2, 3, 5]) })],
      ['alpha on 1-D', () => mp.ops.matmul(T([4]), T([4]), { alpha: 2 })],
    ] as [string, () => unknown][]) expect(`${what}: ${['E_ARG', 'E_SHAPE'].includes(codeOf(f)) ? 'typed' : codeOf(f)}`).toBe(`${what}: typed`);
    // bias / activation on N-D operands: a typed error, or (an extension) the right values
    for (const [sa, sb] of [[[4], [4, 3]], [[2, 5, 4], [4, 3]], [[2, 1, 4], [3, 4, 3]]] as [number[], number[]][]) {
      const a = await makeInput(rng, sa, { device }), b = await makeInput(rng, sb, { device }), bias = await makeInput(rng, [3], { device });
      const c = codeOf(() => mp.ops.matmul(a.t, b.t, { bias: bias.t, activation: 'gelu' }));
      if (c === 'no error') {
        const ref = R.gelu(R.add(R.matmul(a.v, b.v), bias.v));
        const S = R.add(R.matmul(R.abs(a.v), R.abs(b.v)), R.abs(bias.v)).data.map((v, i) => 1.2 * v + 2 * Math.abs(ref.data[i]));
        expectBound(`matmul [${sa}] @ [${sb}] + bias, gelu`, await readAs(mp.ops.matmul(a.t, b.t, { bias: bias.t, activation: 'gelu' }), ref.shape, 'float32'), ref, 'float32', 4 + 12, S);
      } else expect(['E_ARG', 'E_SHAPE']).toContain(c);
    }
    expect(codeOf(() => mp.tensor([1], [1], { device: 'tpu' as never }))).toBe('E_DEVICE');
    // E_DISPOSED: every op, and reading, after dispose()
    const d = T([3, 4]);
    d.dispose();
    expect(d.disposed).toBe(true);
    for (const [what, f] of [
      ['add', () => mp.ops.add(d, x)], ['add (second operand)', () => mp.ops.add(x, d)], ['matmul', () => mp.ops.matmul(x, d.transpose(0, 1))],
      ['relu', () => mp.ops.relu(d)], ['softmax', () => mp.ops.softmax(d)], ['sum', () => mp.ops.sum(d)],
      ['layerNorm', () => mp.ops.layerNorm(d, null, null)], ['cat', () => mp.ops.cat([x, d], 0)], ['reshape', () => d.reshape([12])],
    ] as [string, () => unknown][]) expect(`${what}: ${codeOf(f)}`).toBe(`${what}: E_DISPOSED`);
    expect(await codeOfAsync(() => d.toFloat32())).toBe('E_DISPOSED');
    // a view of a disposed tensor never reads freed memory: E_DISPOSED, or (refcounted storage) the values
    const base = T([2, 3]), bv = await base.toFloat32();
    const v = base.transpose(0, 1);
    base.dispose();
    const c = await codeOfAsync(() => v.toFloat32());
    if (c !== 'E_DISPOSED') {
      expect(c).toBe('no error');
      expectExact('view outliving its base', await v.toFloat32(), R.transpose(R.arr(bv, [2, 3]), 0, 1).data);
    }
  });

  const cudaReason = BACKENDS.find((b) => b.name === 'cuda')?.reason ?? 'unavailable';
  (cudaAvailable ? test : test.skip)(`E_DEVICE: operands on cpu and cuda${cudaAvailable ? '' : ` — cuda: skipped: ${cudaReason}`}`, () => {
    const other: mp.Device = device === 'cpu' ? 'cuda' : 'cpu';
    const a = mp.tensor([1, 2], [2], { device }), b = mp.tensor([1, 2], [2], { device: other });
    for (const f of [() => mp.ops.add(a, b), () => mp.ops.matmul(a, b), () => mp.ops.cat([a, b], 0), () => mp.ops.mseLoss(a, b),
      () => mp.ops.embedding(ints([0], [1], other), mp.tensor([1, 2], [1, 2], { device }))]) expect(codeOf(f)).toBe('E_DEVICE');
  });
});
