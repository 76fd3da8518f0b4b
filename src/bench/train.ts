// The MLP training step: samples/s for fp32 / fp16 / bf16 on each available backend (on the CPU
// at one or more kernel levels), ratios to our fp32 step, and (where PyTorch imports) the same
// model, batch and optimizer in PyTorch measured in this run: on CUDA AMP autocast(fp16) +
// GradScaler + fused AdamW and fp32; on the CPU fp32 and autocast(bfloat16) with mixprec's thread
// count and OpenBLAS left to pick its kernel (see referenceEnv). ratioToTorch pairs our fp32 with
// torch-fp32, our bf16 with torch-autocast-bf16 (CPU) and our fp16 with torch-amp (CUDA).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { backends, Device, memoryStats } from '../backends';
import type { CpuIsa } from '../cpu';
import { dtypeBytes } from '../dtype';
import type { Precision } from '../amp/store';
import { layers, sequential } from '../nn';
import { tensor } from '../tensor';
import { Trainer } from '../train/trainer';
import { native } from '../native';
import { atCpuLevels, checkIsaLevels } from './gemm';
import { benchThreads, findPython, pythonCandidates, referenceEnv, threadEnv } from './reference';
import { medianTime } from './timing';

export type TorchMode = 'torch-amp' | 'torch-fp32' | 'torch-autocast-bf16';

export interface TrainRow {
  device: Device; precision: Precision | TorchMode; widths: number[]; batch: number;
  /** CPU, our rows: the kernel level the row ran at. */
  isa?: CpuIsa;
  msPerStep: number; samplesPerSecond: number; ratioToOurFp32?: number;
  /** Our rows: samples/s ratio to the PyTorch mode of the same precision (torchMode), same run. */
  ratioToTorch?: number; torchMode?: TorchMode;
  /** Live backend memory after a step: parameters, gradients, optimizer state, activations. */
  trainingBytes?: number;
  /** Master + working copy + gradient + optimizer moments, per parameter. */
  bytesPerParameter?: number;
}

/** bench/torch_train_ref.py's output for one device. */
export interface TrainReference {
  library?: string; version?: string; interpreter?: string; python?: string; threads?: number;
  /** The variables the command ran with: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (unset), OMP_WAIT_POLICY. */
  env?: Record<string, string | null>;
  blas?: { summary?: string; [k: string]: unknown };
  /** blasThreads: the OpenBLAS thread count kept (the faster of mixprec's count and 1), where torch's GEMMs go to OpenBLAS. */
  results?: { mode: TorchMode; msPerStep: number; blasThreads?: number; msPerStepByBlasThreads?: Record<string, number> }[];
  error?: string;
}

/** Which PyTorch mode each of our precisions is compared with. */
export const TORCH_PAIR: Record<Device, Partial<Record<Precision, TorchMode>>> = {
  cpu: { fp32: 'torch-fp32', bf16: 'torch-autocast-bf16' },
  cuda: { fp32: 'torch-fp32', fp16: 'torch-amp' },
};

function torchTrainRef(device: Device, widths: number[], batch: number): TrainReference {
  const py = findPython(['torch']);
  if (!py) return { error: `no Python with torch among ${pythonCandidates().join(', ')} (Debian: apt-get install python3-torch; or set MIXPREC_BENCH_PYTHON)` };
  const threads = benchThreads();
  const script = path.join(__dirname, '..', '..', 'bench', 'torch_train_ref.py');
  const args = [script, '--device', device, '--widths', widths.join(','), '--batch', String(batch), '--threads', String(threads)];
  // OMP_WAIT_POLICY=PASSIVE unless set: with libgomp's default spinning, torch's OpenMP threads
  // and OpenBLAS's fought over 2 cores here, and a run came out at 24 or 230 ms/step by chance;
  // passive waiting measured 27-34 ms every run.
  const cpuEnv = { ...threadEnv(threads), OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' };
  const r = spawnSync(py, args, { encoding: 'utf8', timeout: 600_000, env: referenceEnv(device === 'cpu' ? cpuEnv : {}) });
  try {
    const ref = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as TrainReference;
    return { interpreter: py, ...ref };
  } catch {
    return { interpreter: py, error: (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() };
  }
}

export async function benchTrain(opts: { widths: number[]; batch: number; devices?: Device[]; reference?: boolean; isa?: string[] }): Promise<{ rows: TrainRow[]; reference?: Record<string, TrainReference> }> {
  const rows: TrainRow[] = [];
  const { widths, batch } = opts;
  let reference: Record<string, TrainReference> | undefined;
  const usable = backends().filter((b) => b.available && (!opts.devices || opts.devices.includes(b.name))).map((b) => b.name);
  checkIsaLevels(usable.includes('cpu') ? opts.isa : undefined);
  for (const device of usable) {
    const x = Float32Array.from({ length: batch * widths[0] }, () => Math.random() * 2 - 1);
    const y = Int32Array.from({ length: batch }, () => Math.floor(Math.random() * widths[widths.length - 1]));
    const ours: TrainRow[] = [];
    const run = async (isa?: CpuIsa) => {
      let fp32 = 0;
      for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
        const ls = widths.slice(1).map((w, i) => layers.linear(widths[i], w, { activation: i < widths.length - 2 ? 'relu' : 'none' }));
        const before = memoryStats()[device].bytes;
        const trainer = new Trainer(sequential(ls), { precision, device, optimizer: 'adamw' });
        const xt = tensor(x, [batch, widths[0]], { dtype: trainer.computeDtype, device });
        const t = await medianTime(() => trainer.step(xt, y), () => native().synchronize(device), device === 'cpu' ? 2 : 1);
        const sps = batch / t;
        if (precision === 'fp32') fp32 = sps;
        const s = trainer.store;
        const perParam = 4 + (s.working ? 2 : 0) + dtypeBytes(s.gradDtype) + 8; // + AdamW's two FP32 moments
        const row: TrainRow = {
          device, precision, widths, batch, ...(isa ? { isa } : {}), msPerStep: t * 1e3, samplesPerSecond: sps, ratioToOurFp32: sps / fp32,
          trainingBytes: memoryStats()[device].bytes - before, bytesPerParameter: perParam,
        };
        rows.push(row);
        ours.push(row);
        xt.dispose();
        trainer.dispose();
      }
    };
    if (device === 'cpu') await atCpuLevels(opts.isa, (isa) => run(isa));
    else await run();
    if (opts.reference !== false) {
      const ref = torchTrainRef(device, widths, batch);
      reference = { ...reference, [device]: ref };
      const ourFp32 = ours.find((r) => r.precision === 'fp32')?.samplesPerSecond ?? NaN; // the first level's
      for (const m of ref.results ?? []) {
        const sps = batch / (m.msPerStep / 1e3);
        rows.push({ device, precision: m.mode, widths, batch, msPerStep: m.msPerStep, samplesPerSecond: sps, ratioToOurFp32: sps / ourFp32 });
        for (const r of ours)
          if (TORCH_PAIR[device][r.precision as Precision] === m.mode) Object.assign(r, { torchMode: m.mode, ratioToTorch: r.samplesPerSecond / sps });
      }
    }
  }
  return { rows, reference };
}
