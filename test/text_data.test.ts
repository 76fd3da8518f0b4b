// Character-level text data: the State of the Union corpus (size, vocabulary, first words), the
// vocabulary (sorted, code points, encode/decode round trip, rebuilding from a checkpoint's
// characters), the train / val split, random windows (shifted targets, bounds, determinism,
// uniformity) and every bad input with its error code.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { codeOf, errorOf } from './helpers/tensors';
import { Rng } from '../src/rng';
import { text, textVocabulary, TextVocabulary, TextDataset, sotuText, MIN_TEXT_CHARS } from '../src/data';


const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-text-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
function tmpFile(name: string, data: string | Uint8Array): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, data);
  return p;
}

const SAMPLE = 'First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n';

describe('the State of the Union corpus', () => {
  let ds: TextDataset;
  beforeAll(() => {
    ds = text();
  });

  test('is 10,760,274 characters with 98 distinct ones, starting "Fellow-Citizens of the Senate"', () => {
    const s = sotuText();
    expect(s.length).toBe(10760274);
    expect(s.startsWith('Fellow-Citizens of the Senate')).toBe(true);
    expect(new Set(s).size).toBe(98); // counted independently of the vocabulary code
    expect(s.indexOf('\ufeff')).toBe(-1);
    expect(ds.source).toBe('sotu');
    expect(ds.ids.length).toBe(10760274);
    expect(ds.vocabSize).toBe(98);
    expect(ds.vocab.length).toBe(98);
    expect(ds.decode(ds.ids.subarray(0, 29))).toBe('Fellow-Citizens of the Senate');
    // Explicit 'sotu' is the default (compared as bytes: toEqual on 10M elements is slow).
    const again = text({ corpus: 'sotu' }).ids;
    expect(Buffer.compare(Buffer.from(again.buffer, again.byteOffset, again.byteLength), Buffer.from(ds.ids.buffer))).toBe(0);
  });

  test('is read once per process', () => {
    expect(sotuText()).toBe(sotuText());
  });

  test('splits 90/10 at floor(0.9 n)', () => {
    const cut = Math.floor(10760274 * 0.9);
    expect(cut).toBe(9684246);
    expect(ds.trainFraction).toBe(0.9);
    expect(ds.train.length).toBe(cut);
    expect(ds.val.length).toBe(10760274 - cut);
    expect(ds.train[cut - 1]).toBe(ds.ids[cut - 1]);
    expect(ds.val[0]).toBe(ds.ids[cut]);
    expect(ds.decode(ds.val.subarray(0, 200))).toBe(sotuText().slice(cut, cut + 200));
  });

  test('windows of blockSize 256 lie inside their split', () => {
    const rng = new Rng(7);
    const cut = ds.train.length;
    for (const split of ['train', 'val'] as const) {
      const ids = ds.split(split);
      // The corpus is all BMP, so a split's text is the same slice of the string.
      const hay = split === 'train' ? sotuText().slice(0, cut) : sotuText().slice(cut);
      const { x, y } = ds.batch(split, 4, 256, rng);
      expect(x.length).toBe(4 * 256);
      for (let b = 0; b < 4; b++) {
        const at = hay.indexOf(ds.decode(x.subarray(b * 256, (b + 1) * 256)));
        expect(at).toBeGreaterThanOrEqual(0);
        expect(at + 256).toBeLessThan(ids.length);
        expect(ds.decode(y.subarray(b * 256, (b + 1) * 256))).toBe(hay.slice(at + 1, at + 257));
      }
    }
  });
});

describe('vocabulary', () => {
  test('is the sorted distinct code points; astral characters are one token', () => {
    const s = 'b😀a\u00e9ba😀\u{1F600}z\n' + 'abcabcabcabc';
    const ds = text({ text: s });
    expect(ds.vocab).toEqual(['\n', 'a', 'b', 'c', 'z', '\u00e9', '😀']);
    expect(ds.ids.length).toBe([...s].length);
    expect(ds.decode(ds.encode(s))).toBe(s);
    expect(Array.from(ds.encode('😀a'))).toEqual([6, 1]);
    expect(ds.decode([6, 6, 0])).toBe('😀😀\n');
    expect(ds.encode('')).toEqual(new Int32Array(0));
    expect(ds.decode([])).toBe('');
    expect(Object.isFrozen(ds.vocab)).toBe(true);
  });

  test('rebuilds from its characters, as a checkpoint saves them', () => {
    const ds = text({ text: SAMPLE + '𝄞' });
    const saved = JSON.parse(JSON.stringify(ds.vocab)) as string[];
    for (const v of [textVocabulary(saved), TextVocabulary.fromVocab(saved)]) {
      expect(v.vocabSize).toBe(ds.vocabSize);
      expect(v.vocab).toEqual(ds.vocab);
      expect(v.encode(SAMPLE + '𝄞')).toEqual(ds.ids);
      expect(v.decode(ds.ids)).toBe(SAMPLE + '𝄞');
    }
    // Any order is a vocabulary: ids follow the array.
    const v = textVocabulary(['z', '😀', 'a']);
    expect(Array.from(v.encode('a😀z'))).toEqual([2, 1, 0]);
  });

  test('rejects a bad vocabulary with E_DATA', () => {
    expect(codeOf(() => textVocabulary([]))).toBe('E_DATA');
    expect(codeOf(() => textVocabulary(['a', 'b', 'a']))).toBe('E_DATA');
    expect(errorOf(() => textVocabulary(['a', 'b', 'a']))?.message).toMatch(/vocab\[2\].*repeats vocab\[0\]/);
    expect(codeOf(() => textVocabulary(['a', 'bc']))).toBe('E_DATA');
    expect(codeOf(() => textVocabulary(['a', '']))).toBe('E_DATA');
    expect(codeOf(() => textVocabulary(['a', 'e\u0301']))).toBe('E_DATA'); // two code points
    expect(codeOf(() => textVocabulary(['a', 3 as unknown as string]))).toBe('E_DATA');
    expect(codeOf(() => textVocabulary('ab' as unknown as string[]))).toBe('E_DATA');
    expect(codeOf(() => textVocabulary(['😀', '😁']))).toBe('no error');
  });

  test('an unknown character is E_DATA naming it; a bad id is E_ARG', () => {
    const ds = text({ text: SAMPLE });
    const e = errorOf(() => ds.encode('hear Q'));
    expect(e?.code).toBe('E_DATA');
    expect(e?.message).toContain('"Q"');
    expect(e?.message).toContain('U+0051');
    expect(e?.message).toContain('index 5');
    expect(errorOf(() => ds.encode('a😀'))?.message).toContain('U+1F600');
    expect(codeOf(() => ds.encode(3 as unknown as string))).toBe('E_ARG');
    expect(codeOf(() => ds.decode([0, ds.vocabSize]))).toBe('E_ARG');
    expect(codeOf(() => ds.decode([-1]))).toBe('E_ARG');
    expect(codeOf(() => ds.decode([1.5]))).toBe('E_ARG');
    expect(codeOf(() => ds.decode(null as unknown as number[]))).toBe('E_ARG');
  });
});

describe('splits and windows', () => {
  const ds = text({ text: SAMPLE.repeat(20) });
  const n = ds.ids.length;

  test('the split is at floor(n * trainFraction)', () => {
    expect(ds.train.length).toBe(Math.floor(n * 0.9));
    expect(ds.train.length + ds.val.length).toBe(n);
    const d2 = text({ text: SAMPLE.repeat(20), trainFraction: 0.5 });
    expect(d2.train.length).toBe(Math.floor(n / 2));
    expect(Array.from(d2.val)).toEqual(Array.from(ds.ids.subarray(Math.floor(n / 2))));
  });

  test('y is x shifted by one and every window lies inside its split', () => {
    const B = 64, T = 8;
    for (const split of ['train', 'val'] as const) {
      const ids = ds.split(split);
      const { x, y } = ds.batch(split, B, T, new Rng(1));
      expect(x.length).toBe(B * T);
      expect(y.length).toBe(B * T);
      for (let b = 0; b < B; b++) {
        // The only start s in range whose window matches (the text repeats, so check all).
        const xs = Array.from(x.subarray(b * T, (b + 1) * T));
        const ys = Array.from(y.subarray(b * T, (b + 1) * T));
        expect(ys.slice(0, T - 1)).toEqual(xs.slice(1));
        let found = false;
        for (let s = 0; s + T + 1 <= ids.length && !found; s++) {
          found = xs.every((v, t) => ids[s + t] === v) && ys.every((v, t) => ids[s + 1 + t] === v);
        }
        expect(found).toBe(true);
      }
    }
  });

  test('windows are reproducible for a seed and differ for another', () => {
    const a = ds.batch('train', 16, 12, new Rng(42));
    const b = ds.batch('train', 16, 12, new Rng(42));
    const c = ds.batch('train', 16, 12, new Rng(43));
    expect(a.x).toEqual(b.x);
    expect(a.y).toEqual(b.y);
    expect(a.x).not.toEqual(c.x);
    // Successive batches from one Rng differ too.
    const r = new Rng(42);
    ds.batch('train', 16, 12, r);
    expect(ds.batch('train', 16, 12, r).x).not.toEqual(a.x);
  });

  test('starts cover [0, n - blockSize - 1] uniformly, including both ends', () => {
    // Distinct characters, so each window's first id is its start.
    const alpha = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    const d = text({ text: alpha, trainFraction: 0.5 }); // train = 31 ids
    const T = 5, starts = d.train.length - T; // 26 possible starts
    const counts = new Array<number>(starts).fill(0);
    const draws = 26000;
    const { x } = d.batch('train', draws, T, new Rng(3));
    let outside = 0;
    for (let b = 0; b < draws; b++) {
      const s = x[b * T] - d.train[0];
      if (s >= 0 && s < starts) counts[s]++;
      else outside++;
    }
    expect(outside).toBe(0);
    // Expected 1000 each; 5 sigma is about 155.
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(160);
  });

  test('a split exactly blockSize + 1 long has one window', () => {
    const d = text({ text: 'abcdefghijklmnopqrst', trainFraction: 0.5 }); // 10 / 10
    const { x, y } = d.batch('val', 3, 9, new Rng(0));
    expect(d.decode(x)).toBe('klmnopqrs'.repeat(3));
    expect(d.decode(y)).toBe('lmnopqrst'.repeat(3));
  });

  test('a split shorter than blockSize + 1 is E_DATA saying how long it is and what is needed', () => {
    const d = text({ text: 'abcdefghijklmnopqrst', trainFraction: 0.5 });
    const e = errorOf(() => d.batch('val', 1, 10, new Rng(0)));
    expect(e?.code).toBe('E_DATA');
    expect(e?.message).toMatch(/val split has 10 characters.*blockSize 10 needs 11/);
    expect(codeOf(() => d.checkBlockSize(9))).toBe('no error');
    expect(codeOf(() => d.checkBlockSize(10))).toBe('E_DATA');
    // The corpus default: a window far longer than the sample's val split.
    expect(codeOf(() => ds.batch('val', 1, ds.val.length, new Rng(0)))).toBe('E_DATA');
    expect(codeOf(() => ds.batch('val', 1, ds.val.length - 1, new Rng(0)))).toBe('no error');
  });

  test('bad batch arguments are E_ARG', () => {
    const rng = new Rng(0);
    expect(codeOf(() => ds.batch('test' as 'val', 1, 4, rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 0, 4, rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 2.5, 4, rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 1, 0, rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 1, NaN, rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 1, 4, undefined as unknown as Rng))).toBe('E_ARG');
    expect(codeOf(() => ds.batch('train', 1, 4, { next: () => 1 }))).toBe('E_ARG');
  });

  test('batchTensors gives int32 tensors [B, T] equal to batch()', async () => {
    const a = ds.batch('train', 3, 7, new Rng(5));
    const { x, y } = ds.batchTensors('train', 3, 7, new Rng(5), 'cpu');
    try {
      expect(x.dtype).toBe('int32');
      expect(x.shape).toEqual([3, 7]);
      expect(y.shape).toEqual([3, 7]);
      expect(await x.toInt32()).toEqual(a.x);
      expect(await y.toInt32()).toEqual(a.y);
    } finally {
      x.dispose();
      y.dispose();
    }
  });
});

describe('sources and bad input', () => {
  test('a UTF-8 file (BOM dropped) is the same as its text', () => {
    const s = SAMPLE + 'café 😀\r\n';
    const f = tmpFile('ok.txt', s);
    const d = text({ file: f });
    expect(d.source).toBe(f);
    expect(d.ids).toEqual(text({ text: s }).ids);
    const bom = tmpFile('bom.txt', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(s, 'utf8')]));
    expect(text({ file: bom }).ids).toEqual(d.ids);
  });

  test('a missing file is E_IO with its path', () => {
    const f = path.join(tmp, 'no-such-file.txt');
    const e = errorOf(() => text({ file: f }));
    expect(e?.code).toBe('E_IO');
    expect(e?.message).toContain(f);
    expect(codeOf(() => text({ file: tmp }))).toBe('E_IO'); // a directory
  });

  test('an empty file or text is E_DATA', () => {
    const f = tmpFile('empty.txt', '');
    const e = errorOf(() => text({ file: f }));
    expect(e?.code).toBe('E_DATA');
    expect(e?.message).toMatch(/empty/);
    expect(codeOf(() => text({ text: '' }))).toBe('E_DATA');
    expect(codeOf(() => text({ file: tmpFile('bom-only.txt', Buffer.from([0xef, 0xbb, 0xbf])) }))).toBe('E_DATA');
  });

  test('a binary file is E_DATA: NUL bytes, or not UTF-8', () => {
    const withNul = tmpFile('nul.bin', Buffer.concat([Buffer.from(SAMPLE), Buffer.from([0]), Buffer.from(SAMPLE)]));
    const e1 = errorOf(() => text({ file: withNul }));
    expect(e1?.code).toBe('E_DATA');
    expect(e1?.message).toContain(`NUL byte at offset ${Buffer.byteLength(SAMPLE)}`);
    const utf16 = tmpFile('utf16.txt', Buffer.from('\ufeff' + SAMPLE, 'utf16le'));
    expect(codeOf(() => text({ file: utf16 }))).toBe('E_DATA');
    const latin1 = tmpFile('latin1.txt', Buffer.from(SAMPLE + 'caf\u00e9 na\u00efve', 'latin1'));
    const e2 = errorOf(() => text({ file: latin1 }));
    expect(e2?.code).toBe('E_DATA');
    expect(e2?.message).toMatch(/not valid UTF-8/);
    const png = tmpFile('x.png', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86]));
    expect(codeOf(() => text({ file: png }))).toBe('E_DATA');
  });

  test('a text too short to train on is E_DATA', () => {
    expect(codeOf(() => text({ text: 'abcdefghijklmno' }))).toBe('E_DATA'); // 15 < 16
    expect(MIN_TEXT_CHARS).toBe(16);
    expect(codeOf(() => text({ text: 'abcdefghijklmnop' }))).toBe('no error');
    expect(codeOf(() => text({ text: '😀'.repeat(15) + 'a' }))).toBe('no error'); // counted in code points
    expect(codeOf(() => text({ text: '😀'.repeat(8) + 'a' }))).toBe('E_DATA'); // 16 UTF-16 units, 9 characters
    const one = errorOf(() => text({ text: 'a'.repeat(100) }));
    expect(one?.code).toBe('E_DATA');
    expect(one?.message).toMatch(/one distinct character/);
    expect(codeOf(() => text({ file: tmpFile('short.txt', 'hi\n') }))).toBe('E_DATA');
    // A fraction that leaves a split with fewer than 2 characters.
    expect(codeOf(() => text({ text: 'abcdefghijklmnopqrst', trainFraction: 0.95 }))).toBe('E_DATA');
    expect(codeOf(() => text({ text: 'abcdefghijklmnopqrst', trainFraction: 0.05 }))).toBe('E_DATA');
  });

  test('bad options are E_ARG', () => {
    const bad: unknown[] = [
      null,
      'sotu',
      [],
      { txt: SAMPLE },
      { text: SAMPLE, file: 'x.txt' },
      { text: SAMPLE, corpus: 'sotu' },
      { text: 42 },
      { file: 42 },
      { file: '' },
      { corpus: 'shakespeare' },
      { text: SAMPLE, trainFraction: 0 },
      { text: SAMPLE, trainFraction: 1 },
      { text: SAMPLE, trainFraction: -0.5 },
      { text: SAMPLE, trainFraction: NaN },
      { text: SAMPLE, trainFraction: '0.9' },
    ];
    for (const o of bad) {
      const e = errorOf(() => text(o as never));
      expect([JSON.stringify(o), e?.code]).toEqual([JSON.stringify(o), 'E_ARG']);
    }
    expect(errorOf(() => text({ txt: SAMPLE } as never))?.message).toContain('"txt"');
  });
});
