// Runs a suite once per backend. An unavailable backend registers one skipped test whose name
// says why (visible in jest's verbose output), e.g. "cuda: skipped: no CUDA device".
import * as mixprec from '../../src';

export const BACKENDS = mixprec.backends();

export function describeEachBackend(title: string, body: (device: mixprec.Device) => void): void {
  for (const b of BACKENDS) {
    describe(`${title} [${b.name}]`, () => {
      if (b.available) body(b.name);
      else test.skip(`${b.name}: skipped: ${b.reason ?? 'unavailable'}`, () => undefined);
    });
  }
}

export const cudaAvailable = BACKENDS.some((b) => b.name === 'cuda' && b.available);
