// The CPU kernel level (native/cpu/isa.h, src/cpu.ts): what is reported, typed errors for levels
// that do not exist or that this CPU lacks (from code and from MIXPREC_CPU_ISA), and the
// element-wise contract: every level gives the same bits (no FMA contraction on any of them).
// The kernels themselves are checked per level against float64 in the gemm / amp / nn suites
// (describeEachBackend's everyCpuIsa).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as mixprec from '../src';
import { CPU_ISAS, cpuIsa, setCpuIsa } from '../src/cpu';
import { makeRng } from './helpers/raw';

const rng = makeRng('cpu_isa.test');
const dist = path.join(__dirname, '..', 'dist', 'index.js');
const child = (code: string, env: Record<string, string>) =>
  spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });

afterEach(() => setCpuIsa('auto'));

test('the report: the best level first, scalar last, the active one the best by default', () => {
  const info = cpuIsa();
  expect(info.available[0]).toBe(info.best);
  expect(info.available[info.available.length - 1]).toBe('scalar');
  expect(info.active).toBe(info.best);
  // the levels are nested: each available one's lower levels are available too
  const at = CPU_ISAS.indexOf(info.best);
  expect(info.available).toEqual(CPU_ISAS.slice(at));
  expect(info.gemm.startsWith(`${info.best}: fp32 `)).toBe(true);
  for (const v of Object.values(info.cacheBytes)) expect(v).toBeGreaterThanOrEqual(16 << 10);
  if (info.best !== 'scalar') expect(info.cpuFeatures).toEqual(expect.arrayContaining(['avx2', 'fma', 'f16c']));
  if (info.best.startsWith('avx512')) expect(info.cpuFeatures).toEqual(expect.arrayContaining(['avx512f', 'avx512bw', 'avx512vl', 'avx512dq']));
  if (info.best === 'avx512bf16') expect(info.cpuFeatures).toContain('avx512bf16');
});

test('setCpuIsa lowers and restores the level; unknown or missing levels are E_ARG and change nothing', () => {
  const { available, best } = cpuIsa();
  for (const isa of available) {
    expect(setCpuIsa(isa)).toBe(isa);
    expect(cpuIsa().active).toBe(isa);
    expect(mixprec.backends().find((b) => b.name === 'cpu')?.features?.startsWith(`${isa}: `)).toBe(true);
  }
  setCpuIsa('scalar');
  for (const bad of ['avx9', '', 'AVX2', 3, null]) {
    expect(() => setCpuIsa(bad as 'auto')).toThrow(expect.objectContaining({ code: 'E_ARG' }));
    expect(cpuIsa().active).toBe('scalar');
  }
  for (const missing of CPU_ISAS.slice(0, CPU_ISAS.indexOf(best))) {
    expect(() => setCpuIsa(missing)).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining('not supported by this CPU') }));
    expect(cpuIsa().active).toBe('scalar');
  }
  expect(setCpuIsa('auto')).toBe(best);
});

test('MIXPREC_CPU_ISA chooses the level at load; a bad value is E_ARG on first use, naming the variable', () => {
  const report = `const m = require(${JSON.stringify(dist)}); try { console.log(m.cpuIsa().active); } catch (e) { console.log(e.code, e.message); }`;
  expect(child(report, { MIXPREC_CPU_ISA: 'scalar' }).stdout.trim()).toBe('scalar');
  expect(child(report, { MIXPREC_CPU_ISA: 'auto' }).stdout.trim()).toBe(cpuIsa().best);
  const bad = child(report, { MIXPREC_CPU_ISA: 'avx9' }).stdout.trim();
  expect(bad).toMatch(/^E_ARG MIXPREC_CPU_ISA=avx9: unknown CPU ISA 'avx9'/);
  const { best } = cpuIsa();
  if (best !== 'avx512bf16') expect(child(report, { MIXPREC_CPU_ISA: 'avx512bf16' }).stdout.trim()).toMatch(/^E_ARG MIXPREC_CPU_ISA=avx512bf16: .*not supported by this CPU; it has: /);
});

test('element-wise, normalisation and loss kernels give the same bits on every level', async () => {
  const cols = 131, rows = 31;
  const x = Float32Array.from({ length: rows * cols }, () => (rng() * 2 - 1) * 4);
  const w = Float32Array.from({ length: cols }, () => rng() + 0.5);
  const labels = Int32Array.from({ length: rows }, () => Math.floor(rng() * cols));
  const run = async () => {
    const out: Float32Array[] = [];
    for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
      const made: mixprec.Tensor[] = [];
      const keep = (t: mixprec.Tensor) => (made.push(t), t);
      const t = keep(mixprec.tensor(x, [rows, cols], { dtype })), wt = keep(mixprec.tensor(w, [cols]));
      const { ops } = mixprec;
      for (const r of [ops.gelu(t), ops.relu(t), ops.mul(keep(ops.add(t, t)), t), ops.layerNorm(t, wt, null),
        ops.softmax(t), ops.crossEntropy(t, labels)]) out.push(await keep(r).toFloat32());
      made.forEach((m) => m.dispose());
    }
    return out;
  };
  const results: { isa: string; outs: Float32Array[] }[] = [];
  for (const isa of cpuIsa().available) {
    setCpuIsa(isa);
    results.push({ isa, outs: await run() });
  }
  for (const { isa, outs } of results.slice(1))
    outs.forEach((o, i) => expect([isa, i, Buffer.from(o.buffer).equals(Buffer.from(results[0].outs[i].buffer))]).toEqual([isa, i, true]));
});

// The levels are kept apart in the binary, not only in the source: an AVX-512 (EVEX) instruction
// outside an avx512-level function would crash an AVX2 CPU, a BF16 one outside the BF16 kernel
// would crash an AVX-512 CPU without AVX512-BF16 (Skylake-X, Ice Lake), and a VEX one outside an
// avx2-or-better function would crash a CPU without AVX. The level's functions are the ones
// named for it (onActiveIsa's runAvx512 / runAvx2, the *Avx2 / *Avx512 kernels).
type Leak = { fn: string; what: string };
function isaLeaks(disassembly: string): Leak[] {
  const leaks: Leak[] = [];
  let fn = '';
  for (const line of disassembly.split('\n')) {
    const head = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (head) { fn = head[1]; continue; }
    const insn = /^\s*[0-9a-f]+:\t([0-9a-f]{2}) .*\t(\S+)/.exec(line);
    if (!insn || !fn.includes('mp::')) continue;
    const [, first, mnemonic] = insn;
    let what = '';
    if (/bf16/.test(mnemonic) && !/Avx512Bf16/.test(fn)) what = `BF16 ${mnemonic}`;
    else if (first === '62' && !/Avx512/.test(fn)) what = `EVEX ${mnemonic}`;
    else if ((first === 'c4' || first === 'c5') && !/Avx/.test(fn)) what = `VEX ${mnemonic}`;
    if (what && !leaks.some((l) => l.fn === fn)) leaks.push({ fn, what });
  }
  return leaks;
}

const addonFile: string = process.env.MIXPREC_ADDON
  ? path.resolve(process.env.MIXPREC_ADDON)
  : require('bindings')({ bindings: 'mixprec', path: true });
const objdump = spawnSync('objdump', ['-d', '-C', '--insn-width=16', addonFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
const canDisassemble = process.arch === 'x64' && process.platform === 'linux' && objdump.status === 0;
(canDisassemble ? test : test.skip)(`each level's instructions stay in that level's functions in the built addon${canDisassemble ? '' : ' (skipped: needs objdump on x86-64 Linux)'}`, () => {
  const text = objdump.stdout;
  // The checker finds a leak when there is one (hand-made lines in objdump's format)...
  const fake = (fn: string, bytes: string, insn: string) => `0000000000001000 <${fn}>:\n    1000:\t${bytes} \t${insn}\n`;
  expect(isaLeaks(fake('mp::cpu::laneSum(float const*, unsigned long)', '62 f1 7c 48 58 c1', 'vaddps %zmm1,%zmm0,%zmm0'))).toHaveLength(1);
  expect(isaLeaks(fake('mp::cpu::runAvx512<mp::x>(mp::x const&)', '62 f2 7e 48 52 c1', 'vdpbf16ps %zmm1,%zmm0,%zmm0'))).toHaveLength(1);
  expect(isaLeaks(fake('mp::cpu::widen(void const*)', 'c5 fc 58 c1', 'vaddps %ymm1,%ymm0,%ymm0'))).toHaveLength(1);
  expect(isaLeaks(fake('mp::cpu::runAvx2<mp::x>(mp::x const&)', 'c5 fc 58 c1', 'vaddps %ymm1,%ymm0,%ymm0'))).toHaveLength(0);
  // ...and the addon has none, while it does hold AVX2 and AVX-512 kernels.
  expect(isaLeaks(text)).toEqual([]);
  expect(text).toMatch(/\tvfmadd231ps .*%ymm/);
  expect(text).toMatch(/\tvfmadd231ps .*%zmm/);
});
