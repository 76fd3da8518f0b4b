// The checkpoint file format: exact round trips (bit patterns included), the documented layout,
// every kind of damage (truncation, flipped bytes, wrong magic / version, malformed tables) ->
// E_CHECKPOINT, file-system errors -> E_IO, and atomic saves: injected failures mid-write, at
// fsync and at rename, a throwing tensor getter, processes killed mid-save, and concurrent saves.
// Also: a checkpoint over 2 GiB, saves through symbolic links, targets that are not regular files
// (directories, FIFOs, /dev/null), and the removal of temp files that killed saves left behind.
import * as fs from 'fs';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync, ChildProcess } from 'child_process';
import * as ts from 'typescript';
import { MixprecError } from '../src/errors';
import { writeCheckpointFile, readCheckpointFile, crc32, crc32Portable, CheckpointTensor, FOREIGN_TEMP_STALE_MS } from '../src/train/checkpoint_file';
import { makeRng, uniform } from './helpers/random';

const rng = makeRng('checkpoint_file.test');
const randInt = (lo: number, hi: number): number => lo + Math.floor(rng() * (hi - lo + 1)); // inclusive

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-ckpt-'));
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<MixprecError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(MixprecError);
    return e as MixprecError;
  }
  throw new Error('expected a rejection, the promise resolved');
}

function bitsOf(t: CheckpointTensor): number[] {
  // Compare raw bytes, so NaN payloads and -0 count.
  return Array.from(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
}

/** Float32 values from random bit patterns plus the special ones (NaNs with payloads, +-0, +-Inf, subnormals). */
function specialF32(n: number): Float32Array {
  const bits = new Uint32Array(n + 10);
  for (let i = 0; i < n; i++) bits[i] = Math.floor(rng() * 2 ** 32);
  bits.set([0x7fc00000, 0xffc00001, 0x7f800001, 0x7fbfffff, 0x80000000, 0x00000000, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff], n);
  return new Float32Array(bits.buffer);
}

function randomTensors(): Record<string, CheckpointTensor> {
  const i32 = new Int32Array(randInt(1, 300));
  for (let i = 0; i < i32.length; i++) i32[i] = Math.floor(rng() * 2 ** 32) - 2 ** 31;
  i32[0] = -(2 ** 31);
  const u8 = new Uint8Array(randInt(1, 37));
  for (let i = 0; i < u8.length; i++) u8[i] = randInt(0, 255);
  // A view at a non-zero byte offset into a larger buffer.
  const big = uniform(rng, 64);
  const off = randInt(1, 20);
  return {
    'layer1.weight': specialF32(randInt(1, 500)),
    'layer1.bias': uniform(rng, randInt(1, 7)),
    step: i32,
    mask: u8,
    empty: new Float32Array(0),
    view: big.subarray(off, off + randInt(1, 40)),
    'ünïcode ✓': new Uint8Array([randInt(0, 255)]),
  };
}

function randomHeader(): object {
  return {
    kind: 'test',
    epoch: randInt(0, 1000),
    lr: rng(),
    note: `ünïcode ${Math.floor(rng() * 1e9)} "quoted" \\ \u0001`,
    nested: { list: [1, 'two', null, true, { three: 3 }], empty: {} },
  };
}

function expectSameTensors(got: Record<string, CheckpointTensor>, want: Record<string, CheckpointTensor>): void {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
  for (const k of Object.keys(want)) {
    expect(got[k].constructor).toBe(want[k].constructor);
    expect(got[k].length).toBe(want[k].length);
    if (want[k].length <= 4096) {
      expect([k, bitsOf(got[k])]).toEqual([k, bitsOf(want[k])]);
    } else {
      // Large tensors: compare the bytes directly (a deep toEqual of millions of items is very slow).
      const a = Buffer.from(got[k].buffer, got[k].byteOffset, got[k].byteLength);
      const b = Buffer.from(want[k].buffer, want[k].byteOffset, want[k].byteLength);
      expect([k, a.equals(b)]).toEqual([k, true]);
    }
  }
}

/** Builds a file with the given JSON text and data section, with a correct CRC (to reach the checks after it). */
function buildFile(json: string, data: Uint8Array = new Uint8Array(0), version = 1): Buffer {
  const j = Buffer.from(json, 'utf8');
  const start = Math.ceil((16 + j.length) / 8) * 8;
  const out = Buffer.alloc(start + data.length + 4);
  out.write('MIXPRECK', 0, 'latin1');
  out.writeUInt32LE(version, 8);
  out.writeUInt32LE(j.length, 12);
  j.copy(out, 16);
  out.set(data, start);
  out.writeUInt32LE(crc32(out.subarray(0, out.length - 4)), out.length - 4);
  return out;
}

function leftovers(): string[] {
  return fs.readdirSync(dir).sort();
}

test('CRC-32 known answers and incremental use', () => {
  expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  expect(crc32(new Uint8Array(0))).toBe(0);
  expect(crc32(Buffer.from('The quick brown fox jumps over the lazy dog'))).toBe(0x414fa339);
  const b = new Uint8Array(randInt(2, 1000)).map(() => randInt(0, 255));
  const cut = randInt(1, b.length - 1);
  expect(crc32(b.subarray(cut), crc32(b.subarray(0, cut)))).toBe(crc32(b));
  // The portable fallback (Node without zlib.crc32) is the same function.
  expect(crc32Portable(Buffer.from('123456789'))).toBe(0xcbf43926);
  expect(crc32Portable(new Uint8Array(0))).toBe(0);
  expect(crc32Portable(b)).toBe(crc32(b));
  expect(crc32Portable(b.subarray(cut), crc32(b.subarray(0, cut)))).toBe(crc32(b));
});

test('round trip is exact: header, dtypes, lengths and every bit (NaN payloads, -0, Inf, subnormals, views)', async () => {
  const p = path.join(dir, 'model.ckpt');
  const header = randomHeader();
  const tensors = randomTensors();
  await writeCheckpointFile(p, header, tensors);
  const r = await readCheckpointFile(p);
  expect(r.header).toEqual(header);
  expectSameTensors(r.tensors, tensors);
  expect(r.tensors['layer1.weight']).toBeInstanceOf(Float32Array);
  expect(r.tensors.step).toBeInstanceOf(Int32Array);
  expect(r.tensors.mask).toBeInstanceOf(Uint8Array);
  expect(leftovers()).toEqual(['model.ckpt']);
  // No tensors at all.
  await writeCheckpointFile(p, {}, {});
  expect(await readCheckpointFile(p)).toEqual({ header: {}, tensors: {} });
  // A tensor named __proto__ is an ordinary key.
  const odd = Object.defineProperty({}, '__proto__', { value: new Int32Array([7]), enumerable: true }) as Record<string, CheckpointTensor>;
  await writeCheckpointFile(p, {}, odd);
  const r2 = await readCheckpointFile(p);
  expect(Object.keys(r2.tensors)).toEqual(['__proto__']);
  expect(Array.from(Object.getOwnPropertyDescriptor(r2.tensors, '__proto__')?.value)).toEqual([7]);
});

test('layout: magic, version, header length, 8-byte-aligned tensors, trailing CRC-32 of everything before it', async () => {
  const p = path.join(dir, 'layout.ckpt');
  const tensors = randomTensors();
  await writeCheckpointFile(p, { a: 1 }, tensors);
  const b = fs.readFileSync(p);
  expect(b.toString('latin1', 0, 8)).toBe('MIXPRECK');
  expect(b.readUInt32LE(8)).toBe(1);
  const h = b.readUInt32LE(12);
  const json = JSON.parse(b.toString('utf8', 16, 16 + h));
  expect(json.header).toEqual({ a: 1 });
  const start = Math.ceil((16 + h) / 8) * 8;
  expect(b.length).toBe(start + json.dataBytes + 4);
  expect(b.readUInt32LE(b.length - 4)).toBe(crc32(b.subarray(0, b.length - 4)));
  const size = { f32: 4, i32: 4, u8: 1 } as Record<string, number>;
  expect(json.tensors.map((t: { name: string }) => t.name)).toEqual(Object.keys(tensors));
  for (const t of json.tensors) {
    expect(t.offset % 8).toBe(0);
    const want = tensors[t.name];
    expect(t.dtype).toBe(want instanceof Float32Array ? 'f32' : want instanceof Int32Array ? 'i32' : 'u8');
    expect(t.length).toBe(want.length);
    // Little-endian bytes at start + offset.
    expect(Array.from(b.subarray(start + t.offset, start + t.offset + t.length * size[t.dtype]))).toEqual(bitsOf(want));
  }
});

test('truncation at any point: E_CHECKPOINT saying "truncated"', async () => {
  const p = path.join(dir, 't.ckpt');
  await writeCheckpointFile(p, randomHeader(), randomTensors());
  const full = fs.readFileSync(p);
  const h = full.readUInt32LE(12);
  const cuts = new Set([1, 4, 8, 12, 15, 16, 17, 16 + Math.floor(h / 2), 16 + h, full.length - 5, full.length - 4, full.length - 1]);
  for (let k = 0; k < 10; k++) cuts.add(randInt(1, full.length - 1));
  const q = path.join(dir, 'cut.ckpt');
  for (const cut of cuts) {
    fs.writeFileSync(q, full.subarray(0, cut));
    const e = await rejection(readCheckpointFile(q));
    expect([cut, e.code]).toEqual([cut, 'E_CHECKPOINT']);
    expect(e.message).toMatch(/truncated/);
  }
  fs.writeFileSync(q, Buffer.alloc(0));
  expect((await rejection(readCheckpointFile(q))).code).toBe('E_CHECKPOINT');
});

test('a flipped byte in the header, a tensor or the CRC: E_CHECKPOINT (checksum mismatch)', async () => {
  const p = path.join(dir, 'f.ckpt');
  const header = { note: 'x'.repeat(40) };
  await writeCheckpointFile(p, header, { w: uniform(rng, randInt(10, 100)) });
  const full = fs.readFileSync(p);
  const h = full.readUInt32LE(12);
  const start = Math.ceil((16 + h) / 8) * 8;
  const noteAt = full.indexOf('xxxx', 16);
  const places = {
    header: randInt(noteAt, noteAt + 39), // inside a string: still valid JSON, only the CRC can tell
    tensor: randInt(start, full.length - 5),
    crc: randInt(full.length - 4, full.length - 1),
  };
  for (const [where, at] of Object.entries(places)) {
    const bad = Buffer.from(full);
    bad[at] ^= 1 << randInt(0, 7);
    fs.writeFileSync(p, bad);
    const e = await rejection(readCheckpointFile(p));
    expect([where, e.code]).toEqual([where, 'E_CHECKPOINT']);
    expect(e.message).toMatch(/checksum mismatch/);
  }
});

test('every single-byte corruption of a small checkpoint is rejected with E_CHECKPOINT', async () => {
  const p = path.join(dir, 'all.ckpt');
  await writeCheckpointFile(p, { e: 1 }, { a: uniform(rng, 3), b: new Int32Array([1, -2]), c: new Uint8Array([9]) });
  const full = fs.readFileSync(p);
  const accepted: number[] = [];
  const otherCodes: string[] = [];
  for (let at = 0; at < full.length; at++) {
    const bad = Buffer.from(full);
    bad[at] ^= randInt(1, 255);
    fs.writeFileSync(p, bad);
    try {
      await readCheckpointFile(p);
      accepted.push(at);
    } catch (e) {
      if ((e as MixprecError).code !== 'E_CHECKPOINT') otherCodes.push(`${at}: ${(e as Error).message}`);
    }
  }
  expect(accepted).toEqual([]);
  expect(otherCodes).toEqual([]);
});

test('not a checkpoint (wrong magic, random bytes, empty): E_CHECKPOINT', async () => {
  const p = path.join(dir, 'm.ckpt');
  await writeCheckpointFile(p, {}, { a: uniform(rng, 4) });
  const full = fs.readFileSync(p);
  const bad = Buffer.from(full);
  bad.write('NOTMIXPR', 0, 'latin1');
  fs.writeFileSync(p, bad);
  const e = await rejection(readCheckpointFile(p));
  expect(e.code).toBe('E_CHECKPOINT');
  expect(e.message).toMatch(/not a mixprec checkpoint/);
  fs.writeFileSync(p, Buffer.from(Array.from({ length: randInt(1, 200) }, () => randInt(0, 255))).fill(0x50, 0, 1));
  expect((await rejection(readCheckpointFile(p))).message).toMatch(/not a mixprec checkpoint/);
  fs.writeFileSync(p, '{"json": "file"}');
  expect((await rejection(readCheckpointFile(p))).code).toBe('E_CHECKPOINT');
});

test('another format version: E_CHECKPOINT naming the version', async () => {
  const p = path.join(dir, 'v.ckpt');
  await writeCheckpointFile(p, { a: 1 }, { w: uniform(rng, 5) });
  const b = fs.readFileSync(p);
  for (const v of [2, 0, randInt(3, 2 ** 31)]) {
    b.writeUInt32LE(v, 8);
    b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4); // otherwise valid
    fs.writeFileSync(p, b);
    const e = await rejection(readCheckpointFile(p));
    expect(e.code).toBe('E_CHECKPOINT');
    expect(e.message).toContain(`version ${v}`);
  }
});

test('malformed header or tensor table with a valid CRC: E_CHECKPOINT saying what', async () => {
  const p = path.join(dir, 'h.ckpt');
  const cases: [string, Uint8Array, RegExp][] = [
    ['{"header": {}, "tensors": [', new Uint8Array(0), /malformed header JSON/],
    ['[1, 2]', new Uint8Array(0), /malformed header/],
    ['{"header": 3, "tensors": [], "dataBytes": 0}', new Uint8Array(0), /"header" is not an object/],
    ['{"header": {}, "tensors": {}, "dataBytes": 0}', new Uint8Array(0), /"tensors" is not an array/],
    ['{"header": {}, "tensors": [], "dataBytes": 3}', new Uint8Array(0), /dataBytes/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "f64", "offset": 0, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /unknown dtype "f64"/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "f32", "offset": 8, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /outside/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "f32", "offset": 0, "length": 3}], "dataBytes": 8}', new Uint8Array(8), /outside/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "u8", "offset": 4, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /bad offset/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "u8", "offset": -8, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /bad offset/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "u8", "offset": 0, "length": 1.5}], "dataBytes": 8}', new Uint8Array(8), /bad length/],
    ['{"header": {}, "tensors": [{"dtype": "u8", "offset": 0, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /no name/],
    ['{"header": {}, "tensors": [{"name": "a", "dtype": "u8", "offset": 0, "length": 1}, {"name": "a", "dtype": "u8", "offset": 0, "length": 1}], "dataBytes": 8}', new Uint8Array(8), /twice/],
    ['{"header": {}, "tensors": [], "dataBytes": 0}', new Uint8Array(8), /describes a .*-byte file/],
  ];
  for (const [json, data, re] of cases) {
    fs.writeFileSync(p, buildFile(json, data));
    const e = await rejection(readCheckpointFile(p));
    expect([json, e.code]).toEqual([json, 'E_CHECKPOINT']);
    expect([json, e.message]).toEqual([json, expect.stringMatching(re)]);
  }
  // The helper itself builds valid files (so the cases above fail for the stated reason).
  fs.writeFileSync(p, buildFile('{"header": {"k": 1}, "tensors": [{"name": "a", "dtype": "i32", "offset": 0, "length": 1}], "dataBytes": 8}', new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0])));
  const ok = await readCheckpointFile(p);
  expect(ok.header).toEqual({ k: 1 });
  expect(Array.from(ok.tensors.a)).toEqual([5]);
});

test('read errors: E_IO with the path and the OS error', async () => {
  const p = path.join(dir, 'missing.ckpt');
  const e = await rejection(readCheckpointFile(p));
  expect(e.code).toBe('E_IO');
  expect(e.message).toContain(p);
  expect(e.message).toContain('ENOENT');
  expect((await rejection(readCheckpointFile(dir))).code).toBe('E_IO');
});

test('a write into a missing directory: E_IO, and nothing is created', async () => {
  const missing = path.join(dir, 'no', 'such');
  const e = await rejection(writeCheckpointFile(path.join(missing, 'x.ckpt'), {}, { a: uniform(rng, 4) }));
  expect(e.code).toBe('E_IO');
  expect(e.message).toContain('ENOENT');
  expect(fs.existsSync(path.join(dir, 'no'))).toBe(false);
  expect(leftovers()).toEqual([]);
});

test('bad arguments: E_ARG, and nothing is created', async () => {
  const p = path.join(dir, 'a.ckpt');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const bads: [object, Record<string, CheckpointTensor>][] = [
    [null as unknown as object, {}],
    [[1, 2], {}],
    [{ big: BigInt(1) }, {}],
    [cyclic, {}],
    [{}, { a: new Float64Array(2) as unknown as Float32Array }],
    [{}, { a: [1, 2] as unknown as Float32Array }],
    [{}, null as unknown as Record<string, CheckpointTensor>],
  ];
  for (const [h, t] of bads) expect((await rejection(writeCheckpointFile(p, h, t))).code).toBe('E_ARG');
  expect(leftovers()).toEqual([]);
});

describe('atomic saves', () => {
  let previous: Buffer;
  let p: string;
  // 8-12 MB of random-looking data (a random 64 KiB pattern, tiled): several chunked writes.
  const bigTensors = () => {
    const big = new Float32Array(randInt(2, 3) * (1 << 20));
    const tile = uniform(rng, 1 << 14);
    for (let o = 0; o < big.length; o += tile.length) big.set(tile, o);
    return { big, small: new Int32Array([1, 2, 3]) };
  };
  beforeEach(async () => {
    p = path.join(dir, 'model.ckpt');
    await writeCheckpointFile(p, { generation: 'old' }, { w: uniform(rng, 100) });
    previous = fs.readFileSync(p);
  });
  async function expectPreviousIntact(): Promise<void> {
    expect(Buffer.compare(fs.readFileSync(p), previous)).toBe(0);
    expect((await readCheckpointFile(p)).header).toEqual({ generation: 'old' });
    expect(leftovers()).toEqual(['model.ckpt']);
  }

  /** Makes the temp file's handle fail (with `code`) at its `failAt`-th call of `method`. */
  function injectHandleFailure(method: 'write' | 'sync' | 'close', failAt: number, code: string): { calls: () => number } {
    const realOpen = fsp.open.bind(fsp);
    let calls = 0;
    jest.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      const fh = await realOpen(...args);
      if (String(args[0]).endsWith('.tmp')) {
        const real = (fh[method] as (...a: unknown[]) => Promise<unknown>).bind(fh);
        (fh as unknown as Record<string, unknown>)[method] = async (...a: unknown[]) => {
          calls++;
          if (calls === failAt) {
            if (method === 'close') await real(...a); // really close, then report a failure
            throw Object.assign(new Error(`${code}: injected failure, ${method}`), { code });
          }
          return real(...a);
        };
      }
      return fh;
    });
    return { calls: () => calls };
  }

  test('a write that fails part-way (disk full): E_IO, previous file unchanged, temp file removed', async () => {
    // Count the writes of a successful save first, then fail at a random one of them.
    const probe = injectHandleFailure('write', -1, 'ENOSPC');
    const tensors = bigTensors();
    await writeCheckpointFile(path.join(dir, 'probe.ckpt'), { generation: 'new' }, tensors);
    const writes = probe.calls();
    expect(writes).toBeGreaterThanOrEqual(4); // prefix, several data chunks, CRC
    fs.unlinkSync(path.join(dir, 'probe.ckpt'));
    jest.restoreAllMocks();
    for (const failAt of new Set([1, 2, randInt(2, writes), writes])) {
      injectHandleFailure('write', failAt, 'ENOSPC');
      const e = await rejection(writeCheckpointFile(p, { generation: 'new' }, tensors));
      expect(e.code).toBe('E_IO');
      expect(e.message).toContain('ENOSPC');
      await expectPreviousIntact();
      jest.restoreAllMocks();
    }
  });

  test('fsync or close of the temp file fails: E_IO, previous file unchanged, temp file removed', async () => {
    for (const method of ['sync', 'close'] as const) {
      injectHandleFailure(method, 1, 'EIO');
      const e = await rejection(writeCheckpointFile(p, { generation: 'new' }, bigTensors()));
      expect(e.code).toBe('E_IO');
      expect(e.message).toContain('EIO');
      await expectPreviousIntact();
      jest.restoreAllMocks();
    }
  });

  test('the rename fails: E_IO, previous file unchanged, temp file removed', async () => {
    jest.spyOn(fsp, 'rename').mockRejectedValueOnce(Object.assign(new Error('EXDEV: injected'), { code: 'EXDEV' }));
    const e = await rejection(writeCheckpointFile(p, { generation: 'new' }, bigTensors()));
    expect(e.code).toBe('E_IO');
    expect(e.message).toContain('EXDEV');
    await expectPreviousIntact();
  });

  test('a tensor getter that throws: the save fails, previous file unchanged, no temp file', async () => {
    const tensors = { a: uniform(rng, 10) } as Record<string, CheckpointTensor>;
    Object.defineProperty(tensors, 'b', {
      enumerable: true,
      get() {
        throw new Error('tensor data unavailable');
      },
    });
    await expect(writeCheckpointFile(p, { generation: 'new' }, tensors)).rejects.toThrow('tensor data unavailable');
    await expectPreviousIntact();
  });

  test('a successful save replaces the file and leaves no temp file', async () => {
    const tensors = bigTensors();
    await writeCheckpointFile(p, { generation: 'new' }, tensors);
    const r = await readCheckpointFile(p);
    expect(r.header).toEqual({ generation: 'new' });
    expectSameTensors(r.tensors, tensors);
    expect(leftovers()).toEqual(['model.ckpt']);
  });

  test('concurrent saves to the same path end with one complete, valid file', async () => {
    const n = randInt(4, 8);
    const sets = Array.from({ length: n }, (_, i) => ({ i, t: { w: new Float32Array(randInt(1, 4) << 18).fill(i + 0.5), id: new Int32Array([i]) } }));
    await Promise.all(sets.map(({ i, t }) => writeCheckpointFile(p, { generation: i }, t)));
    const r = await readCheckpointFile(p);
    const winner = sets[r.header.generation as number];
    expect(winner).toBeDefined();
    expectSameTensors(r.tensors, winner.t);
    expect(leftovers()).toEqual(['model.ckpt']);
  });
});

// A save interrupted by the process dying (SIGKILL at a random moment) must leave the previous
// complete file or a new complete file at the path, never a partial one. The module runs in a
// child process, compiled here with TypeScript's transpileModule.
test('processes killed mid-save never leave a partial file at the path', async () => {
  const build = path.join(dir, 'build');
  fs.mkdirSync(path.join(build, 'train'), { recursive: true });
  for (const [src, out] of [['errors.ts', 'errors.js'], ['train/checkpoint_file.ts', 'train/checkpoint_file.js']]) {
    const code = fs.readFileSync(path.join(__dirname, '..', 'src', src), 'utf8');
    const js = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText;
    fs.writeFileSync(path.join(build, out), js);
  }
  const target = path.join(dir, 'out', 'model.ckpt');
  fs.mkdirSync(path.dirname(target));
  const script = `
    const { writeCheckpointFile } = require(${JSON.stringify(path.join(build, 'train', 'checkpoint_file.js'))});
    (async () => {
      for (let g = 1; ; g++) {
        const w = new Float32Array(${3 << 20}).fill(g);
        await writeCheckpointFile(${JSON.stringify(target)}, { generation: g }, { w, g: new Int32Array([g]) });
        process.stdout.write(g + '\\n');
      }
    })().catch((e) => { console.error(e); process.exit(3); });`;
  const checkValid = async (): Promise<number> => {
    const r = await readCheckpointFile(target);
    const g = r.header.generation as number;
    expect(r.tensors.g[0]).toBe(g);
    const w = r.tensors.w as Float32Array;
    expect(w.length).toBe(3 << 20);
    expect(w.every((v) => v === g)).toBe(true);
    return g;
  };
  await writeCheckpointFile(target, { generation: 0 }, { w: new Float32Array(3 << 20).fill(0), g: new Int32Array([0]) });
  const seen: number[] = [];
  for (let round = 0; round < 4; round++) {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let saves = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (saves += d.toString().split('\n').filter(Boolean).length));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Wait for at least one complete save, then kill at a random moment within a later one.
    const deadline = Date.now() + 60000;
    while (saves < 1 && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
    expect(stderr).toBe('');
    expect(saves).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, randInt(0, 60)));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    seen.push(await checkValid());
  }
  // Killed processes may leave their uniquely named temp files behind, but never touch the target.
  const names = fs.readdirSync(path.dirname(target));
  expect(names).toContain('model.ckpt');
  expect(names.filter((n) => n !== 'model.ckpt').every((n) => n.startsWith('.model.ckpt.') && n.endsWith('.tmp'))).toBe(true);
  expect(seen.every((g) => g >= 1)).toBe(true);
  // ... which the next save of the target removes (their processes are gone).
  await writeCheckpointFile(target, { generation: 99 }, { w: new Float32Array(3 << 20).fill(99), g: new Int32Array([99]) });
  expect(fs.readdirSync(path.dirname(target))).toEqual(['model.ckpt']);
  expect(await checkValid()).toBe(99);
});

// ---------------------------------------------------------------------------------------------
// Over 2 GiB: fs.readFile (and so the old reader) stops at 2 GiB. One f32 tensor of 2^29 + 1000
// elements (2 GiB + 4000 bytes) with a known pattern, and a small tensor after it (so a tensor
// starts past byte 2^31). Needs ~2.1 GiB of disk and ~6 GiB of memory; skipped otherwise.
// ---------------------------------------------------------------------------------------------

const GiB = 2 ** 30;
const bigSkip = ((): string => {
  try {
    const st = fs.statfsSync(os.tmpdir());
    const free = st.bavail * st.bsize;
    if (free < 6 * GiB) return `only ${(free / GiB).toFixed(1)} GiB free in ${os.tmpdir()} (needs 6)`;
  } catch (e) {
    return `cannot tell the free space in ${os.tmpdir()}: ${(e as Error).message}`;
  }
  if (os.freemem() < 7 * GiB) return `only ${(os.freemem() / GiB).toFixed(1)} GiB of free memory (needs 7)`;
  return '';
})();

(bigSkip ? test.skip : test)(
  `a checkpoint over 2 GiB saves, loads back exactly, and a flipped byte near its end is caught${bigSkip ? ` — SKIPPED: ${bigSkip}` : ''}`,
  async () => {
    const p = path.join(dir, 'huge.ckpt');
    try {
      const n = 2 ** 29 + 1000;
      const tile = 1 << 16;
      const periodic = (i: number): number => (i % tile) * 0.25 - 7; // exact in f32
      const patternAt = (i: number): number => (i === 0 ? -1.5 : i === n - 1 ? 12345.5 : periodic(i));
      const big = new Float32Array(n);
      for (let i = 0; i < tile; i++) big[i] = periodic(i);
      for (let filled = tile; filled < n; filled *= 2) big.copyWithin(filled, 0, Math.min(filled, n - filled));
      big[0] = patternAt(0);
      big[n - 1] = patternAt(n - 1);
      const tail = new Int32Array([7, -8, 2 ** 31 - 1]);
      await writeCheckpointFile(p, { kind: 'huge' }, { big, tail });
      const size = fs.statSync(p).size;
      expect(size).toBeGreaterThan(2 ** 31);
      expect(fs.readdirSync(dir)).toEqual(['huge.ckpt']);

      let r: { header: unknown; tensors: Record<string, CheckpointTensor> } | undefined = await readCheckpointFile(p);
      expect(r.header).toEqual({ kind: 'huge' });
      const got = r.tensors.big as Float32Array;
      expect(got).toBeInstanceOf(Float32Array);
      expect(got.length).toBe(n);
      const probes = [0, 1, 2, tile - 1, tile, tile + 1, n - 1001, n - 3, n - 2, n - 1];
      for (let k = 0; k < 8; k++) probes.push(randInt(0, n - 1));
      expect(probes.map((i) => [i, got[i]])).toEqual(probes.map((i) => [i, patternAt(i)]));
      expect(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(big.buffer))).toBe(0);
      expect(Array.from(r.tensors.tail)).toEqual([7, -8, 2 ** 31 - 1]);
      r = undefined;

      // Flip one bit of the big tensor ~100 bytes before its end (before the tail tensor and CRC).
      const at = size - 4 - 16 - 100;
      const fd = fs.openSync(p, 'r+');
      try {
        const b = Buffer.alloc(1);
        fs.readSync(fd, b, 0, 1, at);
        b[0] ^= 1 << randInt(0, 7);
        fs.writeSync(fd, b, 0, 1, at);
      } finally {
        fs.closeSync(fd);
      }
      const e = await rejection(readCheckpointFile(p));
      expect(e.code).toBe('E_CHECKPOINT');
      expect(e.message).toMatch(/checksum mismatch/);
    } finally {
      for (const name of fs.readdirSync(dir)) fs.rmSync(path.join(dir, name), { force: true, recursive: true });
    }
  },
);

// ---------------------------------------------------------------------------------------------
// Targets: symbolic links are followed; what is not a regular file is refused, never replaced.
// ---------------------------------------------------------------------------------------------

test('a save through a symbolic link replaces the file it leads to; the link stays a link', async () => {
  fs.mkdirSync(path.join(dir, 'real'));
  fs.mkdirSync(path.join(dir, 'links'));
  const real = path.join(dir, 'real', 'model.ckpt');
  await writeCheckpointFile(real, { generation: 'old' }, { w: uniform(rng, 10) });
  const link = path.join(dir, 'links', 'latest.ckpt');
  fs.symlinkSync('../real/model.ckpt', link); // relative to the link's folder
  const t = { w: uniform(rng, randInt(1, 100)), step: new Int32Array([randInt(0, 1000)]) };
  await writeCheckpointFile(link, { generation: 'new' }, t);
  expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  expect(fs.readlinkSync(link)).toBe('../real/model.ckpt');
  expect((await readCheckpointFile(real)).header).toEqual({ generation: 'new' });
  const r = await readCheckpointFile(link);
  expect(r.header).toEqual({ generation: 'new' });
  expectSameTensors(r.tensors, t);
  expect(fs.readdirSync(path.join(dir, 'links'))).toEqual(['latest.ckpt']); // no temp file beside the link
  expect(fs.readdirSync(path.join(dir, 'real'))).toEqual(['model.ckpt']);

  // A chain of links (absolute, then relative).
  const chain = path.join(dir, 'chain.ckpt');
  fs.symlinkSync(link, chain);
  await writeCheckpointFile(chain, { generation: 'chain' }, t);
  expect(fs.lstatSync(chain).isSymbolicLink()).toBe(true);
  expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  expect((await readCheckpointFile(real)).header).toEqual({ generation: 'chain' });

  // A dangling link: the file it names is created, the link stays.
  const dangling = path.join(dir, 'links', 'next.ckpt');
  fs.symlinkSync('../real/next.ckpt', dangling);
  await writeCheckpointFile(dangling, { generation: 'first' }, t);
  expect(fs.lstatSync(dangling).isSymbolicLink()).toBe(true);
  expect(fs.lstatSync(path.join(dir, 'real', 'next.ckpt')).isFile()).toBe(true);
  expect((await readCheckpointFile(dangling)).header).toEqual({ generation: 'first' });

  // A relative ".." in a link reached through a symlinked folder is resolved from the link's real
  // folder (as the kernel does), not lexically.
  fs.mkdirSync(path.join(dir, 'deep', 'inner'), { recursive: true });
  fs.symlinkSync(path.join(dir, 'deep', 'inner'), path.join(dir, 'alias'));
  fs.symlinkSync('../up.ckpt', path.join(dir, 'deep', 'inner', 'up-link.ckpt'));
  await writeCheckpointFile(path.join(dir, 'alias', 'up-link.ckpt'), { generation: 'up' }, t);
  expect((await readCheckpointFile(path.join(dir, 'deep', 'up.ckpt'))).header).toEqual({ generation: 'up' });
  expect(fs.existsSync(path.join(dir, 'up.ckpt'))).toBe(false);

  // A loop of links: E_IO.
  fs.symlinkSync('loop-b', path.join(dir, 'loop-a'));
  fs.symlinkSync('loop-a', path.join(dir, 'loop-b'));
  const e = await rejection(writeCheckpointFile(path.join(dir, 'loop-a'), {}, t));
  expect(e.code).toBe('E_IO');
  expect(e.message).toContain(path.join(dir, 'loop-a'));
  expect(fs.lstatSync(path.join(dir, 'loop-a')).isSymbolicLink()).toBe(true);
  expect(fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
});

test('a target that exists and is not a regular file (directory, FIFO, device, a link to one) is refused with E_IO and left as it was', async () => {
  const t = { w: uniform(rng, 16) };
  // [path, what it is, still that?]. The private ones come first: were the check ever lost, the
  // test fails on them before it gets to /dev/null (which a save as root would replace).
  const cases: [string, string, () => boolean][] = [];
  const folder = path.join(dir, 'folder.ckpt');
  fs.mkdirSync(folder);
  cases.push([folder, 'a directory', () => fs.lstatSync(folder).isDirectory()]);
  const fifo = path.join(dir, 'fifo.ckpt');
  if (spawnSync('mkfifo', [fifo]).status === 0) cases.push([fifo, 'a FIFO', () => fs.lstatSync(fifo).isFIFO()]);
  const dev = path.join(dir, 'null.ckpt'); // a private copy of /dev/null (root with CAP_MKNOD only)
  if (spawnSync('mknod', [dev, 'c', '1', '3']).status === 0) cases.push([dev, 'a character device', () => fs.lstatSync(dev).isCharacterDevice()]);
  expect(cases.length).toBeGreaterThanOrEqual(2); // mkfifo is in coreutils
  for (const [p, what, still] of cases) {
    const e = await rejection(writeCheckpointFile(p, {}, t));
    expect([p, e.code]).toEqual([p, 'E_IO']);
    expect(e.message).toContain(`${p}: it is ${what}, not a regular file`);
    expect([p, still()]).toEqual([p, true]);
    // Reading one is E_IO too (opening the FIFO must not wait for a writer).
    expect([p, (await rejection(readCheckpointFile(p))).code]).toEqual([p, 'E_IO']);
  }
  expect(fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);

  // The system's devices, directly and through a link. As root the old code renamed its temp file
  // over them (mknod brings /dev/null back); not as root the rename failed. E_IO either way now.
  const devs = ['/dev/null', '/dev/full'].filter((d) => fs.existsSync(d) && fs.statSync(d).isCharacterDevice());
  for (const d of devs) {
    const e = await rejection(writeCheckpointFile(d, {}, t));
    expect([d, e.code]).toEqual([d, 'E_IO']);
    expect(e.message).toContain(`${d}: it is a character device, not a regular file`);
    expect([d, fs.lstatSync(d).isCharacterDevice()]).toEqual([d, true]);
    const link = path.join(dir, `link-to-${path.basename(d)}.ckpt`);
    fs.symlinkSync(d, link);
    const e2 = await rejection(writeCheckpointFile(link, {}, t));
    expect(e2.code).toBe('E_IO');
    expect(e2.message).toContain(`${link} (a link to ${d}): it is a character device`);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect([d, fs.lstatSync(d).isCharacterDevice()]).toEqual([d, true]);
    expect(fs.readdirSync('/dev').filter((n) => n.startsWith(`.${path.basename(d)}.`))).toEqual([]);
  }
  expect(fs.statSync('/dev/null').isCharacterDevice()).toBe(true);
});

// ---------------------------------------------------------------------------------------------
// Temp files left by killed saves are removed by the next save of the same target.
// ---------------------------------------------------------------------------------------------

describe('stale temp files', () => {
  let children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    children = [];
  });

  /** The temp file name a save of `target` uses (as this process), seen through fsp.open. */
  async function tempNameOfASave(target: string): Promise<string> {
    const realOpen = fsp.open.bind(fsp);
    let seen = '';
    const spy = jest.spyOn(fsp, 'open').mockImplementation(async (...args: Parameters<typeof fsp.open>) => {
      if (String(args[0]).endsWith('.tmp')) seen = String(args[0]);
      return realOpen(...args);
    });
    await writeCheckpointFile(target, { generation: 0 }, { w: uniform(rng, 10) });
    spy.mockRestore();
    expect(path.dirname(seen)).toBe(path.dirname(target));
    return path.basename(seen);
  }

  async function deadPid(): Promise<number> {
    const c = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    await new Promise((r) => c.once('exit', r));
    const pid = c.pid as number;
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    return pid;
  }

  async function liveChild(): Promise<ChildProcess> {
    const c = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)'], { stdio: 'ignore' });
    children.push(c);
    await new Promise((r) => c.once('spawn', r));
    return c;
  }

  test('a save removes the temp files of dead processes for its target, never one of a live process', async () => {
    const p = path.join(dir, 'model.ckpt');
    const name = await tempNameOfASave(p);
    const own = `.model.ckpt.${process.pid}.`;
    expect(name.startsWith(own)).toBe(true);
    expect(name.endsWith('.tmp')).toBe(true);
    const asPid = (pid: number, base = 'model.ckpt') => `.${base}.${pid}.` + name.slice(own.length);

    const dead = await deadPid();
    const live = await liveChild();
    const stale = path.join(dir, asPid(dead));
    const alive = path.join(dir, asPid(live.pid as number));
    const otherTarget = path.join(dir, asPid(dead, 'other.ckpt'));
    fs.writeFileSync(stale, Buffer.alloc(1 << 20)); // as if killed mid-save
    fs.writeFileSync(alive, 'a save in progress');
    fs.writeFileSync(otherTarget, 'stale, but of another target');
    const mine = path.join(dir, `${own}${name.slice(own.length)}`.replace(/\.[0-9a-f]+\.tmp$/, '.0123456789ab.tmp'));
    fs.writeFileSync(mine, 'a concurrent save of this process');

    await writeCheckpointFile(p, { generation: 1 }, { w: uniform(rng, 10) });
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(alive)).toBe(true);
    expect(fs.existsSync(otherTarget)).toBe(true);
    expect(fs.existsSync(mine)).toBe(true);
    expect((await readCheckpointFile(p)).header).toEqual({ generation: 1 });

    // Once the other process has exited, the next save removes its temp file too.
    const exited = new Promise((r) => live.once('exit', r));
    live.kill('SIGKILL');
    await exited;
    await writeCheckpointFile(p, { generation: 2 }, { w: uniform(rng, 10) });
    expect(leftovers()).toEqual([path.basename(mine), path.basename(otherTarget), 'model.ckpt'].sort());
  });

  test('temp files of another host or PID namespace, or of the untagged naming, go only when untouched for a while', async () => {
    const p = path.join(dir, 'model.ckpt');
    const name = await tempNameOfASave(p);
    const m = /^\.model\.ckpt\.(\d+)\.([0-9a-f]{8})\.(\d+)\.([0-9a-f]{12})\.tmp$/.exec(name);
    expect(m).not.toBeNull();
    const tag = (m as RegExpExecArray)[2];
    const otherTag = tag === '00000000' ? '11111111' : '00000000';
    const dead = await deadPid();
    const live = await liveChild();
    // Their pids mean nothing here: a dead pid does not make them stale, nor a live one fresh.
    const fresh = [
      `.model.ckpt.${dead}.${otherTag}.1.aaaaaaaaaaaa.tmp`,
      `.model.ckpt.${dead}.2.bbbbbbbbbbbb.tmp`, // the earlier naming, without a host tag
    ];
    const old = [
      `.model.ckpt.${live.pid}.${otherTag}.3.cccccccccccc.tmp`,
      `.model.ckpt.${live.pid}.4.dddddddddddd.tmp`,
    ];
    for (const n of [...fresh, ...old]) fs.writeFileSync(path.join(dir, n), 'partial');
    const longAgo = (Date.now() - FOREIGN_TEMP_STALE_MS - 60_000) / 1000;
    for (const n of old) fs.utimesSync(path.join(dir, n), longAgo, longAgo);
    await writeCheckpointFile(p, { generation: 1 }, { w: uniform(rng, 10) });
    expect(leftovers()).toEqual([...fresh, 'model.ckpt'].sort());
  });
});
