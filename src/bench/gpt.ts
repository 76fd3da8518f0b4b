// The GPT training step (the default `train --model gpt` config): tokens/s for fp32 / fp16 / bf16
// on each available backend, ratios to our fp32, the activation bytes a step keeps for its
// backward, and — in the same run, where PyTorch imports — bench/gpt_torch_ref.py's fp32 and
// autocast-bf16 tokens/s for the same model, batch and optimizer (PyTorch with its BLAS at its
// best: see referenceEnv; Debian's python3-torch needs libopenblas0-pthread installed, else its
// GEMMs run on the reference BLAS at a fraction of the speed — the line it prints names the BLAS).
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { autocast } from '../amp/autocast';
import type { Precision } from '../amp/store';
import { tidy } from '../autograd/scope';
import { backends, Device, memoryStats } from '../backends';
import { gpt, GPTConfig } from '../models/gpt';
import { native } from '../native';
import { crossEntropy } from '../ops';
import { tensor } from '../tensor';
import { Trainer } from '../train/trainer';
import { findPython, referenceEnv as sharedReferenceEnv } from './reference';

export interface GptRow {
  device: Device; precision: Precision | 'torch-fp32' | 'torch-bf16';
  msPerStep: number; tokensPerSecond: number; ratioToOurFp32?: number;
  /** Backend bytes held by the tape after the forward (what the backward reads): activations. */
  activationBytes?: number;
}

export const GPT_BENCH_CONFIG: GPTConfig = { vocabSize: 98, blockSize: 64, nLayer: 4, nHead: 4, nEmbd: 128, dropout: 0 };
export const GPT_BENCH_BATCH = 12;

/**
 * The environment for PyTorch's command, at its best: the shared referenceEnv (OpenBLAS left to
 * pick its own kernel and cache sizes: these machines set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE,
 * which halve it), and one OpenBLAS thread, since torch runs its own threads around each GEMM
 * (measured here: 7.9k tokens/s with one OpenBLAS thread, 3.4k with two, oversubscribed).
 */
export function referenceEnv(): NodeJS.ProcessEnv {
  return sharedReferenceEnv({ OPENBLAS_NUM_THREADS: '1' });
}

export async function benchGpt(opts: { devices?: Device[]; reference?: boolean; steps?: number } = {}): Promise<{ rows: GptRow[]; config: GPTConfig; batch: number; reference?: unknown }> {
  const cfg = GPT_BENCH_CONFIG, B = GPT_BENCH_BATCH, T = cfg.blockSize, steps = opts.steps ?? 30;
  const rows: GptRow[] = [];
  let reference: unknown;
  for (const device of backends().filter((b) => b.available && (!opts.devices || opts.devices.includes(b.name))).map((b) => b.name)) {
    let fp32 = 0;
    const ids = () => Int32Array.from({ length: B * T }, () => Math.floor(Math.random() * cfg.vocabSize));
    for (const precision of ['fp32', 'fp16', 'bf16'] as Precision[]) {
      const trainer = new Trainer(gpt(cfg, { seed: 0 }), {
        precision, device, optimizer: { type: 'adamw', lr: 1e-3, betas: [0.9, 0.99], weightDecay: 0.1, decayParameters: 'matrices' }, maxGradNorm: 1,
      });
      const x = tensor(ids(), [B, T], { dtype: 'int32', device }), y = ids();
      for (let i = 0; i < 5; i++) await trainer.step(x, y); // warm-up: caches, allocator, branch predictors
      native().synchronize(device);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < steps; i++) await trainer.step(x, y);
      native().synchronize(device);
      const sec = Number(process.hrtime.bigint() - t0) / 1e9 / steps;
      // Activation memory: what the tape holds after a recorded forward and loss.
      let activationBytes = 0;
      tidy(() => {
        const before = memoryStats()[device].bytes;
        autocast(precision, () => crossEntropy(trainer.model.forward(x).reshape([-1, cfg.vocabSize]), y));
        activationBytes = memoryStats()[device].bytes - before;
      });
      const tps = (B * T) / sec;
      if (precision === 'fp32') fp32 = tps;
      rows.push({ device, precision, msPerStep: sec * 1e3, tokensPerSecond: tps, ratioToOurFp32: tps / fp32, activationBytes });
      x.dispose();
      trainer.dispose();
    }
    if (opts.reference !== false && device === 'cpu') {
      const py = findPython(['torch']);
      if (!py) { reference = { cpu: { error: 'no python3 with torch (Debian: apt-get install python3-torch)' } }; continue; }
      const script = path.join(__dirname, '..', '..', 'bench', 'gpt_torch_ref.py');
      const r = spawnSync(py, [script, 'speed', '--precision', 'both', '--steps', String(steps)], { encoding: 'utf8', timeout: 900_000, env: referenceEnv() });
      try {
        const ref = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as Record<string, unknown>;
        reference = { cpu: ref };
        for (const [k, mode] of [['fp32', 'torch-fp32'], ['bf16', 'torch-bf16']] as const) {
          const tps = ref[k];
          if (typeof tps === 'number') rows.push({ device, precision: mode, msPerStep: ((B * T) / tps) * 1e3, tokensPerSecond: tps, ratioToOurFp32: tps / fp32 });
        }
      } catch {
        reference = { cpu: { error: (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() } };
      }
    }
  }
  return { rows, config: cfg, batch: B, reference };
}
