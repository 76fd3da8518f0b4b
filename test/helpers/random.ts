// Seeded randomness: every run draws fresh inputs (seed from the clock, or MIXPREC_TEST_SEED to
// replay) and logs the seed so a failure can be reproduced.
import { mulberry32 } from '../../src/rng';
/** A fresh seed (from the clock, or MIXPREC_TEST_SEED to replay), logged with its label. */
export function freshSeed(label: string): number {
  const seed = process.env.MIXPREC_TEST_SEED ? Number(process.env.MIXPREC_TEST_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  // eslint-disable-next-line no-console
  console.log(`${label}: seed ${seed} (replay with MIXPREC_TEST_SEED=${seed})`);
  return seed;
}

/** Uniform [0, 1) from a seed (the library's mulberry32: the inputs' generator, not an oracle). */
export function rngFromSeed(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** A seeded uniform [0, 1) generator with a fresh, logged seed. */
export function makeRng(label: string): () => number {
  return rngFromSeed(freshSeed(label));
}

/** n values uniform in [-1, 1) (never all zero). */
export function uniform(rng: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng() * 2 - 1) * scale;
  return a;
}

/** Bulk randomness for hot loops: a local mulberry32 (inlined, no sandboxed global lookups) seeded from `rng`, so a run still replays. */
export function fastRandom(rng: () => number): () => number {
  let s = Math.floor(rng() * 2 ** 32) >>> 0;
  const imul = Math.imul;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
