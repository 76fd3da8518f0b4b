// GEMM throughput: ours in fp32 / fp16 / bf16 on each available backend, the fp16/fp32 ratio, and
// the ratio to a reference BLAS (numpy on the CPU, cuBLAS via PyTorch on CUDA) measured in the same run.
import { backends, Device } from '../backends';
import { DType } from '../dtype';
import { native } from '../native';
import { matmul } from '../ops';
import { empty, tensor } from '../tensor';
import { referenceGemm } from './reference';
import { medianTime } from './timing';

export interface GemmRow {
  device: Device; size: number; dtype: DType; gflops: number;
  ratioToFp32?: number; reference?: string; referenceGflops?: number; ratioToReference?: number;
}

function randomValues(n: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.random() * 2 - 1;
  return v;
}

export async function benchGemm(sizes: number[], devices?: Device[], withReference = true): Promise<{ rows: GemmRow[]; references: Record<string, unknown> }> {
  const rows: GemmRow[] = [];
  const references: Record<string, unknown> = {};
  const usable = backends().filter((b) => b.available && (!devices || devices.includes(b.name))).map((b) => b.name);
  for (const device of usable) {
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
        rows.push({ device, size: n, dtype, gflops, ratioToFp32: gflops / fp32 });
        [a, b, out].forEach((x) => x.dispose());
      }
    }
    if (withReference) {
      const ref = referenceGemm(device, sizes);
      references[device] = ref;
      for (const r of ref.results ?? []) {
        const row = rows.find((x) => x.device === device && x.size === r.size && x.dtype === r.dtype);
        if (row) Object.assign(row, { reference: ref.library, referenceGflops: r.gflops, ratioToReference: row.gflops / r.gflops });
      }
    }
  }
  return { rows, references };
}
