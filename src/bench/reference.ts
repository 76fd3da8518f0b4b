import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export interface RefResult { size: number; dtype: string; gflops: number }
export interface Reference { library?: string; results?: RefResult[]; error?: string }

/** Runs bench/blas_ref.py (numpy BLAS on the CPU, PyTorch/cuBLAS on CUDA) in this same bench run. */
export function referenceGemm(device: 'cpu' | 'cuda', sizes: number[]): Reference {
  const script = path.join(__dirname, '..', '..', 'bench', 'blas_ref.py');
  const r = spawnSync('python3', [script, '--device', device, '--sizes', sizes.join(',')], { encoding: 'utf8', timeout: 600_000 });
  if (r.error) return { error: `python3 not runnable: ${r.error.message}` };
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Reference;
  } catch {
    return { error: `reference failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}` };
  }
}
