// The GEMM through the raw binding, on every available backend, against a float64 reference:
// every dtype and transpose, batches (batch strides, 0 = a shared operand), leading dimensions
// larger than the row, offsets, the fused epilogue (alpha, beta * C with C in place, bias,
// ReLU / GELU, preAct), the scalar fallback, typed errors. Operand gaps (between rows, between
// batch items) hold NaN, so a kernel that reads one fails; outputs are poisoned with NaN, and every
// element the GEMM must not write (gaps, offsets, past the end) must still be NaN afterwards.
//
// Tolerance: the operands as stored are exact in FP32 and so are their products, so an FP32
// accumulation over K terms is within (K + 2) ulps of sum |a| |b| in any order (first order),
// plus one rounding per epilogue step and the store's (and, where products or sums underflow,
// half the smallest subnormal per rounding). An FP16 accumulator is ~2^13 times
// further off, which the tolerance rejects (checked below on a simulated FP16 accumulation).
//
// Imports only src/native and src/float16 (through test/helpers/raw) and test/helpers.
import type { ActCode } from '../binding';
import { native } from '../src/native';
import {
  BF16, Buf, DType, DTYPES, Device, EPS32, F16, F32, TINY, U, alloc, bytesOf, codeOf, cudaAvailable, cudaInfo, dc,
  describeEachBackend, expectClose, makeRng, readAll, releaseAll, roundTo,
} from './helpers/raw';
import { gelu64 } from './helpers/reference';

const rng = makeRng('gemm.test');
const { abs, floor } = Math;
afterEach(releaseAll);

type Operand = { h: ReturnType<typeof alloc>; v: Float32Array; dtype: DType };
type Case = {
  M: number; N: number; K: number; batch?: number; transA?: boolean; transB?: boolean;
  lda?: number; ldb?: number; ldc?: number; strideA?: number; strideB?: number; strideC?: number;
  aType?: DType; bType?: DType; outType?: DType; alpha?: number; beta?: number;
  c?: 'separate' | 'inplace'; cType?: DType; bias?: DType; act?: ActCode; preAct?: DType;
  offsets?: boolean; scale?: number; bScale?: number;
};

/** Elements spanned by `rows` rows of `cols`, `ld` apart, and by `batch` items `stride` apart. */
const extent = (rows: number, cols: number, ld: number) => (rows - 1) * ld + cols;
const batched = (batch: number, stride: number, one: number) => (batch - 1) * stride + one;

/** Storage of `n` elements (plus `off` before): the elements `used` marks get random values, all others NaN. */
function storage(device: Device, dtype: DType, off: number, n: number, used: (i: number) => boolean, scale = 1): Operand {
  const v = new Float32Array(off + n).fill(NaN);
  for (let i = 0; i < n; i++) if (used(i)) v[off + i] = (rng() * 2 - 1) * scale;
  const r = roundTo(dtype, v);
  const h = alloc(device, Math.max(1, r.length) * bytesOf(dtype));
  native().upload(h, r, dc(dtype));
  return { h, v: r, dtype };
}
/** Whether element i of a batched [rows, cols] layout (ld, stride) is inside a matrix (items may interleave). */
const inMatrix = (rows: number, cols: number, ld: number, stride: number, batch: number) => (i: number) => {
  for (let b = 0; b < batch; b++) {
    const j = i - b * stride;
    if (j >= 0 && j < extent(rows, cols, ld) && j % ld < cols) return true;
    if (stride === 0) break;
  }
  return false;
};

/** Runs one GEMM case and checks every output element (and that nothing else was written). */
function runCase(device: Device, k: Case, what = ''): void {
  const { M, N, K } = k;
  const batch = k.batch ?? 1, tA = !!k.transA, tB = !!k.transB;
  const aT = k.aType ?? F32, bT = k.bType ?? aT, oT = k.outType ?? F32;
  const aRows = tA ? K : M, aCols = tA ? M : K, bRows = tB ? N : K, bCols = tB ? K : N;
  const lda = k.lda ?? aCols, ldb = k.ldb ?? bCols, ldc = k.ldc ?? N;
  const oneA = extent(aRows, aCols, lda), oneB = extent(bRows, bCols, ldb), oneC = extent(M, N, ldc);
  const sA = k.strideA ?? (batch > 1 ? oneA : 0), sB = k.strideB ?? (batch > 1 ? oneB : 0), sC = k.strideC ?? (batch > 1 ? oneC : 0);
  const alpha = k.alpha ?? 1, beta = k.c ? (k.beta ?? 0.5) : 0;
  const off = () => (k.offsets ? 1 + floor(rng() * 5) : 0);
  const aOff = off(), bOff = off(), oOff = off(), cOff = k.c === 'separate' ? off() : oOff, pOff = off();
  const A = storage(device, aT, aOff, batched(batch, sA, oneA), inMatrix(aRows, aCols, lda, sA, batch), k.scale ?? 1);
  const B = storage(device, bT, bOff, batched(batch, sB, oneB), inMatrix(bRows, bCols, ldb, sB, batch), k.bScale ?? k.scale ?? 1);
  const nC = batched(batch, sC, oneC), PAD = 3;
  const inC = inMatrix(M, N, ldc, sC, batch);
  const cT = k.c === 'inplace' ? oT : k.cType ?? oT;
  // out: NaN everywhere; in place it holds C's values inside the matrices.
  const O = k.c === 'inplace' ? storage(device, oT, oOff, nC + PAD, (i) => i < nC && inC(i)) : storage(device, oT, oOff, nC + PAD, () => false);
  const C = k.c === 'separate' ? storage(device, cT, cOff, nC, inC) : k.c === 'inplace' ? O : null;
  const bias = k.bias ? storage(device, k.bias, 0, N, () => true) : null;
  const P = k.preAct ? storage(device, k.preAct, pOff, nC + PAD, () => false) : null;
  const cVals = C ? Float32Array.from(C.v) : null; // before the call overwrites it
  native().gemm({
    M, N, K, batch, transA: tA, transB: tB, lda, ldb, ldc, strideA: sA, strideB: sB, strideC: sC,
    a: A.h, aOffset: aOff, aType: dc(aT), b: B.h, bOffset: bOff, bType: dc(bT),
    out: O.h, outOffset: oOff, outType: dc(oT), alpha, beta, act: k.act ?? 0,
    ...(C ? { c: C.h, cOffset: cOff, cType: dc(cT) } : {}),
    ...(bias ? { bias: bias.h, biasType: dc(bias.dtype) } : {}),
    ...(P ? { preAct: P.h, preActOffset: pOff, preActType: dc(P.dtype) } : {}),
  });
  const label = `${what}gemm ${aT}x${bT}->${oT} ${M}x${N}x${K} batch=${batch} tA=${tA} tB=${tB} ld=${lda},${ldb},${ldc} strides=${sA},${sB},${sC}` +
    `${C ? ` c=${k.c}` : ''}${bias ? ' bias' : ''}${k.act ? ` act=${k.act}` : ''}${P ? ' preAct' : ''}`;
  const got = readAll({ h: O.h, dtype: oT, n: oOff + nC + PAD } as Buf);
  const gotP = P ? readAll({ h: P.h, dtype: P.dtype, n: pOff + nC + PAD } as Buf) : null;
  // The avx512bf16 level's BF16 x BF16 kernel (vdpbf16ps) treats BF16 subnormal inputs as 0 and
  // flushes subnormal FP32 sums to 0: each of the K steps may lose 2^-126 times an operand.
  const maxAbs = (v: Float32Array) => v.reduce((m, x) => (Number.isNaN(x) ? m : Math.max(m, abs(x))), 0);
  const flushes = device === 'cpu' && aT === BF16 && bT === BF16 && native().cpuIsa().active === 'avx512bf16';
  const flushTol = flushes ? (K + 1) * 2 ** -126 * (1 + maxAbs(A.v) + maxAbs(B.v)) : 0;
  // The float64 reference, item by item, on dense copies of op(A) and op(B).
  const ref: number[] = [], tol: number[] = [], gIdx: number[] = [];
  const refP: number[] = [], tolP: number[] = [];
  const a = new Float64Array(M * K), bt = new Float64Array(N * K);
  for (let b = 0; b < batch; b++) {
    for (let m = 0; m < M; m++) for (let q = 0; q < K; q++) a[m * K + q] = A.v[aOff + b * sA + (tA ? q * lda + m : m * lda + q)];
    for (let n = 0; n < N; n++) for (let q = 0; q < K; q++) bt[n * K + q] = B.v[bOff + b * sB + (tB ? n * ldb + q : q * ldb + n)];
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let acc = 0, accAbs = 0;
      for (let q = 0, ao = m * K, bo = n * K; q < K; q++) { const p = a[ao + q] * bt[bo + q]; acc += p; accAbs += abs(p); }
      const e = b * sC + m * ldc + n;
      const cv = C ? cVals![cOff + e] : 0, bv = bias ? bias.v[n] : 0;
      const pre = Math.fround(alpha) * acc + (beta ? Math.fround(beta) * cv : 0) + bv;
      const preTol = abs(alpha) * ((K + 2) * EPS32 * accAbs + (2 * K + 2) * TINY[F32] + flushTol) + 3 * EPS32 * (abs(alpha * acc) + abs(beta * cv) + abs(bv));
      let v = pre, t = preTol;
      if (k.act === 1) v = pre < 0 ? 0 : pre;
      else if (k.act === 2) { v = gelu64(pre); t = 1.13 * preTol + 8 * EPS32 * (abs(pre) + abs(v)); }
      ref.push(v); tol.push(t + U[oT] * abs(v) + TINY[oT]); gIdx.push(oOff + e);
      if (P) { refP.push(pre); tolP.push(preTol + U[P.dtype] * abs(pre) + TINY[P.dtype]); }
    }
  }
  expectClose(label, gIdx.map((i) => got[i]), ref, (i) => tol[i]);
  if (P) expectClose(`${label}: preAct`, gIdx.map((i) => gotP![i - oOff + pOff]), refP, (i) => tolP[i]);
  // Nothing outside the matrices was written.
  const written = new Uint8Array(got.length);
  for (const i of gIdx) written[i] = 1;
  for (let i = 0; i < got.length; i++) if (!written[i] && !Number.isNaN(got[i])) throw new Error(`${label}: out element ${i} (outside every matrix) was written`);
  if (gotP) for (let i = 0; i < gotP.length; i++) if (!written[i - pOff + oOff] && !Number.isNaN(gotP[i])) throw new Error(`${label}: preAct element ${i} was written`);
}

const SQUARE = [1, 7, 33, 129];
const NON_SQUARE: [number, number, number][] = [[7, 129, 33], [129, 1, 7], [1, 33, 129], [33, 7, 1], [200, 65, 300], [1000, 7, 129]];
const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];

describeEachBackend('gemm', (device, lowerCpuIsa) => {
  for (const dtype of DTYPES) {
    for (const [tA, tB] of TRANS) {
      test(`${dtype} transA=${tA} transB=${tB}: sizes ${SQUARE.join(', ')} and non-square vs float64`, () => {
        for (const s of SQUARE) runCase(device, { M: s, N: s, K: s, transA: tA, transB: tB, aType: dtype });
        for (const [M, N, K] of NON_SQUARE) runCase(device, { M, N, K, transA: tA, transB: tB, aType: dtype });
      });
      if (!lowerCpuIsa) test(`${dtype} transA=${tA} transB=${tB}: 1000^3 vs float64`, () => {
        runCase(device, { M: 1000, N: 1000, K: 1000, transA: tA, transB: tB, aType: dtype });
      });
    }
  }

  test('batched and strided: batch strides (0 shares an operand), lda / ldb / ldc larger than the row, offsets, all four transposes', () => {
    let i = 0;
    for (const [tA, tB] of TRANS) for (const dtype of DTYPES) {
      const [M, N, K] = [5, 9, 17];
      const pad = () => floor(rng() * 4) + 1;
      // many small items (the threads split the batch), every stride kind
      runCase(device, { M, N, K, batch: 37, transA: tA, transB: tB, aType: dtype, lda: (tA ? M : K) + pad(), ldb: (tB ? K : N) + pad(), ldc: N + pad(), offsets: true });
      runCase(device, { M, N, K, batch: 6, transA: tA, transB: tB, aType: dtype, strideA: 0, offsets: true, outType: pick([F32, F16, BF16], i++) });
      runCase(device, { M, N, K, batch: 6, transA: tA, transB: tB, aType: dtype, strideB: 0, ldc: N + 3, offsets: true, c: 'separate', beta: -0.75, bias: F16 });
      // items whose rows interleave: A's items 1 element apart inside one wide matrix (lda > batch * K)
      runCase(device, { M: 4, N: 6, K: 3, batch: 5, transA: false, transB: tB, aType: dtype, lda: 20, strideA: 3 });
      // a few large items (each split over the threads), several K blocks
      runCase(device, { M: 129, N: 65, K: 300, batch: 3, transA: tA, transB: tB, aType: dtype, lda: (tA ? 129 : 300) + 5, ldb: (tB ? 300 : 65) + 2,
        ldc: 70, strideC: 70 * 129 + 11, offsets: true, c: 'inplace', beta: 0.5, bias: F32, act: 2, preAct: BF16, outType: F32 });
      runCase(device, { M: 64, N: 100, K: 600, batch: 2, transA: tA, transB: tB, aType: dtype, strideB: 0, ldc: 128, outType: F16, c: 'inplace', beta: 1 });
    }
  });

  test('fused epilogue: alpha, beta * c (separate, or in place in out), bias, relu / gelu, preAct, every operand and out dtype', () => {
    const [M, N, K] = [37, 45, 70];
    for (const opDtype of DTYPES) for (const act of [0, 1, 2] as ActCode[]) for (const outType of DTYPES) {
      const alpha = 0.5 + rng(), beta = -0.25 - rng();
      runCase(device, { M, N, K, transB: true, aType: opDtype, outType, alpha, beta, c: 'inplace', bias: F16, act });
      runCase(device, { M, N, K: 300, aType: opDtype, outType, alpha, beta, c: 'separate', cType: pick(DTYPES, act), bias: F32, act, preAct: pick(DTYPES, act + 1) });
    }
  });

  test('float16 output is the RNE of the FP32 result (within FP32 accumulation error)', () => {
    const A = storage(device, F16, 0, 16 * 64, () => true), B = storage(device, F16, 0, 64 * 24, () => true);
    const o16 = alloc(device, 16 * 24 * 2), o32 = alloc(device, 16 * 24 * 4);
    const g = { M: 16, N: 24, K: 64, a: A.h, aType: 1 as const, b: B.h, bType: 1 as const, alpha: 1, beta: 0, act: 0 as const };
    native().gemm({ ...g, out: o16, outType: 1 });
    native().gemm({ ...g, out: o32, outType: 0 });
    const v32 = native().download(o32, 0, 384), got = native().download(o16, 1, 384);
    const expected = roundTo(F16, v32);
    let differ = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) differ++;
    // Identical except where FP32 accumulation order lands within an ulp of a rounding boundary.
    expect(differ).toBeLessThanOrEqual(Math.ceil(got.length * 0.02));
  });

  test('bfloat16 subnormal operands and subnormal sums: exact but for the avx512bf16 flush, every transpose', () => {
    for (const [tA, tB] of TRANS) {
      // subnormal BF16 inputs (2^-126 down to 2^-133) times large ones: normal products
      runCase(device, { M: 20, N: 40, K: 71, transA: tA, transB: tB, aType: BF16, scale: 2 ** -127, bScale: 2 ** 100 });
      // normal BF16 inputs whose products and sums are FP32 subnormals
      runCase(device, { M: 15, N: 33, K: 64, transA: tA, transB: tB, aType: BF16, scale: 2 ** -64 });
    }
  });

  test('mixed operand dtypes (float16 x float32, bfloat16 x float16)', () => {
    runCase(device, { M: 33, N: 20, K: 50, aType: F16, bType: F32 });
    runCase(device, { M: 33, N: 20, K: 50, aType: BF16, bType: F16, transA: true, outType: BF16 });
    runCase(device, { M: 70, N: 3, K: 900, aType: F32, bType: BF16, transB: true, batch: 4, strideB: 0 });
  });

  test('gelu matches the erf definition (PyTorch approximate="none")', () => {
    const xs = [-6, -3, -1.5, -0.5, -1e-3, 0, 1e-3, 0.5, 1, 2.5, 6];
    const a = alloc(device, xs.length * 4), one = alloc(device, 4), o = alloc(device, xs.length * 4);
    native().upload(a, Float32Array.from(xs), 0);
    native().upload(one, new Float32Array([1]), 0);
    native().gemm({ M: xs.length, N: 1, K: 1, a, aType: 0, b: one, bType: 0, alpha: 1, beta: 0, act: 2, out: o, outType: 0 });
    const got = native().download(o, 0, xs.length);
    expectClose('gelu', got, xs.map(gelu64), (i) => 1e-7 + 4 * EPS32 * abs(xs[i]));
  });

  test('the tolerance rejects an FP16 accumulator (a simulated one fails it, the kernel passes)', () => {
    const [M, N, K] = [16, 16, 129];
    const A = storage(device, F16, 0, M * K, () => true), B = storage(device, F16, 0, K * N, () => true);
    // FP16 accumulation: the running sum rounded to FP16 after every multiply-add.
    const sim = new Float32Array(M * N);
    for (let q = 0; q < K; q++) {
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) sim[m * N + n] = Math.fround(sim[m * N + n] + A.v[m * K + q] * B.v[q * N + n]);
      sim.set(roundTo(F16, sim));
    }
    const ref: number[] = [], tol: number[] = [];
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
      let s = 0, sa = 0;
      for (let q = 0; q < K; q++) { s += A.v[m * K + q] * B.v[q * N + n]; sa += abs(A.v[m * K + q] * B.v[q * N + n]); }
      ref.push(s); tol.push((K + 2) * EPS32 * sa + U[F32] * abs(s) + TINY[F32]);
    }
    expect(() => expectClose('simulated FP16 accumulation', sim, ref, (i) => tol[i])).toThrow();
    const o = alloc(device, M * N * 4);
    native().gemm({ M, N, K, a: A.h, aType: 1, b: B.h, bType: 1, alpha: 1, beta: 0, act: 0, out: o, outType: 0 });
    expectClose('kernel', native().download(o, 0, M * N), ref, (i) => tol[i]);
  });

  test('typed errors for bad sizes, extents, strides, aliasing and dtypes; outputs untouched', () => {
    const A = storage(device, F32, 0, 64, () => true), B = storage(device, F32, 0, 64, () => true);
    const O = storage(device, F32, 0, 64, () => false);
    const g = { M: 4, N: 4, K: 4, a: A.h, aType: 0 as const, b: B.h, bType: 0 as const, out: O.h, outType: 0 as const, alpha: 1, beta: 0, act: 0 as const };
    const gemm = (x: object) => codeOf(() => native().gemm({ ...g, ...x }));
    expect(gemm({})).toBe('no error');
    native().upload(O.h, new Float32Array(64).fill(NaN), 0);
    expect(gemm({ M: 0 })).toBe('E_SHAPE');
    expect(gemm({ K: 1.5 })).toBe('E_SHAPE');
    expect(gemm({ batch: 0 })).toBe('E_SHAPE');
    expect(gemm({ M: 2 ** 40, K: 2 ** 40 })).toBe('E_SHAPE'); // the extent overflows
    expect(gemm({ M: 2 ** 53 })).toBe('E_SHAPE');
    expect(gemm({ M: 17 })).toBe('E_SHAPE'); // a holds 64 < 68
    expect(gemm({ lda: 3 })).toBe('E_SHAPE'); // lda < K
    expect(gemm({ transA: true, lda: 3 })).toBe('E_SHAPE'); // lda < M
    expect(gemm({ ldb: 2 })).toBe('E_SHAPE');
    expect(gemm({ ldc: 3 })).toBe('E_SHAPE');
    expect(gemm({ lda: 21 })).toBe('E_SHAPE'); // 3 * 21 + 4 > 64
    expect(gemm({ batch: 2, strideC: 15 })).toBe('E_SHAPE'); // output items overlap
    expect(gemm({ batch: 4, strideA: 16, strideB: 16, strideC: 16, outOffset: 1 })).toBe('E_SHAPE');
    expect(gemm({ batch: 5, strideA: 16 })).toBe('E_SHAPE'); // a holds 64 < 80
    expect(gemm({ aOffset: 1 })).toBe('no error'); // 1 + 16 <= 64
    native().upload(O.h, new Float32Array(64).fill(NaN), 0);
    expect(gemm({ out: A.h })).toBe('E_ARG'); // out overlaps a
    expect(gemm({ out: B.h, outOffset: 10 })).toBe('E_ARG'); // [10, 26) overlaps b's [0, 16)
    expect(gemm({ beta: 1, c: O.h, cOffset: 1, cType: 0 })).toBe('E_ARG'); // c overlaps out, not the same array
    expect(gemm({ beta: 1, c: O.h, cType: 1 })).toBe('E_ARG'); // same bytes, another dtype
    expect(gemm({ beta: 1 })).toBe('E_ARG'); // c missing
    expect(gemm({ preAct: O.h, preActOffset: 8, preActType: 0 })).toBe('E_ARG');
    expect(gemm({ bias: A.h, biasOffset: 61, biasType: 0 })).toBe('E_SHAPE');
    expect(gemm({ aType: 3 as 0 })).toBe('E_DTYPE');
    expect(gemm({ outType: 5 as 0 })).toBe('E_DTYPE');
    expect(gemm({ act: 3 as ActCode })).toBe('E_ARG');
    expect(gemm({ alpha: 'x' as never })).toBe('E_ARG');
    expect(gemm({ a: 7 as never })).toBe('E_ARG');
    expect(Array.from(native().download(O.h, 0, 64)).every(Number.isNaN)).toBe(true);
  });
}, { everyCpuIsa: true });

/** Deterministic pick from a list (varies the dtypes across the cases of a loop). */
function pick<T>(xs: T[], i: number): T { return xs[((i % xs.length) + xs.length) % xs.length]; }

(cudaAvailable ? describe : describe.skip)(`CUDA vs CPU parity (the CPU backend is the oracle)${cudaAvailable ? '' : ` — cuda: skipped: ${cudaInfo?.reason ?? 'unavailable'}`}`, () => {
  test('same inputs, every dtype, batched with leading dimensions: results agree', () => {
    for (const dtype of DTYPES) {
      const [M, N, K, batch] = [300, 129, 257, 3];
      const av = Float32Array.from({ length: batch * M * K }, () => rng() * 2 - 1), bv = Float32Array.from({ length: N * (K + 3) }, () => rng() * 2 - 1);
      const run = (device: Device) => {
        const a = alloc(device, av.length * bytesOf(dtype)), b = alloc(device, bv.length * bytesOf(dtype)), o = alloc(device, batch * M * N * 4);
        native().upload(a, av, dc(dtype));
        native().upload(b, bv, dc(dtype));
        native().gemm({ M, N, K, batch, transB: true, ldb: K + 3, strideA: M * K, strideB: 0, a, aType: dc(dtype), b, bType: dc(dtype),
          alpha: 1, beta: 0, act: 2, out: o, outType: 0 });
        return native().download(o, 0, batch * M * N);
      };
      const gpu = run('cuda'), cpu = run('cpu');
      let num = 0, den = 0;
      for (let i = 0; i < cpu.length; i++) { num += (gpu[i] - cpu[i]) ** 2; den += cpu[i] ** 2; }
      expect(Math.sqrt(num / den)).toBeLessThan(1e-5);
    }
  });
});
