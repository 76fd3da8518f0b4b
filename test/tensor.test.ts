// Tensors, devices and typed errors, on every available backend.
import * as mixprec from '../src';
import { describeEachBackend } from './helpers/backends';
import { makeRng, uniform } from './helpers/random';

const rng = makeRng('tensor.test');

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(mixprec.MixprecError);
    expect((e as Error).name).toBe('MixprecError');
    return (e as mixprec.MixprecError).code;
  }
  return 'no error';
}

test('backends(): the CPU is compiled and available; CUDA says whether it is, and why not', () => {
  const list = mixprec.backends();
  expect(list.map((b) => b.name)).toEqual(['cpu', 'cuda']);
  const [cpu, cuda] = list;
  expect(cpu).toMatchObject({ compiled: true, available: true });
  expect(cpu.features).toMatch(/^(avx512bf16|avx512|avx2|scalar): fp32 /);
  if (!cuda.available) expect(cuda.reason).toMatch(/\w+/);
  else expect(cuda.device?.computeCapability).toMatch(/^\d+\.\d+$/);
});

describeEachBackend('tensor', (device) => {
  test('round trip from Float32Array and number[] in float32 is exact', async () => {
    const v = uniform(rng, 6 * 7, 100);
    const t = mixprec.tensor(v, [6, 7], { device });
    expect(t.shape).toEqual([6, 7]);
    expect(t.size).toBe(42);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe(device);
    expect(await t.toFloat32()).toEqual(v);
    const u = mixprec.tensor(Array.from(v), [42], { device });
    expect(await u.toFloat32()).toEqual(v);
  });

  test('float16 / bfloat16 tensors hold the RNE of the values; cast converts exactly like the public converters', async () => {
    const v = uniform(rng, 257, 1000);
    const f16 = mixprec.tensor(v, [257], { dtype: 'float16', device });
    const bf16 = mixprec.tensor(v, [257], { dtype: 'bfloat16', device });
    expect(await f16.toFloat32()).toEqual(mixprec.float16.toFloat32(mixprec.float16.fromFloat32(v)));
    expect(await bf16.toFloat32()).toEqual(mixprec.bfloat16.toFloat32(mixprec.bfloat16.fromFloat32(v)));
    const t = mixprec.tensor(v, [257], { device });
    const c16 = t.cast('float16');
    expect(c16.dtype).toBe('float16');
    expect(await c16.toFloat32()).toEqual(await f16.toFloat32());
    const back = c16.cast('float32');
    expect(await back.toFloat32()).toEqual(await f16.toFloat32());
    expect(await f16.cast('bfloat16').toFloat32()).toEqual(
      mixprec.bfloat16.toFloat32(mixprec.bfloat16.fromFloat32(await f16.toFloat32())),
    );
  });

  test('full() and empty(): fill converts the value once with RNE; zero-size tensors work', async () => {
    const x = 1 + 2 ** -11; // a tie in float16: rounds to even (1)
    expect(await mixprec.full([3, 2], x, { dtype: 'float16', device }).toFloat32()).toEqual(new Float32Array(6).fill(1));
    expect(await mixprec.full([5], -7.25, { device }).toFloat32()).toEqual(new Float32Array(5).fill(-7.25));
    const z = mixprec.empty([0, 3], { device });
    expect(z.size).toBe(0);
    expect((await z.toFloat32()).length).toBe(0);
    expect(mixprec.tensor([], [0], { device }).size).toBe(0);
    expect(mixprec.tensor([3.5], [], { device }).size).toBe(1); // a scalar
  });

  test('dispose() is idempotent and any later use is E_DISPOSED', async () => {
    const t = mixprec.tensor([1, 2, 3], [3], { device });
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    await expect(t.toFloat32()).rejects.toMatchObject({ code: 'E_DISPOSED', name: 'MixprecError' });
    expect(codeOf(() => t.cast('float16'))).toBe('E_DISPOSED');
    expect(codeOf(() => mixprec.ops.matmul(t, t))).toBe('E_DISPOSED');
  });

  test('bad shapes, data, dtypes and devices are typed errors', () => {
    expect(codeOf(() => mixprec.tensor([1, 2, 3], [2, 2], { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.tensor([1, 2], [2.5], { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.tensor([1, 2], [-2], { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.tensor([1, 2], 2 as never, { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.tensor([1, 2], [NaN], { device }))).toBe('E_SHAPE');
    expect(codeOf(() => mixprec.tensor([1, '2'] as never, [2], { device }))).toBe('E_ARG');
    expect(codeOf(() => mixprec.tensor(new Float64Array(2) as never, [2], { device }))).toBe('E_ARG');
    expect(codeOf(() => mixprec.tensor([1], [1], { dtype: 'float64' as never, device }))).toBe('E_DTYPE');
    expect(codeOf(() => mixprec.tensor([1], [1], { device: 'tpu' as never }))).toBe('E_DEVICE');
    for (const d of ['cuda:', 'cuda:x', 'cuda:-1', 'cuda:1.5', 'CUDA']) expect(codeOf(() => mixprec.tensor([1], [1], { device: d as never }))).toBe('E_DEVICE');
    expect(codeOf(() => mixprec.tensor([1], [1], { devcie: 'cpu' } as never))).toBe('E_ARG');
    expect(codeOf(() => mixprec.full([1], '1' as never, { device }))).toBe('E_ARG');
    const t = mixprec.tensor([1], [1], { device });
    expect(codeOf(() => t.cast('int8' as never))).toBe('E_DTYPE');
  });

  test('an allocation that cannot be satisfied is E_OOM, and the process goes on', () => {
    expect(codeOf(() => mixprec.empty([2 ** 50], { device }))).toBe('E_OOM');
    expect(mixprec.tensor([1], [1], { device }).size).toBe(1);
  });
});

const cuda = mixprec.backends().find((b) => b.name === 'cuda')!;

(cuda.available ? test.skip : test)('CUDA on a machine without it is E_NO_CUDA with the reason', () => {
  const err = (() => { try { mixprec.tensor([1], [1], { device: 'cuda' }); } catch (e) { return e as mixprec.MixprecError; } })();
  expect(err?.code).toBe('E_NO_CUDA');
  expect(err?.message).toContain(cuda.reason!);
});

(cuda.available ? test : test.skip)(`tensors on different devices cannot be mixed${cuda.available ? '' : ` (cuda: skipped: ${cuda.reason})`}`, () => {
  const a = mixprec.tensor([1, 2], [1, 2], { device: 'cpu' });
  const b = mixprec.tensor([1, 2], [2, 1], { device: 'cuda' });
  expect(codeOf(() => mixprec.ops.matmul(a, b))).toBe('E_DEVICE');
});

test('raw addon rejects foreign handles and out-of-bounds sizes instead of crashing', () => {
  const { native } = require('../src/native') as typeof import('../src/native');
  const n = native();
  const h = n.alloc('cpu', 8);
  expect(codeOf(() => n.download(h, 0, 3))).toBe('E_SHAPE'); // 12 bytes from an 8-byte storage
  expect(codeOf(() => n.download({} as never, 0, 1))).toBe('E_ARG');
  expect(codeOf(() => n.fill({ n: 1, value: 0, out: h, outType: 7 as never }))).toBe('E_DTYPE');
  const h2 = n.alloc('cpu', 8);
  expect(codeOf(() => n.gemm({ M: 4, N: 4, K: 4, a: h, aType: 0, b: h2, bType: 0, alpha: 1, beta: 0, act: 0, out: n.alloc('cpu', 64), outType: 0 }))).toBe('E_SHAPE');
  n.release(h2);
  n.release(h);
  n.release(h);
  expect(codeOf(() => n.download(h, 0, 1))).toBe('E_DISPOSED');
});

test("a device index: 'cuda:N' names GPU N ('cuda' is 'cuda:0'); one that is not there is E_NO_CUDA, garbage is E_DEVICE", () => {
  const { native } = require('../src/native') as typeof import('../src/native');
  const cuda = mixprec.backends().find((b) => b.name === 'cuda')!;
  const count = cuda.available ? cuda.deviceCount ?? 1 : 0;
  expect(codeOf(() => mixprec.tensor([1], [1], { device: `cuda:${count}` as never }))).toBe('E_NO_CUDA');
  expect(codeOf(() => native().alloc(`cuda:${count}`, 4))).toBe('E_NO_CUDA');
  expect(codeOf(() => native().alloc('cuda:x', 4))).toBe('E_DEVICE');
  expect(codeOf(() => native().alloc('gpu', 4))).toBe('E_DEVICE');
  if (cuda.available) {
    expect(mixprec.tensor([1], [1], { device: 'cuda:0' }).device).toBe('cuda'); // the same backend as 'cuda'
  } else expect(codeOf(() => mixprec.tensor([1], [1], { device: 'cuda:0' }))).toBe('E_NO_CUDA');
});
