// Runs a suite once per backend (and, with everyCpuIsa, once more per lower CPU kernel level):
// the same helper as the raw suites' (test/helpers/raw.ts). An unavailable backend registers one
// skipped test whose name says why (visible in jest's verbose output), e.g. "cuda: skipped: no CUDA device".
import * as mixprec from '../../src';

export { describeEachBackend } from './raw';

export const BACKENDS = mixprec.backends();

export const cudaAvailable = BACKENDS.some((b) => b.name === 'cuda' && b.available);
