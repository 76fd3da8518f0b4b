// The MLP training step: samples/s for fp32 / fp16 / bf16 on each available backend, ratios to
// our fp32 step, and (where PyTorch imports) the same model, batch and optimizer in PyTorch
// (AMP autocast + GradScaler + fused AdamW on CUDA; fp32 on the CPU) measured in this run.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { backends, Device, memoryStats } from '../backends';
import { dtypeBytes } from '../dtype';
import type { Precision } from '../amp/store';
import { layers, sequential } from '../nn';
import { tensor } from '../tensor';
import { Trainer } from '../train/trainer';
import { native } from '../native';
import { medianTime } from './timing';

export interface TrainRow {
  device: Device; precision: Precision | 'torch-amp' | 'torch-fp32'; widths: number[]; batch: number;
  msPerStep: number; samplesPerSecond: number; ratioToOurFp32?: number;
  /** Live backend memory after a step: parameters, gradients, optimizer state, activations. */
  trainingBytes?: number;
  /** Master + working copy + gradient + optimizer moments, per parameter. */
  bytesPerParameter?: number;
}

export async function benchTrain(opts: { widths: number[]; batch: number; devices?: Device[]; reference?: boolean }): Promise<{ rows: TrainRow[]; reference?: unknown }> {
  const rows: TrainRow[] = [];
  const { widths, batch } = opts;
  let reference: unknown;
  for (const device of backends().filter((b) => b.available && (!opts.devices || opts.devices.includes(b.name))).map((b) => b.name)) {
    const x = Float32Array.from({ length: batch * widths[0] }, () => Math.random() * 2 - 1);
    const y = Int32Array.from({ length: batch }, () => Math.floor(Math.random() * widths[widths.length - 1]));
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
      rows.push({
        device, precision, widths, batch, msPerStep: t * 1e3, samplesPerSecond: sps, ratioToOurFp32: sps / fp32,
        trainingBytes: memoryStats()[device].bytes - before, bytesPerParameter: perParam,
      });
      xt.dispose();
      trainer.dispose();
    }
    if (opts.reference !== false) {
      const script = path.join(__dirname, '..', '..', 'bench', 'torch_train_ref.py');
      const r = spawnSync('python3', [script, '--device', device, '--widths', widths.join(','), '--batch', String(batch)], { encoding: 'utf8', timeout: 600_000 });
      try {
        const ref = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as { error?: string; results?: { mode: 'torch-amp' | 'torch-fp32'; msPerStep: number }[] };
        reference = { ...(reference as object), [device]: ref };
        for (const m of ref.results ?? [])
          rows.push({ device, precision: m.mode, widths, batch, msPerStep: m.msPerStep, samplesPerSecond: batch / (m.msPerStep / 1e3), ratioToOurFp32: batch / (m.msPerStep / 1e3) / fp32 });
      } catch {
        reference = { ...(reference as object), [device]: { error: (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() } };
      }
    }
  }
  return { rows, reference };
}
