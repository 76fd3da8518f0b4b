// Autograd, on every available backend: each op's gradient with respect to each differentiable
// input against float64 central differences of test/helpers/ref64.ts, hand-worked gradients,
// random composed graphs, weight tying, accumulation, the tape's state errors, noGrad, tidy,
// autocast (fp16 / bf16) and dropout's mask.
//
// Tolerances.
// - FD (float64, h = 1e-6, ref64.fdGrad): truncation h^2/6 |f'''| ~ 1e-12 and round-off
//   ~ 2^-53 |f| / h ~ 1e-10 (1 + |f|): allowed as FD_ERR = 1e-9 (1 + |f|), far below FP32.
// - float32 gradients: a gradient element is a sum over the op's Jacobian, computed in FP32 with
//   at most K + 16 operations along a chain (K: the longest reduction, e.g. matmul's inner dim or
//   the softmax / layerNorm row), so |g - fd| <= (K + 16) 2^-24 * sum |terms|. sum |terms| is not
//   observable per element; bounded by 8 (max_j |fd_j| + |fd_i|) (8: room for cancellation in
//   the sums of the random O(1) inputs used here). For K <= 40 this is <= 3e-5 of the largest
//   gradient: a real bug (a missing term, a wrong broadcast reduction, a transposed operand)
//   gives an O(1) relative error.
// - composed graphs: the same per op, summed over the L ops of the graph: 64 L 2^-24 max |fd|,
//   max over every leaf's gradient (the magnitude of the gradients flowing through the graph).
// - autocast / FP16 / BF16 gradients: derivation at those tests (u = 2^-11 / 2^-8 per rounding,
//   counted along the longest path).
import * as mp from '../src';
import { describeEachBackend } from './helpers/backends';
import { makeRng, rngFromSeed } from './helpers/random';
import * as R from './helpers/ref64';
import {
  awayFromZero, codeOf, codeOfAsync, EPS32, expectBound, expectClose, expectExact, FloatDType, Input, ints, makeInput,
  pick, randInt, readAs, Rng, TINY, U, values, VIEW_KINDS, ViewKind,
} from './helpers/tensors';

const rng = makeRng('autograd.test');
const view = (): ViewKind => pick(rng, VIEW_KINDS);
const FD_ERR = (f: number) => 1e-9 * (1 + Math.abs(f));
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i])); return m; };
type Act = 'none' | 'relu' | 'gelu';

/** ||x - ref|| / ||ref||. */
function relNorm(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(x[i])) return Infinity;
    num += (x[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / (den || 1));
}

async function gradOf(t: mp.Tensor, what: string, dtype: string = t.dtype): Promise<Float32Array> {
  const g = t.grad;
  if (g === null) throw new Error(`${what}: grad is null`);
  expect([...g.shape]).toEqual([...t.shape]);
  expect(g.dtype).toBe(dtype);
  return g.toFloat32();
}

/** Compares float32 leaf gradients with FD: |g - fd| <= (K + 16) 2^-24 8 (max|fd| + |fd_i|) + FD_ERR. */
function expectGradClose(what: string, got: ArrayLike<number>, fd: Float64Array, K: number, f0: number): void {
  const m = maxAbs(fd);
  expectClose(what, got, fd, (i) => (K + 16) * EPS32 * 8 * (m + Math.abs(fd[i])) + FD_ERR(f0));
}

describeEachBackend('autograd', (device) => {
  const leaf = (shape: readonly number[], o: Partial<Parameters<typeof makeInput>[2]> = {}) =>
    makeInput(rng, shape, { device, dtype: 'float32', view: view(), requiresGrad: true, ...o });
  const constant = (shape: readonly number[], o: Partial<Parameters<typeof makeInput>[2]> = {}) =>
    makeInput(rng, shape, { device, dtype: 'float32', view: 'contiguous', ...o });

  /**
   * y = f(leaf views); backpropagates J^T G for a random G (y.backward(G) or sum(y * G).backward(),
   * at random) or 1 when y is a scalar, and checks every leaf's (base's) gradient against the FD
   * of G . ref(leaf values through the same views).
   */
  async function checkGrads(what: string, leaves: Input[], f: (ts: mp.Tensor[]) => mp.Tensor, ref: (vs: R.A64[]) => R.A64, K = 8): Promise<void> {
    const y = f(leaves.map((l) => l.t));
    const yRef = ref(leaves.map((l) => l.v));
    expect([...y.shape]).toEqual([...yRef.shape]);
    expect(y.requiresGrad).toBe(true);
    expect(y.isLeaf).toBe(false);
    let G: R.A64 | null = null, how = 'scalar';
    if (y.shape.length === 0) await y.backward();
    else {
      const g = await constant(y.shape);
      G = g.v;
      if (rng() < 0.5) { how = 'backward(G)'; await y.backward(g.t); }
      else { how = 'sum(y*G)'; await mp.ops.sum(mp.ops.mul(y, g.t)).backward(); }
    }
    const F = (vs: R.A64[]) => { const out = ref(vs.map((v, i) => leaves[i].toView(v))); return G ? R.dot(out, G) : out; };
    const f0 = F(leaves.map((l) => l.baseV)).data[0];
    for (let i = 0; i < leaves.length; i++) {
      const w = `${what} [${how}]: d/d input ${i} (${leaves[i].kind} [${leaves[i].v.shape}])`;
      const got = await gradOf(leaves[i].base, w, 'float32');
      expectGradClose(w, got, R.fdGrad(F, leaves.map((l) => l.baseV), i), K, f0);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Each op

  test('add / sub / mul: both inputs, broadcasting on either side (gradients reduced over broadcast dims), JS-number operand', async () => {
    const cases: [number[], number[]][] = [[[3, 4], [3, 4]], [[3, 1, 4], [2, 4]], [[4], [2, 3, 4]], [[2, 1], [1, 5]], [[], [3, 2]], [[2, 3, 1, 2], [3, 4, 1]], [[1], [1]]];
    for (const [sa, sb] of cases)
      for (const [name, op, ref] of [['add', mp.ops.add, R.add], ['sub', mp.ops.sub, R.sub], ['mul', mp.ops.mul, R.mul]] as const) {
        const a = await leaf(sa), b = await leaf(sb);
        await checkGrads(`${name} [${sa}] [${sb}]`, [a, b], ([x, y]) => op(x, y), ([x, y]) => ref(x, y));
      }
    for (const [name, op, ref] of [['add', mp.ops.add, R.add], ['sub', mp.ops.sub, R.sub], ['mul', mp.ops.mul, R.mul]] as const) {
      const a = await leaf([3, 5]), s = rng() * 4 - 2;
      await checkGrads(`${name}(x, ${s})`, [a], ([x]) => op(x, s), ([x]) => ref(x, s));
    }
  });

  test('relu (away from the kink) and gelu', async () => {
    for (const shape of [[7], [3, 4], [2, 3, 4], [2, 1, 2, 3]]) {
      const a = await leaf(shape, { data: (n) => awayFromZero(rng, n, 0.01, 3) });
      await checkGrads(`relu [${shape}]`, [a], ([x]) => mp.ops.relu(x), ([x]) => R.relu(x));
      const b = await leaf(shape, { lo: -4, hi: 4 });
      await checkGrads(`gelu [${shape}]`, [b], ([x]) => mp.ops.gelu(x), ([x]) => R.gelu(x));
    }
  });

  test('matmul: both operands, 1-D / 2-D / batched with broadcast batch dims, views', async () => {
    const [M, N, K, B] = [randInt(rng, 1, 5), randInt(rng, 1, 5), randInt(rng, 1, 7), randInt(rng, 2, 3)];
    const cases: [number[], number[]][] = [
      [[K], [K]], [[M, K], [K]], [[K], [K, N]], [[K], [B, K, N]], [[B, M, K], [K]], [[M, K], [K, N]],
      [[B, M, K], [K, N]], [[M, K], [B, K, N]], [[2, 1, M, K], [3, K, N]], [[1, B, M, K], [2, 1, K, N]],
    ];
    for (const [sa, sb] of cases) {
      const a = await leaf(sa), b = await leaf(sb);
      await checkGrads(`matmul [${sa}] @ [${sb}]`, [a, b], ([x, y]) => mp.ops.matmul(x, y), ([x, y]) => R.matmul(x, y), K + B * 3);
    }
  });

  test('matmul 2-D options: gradients of a, b and bias through transA / transB, alpha, relu / gelu', async () => {
    for (let r = 0; r < 6; r++) {
      const [M, N, K] = [randInt(rng, 1, 6), randInt(rng, 1, 6), randInt(rng, 1, 8)];
      const transA = rng() < 0.5, transB = rng() < 0.5, activation = pick(rng, ['none', 'relu', 'gelu'] as const);
      const alpha = 0.5 + rng();
      const a = await leaf(transA ? [K, M] : [M, K]), b = await leaf(transB ? [N, K] : [K, N]);
      const bias = await leaf([N], { view: 'contiguous' });
      await checkGrads(`matmul ${M}x${N}x${K} tA=${transA} tB=${transB} alpha bias ${activation}`, [a, b, bias],
        ([x, y, w]) => mp.ops.matmul(x, y, { transA, transB, alpha, bias: w, activation }),
        ([x, y, w]) => R.matmulFused(x, y, { transA, transB, alpha, bias: w, activation }), K + 8);
    }
  });

  test('matmul 2-D options: beta * c is differentiable too (as torch.addmm): gradients of a, b, c and bias', async () => {
    for (let r = 0; r < 4; r++) {
      const [M, N, K] = [randInt(rng, 1, 6), randInt(rng, 1, 6), randInt(rng, 1, 8)];
      const transA = rng() < 0.5, transB = rng() < 0.5, activation = pick(rng, ['none', 'relu', 'gelu'] as const);
      const alpha = 0.5 + rng(), beta = -0.25 - rng();
      const a = await leaf(transA ? [K, M] : [M, K]), b = await leaf(transB ? [N, K] : [K, N]);
      const c = await leaf([M, N]), bias = await leaf([N], { view: 'contiguous' });
      await checkGrads(`matmul ${M}x${N}x${K} tA=${transA} tB=${transB} alpha beta c bias ${activation}`, [a, b, c, bias],
        ([x, y, z, w]) => mp.ops.matmul(x, y, { transA, transB, alpha, beta, c: z, bias: w, activation }),
        ([x, y, z, w]) => R.matmulFused(x, y, { transA, transB, alpha, beta, c: z, bias: w, activation }), K + 8);
    }
  });

  test('matmul: when only c requires grad, its gradient is beta * upstream (never silently missing)', async () => {
    const a = await constant([3, 4]), b = await constant([4, 2]), c = await leaf([3, 2], { view: 'contiguous' });
    const y = mp.ops.matmul(a.t, b.t, { c: c.t, beta: 0.5 });
    expect(y.requiresGrad).toBe(true);
    const G = await constant([3, 2]);
    await y.backward(G.t);
    expectClose('d (a @ b + 0.5 c) / dc', await gradOf(c.base, 'c'), G.v.data.map((g) => 0.5 * g), (i) => EPS32 * Math.abs(G.v.data[i]));
  });

  test('linear: x [..., in], weight, bias, with each activation', async () => {
    for (const [xs, act, withBias] of [[[5], 'none', true], [[3, 5], 'relu', true], [[2, 3, 5], 'gelu', false], [[2, 1, 2, 5], 'gelu', true]] as [number[], Act, boolean][]) {
      const outF = randInt(rng, 1, 6);
      const x = await leaf(xs), w = await leaf([outF, xs[xs.length - 1]]);
      const b = withBias ? await leaf([outF], { view: 'contiguous' }) : null;
      const ls = b ? [x, w, b] : [x, w];
      await checkGrads(`linear [${xs}] -> ${outF} ${act} bias=${withBias}`, ls,
        (t) => mp.ops.linear(t[0], t[1], t[2] ?? null, { activation: act }),
        (v) => R.linear(v[0], v[1], v[2] ?? null, act), 24);
    }
  });

  test('sum / mean: all, one (negative) and several dims, keepdim', async () => {
    for (const [shape, dim, keepdim] of [
      [[3, 4], undefined, false], [[2, 3, 4], 1, false], [[2, 3, 4], -1, true], [[2, 3, 4, 2], [0, 2], false],
      [[2, 3, 4, 2], [-1, 1], true], [[5], 0, true],
    ] as [number[], number | number[] | undefined, boolean][]) {
      const opts = dim === undefined ? {} : { dim, keepdim };
      const x = await leaf(shape), y = await leaf(shape);
      await checkGrads(`sum [${shape}] ${JSON.stringify(opts)}`, [x], ([t]) => mp.ops.sum(t, opts), ([v]) => R.sum(v, opts), 32);
      await checkGrads(`mean [${shape}] ${JSON.stringify(opts)}`, [y], ([t]) => mp.ops.mean(t, opts), ([v]) => R.mean(v, opts), 32);
    }
  });

  test('softmax / logSoftmax along each dim', async () => {
    for (const [shape, dim] of [[[6], -1], [[3, 5], -1], [[3, 5], 0], [[2, 3, 4], 1], [[2, 2, 3, 2], -3]] as [number[], number][]) {
      const x = await leaf(shape, { lo: -3, hi: 3 }), y = await leaf(shape, { lo: -3, hi: 3 });
      await checkGrads(`softmax [${shape}] dim ${dim}`, [x], ([t]) => mp.ops.softmax(t, { dim }), ([v]) => R.softmax(v, dim), 16);
      await checkGrads(`logSoftmax [${shape}] dim ${dim}`, [y], ([t]) => mp.ops.logSoftmax(t, { dim }), ([v]) => R.logSoftmax(v, dim), 16);
    }
  });

  test('layerNorm: x, weight and bias (each optional)', async () => {
    for (const [shape, withW, withB] of [[[6], true, true], [[3, 8], true, false], [[2, 3, 5], false, true], [[2, 1, 2, 4], false, false]] as [number[], boolean, boolean][]) {
      const N = shape[shape.length - 1];
      const x = await leaf(shape, { lo: -1, hi: 2 });
      const w = withW ? await leaf([N], { view: 'contiguous', lo: 0.5, hi: 1.5 }) : null;
      const b = withB ? await leaf([N], { view: 'contiguous' }) : null;
      const ls = [x, ...(w ? [w] : []), ...(b ? [b] : [])];
      await checkGrads(`layerNorm [${shape}] w=${withW} b=${withB}`, ls,
        (t) => mp.ops.layerNorm(t[0], w ? t[1] : null, b ? t[w ? 2 : 1] : null),
        (v) => R.layerNorm(v[0], w ? v[1] : null, b ? v[w ? 2 : 1] : null), 2 * N);
    }
  });

  test('embedding: the weight\'s gradient sums the rows of repeated ids; rows never looked up get 0', async () => {
    for (const idsShape of [[5], [2, 3], [2, 2, 2]]) {
      const V = 6, C = 3, n = R.numel(idsShape);
      const ids = Array.from({ length: n }, () => randInt(rng, 0, V - 2)); // id V-1 never used
      ids[n - 1] = ids[0];
      const w = await leaf([V, C]);
      const idT = ints(ids, idsShape, device);
      await checkGrads(`embedding ids [${idsShape}]`, [w], ([t]) => mp.ops.embedding(idT, t), ([v]) => R.embedding(ids, idsShape, v));
      const g = await gradOf(w.base, 'embedding');
      if (w.kind === 'contiguous') expectExact('unused row', g.subarray((V - 1) * C, V * C), [0, 0, 0]);
      expect(idT.requiresGrad).toBe(false);
    }
  });

  test('crossEntropy (logits, label smoothing) and mseLoss (pred and target)', async () => {
    for (let r = 0; r < 5; r++) {
      const N = randInt(rng, 1, 6), C = randInt(rng, 2, 7), labelSmoothing = r < 2 ? 0 : rng();
      const tg = Int32Array.from({ length: N }, () => randInt(rng, 0, C - 1));
      const l = await leaf([N, C], { lo: -3, hi: 3 });
      const targets = r % 2 ? tg : ints(tg, [N], device);
      await checkGrads(`crossEntropy [${N},${C}] smoothing ${labelSmoothing}`, [l],
        ([t]) => mp.ops.crossEntropy(t, targets, { labelSmoothing }), ([v]) => R.crossEntropy(v, tg, labelSmoothing), C + N);
    }
    for (const shape of [[7], [3, 4], [2, 3, 2], [1, 2, 1, 3]]) {
      const p = await leaf(shape), t = await leaf(shape);
      await checkGrads(`mseLoss [${shape}]`, [p, t], ([x, y]) => mp.ops.mseLoss(x, y), ([x, y]) => R.mseLoss(x, y), R.numel(shape));
    }
  });

  test('shape ops: reshape, view, transpose, permute, narrow, cat, contiguous (views of leaves)', async () => {
    const x = () => leaf([2, 3, 4]);
    const a = await x();
    await checkGrads('reshape [2,3,4] -> [4,-1]', [a], ([t]) => mp.ops.reshape(t, [4, -1]), ([v]) => R.reshape(v, [4, -1]));
    const b = await x();
    await checkGrads('.reshape -> [24]', [b], ([t]) => t.reshape([24]), ([v]) => R.reshape(v, [24]));
    const c = await leaf([2, 3, 4], { view: 'contiguous' });
    await checkGrads('.view -> [6, 4]', [c], ([t]) => t.view([6, 4]), ([v]) => R.reshape(v, [6, 4]));
    const d = await x();
    await checkGrads('transpose(0, -1)', [d], ([t]) => mp.ops.transpose(t, 0, -1), ([v]) => R.transpose(v, 0, -1));
    const e = await x();
    await checkGrads('permute [1, 2, 0]', [e], ([t]) => mp.ops.permute(t, [1, 2, 0]), ([v]) => R.permute(v, [1, 2, 0]));
    const f = await x();
    await checkGrads('narrow(1, 1, 2)', [f], ([t]) => mp.ops.narrow(t, 1, 1, 2), ([v]) => R.narrow(v, 1, 1, 2));
    const g = await x();
    await checkGrads('.narrow(-1, 0, 3).contiguous()', [g], ([t]) => t.narrow(-1, 0, 3).contiguous(), ([v]) => R.narrow(v, -1, 0, 3));
    const p = await leaf([2, 3]), q = await leaf([2, 1]), s = await leaf([2, 4]);
    await checkGrads('cat dim 1 of [2,3] [2,1] [2,4]', [p, q, s], (t) => mp.ops.cat(t, 1), (v) => R.cat(v, 1));
    const u = await leaf([2, 3]), w = await leaf([1, 3]);
    await checkGrads('cat dim -2', [u, w], (t) => mp.ops.cat(t, -2), (v) => R.cat(v, -2));
    // a chain of views: the gradient reaches the base through every one
    const h = await x();
    await checkGrads('transpose . narrow . permute . reshape', [h], ([t]) => t.transpose(0, 2).narrow(1, 1, 2).permute([2, 0, 1]).reshape([-1]),
      ([v]) => R.reshape(R.permute(R.narrow(R.transpose(v, 0, 2), 1, 1, 2), [2, 0, 1]), [-1]));
  });

  test('dropout: the backward uses the forward\'s mask; training false and p = 0 pass the gradient through', async () => {
    const p = 0.4, n = 2000;
    const x = await leaf([40, 50], { view: 'contiguous', data: (k) => awayFromZero(rng, k, 0.25, 1) });
    const G = await constant([40, 50]);
    mp.manualSeed(7);
    const y = mp.ops.dropout(x.t, p);
    const yv = await y.toFloat32();
    await mp.ops.sum(mp.ops.mul(y, G.t)).backward();
    const g = await gradOf(x.base, 'dropout');
    let kept = 0;
    const ref = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (yv[i] !== 0) { kept++; ref[i] = G.v.data[i] / (1 - p); }
      if ((g[i] === 0) !== (yv[i] === 0) && G.v.data[i] !== 0) throw new Error(`dropout: element ${i}: forward kept=${yv[i] !== 0} but gradient ${g[i]}`);
    }
    // kept: G / (1 - p) in FP32 (one or two roundings)
    expectBound('dropout gradient of kept elements', g, R.arr(ref, [n]), 'float32', 2);
    expect(Math.abs(kept - n * (1 - p))).toBeLessThanOrEqual(6 * Math.sqrt(n * p * (1 - p)));
    for (const [what, f] of [['training false', (t: mp.Tensor) => mp.ops.dropout(t, p, { training: false })], ['p = 0', (t: mp.Tensor) => mp.ops.dropout(t, 0)]] as const) {
      const z = await leaf([3, 4], { view: 'contiguous' });
      const H = await constant([3, 4]);
      await f(z.t).backward(H.t);
      expectExact(`dropout ${what}: gradient = upstream`, await gradOf(z.base, what), H.v.data);
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Hand-worked

  test('hand-worked gradients', async () => {
    const L = (v: number[], shape: number[]) => mp.tensor(v, shape, { device, requiresGrad: true });
    const xv = values(rng, 6);
    const x = L(Array.from(xv), [2, 3]);
    expect(x.isLeaf).toBe(true);
    expect(x.grad).toBeNull();
    await mp.ops.sum(mp.ops.mul(x, x)).backward();
    expectExact('d sum(x*x) = 2x (a tensor used twice: both uses summed)', await gradOf(x, 'x'), Array.from(xv, (v) => 2 * v));
    const a = L([1, 2, 3], [3, 1]), b = L([10, 20, 30, 40], [1, 4]);
    await mp.ops.sum(mp.ops.add(a, b)).backward();
    expectExact('d sum(a + b) / da, a [3,1] broadcast over 4 columns', await gradOf(a, 'a'), [4, 4, 4]);
    expectExact('d sum(a + b) / db, b [1,4] broadcast over 3 rows', await gradOf(b, 'b'), [3, 3, 3, 3]);
    const c = L([1, 2, 3], [3]), d = L([4, 5, 6], [3]);
    await mp.ops.sum(mp.ops.mul(c, d)).backward();
    expectExact('d sum(c*d) / dc = d', await gradOf(c, 'c'), [4, 5, 6]);
    expectExact('d sum(c*d) / dd = c', await gradOf(d, 'd'), [1, 2, 3]);
    const m = L(Array.from(values(rng, 7)), [7]);
    await mp.ops.mean(m).backward();
    const gm = await gradOf(m, 'm');
    expectClose('d mean(m) = 1/7', gm, new Array(7).fill(1 / 7), () => EPS32 / 7);
    const r = L([-1, 2, -0.5, 0.25], [4]);
    await mp.ops.sum(mp.ops.relu(r)).backward();
    expectExact('d sum(relu(r))', await gradOf(r, 'r'), [0, 1, 0, 1]);
    const z = L([0, Math.LN2, Math.log(3)], [1, 3]);
    await mp.ops.crossEntropy(z, Int32Array.from([2])).backward();
    expectClose('d crossEntropy([0, ln2, ln3], 2) = softmax - onehot', await gradOf(z, 'z'), [1 / 6, 1 / 3, -1 / 2], () => 4 * EPS32);
    const s = L(Array.from(values(rng, 5, -2, 2)), [5]);
    await mp.ops.sum(mp.ops.softmax(s)).backward();
    expectClose('d sum(softmax(s)) = 0', await gradOf(s, 's'), new Array(5).fill(0), () => 16 * EPS32);
    const w = L([1, 2, 3, 4, 5, 6], [2, 3]), v = L([1, -1, 2], [3]);
    await mp.ops.sum(mp.ops.matmul(w, v)).backward(); // w @ v = [1-2+6, 4-5+12]
    expectExact('d sum(w @ v) / dw = rows of v', await gradOf(w, 'w'), [1, -1, 2, 1, -1, 2]);
    expectExact('d sum(w @ v) / dv = column sums of w', await gradOf(v, 'v'), [5, 7, 9]);
    const e = L([3, 4], [2]);
    await mp.ops.mseLoss(e, mp.tensor([1, 1], [2], { device })).backward();
    expectExact('d mse(e, 1) = 2 (e - 1) / n', await gradOf(e, 'e'), [2, 3]);
  });

  // ---------------------------------------------------------------------------------------------
  // Composed graphs: one definition run through two independent implementations of the ops.

  interface Ops<T> {
    add(a: T, b: T | number): T; sub(a: T, b: T | number): T; mul(a: T, b: T | number): T;
    matmul(a: T, b: T): T; linear(x: T, w: T, b: T | null, act: Act): T; relu(x: T): T; gelu(x: T): T;
    sum(x: T, dim?: number | number[], keepdim?: boolean): T; mean(x: T, dim?: number | number[], keepdim?: boolean): T;
    softmax(x: T, dim: number): T; logSoftmax(x: T, dim: number): T; layerNorm(x: T, w: T | null, b: T | null): T;
    crossEntropy(x: T, targets: Int32Array, labelSmoothing: number): T; mseLoss(p: T, t: T): T;
    reshape(x: T, s: number[]): T; transpose(x: T, d0: number, d1: number): T; permute(x: T, p: number[]): T;
    narrow(x: T, d: number, start: number, len: number): T; cat(xs: T[], d: number): T;
    embedding(ids: Int32Array, idsShape: number[], w: T): T;
  }
  const dimOpts = (dim?: number | number[], keepdim?: boolean) => (dim === undefined ? {} : { dim, keepdim: keepdim ?? false });
  const MP: Ops<mp.Tensor> = {
    add: (a, b) => mp.ops.add(a, b), sub: (a, b) => mp.ops.sub(a, b), mul: (a, b) => mp.ops.mul(a, b),
    matmul: (a, b) => mp.ops.matmul(a, b), linear: (x, w, b, act) => mp.ops.linear(x, w, b, { activation: act }),
    relu: (x) => mp.ops.relu(x), gelu: (x) => mp.ops.gelu(x),
    sum: (x, d, k) => mp.ops.sum(x, dimOpts(d, k)), mean: (x, d, k) => mp.ops.mean(x, dimOpts(d, k)),
    softmax: (x, dim) => mp.ops.softmax(x, { dim }), logSoftmax: (x, dim) => mp.ops.logSoftmax(x, { dim }),
    layerNorm: (x, w, b) => mp.ops.layerNorm(x, w, b), crossEntropy: (x, t, labelSmoothing) => mp.ops.crossEntropy(x, t, { labelSmoothing }),
    mseLoss: (p, t) => mp.ops.mseLoss(p, t), reshape: (x, s) => mp.ops.reshape(x, s), transpose: (x, a, b) => mp.ops.transpose(x, a, b),
    permute: (x, p) => mp.ops.permute(x, p), narrow: (x, d, s, l) => mp.ops.narrow(x, d, s, l), cat: (xs, d) => mp.ops.cat(xs, d),
    embedding: (ids, shape, w) => mp.ops.embedding(ints(ids, shape, device), w),
  };
  let refOpCount = 0;
  const counted = <F extends (...args: never[]) => R.A64>(f: F): F => ((...args: never[]) => { refOpCount++; return f(...args); }) as F;
  const REF: Ops<R.A64> = {
    add: counted(R.add), sub: counted(R.sub), mul: counted(R.mul), matmul: counted(R.matmul),
    linear: counted((x: R.A64, w: R.A64, b: R.A64 | null, act: Act) => R.linear(x, w, b, act)), relu: counted(R.relu), gelu: counted(R.gelu),
    sum: counted((x: R.A64, d?: number | number[], k?: boolean) => R.sum(x, dimOpts(d, k))),
    mean: counted((x: R.A64, d?: number | number[], k?: boolean) => R.mean(x, dimOpts(d, k))),
    softmax: counted(R.softmax), logSoftmax: counted(R.logSoftmax), layerNorm: counted((x: R.A64, w: R.A64 | null, b: R.A64 | null) => R.layerNorm(x, w, b)),
    crossEntropy: counted(R.crossEntropy), mseLoss: counted(R.mseLoss), reshape: counted(R.reshape), transpose: counted(R.transpose),
    permute: counted(R.permute), narrow: counted(R.narrow), cat: counted(R.cat), embedding: counted(R.embedding),
  };

  interface Program {
    desc: string;
    leaves: { name: string; shape: number[]; lo: number; hi: number }[];
    consts: { name: string; shape: number[]; lo: number; hi: number }[];
    run<T>(o: Ops<T>, v: Record<string, T>): T;
  }

  /** A random MLP-like graph: broadcasts, views, a tensor used twice, residual adds, matmul chains, softmax into a loss. */
  function randomProgram(g: Rng): Program {
    const B = randInt(g, 2, 4), D = randInt(g, 2, 5), H = randInt(g, 3, 6), C = randInt(g, 2, 5);
    const first = pick(g, ['linear', 'matmulT', 'batched'] as const);
    const act = pick(g, ['relu', 'gelu', 'none'] as const);
    const ln = g() < 0.5, scale = pick(g, ['none', 'row', 'col'] as const);
    const twice = pick(g, ['none', 'square', 'gate'] as const), residual = g() < 0.6;
    const mix = pick(g, ['none', 'narrowcat', 'softmaxT', 'permute3d'] as const);
    const loss = pick(g, ['ce', 'mse', 'logsm'] as const), extra = g() < 0.5;
    const k = randInt(g, 1, H - 1), labelSmoothing = g() < 0.5 ? 0 : 0.1 + 0.3 * g();
    const targets = Int32Array.from({ length: B }, () => randInt(g, 0, C - 1));
    const leaves = [
      { name: 'x', shape: [B, D], lo: -1, hi: 1 }, { name: 'W1', shape: [H, D], lo: -1, hi: 1 }, { name: 'b1', shape: [H], lo: -0.5, hi: 0.5 },
      { name: 'W2', shape: [C, H], lo: -1, hi: 1 }, { name: 'b2', shape: [C], lo: -0.5, hi: 0.5 },
    ];
    if (ln) leaves.push({ name: 'g', shape: [H], lo: 0.5, hi: 1.5 }, { name: 'be', shape: [H], lo: -0.5, hi: 0.5 });
    if (scale === 'row') leaves.push({ name: 's', shape: [H], lo: 0.5, hi: 1.5 });
    if (scale === 'col') leaves.push({ name: 's', shape: [B, 1], lo: 0.5, hi: 1.5 });
    if (residual) leaves.push({ name: 'W3', shape: [H, H], lo: -0.7, hi: 0.7 });
    const consts = loss === 'ce' ? [] : [{ name: 'T', shape: [B, C], lo: 0, hi: 1 }];
    return {
      desc: `B${B} D${D} H${H} C${C} ${first} ${act} ln=${ln} scale=${scale} twice=${twice} residual=${residual} mix=${mix} loss=${loss} extra=${extra}`,
      leaves, consts,
      run<T>(o: Ops<T>, v: Record<string, T>): T {
        let h: T;
        if (first === 'linear') h = o.linear(v.x, v.W1, v.b1, act);
        else {
          const z = first === 'matmulT' ? o.matmul(v.x, o.transpose(v.W1, 0, 1))
            : o.reshape(o.matmul(o.reshape(v.x, [B, 1, D]), o.transpose(v.W1, -1, -2)), [B, H]); // [B,1,D] @ [D,H] broadcast
          const zb = o.add(z, v.b1);
          h = act === 'relu' ? o.relu(zb) : act === 'gelu' ? o.gelu(zb) : zb;
        }
        if (ln) h = o.layerNorm(h, v.g, v.be);
        if (scale !== 'none') h = o.mul(h, v.s);
        if (twice === 'square') h = o.add(h, o.mul(o.mul(h, h), 0.5));
        if (twice === 'gate') h = o.mul(h, o.gelu(h));
        if (residual) h = o.add(h, o.matmul(h, v.W3));
        if (mix === 'narrowcat') h = o.cat([o.narrow(h, 1, k, H - k), o.narrow(h, -1, 0, k)], 1);
        if (mix === 'softmaxT') h = o.add(h, o.transpose(o.softmax(o.transpose(h, 0, 1), -1), 0, 1));
        if (mix === 'permute3d') h = o.reshape(o.permute(o.reshape(h, [B, H, 1]), [2, 0, 1]), [B, H]);
        const logits = o.linear(h, v.W2, v.b2, 'none');
        let L: T;
        if (loss === 'ce') L = o.crossEntropy(logits, targets, labelSmoothing);
        else if (loss === 'mse') L = o.mseLoss(o.softmax(logits, 1), v.T);
        else L = o.mul(o.mean(o.sum(o.mul(o.logSoftmax(logits, -1), v.T), 1)), -1);
        if (extra) L = o.add(L, o.mul(o.mean(h), 0.1));
        return L;
      },
    };
  }

  test('random composed graphs (12 seeds) vs an independent float64 forward and its finite differences', async () => {
    for (let s = 0; s < 12; s++) {
      const seed = Math.floor(rng() * 2 ** 32);
      const g = rngFromSeed(seed);
      const prog = randomProgram(g);
      const what = `graph ${s} (${prog.desc})`;
      const ins: Record<string, Input> = {};
      for (const l of prog.leaves) ins[l.name] = await makeInput(g, l.shape, { device, view: pick(g, VIEW_KINDS), requiresGrad: true, lo: l.lo, hi: l.hi });
      for (const c of prog.consts) ins[c.name] = await makeInput(g, c.shape, { device, lo: c.lo, hi: c.hi });
      const tv: Record<string, mp.Tensor> = {};
      for (const [k, x] of Object.entries(ins)) tv[k] = x.t;
      const loss = prog.run(MP, tv);
      expect(loss.shape).toEqual([]);
      refOpCount = 0;
      const refVals: Record<string, R.A64> = {};
      for (const [k, x] of Object.entries(ins)) refVals[k] = x.v;
      const ref = prog.run(REF, refVals).data[0];
      const nOps = refOpCount;
      // the loss: L FP32 ops each within (K + 8) u relative of O(1) magnitudes
      expectClose(`${what}: loss`, await loss.toFloat32(), [ref], () => 16 * nOps * EPS32 * (1 + Math.abs(ref)));
      await loss.backward();
      const names = prog.leaves.map((l) => l.name);
      const F = (vs: R.A64[]) => {
        const vals: Record<string, R.A64> = { ...refVals };
        names.forEach((n, i) => { vals[n] = ins[n].toView(vs[i]); });
        return prog.run(REF, vals);
      };
      const bases = names.map((n) => ins[n].baseV);
      // FP32 errors scale with the gradients flowing through the graph, not with one leaf's
      // (a leaf's own gradient can be small by cancellation, e.g. behind a layerNorm): the scale
      // is the largest gradient of any leaf (all leaves are O(1) values multiplying the same
      // upstream gradients).
      const fds = names.map((_, i) => R.fdGrad(F, bases, i));
      const m = Math.max(...fds.map(maxAbs));
      for (let i = 0; i < names.length; i++) {
        const got = await gradOf(ins[names[i]].base, `${what}: ${names[i]}`, 'float32');
        expectClose(`${what}: d loss / d ${names[i]} (${ins[names[i]].kind})`, got, fds[i], () => 64 * nOps * EPS32 * m + FD_ERR(ref));
      }
      for (const c of prog.consts) expect(ins[c.name].base.grad).toBeNull();
    }
  });

  test('weight tying: one weight used by embedding and by linear gets the sum of both paths', async () => {
    const V = 7, C = 5, idsShape = [2, 3];
    const ids = Array.from({ length: 6 }, () => randInt(rng, 0, V - 1));
    const targets = Int32Array.from({ length: 6 }, () => randInt(rng, 0, V - 1));
    const W = await leaf([V, C], { view: 'contiguous' });
    const run = <T>(o: Ops<T>, wEmb: T, wOut: T) =>
      o.crossEntropy(o.reshape(o.linear(o.layerNorm(o.gelu(o.embedding(Int32Array.from(ids), idsShape, wEmb)), null, null), wOut, null, 'none'), [6, V]), targets, 0);
    const loss = run(MP, W.t, W.t);
    await loss.backward();
    const g = await gradOf(W.base, 'tied W', 'float32');
    const fd = R.fdGrad(([w]) => { const t = W.toView(w); return run(REF, t, t); }, [W.baseV], 0);
    expectGradClose('tied weight vs FD', g, fd, 2 * C + V, run(REF, W.v, W.v).data[0]);
    // the same with two copies: W.grad = grad through embedding + grad through linear
    const We = mp.tensor(Float32Array.from(W.v.data), [V, C], { device, requiresGrad: true });
    const Wo = mp.tensor(Float32Array.from(W.v.data), [V, C], { device, requiresGrad: true });
    await run(MP, We, Wo).backward();
    const ge = await gradOf(We, 'We'), go = await gradOf(Wo, 'Wo');
    const sum = Float64Array.from(ge, (x, i) => x + go[i]);
    expect(maxAbs(ge)).toBeGreaterThan(0);
    expect(maxAbs(go)).toBeGreaterThan(0);
    expectGradClose('tied = embedding path + linear path', g, sum, 2 * C + V, 0);
  });

  // ---------------------------------------------------------------------------------------------
  // The tape

  test('a leaf on a branch that does not reach the loss keeps grad null; non-leaves keep none; detach and noGrad cut the graph', async () => {
    const a = (await leaf([3], { view: 'contiguous' })).t, b = (await leaf([3], { view: 'contiguous' })).t, c = (await leaf([3], { view: 'contiguous' })).t;
    const side = mp.ops.mul(b, 2); // never reaches the loss
    const h = mp.ops.mul(a, a);
    expect(h.isLeaf).toBe(false);
    expect(side.requiresGrad).toBe(true);
    const cut = mp.ops.mul(c.detach(), 3);
    expect(cut.requiresGrad).toBe(false);
    const viaNoGrad = mp.noGrad(() => mp.ops.mul(c, 5));
    const loss = mp.ops.sum(mp.ops.add(mp.ops.add(h, cut), viaNoGrad));
    await loss.backward();
    expect(a.grad).not.toBeNull();
    expect(b.grad).toBeNull();
    expect(c.grad).toBeNull();
    expect(h.grad).toBeNull(); // PyTorch keeps no .grad on non-leaves
    // detach: the value flows, the gradient does not: d sum(x.detach() * x) = x
    const x = await leaf([4], { view: 'contiguous' });
    const xd = x.t.detach();
    expect(xd.requiresGrad).toBe(false);
    expect(xd.isLeaf).toBe(true);
    expectExact('detach keeps the values', await xd.toFloat32(), x.v.data);
    await mp.ops.sum(mp.ops.mul(xd, x.t)).backward();
    expectExact('d sum(x.detach() * x) = x', await gradOf(x.base, 'x'), x.v.data);
    // a plain tensor is a leaf that requires no grad
    const plain = mp.tensor([1, 2], [2], { device });
    expect(plain.isLeaf).toBe(true);
    expect(plain.requiresGrad).toBe(false);
    expect(mp.ops.mul(plain, plain).requiresGrad).toBe(false);
  });

  test('gradients accumulate into .grad across backward calls; backward(gradient) for non-scalars', async () => {
    const xv = values(rng, 6);
    const x = mp.tensor(xv, [2, 3], { device, requiresGrad: true });
    await mp.ops.sum(mp.ops.mul(x, x)).backward();
    await mp.ops.sum(mp.ops.mul(x, 3)).backward();
    // one FP32 rounding per accumulation: within 1 ulp
    const ulp1 = (ref: ArrayLike<number>) => (i: number) => 2 * EPS32 * Math.abs(ref[i]);
    const r1 = Array.from(xv, (v) => 2 * v + 3);
    expectClose('2x + 3 after two backward calls', await gradOf(x, 'x'), r1, ulp1(r1));
    const w = mp.tensor(values(rng, 6), [2, 3], { device, requiresGrad: true });
    const wv = await w.toFloat32();
    const y = mp.ops.mul(x, w);
    const G = values(rng, 6);
    const gx0 = await gradOf(x, 'x');
    await y.backward(mp.tensor(G, [2, 3], { device }));
    const r2 = Array.from(gx0, (v, i) => v + G[i] * wv[i]), r3 = Array.from(G, (g, i) => g * xv[i]);
    expectClose('x.grad += G * w', await gradOf(x, 'x'), r2, (i) => 2 * EPS32 * (Math.abs(gx0[i]) + Math.abs(G[i] * wv[i])));
    expectClose('w.grad = G * x', await gradOf(w, 'w'), r3, ulp1(r3));
  });

  test('E_STATE: backward twice over a freed graph, on a tensor that does not require grad, on a non-scalar without gradient; E_SHAPE: a gradient of the wrong shape; E_ARG: int32 requiring grad', async () => {
    const x = (await leaf([3], { view: 'contiguous' })).t;
    const loss = mp.ops.sum(mp.ops.mul(x, x));
    await loss.backward();
    expect(await codeOfAsync(() => loss.backward())).toBe('E_STATE');
    expect(await codeOfAsync(() => mp.tensor([1], [], { device }).backward())).toBe('E_STATE');
    const y = mp.ops.mul(x, 2);
    expect(await codeOfAsync(() => y.backward())).toBe('E_STATE');
    expect(await codeOfAsync(() => y.backward(mp.tensor([1, 2], [2], { device })))).toBe('E_SHAPE');
    expect(await codeOfAsync(() => mp.noGrad(() => mp.ops.sum(x)).backward())).toBe('E_STATE');
    expect(codeOf(() => mp.tensor(Int32Array.from([1, 2]), [2], { device, requiresGrad: true }))).toBe('E_ARG');
    expect(codeOf(() => mp.tensor([1, 2], [2], { device, dtype: 'int32', requiresGrad: true }))).toBe('E_ARG');
    // the failed calls changed nothing: x.grad is still the first backward's 2x
    expectExact('x.grad after the failures', await gradOf(x, 'x'), Array.from(await x.toFloat32(), (v) => 2 * v));
  });

  test('noGrad records nothing and returns fn\'s result; recording resumes after it', async () => {
    const x = (await leaf([4], { view: 'contiguous' })).t;
    const r = mp.noGrad(() => {
      const y = mp.ops.matmul(mp.ops.relu(x), x);
      expect(y.requiresGrad).toBe(false);
      return { y, tag: 42 };
    });
    expect(r.tag).toBe(42);
    expect(r.y.requiresGrad).toBe(false);
    expect(r.y.isLeaf).toBe(true);
    // z is computed without the tape: d sum(z * x) = z = 2x (4x if the noGrad op were recorded)
    const z = mp.noGrad(() => mp.ops.mul(x, 2));
    const after = mp.ops.mul(z, x);
    expect(after.requiresGrad).toBe(true);
    await mp.ops.sum(after).backward();
    expectExact('d sum(noGrad(2x) * x) = 2x', await gradOf(x, 'x'), Array.from(await x.toFloat32(), (v) => 2 * v));
  });

  test('tidy disposes what it created and did not return (a Tensor, or arrays / objects of them); inputs and leaf grads survive', async () => {
    const x = mp.tensor(values(rng, 6), [2, 3], { device, requiresGrad: true });
    const xv = R.arr(await x.toFloat32(), [2, 3]);
    let inner: mp.Tensor[] = [];
    const out = mp.tidy(() => {
      const a = mp.ops.mul(x, 2), b = mp.ops.add(a, 1), c = mp.ops.transpose(b, 0, 1);
      inner = [a, b, c];
      return mp.ops.relu(c);
    });
    for (const t of inner) expect(t.disposed).toBe(true);
    expect(out.disposed).toBe(false);
    expect(x.disposed).toBe(false);
    expectExact('tidy result', await out.toFloat32(), R.relu(R.transpose(R.add(R.mul(xv, 2), 1), 0, 1)).data.map(Math.fround));
    const [p, q, rest] = mp.tidy(() => {
      const t = mp.ops.mul(x, 3);
      inner = [t];
      return [mp.ops.add(t, 1), { v: mp.ops.sub(t, 1) }, 7] as const;
    });
    expect(inner[0].disposed).toBe(true);
    expect(p.disposed).toBe(false);
    expect(q.v.disposed).toBe(false);
    expect(rest).toBe(7);
    // nested: the inner scope's result belongs to the outer one
    let mid: mp.Tensor | null = null;
    const o2 = mp.tidy(() => {
      mid = mp.tidy(() => mp.ops.mul(x, 4));
      return mp.ops.add(mid, 1);
    });
    expect(mid!.disposed).toBe(true);
    expect(o2.disposed).toBe(false);
    // a gradient written inside tidy (to a leaf created outside) is kept
    // a loss built inside tidy whose backward needs an intermediate (h, saved by mul(h, h)):
    // backward after the scope either works (the graph kept what it saved) or says so with a
    // typed error; never a read of freed memory.
    const w = mp.tensor(values(rng, 3), [3], { device, requiresGrad: true });
    const loss = mp.tidy(() => { const h = mp.ops.mul(w, 3); inner = [h]; return mp.ops.sum(mp.ops.mul(h, h)); });
    expect(loss.disposed).toBe(false);
    expect(inner[0].disposed).toBe(true);
    const code = await codeOfAsync(() => loss.backward());
    if (code === 'no error') {
      const wv = await w.toFloat32();
      expectClose('d sum((3w)^2) = 18 w, graph built in tidy', await gradOf(w, 'w'), Array.from(wv, (v) => 18 * v), (i) => 4 * EPS32 * 18 * Math.abs(wv[i]));
    } else expect(['E_DISPOSED', 'E_STATE']).toContain(code);
  });

  test('gradient dtype = the tensor\'s dtype: float16 / bfloat16 leaves get float16 / bfloat16 gradients', async () => {
    for (const dt of ['float16', 'bfloat16'] as FloatDType[]) {
      const x = await leaf([4, 5], { dtype: dt, view: 'contiguous' });
      await mp.ops.sum(mp.ops.mul(x.t, x.t)).backward();
      expectExact(`${dt}: d sum(x*x) = 2x (exact in ${dt})`, await gradOf(x.base, dt, dt), x.v.data.map((v) => 2 * v));
      // matmul in the low dtype: grad_y = G rounded to dt, grad_w = x^T grad_y (FP32 sum) rounded:
      // two roundings on the reference computed from the stored values -> norm-wise <= 4u.
      const a = await leaf([6, 7], { dtype: dt, view: 'contiguous' }), w = await leaf([7, 3], { dtype: dt, view: 'contiguous' });
      const G = await constant([6, 3]);
      const y = mp.ops.matmul(a.t, w.t);
      expect(y.dtype).toBe(dt);
      await mp.ops.sum(mp.ops.mul(y, G.t)).backward();
      const fdw = R.fdGrad(([v]) => R.dot(R.matmul(a.v, v), G.v), [w.v], 0);
      const fda = R.fdGrad(([v]) => R.dot(R.matmul(v, w.v), G.v), [a.v], 0);
      const ew = relNorm(await gradOf(w.base, 'w', dt), fdw), ea = relNorm(await gradOf(a.base, 'a', dt), fda);
      if (!(ew <= 4 * U[dt] && ea <= 4 * U[dt])) throw new Error(`${dt} matmul grads: rel err w ${ew}, a ${ea} > ${4 * U[dt]}`);
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Autocast

  test('autocast dtype table: matmul / linear low; softmax, logSoftmax, sum, mean, losses float32; layerNorm the input\'s; add / sub / mul promote; relu / gelu / dropout keep', async () => {
    for (const [prec, low] of [['fp16', 'float16'], ['bf16', 'bfloat16']] as const) {
      const x = mp.tensor(values(rng, 12), [3, 4], { device }), w = mp.tensor(values(rng, 20), [5, 4], { device });
      const xl = mp.tensor(values(rng, 12), [3, 4], { device, dtype: low });
      const other: FloatDType = low === 'float16' ? 'bfloat16' : 'float16';
      const xo = mp.tensor(values(rng, 12), [3, 4], { device, dtype: other });
      const got = mp.autocast(prec, () => ({
        matmul: mp.ops.matmul(x, mp.ops.transpose(w, 0, 1)).dtype, linear: mp.ops.linear(x, w).dtype,
        matmul1d: mp.ops.matmul(x, mp.tensor([1, 2, 3, 4], [4], { device })).dtype,
        softmax: mp.ops.softmax(xl).dtype, logSoftmax: mp.ops.logSoftmax(xl).dtype, sum: mp.ops.sum(xl).dtype,
        mean: mp.ops.mean(xl, { dim: 1 }).dtype, crossEntropy: mp.ops.crossEntropy(xl, Int32Array.from([0, 1, 2])).dtype,
        mseLoss: mp.ops.mseLoss(xl, xl).dtype,
        layerNorm32: mp.ops.layerNorm(x, null, null).dtype, layerNormLow: mp.ops.layerNorm(xl, null, null).dtype,
        addLow32: mp.ops.add(xl, x).dtype, mulLowLow: mp.ops.mul(xl, xl).dtype, subMixed: mp.ops.sub(xl, xo).dtype, addScalar: mp.ops.add(xl, 1).dtype,
        relu32: mp.ops.relu(x).dtype, geluLow: mp.ops.gelu(xl).dtype, dropoutLow: mp.ops.dropout(xl, 0.5).dtype,
      }));
      expect(got).toEqual({
        matmul: low, linear: low, matmul1d: low, softmax: 'float32', logSoftmax: 'float32', sum: 'float32', mean: 'float32',
        crossEntropy: 'float32', mseLoss: 'float32', layerNorm32: 'float32', layerNormLow: low,
        addLow32: 'float32', mulLowLow: low, subMixed: 'float32', addScalar: low, relu32: 'float32', geluLow: low, dropoutLow: low,
      });
      // and outside the region nothing is cast
      expect(mp.ops.matmul(x, mp.ops.transpose(w, 0, 1)).dtype).toBe('float32');
    }
  });

  test('autocast forward values: matmul / linear on the operands rounded to the low dtype with FP32 accumulation; softmax / sum in FP32', async () => {
    for (const [prec, low] of [['fp16', 'float16'], ['bf16', 'bfloat16']] as const) {
      const [M, N, K] = [9, 7, 300];
      const a = await constant([M, K]), b = await constant([K, N]);
      const a16 = await makeInput(rng, [M, K], { device, dtype: low, data: () => Float32Array.from(a.v.data) });
      const b16 = await makeInput(rng, [K, N], { device, dtype: low, data: () => Float32Array.from(b.v.data) });
      const y = mp.autocast(prec, () => mp.ops.matmul(a.t, b.t));
      // ref on the ROUNDED operands: one store into low after an FP32 K-sum.
      expectBound(`${prec} autocast matmul`, await readAs(y, [M, N], low), R.matmul(a16.v, b16.v), low, K + 2, R.matmul(R.abs(a16.v), R.abs(b16.v)).data);
      const bias = await constant([N]);
      const yl = mp.autocast(prec, () => mp.ops.linear(a.t, mp.ops.transpose(b.t, 0, 1), bias.t, { activation: 'relu' }));
      const bias16 = R.arr(await mp.tensor(Float32Array.from(bias.v.data), [N], { device, dtype: low }).toFloat32(), [N]);
      const ref = R.relu(R.add(R.matmul(a16.v, b16.v), bias16));
      // as matmul, + the bias rounded to low (PyTorch casts it) or not: U[low] |bias| either way
      const Sl = R.add(R.matmul(R.abs(a16.v), R.abs(b16.v)), R.abs(bias16)).data;
      expectClose(`${prec} autocast linear + bias + relu`, await readAs(yl, [M, N], low), ref.data,
        (i) => U[low] * (Math.abs(ref.data[i]) + Math.abs(bias.v.data[i % N])) + (K + 4) * EPS32 * Sl[i] + TINY[low]);
      // softmax of a low tensor: FP32 math, float32 output (no rounding to low: the FP32 bound)
      const s = await makeInput(rng, [4, 33], { device, dtype: low, lo: -4, hi: 4 });
      const sm = mp.autocast(prec, () => mp.ops.softmax(s.t));
      const smRef = R.softmax(s.v, -1);
      expectBound(`${prec} autocast softmax -> float32`, await readAs(sm, [4, 33], 'float32'), smRef, 'float32', 1, smRef.data.map((v) => (33 + 24) * Math.abs(v)));
      const su = mp.autocast(prec, () => mp.ops.sum(s.t, { dim: 1 }));
      expectBound(`${prec} autocast sum -> float32`, await readAs(su, [4], 'float32'), R.sum(s.v, { dim: 1 }), 'float32', 35, R.sum(R.abs(s.v), { dim: 1 }).data);
    }
  });

  test('autocast fp16 / bf16 training step: float32 leaves get float32 gradients within the low dtype\'s rounding bound', async () => {
    // loss = crossEntropy(linear(gelu(linear(x, W1, b1)), W2, b2)) under autocast, backward outside.
    // Reference: float64 on the unrounded float32 leaves. Roundings to the low dtype (u each) on the
    // longest path: forward x, W1, b1, z1, gelu, W2, b2, logits (8); backward dlogits, dh, dz1, dW1
    // (4): R = 12. Each is a relative perturbation <= u of one value, which moves the loss and the
    // gradients by at most kappa u of their norm (kappa ~ 2 for these well-scaled random nets), so
    // ||g - g_ref|| / ||g_ref|| <= 2 R u = 24 u (fp16: 0.0117, bf16: 0.094); the loss within 16 u
    // relative (forward roundings only). FP32 accumulation (K <= 16) adds ~1e-6: negligible.
    for (const [prec, low] of [['fp16', 'float16'], ['bf16', 'bfloat16']] as const) {
      const [B, D, H, C] = [8, 16, 12, 5];
      const x = await constant([B, D]);
      const W1 = await leaf([H, D]), b1 = await leaf([H], { view: 'contiguous', lo: -0.3, hi: 0.3 });
      const W2 = await leaf([C, H]), b2 = await leaf([C], { view: 'contiguous', lo: -0.3, hi: 0.3 });
      const targets = Int32Array.from({ length: B }, () => randInt(rng, 0, C - 1));
      const fwd = <T>(o: Ops<T>, v: T[]) => o.crossEntropy(o.linear(o.gelu(o.linear(v[0], v[1], v[2], 'none')), v[3], v[4], 'none'), targets, 0);
      let hDtype = '';
      const loss = mp.autocast(prec, () => {
        const h = mp.ops.gelu(mp.ops.linear(x.t, W1.t, b1.t));
        hDtype = h.dtype;
        return mp.ops.crossEntropy(mp.ops.linear(h, W2.t, b2.t), targets);
      });
      expect(hDtype).toBe(low);
      expect(loss.dtype).toBe('float32');
      const lv = [x, W1, b1, W2, b2];
      const refLoss = fwd(REF, lv.map((l) => l.v)).data[0];
      const Lgot = (await loss.toFloat32())[0];
      if (!(Math.abs(Lgot - refLoss) <= 16 * U[low] * Math.abs(refLoss))) throw new Error(`${prec} loss ${Lgot} vs ${refLoss}`);
      await loss.backward();
      for (const [i, name] of [[1, 'W1'], [2, 'b1'], [3, 'W2'], [4, 'b2']] as const) {
        const got = await gradOf(lv[i].base, `${prec} ${name}`, 'float32');
        const fd = R.fdGrad((vs) => fwd(REF, vs.map((v, j) => lv[j].toView(v))), lv.map((l) => l.baseV), i);
        const e = relNorm(got, fd);
        if (!(e <= 24 * U[low])) throw new Error(`${prec} d loss / d ${name}: rel err ${e} > ${24 * U[low]}`);
      }
      expect(x.base.grad).toBeNull();
    }
  });
});
