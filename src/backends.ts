import { MixprecError } from './errors';
import { native } from './native';
import { show } from './util/show';

/** 'cuda' is GPU 0; 'cuda:N' is GPU N (one backend per GPU: its own stream and memory). */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export interface BackendInfo {
  name: 'cpu' | 'cuda';
  /** Built into this addon. */
  compiled: boolean;
  /** Usable on this machine now. */
  available: boolean;
  /** Why not, when unavailable. */
  reason?: string;
  /** CPU: the kernel level and its GEMM kernels, e.g. "avx2: fp32 avx2+fma 6x16" (mixprec.cpuIsa() has the details). */
  features?: string;
  /** CUDA: GPUs found ('cuda:0' .. 'cuda:N-1'). */
  deviceCount?: number;
  /** CUDA: GPU 0's name, compute capability and memory (bytes). */
  device?: { name: string; computeCapability: string; totalMemory: number; freeMemory: number; multiprocessors: number };
}

/** What each backend is: compiled in, available, and why not. */
export function backends(): BackendInfo[] {
  return native().backends();
}

/** Resolves 'auto' (CUDA when available, else the CPU) and checks that the device can be used. */
export function resolveDevice(device: unknown = 'auto'): Device {
  if (device === 'auto') return backends().some((b) => b.name === 'cuda' && b.available) ? 'cuda' : 'cpu';
  if (device === 'cpu') return 'cpu';
  const m = typeof device === 'string' ? /^cuda(?::(\d{1,4}))?$/.exec(device) : null;
  if (m) {
    const cuda = backends().find((b) => b.name === 'cuda');
    if (!cuda?.available) throw new MixprecError('E_NO_CUDA', `CUDA backend unavailable: ${cuda?.reason ?? 'unknown'}`);
    const index = m[1] === undefined ? 0 : Number(m[1]);
    const count = cuda.deviceCount ?? 1;
    if (index >= count) throw new MixprecError('E_NO_CUDA', `there is no GPU ${index} (this machine has ${count}: 'cuda:0' .. 'cuda:${count - 1}')`);
    return index === 0 ? 'cuda' : (`cuda:${index}` as Device);
  }
  throw new MixprecError('E_DEVICE', `device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (got ${show(device)})`);
}

/** Live tensor memory per backend kind (cuda: all GPUs): bytes and allocations not yet freed (by dispose() or GC). */
export function memoryStats(): Record<'cpu' | 'cuda', { bytes: number; allocations: number }> {
  return native().memoryStats();
}
