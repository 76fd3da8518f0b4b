// The mixprec checkpoint file format, version 1. All integers little-endian.
//
//   offset 0          8 bytes   magic "MIXPRECK"
//   offset 8          u32       format version (1)
//   offset 12         u32       header length H in bytes
//   offset 16         H bytes   UTF-8 JSON: { "header": <the caller's header object>,
//                                             "tensors": [{ "name", "dtype": "f32"|"i32"|"u8",
//                                                           "offset", "length" }, ...],
//                                             "dataBytes": D }
//                     0..7      zero bytes padding to the next multiple of 8: the data section
//                               starts at S = align8(16 + H)
//   offset S          D bytes   tensor data. A tensor's bytes start at S + offset (offset a
//                               multiple of 8, relative to S) and are length elements of its
//                               dtype (little-endian); zero padding between tensors keeps each
//                               start 8-byte aligned. D = align8(end of the last tensor).
//   offset S + D      u32       CRC-32 (IEEE 802.3, the zlib/PNG one) of bytes [0, S + D)
//
// The file is exactly S + D + 4 bytes long. Writes are atomic: the bytes go to a uniquely named
// temp file in the target's directory, which is fsynced and then renamed over the target (then the
// directory is fsynced, best effort), so a crash or error mid-save leaves any previous file at
// the target as it was.
import { types } from 'node:util';
import { promises as fsp, constants as fsConstants } from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { MixprecError } from '../errors';

export const CHECKPOINT_MAGIC = 'MIXPRECK';
export const CHECKPOINT_VERSION = 1;

export type CheckpointTensor = Float32Array | Int32Array | Uint8Array;
export type CheckpointDType = 'f32' | 'i32' | 'u8';

export interface CheckpointTensorEntry {
  name: string;
  dtype: CheckpointDType;
  /** Byte offset of the tensor's data from the start of the data section (a multiple of 8). */
  offset: number;
  /** Number of elements. */
  length: number;
}

const PREFIX_BYTES = 16;
const ITEM_BYTES: Record<CheckpointDType, number> = { f32: 4, i32: 4, u8: 1 };
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Bytes copied per write when streaming tensor data (a multiple of 8). */
const CHUNK_BYTES = 4 << 20;

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE; reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF), table-driven.
// ---------------------------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC-32: pass the previous result as `crc` (0 to start). crc32(bytes) is the standard CRC-32. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function dtypeOf(t: unknown): CheckpointDType | null {
  if (types.isFloat32Array(t)) return 'f32';
  if (types.isInt32Array(t)) return 'i32';
  if (types.isUint8Array(t)) return 'u8'; // Buffer included
  return null;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

function ioError(what: string, p: string, e: unknown): MixprecError {
  if (e instanceof MixprecError) return e;
  return new MixprecError('E_IO', `${what} ${p}: ${(e as Error)?.message ?? String(e)}`);
}

interface Prepared {
  prefix: Buffer; // magic + version + header length + header JSON + padding: S bytes
  items: { entry: CheckpointTensorEntry; data: CheckpointTensor }[];
  dataBytes: number;
}

function prepare(header: object, tensors: Record<string, CheckpointTensor>): Prepared {
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new MixprecError('E_ARG', `writeCheckpointFile: header must be a plain object, got ${typeName(header)}`);
  }
  if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors)) {
    throw new MixprecError('E_ARG', `writeCheckpointFile: tensors must be an object of typed arrays, got ${typeName(tensors)}`);
  }
  const items: Prepared['items'] = [];
  let offset = 0;
  for (const name of Object.keys(tensors)) {
    const data = tensors[name];
    const dtype = dtypeOf(data);
    if (dtype === null) {
      throw new MixprecError('E_ARG', `writeCheckpointFile: tensor "${name}" is ${typeName(data)}; expected Float32Array, Int32Array or Uint8Array`);
    }
    items.push({ entry: { name, dtype, offset, length: data.length }, data });
    offset = align8(offset + data.byteLength);
  }
  const dataBytes = offset;
  let json: string | undefined;
  try {
    json = JSON.stringify({ header, tensors: items.map((i) => i.entry), dataBytes });
  } catch (e) {
    throw new MixprecError('E_ARG', `writeCheckpointFile: header cannot be serialised as JSON: ${(e as Error).message}`);
  }
  const jsonBytes = Buffer.from(json, 'utf8');
  if (jsonBytes.length > 0xffffffff) throw new MixprecError('E_ARG', 'writeCheckpointFile: header JSON exceeds 4 GiB');
  const start = align8(PREFIX_BYTES + jsonBytes.length);
  const prefix = Buffer.alloc(start); // zero-filled: the padding is zeros
  prefix.write(CHECKPOINT_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(CHECKPOINT_VERSION, 8);
  prefix.writeUInt32LE(jsonBytes.length, 12);
  jsonBytes.copy(prefix, PREFIX_BYTES);
  return { prefix, items, dataBytes };
}

/** Writes the whole of buf at the current position of fh (loops over short writes). */
async function writeAll(fh: fsp.FileHandle, buf: Uint8Array, length = buf.length): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesWritten } = await fh.write(buf, done, length - done);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten}`);
    done += bytesWritten;
  }
}

async function writeBody(fh: fsp.FileHandle, p: Prepared): Promise<void> {
  let crc = crc32(p.prefix);
  await writeAll(fh, p.prefix);
  // Tensor bytes are copied chunk by chunk into one reusable buffer; the CRC is taken over the
  // copy that is written, so the file is self-consistent even if a caller mutates a tensor during
  // the save.
  const chunk = Buffer.alloc(Math.min(CHUNK_BYTES, Math.max(8, p.dataBytes)));
  let fill = 0;
  let written = 0;
  const flush = async () => {
    if (fill === 0) return;
    crc = crc32(chunk.subarray(0, fill), crc);
    await writeAll(fh, chunk, fill);
    written += fill;
    fill = 0;
  };
  for (const { entry, data } of p.items) {
    // Zero padding up to this tensor's offset.
    while (written + fill < entry.offset) {
      const pad = Math.min(entry.offset - written - fill, chunk.length - fill);
      chunk.fill(0, fill, fill + pad);
      fill += pad;
      if (fill === chunk.length) await flush();
    }
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const item = ITEM_BYTES[entry.dtype];
    let pos = 0;
    while (pos < src.length) {
      if (fill === chunk.length) await flush();
      const n = Math.min(src.length - pos, chunk.length - fill);
      chunk.set(src.subarray(pos, pos + n), fill);
      if (!LITTLE_ENDIAN && item === 4) chunk.subarray(fill, fill + n).swap32();
      fill += n;
      pos += n;
    }
  }
  while (written + fill < p.dataBytes) {
    if (fill === chunk.length) await flush();
    const pad = Math.min(p.dataBytes - written - fill, chunk.length - fill);
    chunk.fill(0, fill, fill + pad);
    fill += pad;
  }
  await flush();
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc >>> 0, 0);
  await writeAll(fh, tail);
}

let tempCounter = 0;

function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  tempCounter = (tempCounter + 1) >>> 0;
  return path.join(dir, `.${base}.${process.pid}.${tempCounter}.${randomBytes(6).toString('hex')}.tmp`);
}

/** True for the temp files writeCheckpointFile makes for `target` (for cleanup tools and tests). */
export function isCheckpointTempFile(target: string, name: string): boolean {
  const base = path.basename(target);
  return name.startsWith(`.${base}.`) && name.endsWith('.tmp');
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, fsConstants.O_RDONLY);
    await fh.sync();
  } catch {
    // Best effort: some platforms and file systems cannot open or fsync a directory.
  } finally {
    if (fh) await fh.close().catch(() => undefined);
  }
}

/**
 * Writes a checkpoint atomically (see the format above). The header must be a JSON-serialisable
 * plain object (values JSON cannot hold, such as undefined or functions, are dropped by
 * JSON.stringify as usual). Tensors must not be resized while the save runs; they may be read
 * concurrently. Errors: E_ARG for bad arguments; E_IO for any file-system failure, after removing
 * the temp file. A previous file at `path` is replaced only once the new one is complete on disk.
 */
export async function writeCheckpointFile(
  path_: string,
  header: object,
  tensors: Record<string, CheckpointTensor>,
): Promise<void> {
  if (typeof path_ !== 'string' || path_.length === 0) {
    throw new MixprecError('E_ARG', `writeCheckpointFile: path must be a non-empty string, got ${typeName(path_)}`);
  }
  const target = path.resolve(path_);
  const prepared = prepare(header, tensors);
  const tmp = tempPathFor(target);
  let fh: fsp.FileHandle | undefined;
  let created = false;
  try {
    try {
      fh = await fsp.open(tmp, 'wx', 0o644);
      created = true;
      await writeBody(fh, prepared);
      await fh.sync();
      const toClose = fh;
      fh = undefined;
      await toClose.close();
    } catch (e) {
      throw ioError('cannot write checkpoint', target, e);
    }
    try {
      await fsp.rename(tmp, target);
      created = false;
    } catch (e) {
      throw ioError(`cannot rename the temp file ${tmp} to checkpoint`, target, e);
    }
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    if (created) await fsp.unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(path.dirname(target));
}

function bad(p: string, msg: string): MixprecError {
  return new MixprecError('E_CHECKPOINT', `checkpoint ${p}: ${msg}`);
}

interface Layout {
  header: unknown;
  entries: CheckpointTensorEntry[];
  dataStart: number;
  dataBytes: number;
}

/** Parses and validates the JSON header; returns a Layout or the reason it is malformed. */
function parseLayout(buf: Buffer, headerLen: number): Layout | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(buf.toString('utf8', PREFIX_BYTES, PREFIX_BYTES + headerLen));
  } catch (e) {
    return `malformed header JSON (${(e as Error).message})`;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return 'malformed header: not a JSON object';
  const obj = parsed as { header?: unknown; tensors?: unknown; dataBytes?: unknown };
  if (obj.header === null || typeof obj.header !== 'object' || Array.isArray(obj.header)) return 'malformed header: "header" is not an object';
  const dataBytes = obj.dataBytes;
  if (typeof dataBytes !== 'number' || !Number.isSafeInteger(dataBytes) || dataBytes < 0 || dataBytes % 8 !== 0) {
    return `malformed tensor table: dataBytes ${JSON.stringify(dataBytes)} is not a non-negative multiple of 8`;
  }
  if (!Array.isArray(obj.tensors)) return 'malformed tensor table: "tensors" is not an array';
  const entries: CheckpointTensorEntry[] = [];
  const names = new Set<string>();
  for (let i = 0; i < obj.tensors.length; i++) {
    const t = obj.tensors[i] as Partial<CheckpointTensorEntry> | null;
    if (t === null || typeof t !== 'object') return `malformed tensor table: entry ${i} is not an object`;
    const { name, dtype, offset, length } = t;
    if (typeof name !== 'string') return `malformed tensor table: entry ${i} has no name`;
    if (names.has(name)) return `malformed tensor table: tensor "${name}" appears twice`;
    names.add(name);
    if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(ITEM_BYTES, dtype)) {
      return `malformed tensor table: tensor "${name}" has unknown dtype ${JSON.stringify(dtype)} (expected f32, i32 or u8)`;
    }
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || offset % 8 !== 0) {
      return `malformed tensor table: tensor "${name}" has bad offset ${JSON.stringify(offset)} (expected a non-negative multiple of 8)`;
    }
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) {
      return `malformed tensor table: tensor "${name}" has bad length ${JSON.stringify(length)}`;
    }
    const end = offset + length * ITEM_BYTES[dtype as CheckpointDType];
    if (end > dataBytes) {
      return `malformed tensor table: tensor "${name}" (bytes ${offset}..${end} of the data section) lies outside the ${dataBytes}-byte data section`;
    }
    entries.push({ name, dtype: dtype as CheckpointDType, offset, length });
  }
  return { header: obj.header, entries, dataStart: align8(PREFIX_BYTES + headerLen), dataBytes };
}

/**
 * Reads a checkpoint written by writeCheckpointFile. Tensors are fresh, aligned copies.
 * Errors: E_IO when the file cannot be read; E_CHECKPOINT when it is not a mixprec checkpoint,
 * has an unsupported version, is truncated, fails its checksum, or has a malformed header or
 * tensor table (the message says which).
 */
export async function readCheckpointFile(path_: string): Promise<{ header: any; tensors: Record<string, CheckpointTensor> }> {
  if (typeof path_ !== 'string' || path_.length === 0) {
    throw new MixprecError('E_ARG', `readCheckpointFile: path must be a non-empty string, got ${typeName(path_)}`);
  }
  let buf: Buffer;
  try {
    buf = await fsp.readFile(path_);
  } catch (e) {
    throw ioError('cannot read checkpoint', path_, e);
  }
  const size = buf.length;
  const magicLen = Math.min(size, 8);
  if (buf.toString('latin1', 0, magicLen) !== CHECKPOINT_MAGIC.slice(0, magicLen) || size === 0) {
    throw bad(path_, `not a mixprec checkpoint (the file does not start with "${CHECKPOINT_MAGIC}")`);
  }
  if (size < PREFIX_BYTES) {
    throw bad(path_, `truncated: ${size} bytes is shorter than the ${PREFIX_BYTES}-byte file header`);
  }
  const version = buf.readUInt32LE(8);
  if (version !== CHECKPOINT_VERSION) {
    throw bad(path_, `unsupported checkpoint format version ${version} (this mixprec reads version ${CHECKPOINT_VERSION})`);
  }
  const headerLen = buf.readUInt32LE(12);
  const minSize = align8(PREFIX_BYTES + headerLen) + 4;
  if (size < minSize) {
    throw bad(path_, `truncated: the header says it is ${headerLen} bytes, so the file needs at least ${minSize} bytes, it has ${size}`);
  }
  const layout = parseLayout(buf, headerLen);
  const expected = typeof layout === 'string' ? -1 : layout.dataStart + layout.dataBytes + 4;
  if (typeof layout !== 'string' && size < expected) {
    throw bad(path_, `truncated: the tensor table says the file is ${expected} bytes, it has ${size}`);
  }
  const stored = buf.readUInt32LE(size - 4);
  const actual = crc32(buf.subarray(0, size - 4));
  if (stored !== actual) {
    throw bad(
      path_,
      `checksum mismatch (stored CRC-32 0x${stored.toString(16).padStart(8, '0')}, computed 0x${actual.toString(16).padStart(8, '0')}): the file is corrupted`,
    );
  }
  if (typeof layout === 'string') throw bad(path_, layout);
  if (size !== expected) {
    throw bad(path_, `malformed tensor table: it describes a ${expected}-byte file, the file has ${size} bytes`);
  }
  const tensors: Record<string, CheckpointTensor> = {};
  for (const e of layout.entries) {
    const item = ITEM_BYTES[e.dtype];
    const start = layout.dataStart + e.offset;
    const bytes = new Uint8Array(e.length * item);
    bytes.set(buf.subarray(start, start + bytes.length));
    if (!LITTLE_ENDIAN && item === 4) Buffer.from(bytes.buffer).swap32();
    const value = e.dtype === 'f32' ? new Float32Array(bytes.buffer) : e.dtype === 'i32' ? new Int32Array(bytes.buffer) : bytes;
    // defineProperty, so a tensor named "__proto__" is an ordinary key.
    Object.defineProperty(tensors, e.name, { value, enumerable: true, writable: true, configurable: true });
  }
  return { header: layout.header, tensors };
}
