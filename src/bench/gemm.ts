// GEMM throughput: ours in fp32 / fp16 / bf16 on each available backend (on the CPU at one or
// more kernel levels), the ratio to our fp32, and the ratios to reference GEMMs measured in the
// same run: on the CPU numpy's BLAS and PyTorch for float32 and PyTorch's bfloat16 matmul for
// bfloat16; on CUDA PyTorch (cuBLAS) for each dtype.
import * as os from 'node:os';
import { backends, Device } from '../backends';
import { cpuIsa, CpuIsa, setCpuIsa } from '../cpu';
import { DType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { matmul } from '../ops';
import { empty, tensor } from '../tensor';
import { benchThreads, Reference, referenceGemm } from './reference';
import { medianTime } from './timing';

/** A reference measured for a row: its name ('numpy', 'torch'), library string, GFLOP/s, ours / theirs. */
export interface RowReference { name: string; library?: string; gflops: number; ratio: number }

export interface GemmRow {
  device: Device; size: number; dtype: DType; gflops: number;
  /** CPU: the kernel level the row ran at (cpuIsa().active then). */
  isa?: CpuIsa;
  ratioToFp32?: number;
  /** The first reference for this row (numpy for float32 on the CPU, torch for bfloat16): older readers. */
  reference?: string; referenceGflops?: number; ratioToReference?: number;
  /** Every reference for this row's size and dtype, ratio = ours / theirs. */
  references?: RowReference[];
}

/** The CPU kernel levels a GEMM bench ran at. */
export interface GemmCpuInfo {
  model?: string; threads: number;
  /** The level active when the bench started, and its GEMM kernels. */
  active: CpuIsa; gemm: string;
  /** Each level benchmarked: what was asked, what became active, its GEMM kernels. */
  levels: { requested: string; isa: CpuIsa; gemm: string }[];
}

function randomValues(n: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.random() * 2 - 1;
  return v;
}

/** Checks --isa levels against this CPU before anything runs (E_ARG naming what it has). */
export function checkIsaLevels(levels: string[] | undefined): void {
  if (!levels) return;
  const info = cpuIsa();
  for (const l of levels)
    if (l !== 'auto' && !(info.available as string[]).includes(l))
      throw new MixprecError('E_ARG', `--isa ${l}: this CPU has ${info.available.join(', ')} (or 'auto')`);
}

/**
 * Runs fn once per CPU kernel level in `levels` (default: the active one), with that level set,
 * levels that resolve to the same one run once; the level active before is restored after.
 */
export async function atCpuLevels(levels: string[] | undefined, fn: (isa: CpuIsa, requested: string) => Promise<void>): Promise<void> {
  const before = cpuIsa().active;
  const done = new Set<CpuIsa>();
  try {
    for (const requested of levels ?? [before]) {
      const isa = levels ? setCpuIsa(requested as 'auto' | CpuIsa) : before;
      if (done.has(isa)) continue;
      done.add(isa);
      await fn(isa, requested);
    }
  } finally {
    if (cpuIsa().active !== before) setCpuIsa(before === cpuIsa().best ? 'auto' : before);
  }
}

export async function benchGemm(
  sizes: number[], devices?: Device[], withReference = true, opts: { isa?: string[] } = {},
): Promise<{ rows: GemmRow[]; references: Record<string, Reference>; cpu?: GemmCpuInfo }> {
  const rows: GemmRow[] = [];
  const references: Record<string, Reference> = {};
  let cpu: GemmCpuInfo | undefined;
  const usable = backends().filter((b) => b.available && (!devices || devices.includes(b.name))).map((b) => b.name);
  checkIsaLevels(usable.includes('cpu') ? opts.isa : undefined);
  const runSizes = async (device: Device, isa?: CpuIsa) => {
    const sync = () => native().synchronize(device);
    for (const n of sizes) {
      let fp32 = 0;
      for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
        const a = tensor(randomValues(n * n), [n, n], { dtype, device });
        const b = tensor(randomValues(n * n), [n, n], { dtype, device });
        const out = empty([n, n], { dtype, device });
        const t = await medianTime(async () => matmul(a, b, { out }), sync, n >= 2048 ? 1 : 0.3);
        const gflops = (2 * n ** 3) / t / 1e9;
        if (dtype === 'float32') fp32 = gflops;
        rows.push({ device, ...(isa ? { isa } : {}), size: n, dtype, gflops, ratioToFp32: gflops / fp32 });
        [a, b, out].forEach((x) => x.dispose());
      }
    }
  };
  for (const device of usable) {
    if (device === 'cpu') {
      const info = cpuIsa();
      cpu = { model: os.cpus()[0]?.model, threads: benchThreads(), active: info.active, gemm: info.gemm, levels: [] };
      const levels = cpu.levels;
      await atCpuLevels(opts.isa, async (isa, requested) => {
        levels.push({ requested, isa, gemm: cpuIsa().gemm });
        await runSizes(device, isa);
      });
    } else await runSizes(device);
    if (withReference) {
      const ref = referenceGemm(device, sizes);
      references[device] = ref;
      for (const row of rows.filter((x) => x.device === device)) {
        const found: RowReference[] = [];
        for (const lib of ref.references)
          for (const r of lib.results ?? [])
            if (r.size === row.size && r.dtype === row.dtype) found.push({ name: lib.name, library: lib.library, gflops: r.gflops, ratio: row.gflops / r.gflops });
        if (!found.length) continue;
        row.references = found;
        Object.assign(row, { reference: found[0].library ?? found[0].name, referenceGflops: found[0].gflops, ratioToReference: found[0].ratio });
      }
    }
  }
  return { rows, references, cpu };
}
