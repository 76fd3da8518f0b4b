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
// file with trailing bytes are both rejected. The header is read and checked before anything else:
// a file is never read, nor a gzip file inflated, further than its header declares (so a small
// gzip bomb of a gigabyte of zeros is rejected after a few hundred bytes), and a header that
// declares more than MAX_IDX_BYTES is rejected before any data is read.
import { types } from 'node:util';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'fs';
import { constants as bufferConstants } from 'buffer';
import { constants as zlibConstants, gunzipSync } from 'zlib';
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
/** The longest IDX header: magic + MAX_DIMS dimension sizes. */
const MAX_HEADER_BYTES = 4 + 4 * MAX_DIMS;

/**
 * The largest IDX file (header + data) accepted, in bytes: 2^31 - 1 (or less where a Buffer holds
 * less). MNIST's largest file is 47 MB; a header declaring more is rejected (E_DATA) before any of
 * the data is read or inflated.
 */
export const MAX_IDX_BYTES = Math.min(2 ** 31 - 1, bufferConstants.MAX_LENGTH);

function hex(b: number): string {
  return '0x' + b.toString(16).padStart(2, '0');
}

interface IdxHeader {
  dims: number[];
  /** 4 + 4 * dims.length */
  headerBytes: number;
  /** product(dims): the bytes of data the header declares. */
  count: number;
}

/**
 * Checks the IDX header at the start of `bytes` as far as `bytes` holds it (E_DATA at the first
 * byte that is wrong) and returns it, or null when `bytes` is too short to hold it all and more may
 * come (`complete` false). With `complete`, too short a header is E_DATA. `inflated` words the
 * messages for the output of a gzip file.
 */
function checkHeader(bytes: Uint8Array, what: string, complete: boolean, inflated = false): IdxHeader | null {
  const has = inflated ? 'the gzip data inflates to' : 'the file has';
  if (bytes.length < 4) {
    if (!complete) return null;
    throw new MixprecError('E_DATA', `${what}: not an IDX file: ${bytes.length} bytes${inflated ? ' (inflated)' : ''} is shorter than the 4-byte IDX magic`);
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
    if (!complete) return null;
    throw new MixprecError(
      'E_DATA',
      `${what}: truncated IDX header: ${ndims} dimensions need a ${headerBytes}-byte header, ${has} ${bytes.length} bytes`,
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
    count *= d; // exact while <= 2^53; far beyond MAX_IDX_BYTES either way
  }
  if (headerBytes + count > MAX_IDX_BYTES) {
    throw new MixprecError(
      'E_DATA',
      `${what}: IDX header declares dims [${dims.join(', ')}]: ${count} bytes of data, over the ${MAX_IDX_BYTES}-byte limit of an IDX file`,
    );
  }
  return { dims, headerBytes, count };
}

function lengthError(what: string, h: IdxHeader, actual: number, inflated: boolean): MixprecError {
  const kind = actual < h.count ? 'truncated' : 'has trailing bytes';
  const has = inflated ? 'the gzip data inflates to' : 'the file has';
  return new MixprecError(
    'E_DATA',
    `${what}: IDX data ${kind}: dims [${h.dims.join(', ')}] need ${h.count} bytes of data ` +
      `(${h.headerBytes + h.count} bytes in all), ${has} ${actual} bytes of data (${h.headerBytes + actual} bytes in all)`,
  );
}

/**
 * Parses an IDX file held in memory. `what` names the file in error messages (a path or a
 * description such as "MNIST training images"). Every malformation throws MixprecError E_DATA.
 */
export function readIdx(bytes: Uint8Array, what: string): IdxArray {
  if (!(types.isUint8Array(bytes))) {
    throw new MixprecError('E_ARG', `readIdx(${what}): expected a Uint8Array, got ${describe(bytes)}`);
  }
  return parse(bytes, what, false);
}

function parse(bytes: Uint8Array, what: string, inflated: boolean): IdxArray {
  const h = checkHeader(bytes, what, true, inflated) as IdxHeader;
  const actual = bytes.length - h.headerBytes;
  if (actual !== h.count) throw lengthError(what, h, actual, inflated);
  return { type: 'ubyte', dims: h.dims, data: bytes.subarray(h.headerBytes) };
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
 *
 * The header comes first: a plain file is judged by its header and its size before its data is
 * read; a gzip file is inflated a few hundred bytes at a time until its header is out, then at most
 * the bytes that header declares (more is E_DATA "inflates beyond", less E_DATA "truncated").
 */
export function readIdxFile(path: string, what: string = path): IdxArray {
  const ioError = (e: unknown) => new MixprecError('E_IO', `cannot read IDX file ${path}: ${(e as Error).message}`);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw ioError(e);
  }
  try {
    let size: number;
    let regular: boolean;
    try {
      const st = fstatSync(fd);
      size = st.size;
      regular = st.isFile();
    } catch (e) {
      throw ioError(e);
    }
    if (!regular) {
      // A pipe, a device, a directory (EISDIR): no size to judge by; read it as it comes.
      let bytes: Uint8Array;
      try {
        bytes = readFileSync(fd);
      } catch (e) {
        throw ioError(e);
      }
      return isGzip(bytes) ? inflateIdx(bytes, what) : parse(bytes, what, false);
    }
    const head = readAt(fd, 0, Math.min(size, MAX_HEADER_BYTES), ioError);
    if (isGzip(head)) {
      if (size > bufferConstants.MAX_LENGTH) {
        throw new MixprecError('E_DATA', `${what}: a ${size}-byte gzip file is over the ${bufferConstants.MAX_LENGTH} bytes a Buffer holds`);
      }
      return inflateIdx(readAt(fd, 0, size, ioError), what);
    }
    const h = checkHeader(head, what, head.length === size) as IdxHeader;
    if (size - h.headerBytes !== h.count) throw lengthError(what, h, size - h.headerBytes, false);
    return parse(readAt(fd, 0, size, ioError), what, false);
  } finally {
    closeSync(fd);
  }
}

function isGzip(b: Uint8Array): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

/** `length` bytes of the file from `position` (fewer if the file ends first). */
function readAt(fd: number, position: number, length: number, ioError: (e: unknown) => MixprecError): Uint8Array {
  const buf = Buffer.allocUnsafe(length);
  let off = 0;
  try {
    while (off < length) {
      const n = readSync(fd, buf, off, length - off, position + off);
      if (n === 0) break;
      off += n;
    }
  } catch (e) {
    throw ioError(e);
  }
  return off === length ? buf : buf.subarray(0, off);
}

/** The most a header probe may inflate: far more than the output of the few compressed bytes each probe adds (deflate expands at most ~1032x). */
const PROBE_MAX_OUTPUT = 1 << 20;
const PROBE_FIRST = 256;

function corruptGzip(what: string, e: unknown): MixprecError {
  return new MixprecError('E_DATA', `${what}: corrupt or truncated gzip data: ${(e as Error).message}`);
}

/** The output of the first `n` compressed bytes (what they inflate to so far), or null when it exceeds PROBE_MAX_OUTPUT. */
function inflatePrefix(gz: Uint8Array, n: number, what: string): Buffer | null {
  try {
    return gunzipSync(gz.subarray(0, n), { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: PROBE_MAX_OUTPUT });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return null;
    throw corruptGzip(what, e);
  }
}

/**
 * The IDX header of a gzip file, from as little of it as it takes: the first 256 compressed bytes,
 * then twice as many each time until the header is out (a long gzip name, comment or extra field
 * comes first). Should a probe inflate to more than PROBE_MAX_OUTPUT, bisect between it and the
 * last one that gave too little: no probe ever holds more than PROBE_MAX_OUTPUT bytes.
 */
function probeHeader(gz: Uint8Array, what: string): IdxHeader {
  let lo = 0; // a prefix that inflates to less than the header
  let hi = -1; // a prefix that inflates to more than PROBE_MAX_OUTPUT; -1: none yet
  let n = Math.min(gz.length, PROBE_FIRST);
  for (;;) {
    const out = inflatePrefix(gz, n, what);
    if (out === null) hi = n;
    else {
      const h = checkHeader(out, what, n === gz.length, true);
      if (h) return h;
      lo = n;
    }
    if (hi < 0) n = Math.min(gz.length, 2 * n);
    else {
      if (hi - lo <= 1) throw new MixprecError('E_DATA', `${what}: corrupt gzip data: one byte inflates to more than ${PROBE_MAX_OUTPUT} bytes`);
      n = lo + Math.floor((hi - lo) / 2);
    }
  }
}

function inflateIdx(gz: Uint8Array, what: string): IdxArray {
  const h = probeHeader(gz, what);
  const total = h.headerBytes + h.count;
  let bytes: Buffer;
  try {
    // At most the declared size: one byte more throws, and what was inflated is dropped.
    bytes = gunzipSync(gz, { maxOutputLength: total });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new MixprecError(
        'E_DATA',
        `${what}: the gzip data inflates beyond the ${total} bytes its IDX header declares ` +
          `(dims [${h.dims.join(', ')}]: a ${h.headerBytes}-byte header and ${h.count} bytes of data); not inflated further`,
      );
    }
    throw corruptGzip(what, e);
  }
  return parse(bytes, what, true);
}

/** `path` if it exists, else `path + '.gz'` if that exists, else `path` (so the E_IO names it). */
export function resolveIdxPath(path: string): string {
  if (existsSync(path)) return path;
  if (existsSync(path + '.gz')) return path + '.gz';
  return path;
}
