// GEMM throughput: ours in fp32 / fp16 / bf16 on each available backend (on the CPU at one or
// more kernel levels), the ratio to our fp32, and the ratios to reference GEMMs measured in the
// same run: on the CPU numpy's BLAS and PyTorch for float32 and PyTorch's bfloat16 matmul for
// bfloat16; on CUDA PyTorch (cuBLAS) for each dtype. Square n x n x n GEMMs (--sizes) and any
// M x N x K shape with transposed operands (--shapes, e.g. the MLP's training-step GEMMs).
import * as os from 'node:os';
import { backends, Device } from '../backends';
import { cpuIsa, CpuIsa, setCpuIsa } from '../cpu';
import { DType } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { matmul } from '../ops';
import { empty, tensor } from '../tensor';
import { benchThreads, RefResult, RefShape, Reference, referenceGemm } from './reference';
import { medianTime } from './timing';

/** A reference measured for a row: its name ('numpy', 'torch'), library string, GFLOP/s, ours / theirs. */
export interface RowReference { name: string; library?: string; gflops: number; ratio: number }

/**
 * One GEMM: out[M, N] = op(a) @ op(b) with K the inner dimension; as in BLAS, a is stored [K, M]
 * when transA and b is stored [N, K] when transB (a Linear weight [out, in] is a transB operand).
 */
export type GemmShape = RefShape;

/** "MxNxK tt" with t = n / t for transA then transB, e.g. "256x1024x784 nt". */
export function shapeLabel(s: GemmShape): string {
  return `${s.M}x${s.N}x${s.K} ${s.transA ? 't' : 'n'}${s.transB ? 't' : 'n'}`;
}

/** A --shapes item with what it is for (the preset's items name their layer and pass). */
export interface GemmShapeItem extends GemmShape { role?: string }

/**
 * The GEMMs of one training step of an MLP (PyTorch Linear layout, y = x W^T + b, W [out, in])
 * at `batch`: per layer the forward x W^T (nt), dX = dY W (nn) for every layer but the first
 * (its input needs no gradient), dW = dY^T X (tn).
 */
export function mlpShapes(widths: number[], batch: number): GemmShapeItem[] {
  const out: GemmShapeItem[] = [];
  const layers = widths.length - 1;
  for (let i = 0; i < layers; i++)
    out.push({ M: batch, N: widths[i + 1], K: widths[i], transA: false, transB: true, role: `fc${i + 1} forward x W^T` });
  // Backward in the order autograd runs it: the last layer first.
  for (let i = layers - 1; i >= 0; i--) {
    const inF = widths[i], outF = widths[i + 1];
    if (i > 0) out.push({ M: batch, N: inF, K: outF, transA: false, transB: false, role: `fc${i + 1} dX = dY W` });
    out.push({ M: outF, N: inF, K: batch, transA: true, transB: false, role: `fc${i + 1} dW = dY^T X` });
  }
  return out;
}

/** The `--shapes mlp` preset: the MLP 784-1024-1024-10 at batch 256 (the train bench's default model). */
export const MLP_PRESET = { widths: [784, 1024, 1024, 10], batch: 256 } as const;

const SHAPE_RE = /^(\d+)x(\d+)x(\d+)(?::(nn|nt|tn|tt))?$/i;

/**
 * Parses a --shapes list: comma-separated `MxNxK` items, each optionally suffixed `:nn` (default),
 * `:nt` (transB), `:tn` (transA) or `:tt`, and `mlp` (mlpShapes of MLP_PRESET); repeats dropped.
 * Throws E_ARG naming the item that is not one of these.
 */
export function parseGemmShapes(list: string): GemmShapeItem[] {
  const out: GemmShapeItem[] = [];
  const seen = new Set<string>();
  const add = (s: GemmShapeItem) => {
    const key = shapeLabel(s);
    if (!seen.has(key)) { seen.add(key); out.push(s); }
  };
  const items = list.split(',').map((x) => x.trim()).filter(Boolean);
  if (!items.length) throw new MixprecError('E_ARG', "--shapes: expected MxNxK[:nn|nt|tn|tt] items or 'mlp', e.g. mlp,256x1024x784:nt");
  for (const item of items) {
    if (item.toLowerCase() === 'mlp') {
      mlpShapes([...MLP_PRESET.widths], MLP_PRESET.batch).forEach(add);
      continue;
    }
    const m = SHAPE_RE.exec(item);
    const [M, N, K] = m ? [m[1], m[2], m[3]].map(Number) : [];
    if (!m || ![M, N, K].every((d) => Number.isSafeInteger(d) && d > 0))
      throw new MixprecError('E_ARG', `--shapes: '${item}' is not MxNxK[:nn|nt|tn|tt] with positive M, N, K (e.g. 256x1024x784:nt) or 'mlp'`);
    const t = (m[4] ?? 'nn').toLowerCase();
    add({ M, N, K, transA: t[0] === 't', transB: t[1] === 't' });
  }
  return out;
}

export interface GemmRow {
  device: Device;
  /** Square rows (--sizes): n of n x n x n; absent for --shapes rows. */
  size?: number;
  /** Every row's GEMM (a square row: n, n, n, no transposes). */
  shape: GemmShape;
  /** --shapes mlp rows: the layer and pass, e.g. "fc1 forward x W^T". */
  role?: string;
  dtype: DType; gflops: number;
  /** CPU: the kernel level the row ran at (cpuIsa().active then). */
  isa?: CpuIsa;
  ratioToFp32?: number;
  /** The first reference for this row (numpy for float32 on the CPU, torch for bfloat16): older readers. */
  reference?: string; referenceGflops?: number; ratioToReference?: number;
  /** Every reference for this row's shape and dtype, ratio = ours / theirs. */
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
  sizes: number[], devices?: Device[], withReference = true, opts: { isa?: string[]; shapes?: GemmShapeItem[] } = {},
): Promise<{ rows: GemmRow[]; references: Record<string, Reference>; cpu?: GemmCpuInfo }> {
  const rows: GemmRow[] = [];
  const references: Record<string, Reference> = {};
  let cpu: GemmCpuInfo | undefined;
  const usable = backends().filter((b) => b.available && (!devices || devices.includes(b.name))).map((b) => b.name);
  checkIsaLevels(usable.includes('cpu') ? opts.isa : undefined);
  // The squares first, then the --shapes rows, each run in fp32, fp16 and bf16.
  const runs: { size?: number; shape: GemmShape; role?: string }[] = [
    ...sizes.map((n) => ({ size: n, shape: { M: n, N: n, K: n, transA: false, transB: false } })),
    ...(opts.shapes ?? []).map(({ M, N, K, transA, transB, role }) => ({ shape: { M, N, K, transA, transB }, ...(role ? { role } : {}) })),
  ];
  const shapes = runs.filter((r) => r.size === undefined).map((r) => r.shape);
  const runShapes = async (device: Device, isa?: CpuIsa) => {
    const sync = () => native().synchronize(device);
    for (const run of runs) {
      const { M, N, K, transA, transB } = run.shape;
      const flops = 2 * M * N * K;
      let fp32 = 0;
      for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
        // Stored as BLAS sees them: a [K, M] when transA, b [N, K] when transB.
        const aShape = transA ? [K, M] : [M, K], bShape = transB ? [N, K] : [K, N];
        const a = tensor(randomValues(M * K), aShape, { dtype, device });
        const b = tensor(randomValues(K * N), bShape, { dtype, device });
        const out = empty([M, N], { dtype, device });
        const t = await medianTime(async () => matmul(a, b, { transA, transB, out }), sync, flops >= 2 * 2048 ** 3 ? 1 : 0.3);
        const gflops = flops / t / 1e9;
        if (dtype === 'float32') fp32 = gflops;
        rows.push({
          device, ...(isa ? { isa } : {}), ...(run.size !== undefined ? { size: run.size } : {}), shape: run.shape,
          ...(run.role ? { role: run.role } : {}), dtype, gflops, ratioToFp32: gflops / fp32,
        });
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
        await runShapes(device, isa);
      });
    } else await runShapes(device);
    if (withReference) {
      const ref = referenceGemm(device, sizes, shapes);
      references[device] = ref;
      for (const row of rows.filter((x) => x.device === device)) {
        // Matched by the GEMM (M, N, K and the transposes) and dtype; one result per library.
        const key = shapeLabel(row.shape);
        const found: RowReference[] = [];
        for (const lib of ref.references) {
          const r = (lib.results ?? []).find((x) => x.dtype === row.dtype && resultLabel(x) === key);
          if (r) found.push({ name: lib.name, library: lib.library, gflops: r.gflops, ratio: row.gflops / r.gflops });
        }
        if (!found.length) continue;
        row.references = found;
        Object.assign(row, { reference: found[0].library ?? found[0].name, referenceGflops: found[0].gflops, ratioToReference: found[0].ratio });
      }
    }
  }
  return { rows, references, cpu };
}

/** A reference result's GEMM as shapeLabel writes it (a result with only `size` is that square). */
function resultLabel(r: RefResult): string | undefined {
  if (r.shape) return shapeLabel(r.shape);
  return r.size !== undefined ? shapeLabel({ M: r.size, N: r.size, K: r.size, transA: false, transB: false }) : undefined;
}
