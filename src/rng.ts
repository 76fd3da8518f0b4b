// Seeded randomness shared by parameter init, dropout seeds and data shuffling: mulberry32 with
// seeds mixed by MurmurHash3's finaliser. Integer arithmetic only (Math.imul, >>>), so a stream
// depends on its seed alone: the same on every run, platform and Node version.

/** MurmurHash3's 32-bit finaliser. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: a generator of uint32 values from a 32-bit state. */
export function mulberry32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Mixes two uint32 values into a 32-bit seed. */
export function hash32(a: number, b: number): number {
  return fmix32(((fmix32((a >>> 0) ^ 0x9e3779b9) ^ (b >>> 0)) + 0x632be5ab) >>> 0);
}

/** Uniform floats from a seeded stream (seed, stream). */
export class Rng {
  #next: () => number;
  constructor(seed: number, stream = 0) {
    this.#next = mulberry32(hash32(seed, stream));
  }
  /** Uniform in [0, 1) with 32 random bits. */
  next(): number {
    return this.#next() / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
}
