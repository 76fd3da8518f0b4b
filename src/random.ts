// The generator of the ops' randomness (dropout masks): a seed and a counter, so a sequence of
// calls after manualSeed(n) draws the same masks on every backend and run.
import { MixprecError } from './errors';
import { hash32, Rng } from './rng';

let seed = 0;
let counter = 0;

/** Seeds the generator dropout draws its masks from (as torch.manual_seed). */
export function manualSeed(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new MixprecError('E_ARG', 'manualSeed: the seed must be a non-negative integer');
  seed = n >>> 0;
  counter = 0;
  initCounter = 0;
}

/** @internal The next 64-bit mask seed as two uint32 halves. */
export function nextSeed(): { seedHi: number; seedLo: number } {
  const c = counter++;
  return { seedHi: hash32(seed, c), seedLo: hash32(c, seed ^ 0x5bd1e995) };
}

/** @internal Runs fn with the generator at (s, 0), then restores it (the Trainer's per-step masks). */
export function withSeed<T>(s: number, fn: () => T): T {
  const prev = [seed, counter];
  seed = s >>> 0;
  counter = 0;
  try {
    return fn();
  } finally {
    [seed, counter] = prev;
  }
}

let initCounter = 0;
/** @internal A fresh parameter-init stream from the manualSeed generator (one per parameter). */
export function initStream(): Rng {
  initCounter += 1;
  return new Rng(seed ^ 0x1234567, initCounter);
}
