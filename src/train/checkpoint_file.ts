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
// The file is exactly S + D + 4 bytes long. Files are read and written in chunks, never as one
// Buffer, so their size is limited only by memory for the tensors (fs.readFile stops at 2 GiB, a
// Buffer at 4 GiB; each tensor is its own typed array, which may be larger than either).
//
// Writes are atomic: the bytes go to a uniquely named temp file in the target's directory, which is
// fsynced and then renamed over the target (then the directory is fsynced, best effort), so a
// crash or error mid-save leaves any previous file at the target as it was. A target that is a
// symbolic link is followed (the link stays, the file it leads to is replaced, even one that does
// not exist yet); a target that exists and is not a regular file (a directory, a device such as
// /dev/null, a FIFO, a socket) is refused with E_IO, never replaced. Temp files are named
// .<target's name>.<pid>.<host tag>.<n>.<random>.tmp; a process killed mid-save leaves its temp
// file behind, and the next save of the same target removes it once its owner is known to be gone
// (see removeStaleTempFiles).
import { types } from 'node:util';
import { promises as fsp, constants as fsConstants, readlinkSync, Stats } from 'fs';
import * as path from 'path';
import * as os from 'os';
import * as zlib from 'zlib';
import { createHash, randomBytes } from 'crypto';
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
/** Bytes copied per write / read when streaming tensor data (a multiple of 8). */
const CHUNK_BYTES = 4 << 20;
/** At most this many bytes per read call (a read(2) returns at most ~2 GiB anyway). */
const READ_MAX_BYTES = 1 << 30;

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

/**
 * The portable CRC-32, used where zlib.crc32 is missing (Node < 20.15 / 22.2); same contract as
 * crc32. Exported for the tests, which check it against crc32.
 */
export function crc32Portable(bytes: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// zlib's CRC-32 is the same function, about 8x faster (a 2 GiB checkpoint is checksummed twice
// per save-and-load); it takes a 32-bit length, so it is fed slices.
const nativeCrc32: ((data: Uint8Array, value?: number) => number) | null =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? zlib.crc32 : null;
const CRC_SLICE_BYTES = 1 << 30;

/** Continues a CRC-32: pass the previous result as `crc` (0 to start). crc32(bytes) is the standard CRC-32. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  if (!nativeCrc32) return crc32Portable(bytes, crc);
  let c = crc >>> 0;
  for (let o = 0; o < bytes.length; o += CRC_SLICE_BYTES) {
    c = nativeCrc32(bytes.subarray(o, Math.min(bytes.length, o + CRC_SLICE_BYTES)), c) >>> 0;
  }
  return c;
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

function errnoOf(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/** What a non-regular file is, for messages ("a directory", "a character device", ...). */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
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
    // A byte view per piece: one Uint8Array over the whole tensor cannot exceed 4 GiB.
    const total = data.byteLength;
    const item = ITEM_BYTES[entry.dtype];
    let pos = 0;
    while (pos < total) {
      if (fill === chunk.length) await flush();
      const n = Math.min(total - pos, chunk.length - fill);
      chunk.set(new Uint8Array(data.buffer, data.byteOffset + pos, n), fill);
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
let hostTagMemo: string | undefined;

/**
 * 8 hex digits naming this machine and PID namespace (a hash of the host name and
 * /proc/self/ns/pid): a pid in a temp file's name means something only to processes with the
 * same tag (another host on a shared file system, or another container, has its own pids).
 */
function hostTag(): string {
  if (hostTagMemo === undefined) {
    let ns = '';
    try {
      ns = readlinkSync('/proc/self/ns/pid');
    } catch {
      // Not Linux: the host name alone.
    }
    hostTagMemo = createHash('sha256').update(`${os.hostname()}\0${ns}`).digest('hex').slice(0, 8);
  }
  return hostTagMemo;
}

function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  tempCounter = (tempCounter + 1) >>> 0;
  return path.join(dir, `.${base}.${process.pid}.${hostTag()}.${tempCounter}.${randomBytes(6).toString('hex')}.tmp`);
}

/** True for the temp files writeCheckpointFile makes for `target` (for cleanup tools and tests). */
export function isCheckpointTempFile(target: string, name: string): boolean {
  const base = path.basename(target);
  return name.startsWith(`.${base}.`) && name.endsWith('.tmp');
}

/**
 * A temp file of another host or PID namespace (or one named the earlier way, without a host
 * tag: .<name>.<pid>.<n>.<random>.tmp) is removed only when it has not been written to for this long: its pid cannot be checked
 * from here, and a live save writes to its temp file every few milliseconds until the final
 * fsync and rename.
 */
export const FOREIGN_TEMP_STALE_MS = 15 * 60 * 1000;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** False only when no process `pid` exists here (kill(pid, 0) fails with ESRCH); EPERM is a live process of another user. */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoOf(e) !== 'ESRCH';
  }
}

/**
 * Removes the temp files that killed saves of `target` left in its folder (best effort: errors
 * are ignored, a save never fails because of this). One of this host and PID namespace is removed
 * when its pid no longer exists; never one of this process or of another live process (a
 * concurrent save). One of another host tag, or of the old untagged naming, is removed when it has
 * not been modified for FOREIGN_TEMP_STALE_MS. A pid reused by an unrelated live process keeps its
 * temp file until that process exits.
 */
async function removeStaleTempFiles(target: string): Promise<void> {
  const dir = path.dirname(target);
  const base = escapeRegExp(path.basename(target));
  const tagged = new RegExp(`^\\.${base}\\.(\\d{1,10})\\.([0-9a-f]{8})\\.\\d+\\.[0-9a-f]{12}\\.tmp$`);
  const untagged = new RegExp(`^\\.${base}\\.\\d{1,10}\\.\\d+\\.[0-9a-f]{12}\\.tmp$`);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      const m = tagged.exec(name);
      if (m && m[2] === hostTag()) {
        const pid = Number(m[1]);
        if (pid <= 0 || pid === process.pid || processExists(pid)) continue;
      } else if (m || untagged.test(name)) {
        const st = await fsp.lstat(file);
        if (!st.isFile() || Date.now() - st.mtimeMs < FOREIGN_TEMP_STALE_MS) continue;
      } else {
        continue;
      }
      await fsp.unlink(file);
    } catch {
      // Gone already (another save cleaned it), or not ours to remove.
    }
  }
}

/**
 * The file a save to `abs` replaces: `abs` itself, or, when it is a symbolic link, where the chain
 * of links leads (which need not exist yet: a dangling link gets its target created). E_IO when
 * that exists and is not a regular file, or the links loop.
 */
async function resolveTarget(abs: string): Promise<string> {
  let cur = abs;
  for (let hops = 0; ; hops++) {
    let st: Stats;
    try {
      st = await fsp.lstat(cur);
    } catch (e) {
      // Nothing there: the new file goes here (a missing folder fails when the temp file is made).
      if (errnoOf(e) === 'ENOENT') return cur;
      throw ioError('cannot write checkpoint', cur === abs ? abs : `${abs} (a link to ${cur})`, e);
    }
    if (st.isFile()) return cur;
    if (!st.isSymbolicLink()) {
      const what = cur === abs ? abs : `${abs} (a link to ${cur})`;
      throw new MixprecError('E_IO', `cannot write checkpoint ${what}: it is ${kindOf(st)}, not a regular file; refusing to replace it`);
    }
    if (hops >= 40) throw new MixprecError('E_IO', `cannot write checkpoint ${abs}: too many levels of symbolic links (ELOOP)`);
    try {
      const link = await fsp.readlink(cur);
      // Relative to the link's real folder, as the kernel resolves it (a lexical path.resolve
      // would go wrong when that folder is reached through a symlink and the link holds "..").
      cur = path.resolve(await fsp.realpath(path.dirname(cur)), link);
    } catch (e) {
      throw ioError('cannot write checkpoint', `${abs} (a link to ${cur})`, e);
    }
  }
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
 * the temp file, and for a `path` that is (or links to) something other than a regular file. A
 * previous file at `path` (or where its symbolic link leads) is replaced only once the new one is
 * complete on disk. Stale temp files of earlier, killed saves of the same target are removed first.
 */
export async function writeCheckpointFile(
  path_: string,
  header: object,
  tensors: Record<string, CheckpointTensor>,
): Promise<void> {
  if (typeof path_ !== 'string' || path_.length === 0) {
    throw new MixprecError('E_ARG', `writeCheckpointFile: path must be a non-empty string, got ${typeName(path_)}`);
  }
  const prepared = prepare(header, tensors);
  const target = await resolveTarget(path.resolve(path_));
  await removeStaleTempFiles(target);
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

/** Reads exactly buf.length bytes at `position`; E_CHECKPOINT "truncated" if the file ends first (it shrank while being read). */
async function readExactly(fh: fsp.FileHandle, buf: Uint8Array, position: number, p: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(buf, done, Math.min(buf.length - done, READ_MAX_BYTES), position + done));
    } catch (e) {
      throw ioError('cannot read checkpoint', p, e);
    }
    if (bytesRead === 0) throw bad(p, `truncated: the file ended at byte ${position + done} while it was being read`);
    done += bytesRead;
  }
}

interface Destination {
  name: string;
  value: CheckpointTensor;
  item: number;
  /** Byte range in the data section. */
  start: number;
  end: number;
}

/** Fresh tensors for the entries (each its own typed array: no 4 GiB byte-view limit); E_OOM when one cannot be allocated. */
function allocateTensors(p: string, entries: CheckpointTensorEntry[]): Destination[] {
  return entries.map((e) => {
    const item = ITEM_BYTES[e.dtype];
    let value: CheckpointTensor;
    try {
      value = e.dtype === 'f32' ? new Float32Array(e.length) : e.dtype === 'i32' ? new Int32Array(e.length) : new Uint8Array(e.length);
    } catch (err) {
      throw new MixprecError('E_OOM', `checkpoint ${p}: cannot allocate tensor "${e.name}" (${e.length * item} bytes): ${(err as Error).message}`);
    }
    return { name: e.name, value, item, start: e.offset, end: e.offset + e.length * item };
  });
}

/**
 * Reads a checkpoint written by writeCheckpointFile, in chunks (any size the tensors' memory
 * allows). Tensors are fresh, aligned copies. Errors: E_IO when the file cannot be read or is not
 * a regular file; E_CHECKPOINT when it is not a mixprec checkpoint, has an unsupported version, is
 * truncated, fails its checksum, or has a malformed header or tensor table (the message says
 * which); E_OOM when a tensor cannot be allocated.
 */
export async function readCheckpointFile(path_: string): Promise<{ header: any; tensors: Record<string, CheckpointTensor> }> {
  if (typeof path_ !== 'string' || path_.length === 0) {
    throw new MixprecError('E_ARG', `readCheckpointFile: path must be a non-empty string, got ${typeName(path_)}`);
  }
  let fh: fsp.FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused as not a regular
    // file); it changes nothing for a regular file.
    fh = await fsp.open(path_, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
  } catch (e) {
    throw ioError('cannot read checkpoint', path_, e);
  }
  try {
    return await readOpenCheckpoint(fh, path_);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

async function readOpenCheckpoint(fh: fsp.FileHandle, path_: string): Promise<{ header: any; tensors: Record<string, CheckpointTensor> }> {
  let st: Stats;
  try {
    st = await fh.stat();
  } catch (e) {
    throw ioError('cannot read checkpoint', path_, e);
  }
  if (!st.isFile()) throw new MixprecError('E_IO', `cannot read checkpoint ${path_}: it is ${kindOf(st)}, not a regular file`);
  const size = st.size;
  const first = Buffer.alloc(Math.min(size, PREFIX_BYTES));
  await readExactly(fh, first, 0, path_);
  const magicLen = Math.min(size, 8);
  if (first.toString('latin1', 0, magicLen) !== CHECKPOINT_MAGIC.slice(0, magicLen) || size === 0) {
    throw bad(path_, `not a mixprec checkpoint (the file does not start with "${CHECKPOINT_MAGIC}")`);
  }
  if (size < PREFIX_BYTES) {
    throw bad(path_, `truncated: ${size} bytes is shorter than the ${PREFIX_BYTES}-byte file header`);
  }
  const version = first.readUInt32LE(8);
  if (version !== CHECKPOINT_VERSION) {
    throw bad(path_, `unsupported checkpoint format version ${version} (this mixprec reads version ${CHECKPOINT_VERSION})`);
  }
  const headerLen = first.readUInt32LE(12);
  const dataStart = align8(PREFIX_BYTES + headerLen);
  const minSize = dataStart + 4;
  if (size < minSize) {
    throw bad(path_, `truncated: the header says it is ${headerLen} bytes, so the file needs at least ${minSize} bytes, it has ${size}`);
  }
  // The prefix, header JSON and padding: S bytes (a damaged header length in a huge file may ask
  // for more than a Buffer holds; then the header is only checksummed, and reported malformed).
  let head: Buffer | null = null;
  try {
    head = Buffer.alloc(dataStart);
  } catch {
    head = null;
  }
  let layout: Layout | string;
  if (head) {
    first.copy(head);
    await readExactly(fh, head.subarray(PREFIX_BYTES), PREFIX_BYTES, path_);
    layout = parseLayout(head, headerLen);
  } else {
    layout = `malformed header: its length ${headerLen} is more than can be parsed`;
  }
  const expected = typeof layout === 'string' ? -1 : layout.dataStart + layout.dataBytes + 4;
  if (typeof layout !== 'string' && size < expected) {
    throw bad(path_, `truncated: the tensor table says the file is ${expected} bytes, it has ${size}`);
  }
  // Stream the rest up to the stored CRC in chunks: checksum every byte, and copy the tensors'
  // bytes into their arrays when the table describes exactly this file (the tensors are returned
  // only if the CRC then matches). Chunks start at multiples of CHUNK_BYTES from the data section,
  // so a piece of a tensor starts at a multiple of 8 within it (whole elements, for swap32).
  const dests = typeof layout !== 'string' && size === expected ? allocateTensors(path_, layout.entries) : null;
  const order = (dests ?? []).filter((d) => d.end > d.start).sort((a, b) => a.start - b.start);
  let next = 0;
  let active: Destination[] = [];
  const end = size - 4;
  let pos = head ? dataStart : 0;
  let crc = head ? crc32(head) : 0;
  const scratch = Buffer.allocUnsafe(Math.max(8, Math.min(CHUNK_BYTES, end - pos)));
  while (pos < end) {
    const n = Math.min(scratch.length, end - pos);
    const piece = scratch.subarray(0, n);
    await readExactly(fh, piece, pos, path_);
    crc = crc32(piece, crc);
    if (dests) {
      const lo = pos - dataStart;
      const hi = lo + n;
      while (next < order.length && order[next].start < hi) active.push(order[next++]);
      for (const d of active) {
        const a = Math.max(lo, d.start);
        const b = Math.min(hi, d.end);
        if (a >= b) continue;
        const at = d.value.byteOffset + (a - d.start);
        new Uint8Array(d.value.buffer, at, b - a).set(piece.subarray(a - lo, b - lo));
        if (!LITTLE_ENDIAN && d.item === 4) Buffer.from(d.value.buffer, at, b - a).swap32();
      }
      active = active.filter((d) => d.end > hi);
    }
    pos += n;
  }
  const tail = Buffer.alloc(4);
  await readExactly(fh, tail, end, path_);
  const stored = tail.readUInt32LE(0);
  if (stored !== crc) {
    throw bad(
      path_,
      `checksum mismatch (stored CRC-32 0x${stored.toString(16).padStart(8, '0')}, computed 0x${crc.toString(16).padStart(8, '0')}): the file is corrupted`,
    );
  }
  if (typeof layout === 'string') throw bad(path_, layout);
  if (size !== expected || !dests) {
    throw bad(path_, `malformed tensor table: it describes a ${expected}-byte file, the file has ${size} bytes`);
  }
  const tensors: Record<string, CheckpointTensor> = {};
  for (const d of dests) {
    // defineProperty, so a tensor named "__proto__" is an ordinary key.
    Object.defineProperty(tensors, d.name, { value: d.value, enumerable: true, writable: true, configurable: true });
  }
  return { header: layout.header, tensors };
}
