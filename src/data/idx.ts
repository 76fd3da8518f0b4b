// The IDX file format (LeCun's MNIST format), big-endian:
//
//   offset 0  u8   0x00
//   offset 1  u8   0x00
//   offset 2  u8   type code (0x08 unsigned byte, 0x09 signed byte, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)
//   offset 3  u8   number of dimensions d (1..4 accepted here)
//   offset 4  u32  size of dimension 0 (big-endian), ... one u32 per dimension
//   then           product(dims) elements, row-major
//
// Only unsigned-byte files (all four MNIST files) are supported; other type codes are rejected with
// E_DATA naming the type. The data must be exactly product(dims) bytes long: a truncated file and a
// file with trailing bytes are both rejected.
import { types } from 'node:util';
import { readFileSync, existsSync } from 'fs';
import { gunzipSync } from 'zlib';
import { MixprecError } from '../errors';

export interface IdxArray {
  type: 'ubyte';
  /** Dimension sizes, outermost first (e.g. [60000, 28, 28]). */
  dims: number[];
  /** The elements, row-major. A view into the bytes given to readIdx (not a copy). */
  data: Uint8Array;
}

const TYPE_NAMES: Record<number, string> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'int16',
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};

const MAX_DIMS = 4;

function hex(b: number): string {
  return '0x' + b.toString(16).padStart(2, '0');
}

/**
 * Parses an IDX file held in memory. `what` names the file in error messages (a path or a
 * description such as "MNIST training images"). Every malformation throws MixprecError E_DATA.
 */
export function readIdx(bytes: Uint8Array, what: string): IdxArray {
  if (!(types.isUint8Array(bytes))) {
    throw new MixprecError('E_ARG', `readIdx(${what}): expected a Uint8Array, got ${describe(bytes)}`);
  }
  if (bytes.length < 4) {
    throw new MixprecError('E_DATA', `${what}: not an IDX file: ${bytes.length} bytes is shorter than the 4-byte IDX magic`);
  }
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new MixprecError(
      'E_DATA',
      `${what}: not an IDX file: bad magic ${hex(bytes[0])} ${hex(bytes[1])} (expected 0x00 0x00; a gzip file starts 0x1f 0x8b)`,
    );
  }
  const type = bytes[2];
  if (type !== 0x08) {
    const name = TYPE_NAMES[type];
    throw new MixprecError(
      'E_DATA',
      `${what}: unsupported IDX type code ${hex(type)}${name ? ` (${name})` : ' (unknown)'}; only 0x08 (unsigned byte) is supported`,
    );
  }
  const ndims = bytes[3];
  if (ndims === 0) {
    throw new MixprecError('E_DATA', `${what}: IDX header declares zero dimensions`);
  }
  if (ndims > MAX_DIMS) {
    throw new MixprecError('E_DATA', `${what}: IDX header declares ${ndims} dimensions; at most ${MAX_DIMS} are supported`);
  }
  const headerBytes = 4 + 4 * ndims;
  if (bytes.length < headerBytes) {
    throw new MixprecError(
      'E_DATA',
      `${what}: truncated IDX header: ${ndims} dimensions need a ${headerBytes}-byte header, the file has ${bytes.length} bytes`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    if (d === 0) {
      throw new MixprecError('E_DATA', `${what}: IDX dimension ${i} has size zero (dims ${JSON.stringify(readDims(view, ndims))})`);
    }
    dims.push(d);
    count *= d; // exact while <= 2^53; beyond that it cannot equal a real length anyway
  }
  const actual = bytes.length - headerBytes;
  if (actual !== count) {
    const kind = actual < count ? 'truncated' : 'has trailing bytes';
    throw new MixprecError(
      'E_DATA',
      `${what}: IDX data ${kind}: dims [${dims.join(', ')}] need ${count} bytes of data ` +
        `(${headerBytes + count} bytes in all), the file has ${actual} bytes of data (${bytes.length} bytes in all)`,
    );
  }
  return { type: 'ubyte', dims, data: bytes.subarray(headerBytes) };
}

function readDims(view: DataView, ndims: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < ndims; i++) out.push(view.getUint32(4 + 4 * i, false));
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

/**
 * Reads and parses an IDX file. A gzip-compressed file (magic 0x1f 0x8b, as the files are
 * distributed) is decompressed first. File-system errors throw E_IO (the message has the path and
 * the OS error); a malformed file throws E_DATA naming `what` (default: the path).
 */
export function readIdxFile(path: string, what: string = path): IdxArray {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new MixprecError('E_IO', `cannot read IDX file ${path}: ${(e as Error).message}`);
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new MixprecError('E_DATA', `${what}: corrupt gzip data: ${(e as Error).message}`);
    }
  }
  return readIdx(bytes, what);
}

/** `path` if it exists, else `path + '.gz'` if that exists, else `path` (so the E_IO names it). */
export function resolveIdxPath(path: string): string {
  if (existsSync(path)) return path;
  if (existsSync(path + '.gz')) return path + '.gz';
  return path;
}
