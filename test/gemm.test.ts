// matmul against a float64 reference, on every available backend.
import * as mixprec from '../src';
import { native } from '../src/native';
import { BACKENDS, cudaAvailable, describeEachBackend } from './helpers/backends';
import { makeRng, uniform } from './helpers/random';
import { erf, gemm64, relErr } from './helpers/reference';

type DType = mixprec.DType;
const TOL: Record<DType, number> = { float32: 1e-5, float16: 1e-2, bfloat16: 1e-2 };
const rng = makeRng('gemm.test');

/** A tensor of fresh random values and the values it actually holds (rounded to its dtype). */
async function randomTensor(shape: number[], dtype: DType, device: mixprec.Device, scale = 1) {
  const t = mixprec.tensor(uniform(rng, shape[0] * shape[1], scale), shape, { dtype, device });
  return { t, v: await t.toFloat32() };
}

/** An [M,N] output tensor poisoned with NaN, so an element the kernel skips cannot pass. */
function poisoned(M: number, N: number, dtype: DType, device: mixprec.Device) {
  return mixprec.full([M, N], NaN, { dtype, device });
}

async function checkCase(device: mixprec.Device, dtype: DType, M: number, N: number, K: number, transA: boolean, transB: boolean) {
  const a = await randomTensor(transA ? [K, M] : [M, K], dtype, device);
  const b = await randomTensor(transB ? [N, K] : [K, N], dtype, device);
  const out = poisoned(M, N, 'float32', device);
  const r = mixprec.ops.matmul(a.t, b.t, { transA, transB, out, outDtype: 'float32' });
  expect(r).toBe(out);
  const got = await r.toFloat32();
  const ref = gemm64(a.v, b.v, M, N, K, { transA, transB });
  const err = relErr(got, ref);
  if (!(err < TOL[dtype])) throw new Error(`${dtype} ${M}x${N}x${K} tA=${transA} tB=${transB}: rel err ${err}`);
  [a.t, b.t, out].forEach((t) => t.dispose());
}

const SQUARE = [1, 7, 33, 129];
const NON_SQUARE: [number, number, number][] = [[7, 129, 33], [129, 1, 7], [1, 33, 129], [33, 7, 1], [200, 65, 300], [1000, 7, 129]];
const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

describeEachBackend('matmul', (device) => {
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (const [tA, tB] of TRANS) {
      test(`${dtype} transA=${tA} transB=${tB}: sizes ${SQUARE.join(', ')} and non-square vs float64`, async () => {
        for (const s of SQUARE) await checkCase(device, dtype, s, s, s, tA, tB);
        for (const [M, N, K] of NON_SQUARE) await checkCase(device, dtype, M, N, K, tA, tB);
      });
      test(`${dtype} transA=${tA} transB=${tB}: 1000^3 vs float64`, async () => {
        await checkCase(device, dtype, 1000, 1000, 1000, tA, tB);
      });
    }
  }

  test('fused epilogue: alpha, beta*c with c aliasing out, bias, relu and gelu, every out dtype', async () => {
    const [M, N, K] = [37, 45, 70];
    for (const opDtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
      for (const act of ['none', 'relu', 'gelu'] as const) {
        for (const outDtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
          const a = await randomTensor([M, K], opDtype, device);
          const b = await randomTensor([N, K], opDtype, device);
          const bias = await randomTensor([1, N], 'float32', device);
          const biasT = mixprec.tensor(bias.v, [N], { dtype: 'float16', device });
          const biasV = await biasT.toFloat32();
          const c = await randomTensor([M, N], outDtype, device);
          const alpha = 0.5 + rng(), beta = -0.25 - rng();
          const r = mixprec.ops.matmul(a.t, b.t, { transB: true, alpha, beta, c: c.t, out: c.t, bias: biasT, activation: act });
          expect(r).toBe(c.t);
          expect(r.dtype).toBe(outDtype);
          const got = await r.toFloat32();
          const ref = gemm64(a.v, b.v, M, N, K, { transB: true, alpha, beta, C: c.v, bias: biasV, act });
          const tol = Math.max(TOL[opDtype], outDtype === 'float32' ? 0 : 1e-2);
          expect(relErr(got, ref)).toBeLessThan(tol);
          if (act === 'relu') expect(got.every((x) => x >= 0)).toBe(true);
          [a.t, b.t, biasT, bias.t, c.t].forEach((t) => t.dispose());
        }
      }
    }
  });

  test('float16 output is the RNE of the FP32 result (within FP32 accumulation error)', async () => {
    const a = await randomTensor([16, 64], 'float16', device);
    const b = await randomTensor([64, 24], 'float16', device);
    const r16 = mixprec.ops.matmul(a.t, b.t); // default out dtype: the operands' (float16)
    expect(r16.dtype).toBe('float16');
    const r32 = mixprec.ops.matmul(a.t, b.t, { outDtype: 'float32' });
    const v32 = await r32.toFloat32();
    const expected = mixprec.float16.toFloat32(mixprec.float16.fromFloat32(v32));
    const got = await r16.toFloat32();
    // Identical except where FP32 accumulation order lands within an ulp of a rounding boundary.
    let differ = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) differ++;
    expect(differ).toBeLessThanOrEqual(Math.ceil(got.length * 0.02));
    [a.t, b.t, r16, r32].forEach((t) => t.dispose());
  });

  test('mixed operand dtypes (float16 x float32 -> float32)', async () => {
    const a = await randomTensor([33, 50], 'float16', device);
    const b = await randomTensor([50, 20], 'float32', device);
    const r = mixprec.ops.matmul(a.t, b.t);
    expect(r.dtype).toBe('float32');
    expect(relErr(await r.toFloat32(), gemm64(a.v, b.v, 33, 20, 50))).toBeLessThan(1e-5);
  });

  test('K = 0 gives beta*c + bias; M = 0 gives an empty result', async () => {
    const a = mixprec.empty([3, 0], { device });
    const b = mixprec.empty([0, 4], { device });
    const c = await randomTensor([3, 4], 'float32', device);
    const bias = mixprec.tensor([1, -2, 3, -4], [4], { device });
    const r = mixprec.ops.matmul(a, b, { c: c.t, beta: 2, bias, activation: 'relu' });
    const got = await r.toFloat32();
    for (let i = 0; i < 12; i++) expect(got[i]).toBe(Math.fround(Math.max(0, Math.fround(2 * c.v[i]) + [1, -2, 3, -4][i % 4])));
    const e = mixprec.ops.matmul(mixprec.empty([0, 5], { device }), mixprec.empty([5, 6], { device }));
    expect(e.shape).toEqual([0, 6]);
    expect((await e.toFloat32()).length).toBe(0);
  });

  test('gelu matches the erf definition (PyTorch approximate="none")', async () => {
    // Identity product so the epilogue sees exactly x.
    const xs = [-6, -3, -1.5, -0.5, -1e-3, 0, 1e-3, 0.5, 1, 2.5, 6];
    const a = mixprec.tensor(xs, [xs.length, 1], { device });
    const one = mixprec.tensor([1], [1, 1], { device });
    const got = await mixprec.ops.matmul(a, one, { activation: 'gelu' }).toFloat32();
    xs.forEach((x, i) => expect(got[i]).toBeCloseTo(0.5 * x * (1 + erf(x / Math.SQRT2)), 6));
  });

  test('typed errors for bad arguments', () => {
    const a = mixprec.tensor(uniform(rng, 6), [2, 3], { device });
    const b = mixprec.tensor(uniform(rng, 6), [3, 2], { device });
    const code = (f: () => unknown) => {
      try { f(); } catch (e) { expect(e).toBeInstanceOf(mixprec.MixprecError); return (e as mixprec.MixprecError).code; }
      return 'no error';
    };
    expect(code(() => mixprec.ops.matmul(a, a))).toBe('E_SHAPE');
    expect(code(() => mixprec.ops.matmul(a, mixprec.tensor([1, 2, 3], [3], { device })))).toBe('E_SHAPE');
    expect(code(() => mixprec.ops.matmul(a, b, { outDtype: 'float64' as DType }))).toBe('E_DTYPE');
    expect(code(() => mixprec.ops.matmul(a, b, { transpose: true } as never))).toBe('E_ARG');
    expect(code(() => mixprec.ops.matmul(a, b, { alpha: NaN }))).toBe('E_ARG');
    expect(code(() => mixprec.ops.matmul(a, b, { beta: 1 }))).toBe('E_ARG');
    expect(code(() => mixprec.ops.matmul(a, b, { activation: 'tanh' as never }))).toBe('E_ARG');
    expect(code(() => mixprec.ops.matmul(a, b, { bias: mixprec.tensor([1, 2, 3], [3], { device }) }))).toBe('E_SHAPE');
    expect(code(() => mixprec.ops.matmul(a, b, { out: mixprec.empty([2, 2], { dtype: 'float16', device }), outDtype: 'float32' }))).toBe('E_DTYPE');
    expect(code(() => mixprec.ops.matmul(a, b, { out: mixprec.empty([3, 3], { device }) }))).toBe('E_SHAPE');
    expect(code(() => mixprec.ops.matmul(a, [1, 2] as never))).toBe('E_ARG');
    b.dispose();
    expect(code(() => mixprec.ops.matmul(a, b))).toBe('E_DISPOSED');
  });
});

describe('CPU GEMM scalar fallback (run-time dispatch off)', () => {
  afterAll(() => native().setCpuGemmIsa('auto'));
  test('matches float64 for every dtype and transpose', async () => {
    expect(native().setCpuGemmIsa('scalar')).toBe('scalar');
    for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[])
      for (const [tA, tB] of TRANS)
        for (const [M, N, K] of [[1, 1, 1], [7, 33, 129], [129, 7, 33], [64, 64, 64]] as [number, number, number][])
          await checkCase('cpu', dtype, M, N, K, tA, tB);
  });
});

const cudaReason = BACKENDS.find((b) => b.name === 'cuda')?.reason ?? 'unavailable';
(cudaAvailable ? describe : describe.skip)(`CUDA vs CPU parity (the CPU backend is the oracle)${cudaAvailable ? '' : ` — cuda: skipped: ${cudaReason}`}`, () => {
  test('same inputs, every dtype: results agree', async () => {
    for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
      const av = uniform(rng, 300 * 257), bv = uniform(rng, 257 * 129);
      const run = async (device: mixprec.Device) => {
        const a = mixprec.tensor(av, [300, 257], { dtype, device }), b = mixprec.tensor(bv, [129, 257], { dtype, device });
        return mixprec.ops.matmul(a, b, { transB: true, outDtype: 'float32', activation: 'gelu' }).toFloat32();
      };
      expect(relErr(await run('cuda'), await run('cpu'))).toBeLessThan(1e-5);
    }
  });
});
