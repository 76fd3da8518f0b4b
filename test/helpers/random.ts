// Seeded randomness: every run draws fresh inputs (seed from the clock, or MIXPREC_TEST_SEED to
// replay) and logs the seed so a failure can be reproduced.
export function makeRng(label: string): () => number {
  const seed = process.env.MIXPREC_TEST_SEED ? Number(process.env.MIXPREC_TEST_SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
  // eslint-disable-next-line no-console
  console.log(`${label}: seed ${seed} (replay with MIXPREC_TEST_SEED=${seed})`);
  let s = seed >>> 0;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [-1, 1) (never all zero). */
export function uniform(rng: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rng() * 2 - 1) * scale;
  return a;
}
