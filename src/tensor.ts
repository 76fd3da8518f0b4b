import { types } from 'node:util';
import type { StorageHandle } from '../binding';
import { Device, resolveDevice } from './backends';
import { checkDType, DType, dtypeBytes, dtypeCode } from './dtype';
import { MixprecError } from './errors';
import { native } from './native';

export interface TensorOptions {
  dtype?: DType;
  /** 'auto' (default): CUDA when available, else the CPU. */
  device?: Device | 'auto';
}

/**
 * A dense row-major tensor in backend memory. Memory is freed by dispose() (idempotent) and, as a
 * backstop, when the tensor is garbage-collected. Any use after dispose() throws E_DISPOSED.
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  /** Number of elements. */
  readonly size: number;
  #handle: StorageHandle | null;

  /** @internal Use mixprec.tensor / empty / full. */
  constructor(handle: StorageHandle, shape: readonly number[], dtype: DType, device: Device) {
    this.#handle = handle;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
    this.size = shape.reduce((a, b) => a * b, 1);
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  /** @internal The native storage; throws E_DISPOSED after dispose(). */
  handle(): StorageHandle {
    if (this.#handle === null) throw new MixprecError('E_DISPOSED', 'tensor was disposed');
    return this.#handle;
  }

  /**
   * @internal A tensor over elements [offset, offset + size(shape)) of this one's memory: no copy,
   * owns nothing (dispose() only retires the view); unusable once this tensor is disposed.
   */
  view(offset: number, shape: readonly number[]): Tensor {
    const s = checkShape(shape);
    const size = s.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > this.size)
      throw new MixprecError('E_SHAPE', `view [${offset}, ${offset + size}) outside a tensor of ${this.size} elements`);
    const bytes = dtypeBytes(this.dtype);
    return new Tensor(native().view(this.handle(), offset * bytes, size * bytes), s, this.dtype, this.device);
  }

  /** Copies the values out as FP32 (exact for every dtype). */
  async toFloat32(): Promise<Float32Array> {
    return native().download(this.handle(), dtypeCode(this.dtype), this.size);
  }

  /** A new tensor with the values converted to `dtype` (IEEE round-to-nearest-even). */
  cast(dtype: DType): Tensor {
    checkDType(dtype);
    const out = empty(this.shape, { dtype, device: this.device });
    if (this.size > 0) native().cast(this.handle(), dtypeCode(this.dtype), out.handle(), dtypeCode(dtype), this.size);
    return out;
  }

  /** Frees the memory now. Idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    native().release(this.#handle);
    this.#handle = null;
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

export function checkShape(shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new MixprecError('E_SHAPE', 'shape must be an array of non-negative integers');
  for (const d of shape)
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
      throw new MixprecError('E_SHAPE', `shape must hold non-negative integers (got [${shape.join(', ')}])`);
  return [...shape];
}

function checkOptions(opts: unknown): { dtype: DType; device: Device } {
  if (opts === undefined) opts = {};
  if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', 'options must be an object');
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'dtype' && k !== 'device') throw new MixprecError('E_ARG', `unknown tensor option '${k}'`);
  return { dtype: checkDType(o.dtype ?? 'float32'), device: resolveDevice(o.device ?? 'auto') };
}

/** An uninitialised tensor (its contents are unspecified). */
export function empty(shape: readonly number[], opts?: TensorOptions): Tensor {
  const s = checkShape(shape);
  const { dtype, device } = checkOptions(opts);
  const size = s.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(size * dtypeBytes(dtype))) throw new MixprecError('E_SHAPE', 'tensor too large');
  return new Tensor(native().alloc(device, size * dtypeBytes(dtype)), s, dtype, device);
}

/** A tensor with every element set to `value` (converted to the dtype with RNE). */
export function full(shape: readonly number[], value: number, opts?: TensorOptions): Tensor {
  if (typeof value !== 'number') throw new MixprecError('E_ARG', 'value must be a number');
  const t = empty(shape, opts);
  if (t.size > 0) native().fill(t.handle(), dtypeCode(t.dtype), t.size, value);
  return t;
}

/** A tensor from FP32 values (a Float32Array or number[]), converted to `dtype` with RNE. */
export function tensor(data: Float32Array | readonly number[], shape: readonly number[], opts?: TensorOptions): Tensor {
  let values: Float32Array;
  // util.types, not instanceof: typed arrays from another realm (vm, jest, workers) are accepted too.
  if (types.isFloat32Array(data)) values = data as Float32Array;
  else if (Array.isArray(data)) {
    if (!data.every((v) => typeof v === 'number')) throw new MixprecError('E_ARG', 'data must hold numbers only');
    values = Float32Array.from(data);
  } else throw new MixprecError('E_ARG', 'data must be a Float32Array or an array of numbers');
  const s = checkShape(shape);
  const size = s.reduce((a, b) => a * b, 1);
  if (size !== values.length)
    throw new MixprecError('E_SHAPE', `data has ${values.length} values but shape [${s.join(', ')}] holds ${size}`);
  const t = empty(s, opts);
  if (size > 0) native().upload(t.handle(), values, dtypeCode(t.dtype));
  return t;
}

/** @internal Int32 values (class labels) in backend memory, as a raw handle (not a public Tensor dtype). */
export function int32Storage(values: Int32Array, device: Device): StorageHandle {
  const h = native().alloc(device, values.byteLength);
  native().writeBytes(h, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  return h;
}
