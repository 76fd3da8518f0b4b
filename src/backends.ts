import { MixprecError } from './errors';
import { native } from './native';

export type Device = 'cpu' | 'cuda';

export interface BackendInfo {
  name: Device;
  /** Built into this addon. */
  compiled: boolean;
  /** Usable on this machine now. */
  available: boolean;
  /** Why not, when unavailable. */
  reason?: string;
  /** CPU: the GEMM path chosen at run time ("avx2+fma+f16c" or "scalar"). */
  features?: string;
  /** CUDA: the device's name, compute capability and memory (bytes). */
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
  if (device === 'cuda') {
    const cuda = backends().find((b) => b.name === 'cuda');
    if (!cuda?.available) throw new MixprecError('E_NO_CUDA', `CUDA backend unavailable: ${cuda?.reason ?? 'unknown'}`);
    return 'cuda';
  }
  throw new MixprecError('E_DEVICE', `device must be 'auto', 'cpu' or 'cuda' (got ${String(device)})`);
}

/** Live tensor memory per backend: bytes and allocations not yet freed (by dispose() or GC). */
export function memoryStats(): Record<Device, { bytes: number; allocations: number }> {
  return native().memoryStats();
}
