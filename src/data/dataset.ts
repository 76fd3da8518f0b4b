// In-memory datasets, deterministic shuffling and mini-batching.
import { types } from 'node:util';
import { MixprecError } from '../errors';
import { fmix32, mulberry32 } from '../rng';
import { readOptions } from '../util/options';
import { show } from '../util/show';

/**
 * A dataset held in memory.
 * - `x`: row-major inputs [n, features].
 * - `y`: class labels (Int32Array, length n, values in [0, classes)) or regression targets
 *   (Float32Array, row-major [n, targets]).
 */
export interface Dataset {
  x: Float32Array;
  y: Int32Array | Float32Array;
  n: number;
  features: number;
  /** Regression targets per row (set when y is a Float32Array). */
  targets?: number;
  /** Number of classes (set when y holds class labels). */
  classes?: number;
}

export interface Batch {
  /** Row-major inputs [size, features], a fresh contiguous copy. */
  x: Float32Array;
  /** Labels [size] (Int32Array) or targets [size, targets] (Float32Array), a fresh copy. */
  y: Int32Array | Float32Array;
  /** Rows in this batch (batchSize, or fewer for the last batch when dropLast is false). */
  size: number;
  /** The dataset rows gathered into this batch, in batch order. */
  indices: Uint32Array;
}

export interface BatchOptions {
  /** Rows per batch; a positive integer. */
  batchSize: number;
  /** Visit rows in the order shuffledIndices(n, seed, epoch) (default false: 0, 1, ..., n-1). */
  shuffle?: boolean;
  /** Shuffle seed (default 0). */
  seed?: number;
  /** Epoch number; each epoch gets a different permutation for the same seed (default 0). */
  epoch?: number;
  /** Drop the last batch when it has fewer than batchSize rows (default false). */
  dropLast?: boolean;
  /**
   * Data-parallel: this rank's shard of the epoch, as PyTorch's DistributedSampler. The (shuffled)
   * order is padded by wrapping around to a multiple of worldSize (pad: true, the default; every
   * rank then takes as many batches), and the rank takes every worldSize-th row from `rank`: so
   * the ranks' k-th batches together are the k-th batch of batchSize·worldSize of one process.
   */
  shard?: { rank: number; worldSize: number; pad?: boolean };
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

/** Flattens a number[][] (rectangular, finite numbers) into a Float32Array; returns [data, rows, cols]. */
function flatten2d(rows: unknown[], what: string, expectCols?: number): { data: Float32Array; cols: number } {
  const n = rows.length;
  let cols = expectCols;
  for (let i = 0; i < n; i++) {
    const r = rows[i];
    if (!Array.isArray(r)) {
      throw new MixprecError('E_SHAPE', `${what}: row ${i} is ${typeName(r)}, expected an array of numbers`);
    }
    if (cols === undefined) cols = r.length;
    if (r.length !== cols) {
      throw new MixprecError(
        'E_SHAPE',
        `${what}: not rectangular: row ${i} has ${r.length} values, expected ${cols}` + (i > 0 && expectCols === undefined ? ' (as row 0)' : ''),
      );
    }
  }
  const c = cols ?? 0;
  if (c === 0) throw new MixprecError('E_SHAPE', `${what}: rows have no values`);
  const data = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    const r = rows[i] as unknown[];
    for (let j = 0; j < c; j++) {
      const v = r[j];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new MixprecError('E_DATA', `${what}[${i}][${j}] is ${typeof v === 'number' ? v : typeName(v)}, expected a finite number`);
      }
      data[i * c + j] = v;
    }
  }
  return { data, cols: c };
}

function checkFinite(a: Float32Array, what: string, cols: number): void {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      throw new MixprecError('E_DATA', `${what}[${Math.floor(i / cols)}][${i % cols}] is ${a[i]}, expected a finite number`);
    }
  }
}

/**
 * Builds a validated Dataset from arrays.
 *
 * x: a row-major Float32Array [n, features] (not copied) or a rectangular number[][] (copied).
 * y: class labels as Int32Array (not copied) or number[] (integers), or regression targets as
 *    Float32Array [n, targets] (not copied) or number[][] (copied).
 * opts.features: required when x is a Float32Array and y is a Float32Array (n cannot be inferred
 *    otherwise); when given it must agree with x.
 * opts.classes: for labels, the number of classes (labels must lie in [0, classes)); inferred as
 *    max(label) + 1 when omitted. Not allowed with regression targets.
 *
 * Errors: E_ARG for bad argument types / options, E_SHAPE for inconsistent sizes (row counts,
 * ragged rows, lengths not divisible), E_DATA for bad values (non-finite, non-integer or
 * out-of-range labels) and for an empty dataset.
 */
export function arrayDataset(
  x: Float32Array | number[][],
  y: Int32Array | number[] | Float32Array | number[][],
  options: { features?: number; classes?: number } = {},
): Dataset {
  if (options === null || typeof options !== 'object') throw new MixprecError('E_ARG', `arrayDataset: opts must be an object, got ${typeName(options)}`);
  const opts = readOptions<{ features?: number; classes?: number }>(options, 'arrayDataset', ['features', 'classes'], 'ignore');
  if (opts.features !== undefined && !isPositiveInt(opts.features)) {
    throw new MixprecError('E_ARG', `arrayDataset: opts.features must be a positive integer, got ${show(opts.features)}`);
  }
  if (opts.classes !== undefined && !isPositiveInt(opts.classes)) {
    throw new MixprecError('E_ARG', `arrayDataset: opts.classes must be a positive integer, got ${show(opts.classes)}`);
  }
  if (!(types.isFloat32Array(x)) && !Array.isArray(x)) {
    throw new MixprecError('E_ARG', `arrayDataset: x must be a Float32Array or number[][], got ${typeName(x)}`);
  }
  const isLabels = types.isInt32Array(y) || (Array.isArray(y) && (y.length === 0 || !Array.isArray(y[0])));
  const isTargets = types.isFloat32Array(y) || (Array.isArray(y) && y.length > 0 && Array.isArray(y[0]));
  if (!isLabels && !isTargets) {
    throw new MixprecError('E_ARG', `arrayDataset: y must be an Int32Array, number[], Float32Array or number[][], got ${typeName(y)}`);
  }
  if (isTargets && opts.classes !== undefined) {
    throw new MixprecError('E_ARG', 'arrayDataset: opts.classes was given but y holds regression targets (Float32Array or number[][]); pass labels as Int32Array or number[]');
  }

  // Row count: from y when it determines it, else from x.
  let n: number | undefined;
  if (isLabels) n = (y as Int32Array | number[]).length;
  else if (Array.isArray(y)) n = y.length;
  else if (Array.isArray(x)) n = x.length;

  // x
  let xData: Float32Array;
  let features: number;
  if (Array.isArray(x)) {
    if (n !== undefined && x.length !== n) {
      throw new MixprecError('E_SHAPE', `arrayDataset: x has ${x.length} rows but y has ${n}`);
    }
    if (x.length === 0) throw new MixprecError('E_DATA', 'arrayDataset: the dataset is empty (x has no rows)');
    const f = flatten2d(x, 'arrayDataset: x', opts.features);
    xData = f.data;
    features = f.cols;
  } else {
    if (opts.features !== undefined) {
      features = opts.features;
      if (x.length % features !== 0) {
        throw new MixprecError('E_SHAPE', `arrayDataset: x has ${x.length} values, not a multiple of features = ${features}`);
      }
      const rows = x.length / features;
      if (n !== undefined && rows !== n) {
        throw new MixprecError('E_SHAPE', `arrayDataset: x has ${rows} rows of ${features} features but y has ${n} rows`);
      }
      n = rows;
    } else {
      if (n === undefined) {
        throw new MixprecError('E_ARG', 'arrayDataset: with x and y both Float32Array, give opts.features (the row count cannot be inferred)');
      }
      if (n === 0) throw new MixprecError('E_DATA', 'arrayDataset: the dataset is empty (y has no rows)');
      if (x.length % n !== 0 || x.length === 0) {
        throw new MixprecError('E_SHAPE', `arrayDataset: x has ${x.length} values, not a positive multiple of the ${n} rows of y`);
      }
      features = x.length / n;
    }
    if (n === 0) throw new MixprecError('E_DATA', 'arrayDataset: the dataset is empty (x has no rows)');
    checkFinite(x, 'arrayDataset: x', features);
    xData = x;
  }
  const rows = n as number;

  // y
  if (isLabels) {
    let labels: Int32Array;
    if (types.isInt32Array(y)) {
      labels = y;
    } else {
      const arr = y as unknown[];
      labels = new Int32Array(arr.length);
      for (let i = 0; i < arr.length; i++) {
        const v = arr[i];
        if (typeof v !== 'number' || !Number.isInteger(v)) {
          throw new MixprecError(
            'E_DATA',
            `arrayDataset: label y[${i}] is ${typeof v === 'number' ? v : typeName(v)}, expected an integer class label ` +
              '(pass a Float32Array or number[][] for regression targets)',
          );
        }
        if (v < 0 || v > 0x7fffffff) throw new MixprecError('E_DATA', `arrayDataset: label y[${i}] = ${v} is out of range [0, ${opts.classes ?? '2^31'})`);
        labels[i] = v;
      }
    }
    let max = -1;
    for (let i = 0; i < labels.length; i++) {
      const v = labels[i];
      if (v < 0 || (opts.classes !== undefined && v >= opts.classes)) {
        throw new MixprecError('E_DATA', `arrayDataset: label y[${i}] = ${v} is out of range [0, ${opts.classes ?? 'classes'})`);
      }
      if (v > max) max = v;
    }
    const classes = opts.classes ?? max + 1;
    return { x: xData, y: labels, n: rows, features, classes };
  }

  let tData: Float32Array;
  let targets: number;
  if (Array.isArray(y)) {
    const f = flatten2d(y as unknown[], 'arrayDataset: y');
    tData = f.data;
    targets = f.cols;
  } else {
    const t = y as Float32Array;
    if (t.length % rows !== 0 || t.length === 0) {
      throw new MixprecError('E_SHAPE', `arrayDataset: y has ${t.length} values, not a positive multiple of the ${rows} rows of x`);
    }
    targets = t.length / rows;
    checkFinite(t, 'arrayDataset: y', targets);
    tData = t;
  }
  return { x: xData, y: tData, n: rows, features, targets };
}

// ---------------------------------------------------------------------------------------------
// Deterministic shuffling.
//
// The generator is mulberry32 (a 32-bit state advanced by the Weyl increment 0x6d2b79f5, output
// through an xorshift-multiply finaliser). Its 32-bit state is derived from (seed, epoch) by
// absorbing the four 32-bit words seedLo, seedHi, epochLo, epochHi (two's complement of the
// integer, low word first) into h = 0x243f6a88 with h = fmix32((h ^ word) + 0x9e3779b9), fmix32
// being MurmurHash3's finaliser. A draw below a bound b uses rejection sampling
// (x < 2^32 - (2^32 mod b), then x mod b), so the shuffle is exactly uniform. Everything is 32-bit
// integer arithmetic (Math.imul, >>>), so a permutation depends only on (n, seed, epoch): the same
// on every run, platform and Node version.
// ---------------------------------------------------------------------------------------------

function words(v: number): [number, number] {
  return [v >>> 0, Math.floor(v / 4294967296) >>> 0];
}

/** The mulberry32 state for (seed, epoch); exported for tests and documentation. */
export function shuffleState(seed: number, epoch: number): number {
  let h = 0x243f6a88;
  for (const w of [...words(seed), ...words(epoch)]) h = fmix32(((h ^ w) + 0x9e3779b9) >>> 0);
  return h;
}

/**
 * A uniformly random permutation of 0..n-1 (Fisher–Yates), determined by (seed, epoch) alone.
 * n: a non-negative integer below 2^32; seed, epoch: safe integers (may be negative).
 */
export function shuffledIndices(n: number, seed: number, epoch: number): Uint32Array {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new MixprecError('E_ARG', `shuffledIndices: n must be an integer in [0, 2^32), got ${show(n)}`);
  }
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
    throw new MixprecError('E_ARG', `shuffledIndices: seed must be a safe integer, got ${show(seed)}`);
  }
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch)) {
    throw new MixprecError('E_ARG', `shuffledIndices: epoch must be a safe integer, got ${show(epoch)}`);
  }
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const next = mulberry32(shuffleState(seed, epoch));
  for (let i = n - 1; i > 0; i--) {
    const bound = i + 1;
    const limit = 4294967296 - (4294967296 % bound);
    let x = next();
    while (x >= limit) x = next();
    const j = x % bound;
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

function checkDataset(ds: Dataset): { yCols: number; labels: boolean } {
  if (ds === null || typeof ds !== 'object') throw new MixprecError('E_ARG', `batches: expected a Dataset, got ${typeName(ds)}`);
  const { x, y, n, features } = ds;
  if (!(types.isFloat32Array(x))) throw new MixprecError('E_ARG', `batches: dataset.x must be a Float32Array, got ${typeName(x)}`);
  if (!Number.isInteger(n) || n < 0) throw new MixprecError('E_SHAPE', `batches: dataset.n must be a non-negative integer, got ${show(n)}`);
  if (!isPositiveInt(features)) throw new MixprecError('E_SHAPE', `batches: dataset.features must be a positive integer, got ${show(features)}`);
  if (x.length !== n * features) {
    throw new MixprecError('E_SHAPE', `batches: dataset.x has ${x.length} values, expected n * features = ${n} * ${features}`);
  }
  if (types.isInt32Array(y)) {
    if (y.length !== n) throw new MixprecError('E_SHAPE', `batches: dataset.y has ${y.length} labels, expected n = ${n}`);
    return { yCols: 1, labels: true };
  }
  if (types.isFloat32Array(y)) {
    const t = ds.targets ?? (n > 0 ? y.length / n : 1);
    if (!isPositiveInt(t) || y.length !== n * t) {
      throw new MixprecError('E_SHAPE', `batches: dataset.y has ${y.length} values, not n * targets (n = ${n}, targets = ${show(ds.targets)})`);
    }
    return { yCols: t, labels: false };
  }
  throw new MixprecError('E_ARG', `batches: dataset.y must be an Int32Array or Float32Array, got ${typeName(y)}`);
}

/**
 * Yields mini-batches of `ds`, each gathered into fresh contiguous arrays. Every row appears in
 * exactly one batch per pass (except the rows of a short last batch when dropLast is true).
 * Errors: E_ARG for a batchSize that is not a positive integer or bad options, E_SHAPE for an
 * inconsistent dataset. Arguments are checked when the generator is created, not on first next().
 */
export function batches(ds: Dataset, opts: BatchOptions): Generator<Batch> {
  if (opts === null || typeof opts !== 'object') throw new MixprecError('E_ARG', `batches: opts must be an object, got ${typeName(opts)}`);
  const { batchSize, shuffle = false, seed = 0, epoch = 0, dropLast = false, shard } = readOptions<BatchOptions>(opts, 'batches', ['batchSize', 'shuffle', 'seed', 'epoch', 'dropLast', 'shard'], 'ignore');
  if (!isPositiveInt(batchSize)) {
    throw new MixprecError('E_ARG', `batches: batchSize must be a positive integer, got ${show(batchSize)}`);
  }
  const { yCols, labels } = checkDataset(ds);
  const order = shuffle ? shuffledIndices(ds.n, seed, epoch) : null;
  if (!shuffle) {
    // Validate seed/epoch types even when unused, so a typo does not pass silently.
    if (!Number.isSafeInteger(seed)) throw new MixprecError('E_ARG', `batches: seed must be a safe integer, got ${show(seed)}`);
    if (!Number.isSafeInteger(epoch)) throw new MixprecError('E_ARG', `batches: epoch must be a safe integer, got ${show(epoch)}`);
  }
  if (shard === undefined) return gen(ds, batchSize, dropLast, order, yCols, labels);
  const { rank, worldSize, pad = true } = shard ?? ({} as BatchOptions['shard'] & object);
  if (!isPositiveInt(worldSize) || !Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize)
    throw new MixprecError('E_ARG', `batches: shard needs { rank, worldSize } with 0 <= rank < worldSize, got ${show(rank)} of ${show(worldSize)}`);
  const total = pad ? Math.ceil(ds.n / worldSize) * worldSize : ds.n;
  const mine = new Uint32Array(Math.max(0, Math.ceil((total - rank) / worldSize)));
  for (let k = 0, i = rank; i < total; i += worldSize, k++) mine[k] = order ? order[i % ds.n] : i % ds.n;
  return gen({ ...ds, n: mine.length }, batchSize, dropLast, mine, yCols, labels);
}

/** Batches per epoch in one rank's shard (batches with shard, pad: true) of a dataset of n rows. */
export function shardBatches(n: number, batchSize: number, worldSize: number): number {
  return Math.ceil(Math.ceil(n / worldSize) / batchSize);
}

function* gen(ds: Dataset, batchSize: number, dropLast: boolean, order: Uint32Array | null, yCols: number, labels: boolean): Generator<Batch> {
  const { n, features, x, y } = ds;
  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    if (size < batchSize && dropLast) return;
    const indices = new Uint32Array(size);
    if (order) indices.set(order.subarray(start, start + size));
    else for (let k = 0; k < size; k++) indices[k] = start + k;
    const bx = new Float32Array(size * features);
    for (let k = 0; k < size; k++) {
      const r = indices[k] * features;
      bx.set(x.subarray(r, r + features), k * features);
    }
    let by: Int32Array | Float32Array;
    if (labels) {
      const yl = y as Int32Array;
      const b = new Int32Array(size);
      for (let k = 0; k < size; k++) b[k] = yl[indices[k]];
      by = b;
    } else {
      const yt = y as Float32Array;
      const b = new Float32Array(size * yCols);
      for (let k = 0; k < size; k++) {
        const r = indices[k] * yCols;
        b.set(yt.subarray(r, r + yCols), k * yCols);
      }
      by = b;
    }
    yield { x: bx, y: by, size, indices };
  }
}
