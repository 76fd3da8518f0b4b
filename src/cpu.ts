// The instruction-set level of the CPU kernels (native/cpu/isa.h): the best the CPU has by
// default, MIXPREC_CPU_ISA at load, or setCpuIsa() from code (to compare levels, or to test them).
import { native } from './native';

/** The levels, best first; each includes the ones after it. */
export const CPU_ISAS = ['avx512bf16', 'avx512', 'avx2', 'scalar'] as const;
export type CpuIsa = (typeof CPU_ISAS)[number];

export interface CpuIsaInfo {
  /** The level the CPU kernels use now. */
  active: CpuIsa;
  /** The best level this CPU (and OS) supports. */
  best: CpuIsa;
  /** Every level this CPU supports, best first. */
  available: CpuIsa[];
  /** The CPUID features found (including ones no kernel uses yet: avx512fp16, amx-*). */
  cpuFeatures: string[];
  /** The GEMM kernels of the active level, e.g. "avx2: fp32 avx2+fma 6x16". */
  gemm: string;
  /** Cache sizes the GEMM blocks for: per core for L1d / L2, the L3 a core shares. */
  cacheBytes: { l1d: number; l2: number; l3: number };
}

export function cpuIsa(): CpuIsaInfo {
  return native().cpuIsa() as CpuIsaInfo;
}

/**
 * Sets the level every CPU kernel uses from now on ('auto': the best). E_ARG for an unknown name
 * or a level this CPU lacks. Returns the level now active.
 */
export function setCpuIsa(isa: 'auto' | CpuIsa): CpuIsa {
  return native().setCpuIsa(isa) as CpuIsa;
}
