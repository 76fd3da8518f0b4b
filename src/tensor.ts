import { types } from 'node:util';
import type { StorageHandle } from '../binding';
import { Device, resolveDevice } from './backends';
import { checkDType, DType, dtypeBytes, dtypeCode, storageCode } from './dtype';
import { MixprecError } from './errors';
import { native } from './native';
import type { Node } from './autograd/tape';
import { backwardFrom } from './autograd/tape';
import { trackTensor } from './autograd/scope';
import * as views from './ops/views';
import { show } from './ops/check';

export interface TensorOptions {
  dtype?: DType;
  /** 'auto' (default): CUDA when available, else the CPU. */
  device?: Device | 'auto';
  /** Record operations on this tensor for autograd (float tensors only). */
  requiresGrad?: boolean;
}

/**
 * One backend allocation, shared by a tensor and its views. Freed when the last tensor over it
 * is disposed, or (as a backstop) when its handle is garbage-collected.
 */
export class Storage {
  #handle: StorageHandle | null;
  #refs = 0;
  readonly bytes: number;
  readonly device: Device;
  constructor(handle: StorageHandle, bytes: number, device: Device) {
    this.#handle = handle;
    this.bytes = bytes;
    this.device = device;
  }
  get handle(): StorageHandle {
    if (this.#handle === null) throw new MixprecError('E_DISPOSED', 'tensor was disposed');
    return this.#handle;
  }
  get freed(): boolean { return this.#handle === null; }
  /** @internal */ retain(): void { this.#refs += 1; }
  /** @internal */ releaseRef(): void {
    if (--this.#refs > 0 || this.#handle === null) return;
    native().release(this.#handle);
    this.#handle = null;
  }
}

/** Where a parameter bound to a ParameterStore writes its gradient (a view of the flat buffer). */
export interface GradSink {
  tensor: Tensor;
  /** The store's gradient generation this sink was last written in (written iff equal to the store's). */
  generation: number;
  current: () => number;
}

/**
 * An N-D tensor in backend memory: a strided view (shape, strides, offset in elements) of a
 * Storage. Views (reshape of a contiguous tensor, transpose, permute, narrow) share the storage
 * without copying. dispose() releases this tensor's hold on the storage (idempotent); the memory
 * is freed when no tensor holds it. Any use of a disposed tensor throws E_DISPOSED.
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Offset of element [0, ..., 0] in the storage, in elements. */
  readonly offset: number;
  readonly dtype: DType;
  readonly device: Device;
  /** Number of elements. */
  readonly size: number;
  #storage: Storage | null;
  #requiresGrad = false;
  /** The gradient accumulated by backward() (leaves only); for a parameter bound to a store, its gradient view. */
  #grad: Tensor | null = null;
  /** @internal The op that produced this tensor (null for leaves). */
  gradFn: Node | null = null;
  /** @internal For parameters bound to a ParameterStore. */
  gradSink: GradSink | null = null;
  /** @internal Hooks of a leaf (registerHook); a non-leaf's live on its gradFn. */
  leafHooks: ((grad: Tensor) => void)[] | null = null;
  /** @internal Known bounds of an int32 tensor's values (ids / labels), [min, max]; null when unknown. */
  intRange: readonly [number, number] | null = null;

  #borrowed: boolean;

  /**
   * @internal Use mixprec.tensor / empty / full, or an op. `borrowed`: a transient view inside
   * one op that holds no reference on the storage (it must not outlive the op's operands).
   */
  constructor(storage: Storage, shape: readonly number[], dtype: DType, strides?: readonly number[], offset = 0, borrowed = false) {
    this.#borrowed = borrowed;
    if (!borrowed) storage.retain();
    this.#storage = storage;
    this.shape = Object.freeze(shape.slice());
    this.strides = Object.freeze(strides ? strides.slice() : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = dtype;
    this.device = storage.device;
    let size = 1;
    for (let i = 0; i < shape.length; i++) size *= shape[i];
    this.size = size;
    if (!borrowed) trackTensor(this);
  }

  get ndim(): number { return this.shape.length; }
  get disposed(): boolean { return this.#storage === null || this.#storage.freed; }
  get requiresGrad(): boolean { return this.#requiresGrad; }
  set requiresGrad(v: boolean) {
    if (typeof v !== 'boolean') throw new MixprecError('E_ARG', 'requiresGrad must be a boolean');
    if (v && this.dtype === 'int32') throw new MixprecError('E_ARG', 'an int32 tensor cannot require grad');
    if (!v && this.gradFn) throw new MixprecError('E_ARG', 'requiresGrad can only be cleared on a leaf tensor; use detach()');
    this.#requiresGrad = v;
  }
  /** True for tensors not produced by a recorded op (user-created tensors, parameters). */
  get isLeaf(): boolean { return this.gradFn === null; }
  get grad(): Tensor | null { return this.gradSink ? this.gradSink.tensor : this.#grad; }
  set grad(g: Tensor | null) {
    if (g !== null && !(g instanceof Tensor)) throw new MixprecError('E_ARG', 'grad must be a Tensor or null');
    if (this.gradSink) throw new MixprecError('E_STATE', "a parameter bound to a store keeps its gradient in the store's buffer");
    this.#grad = g;
  }

  /** @internal The storage (throws E_DISPOSED). */
  get storage(): Storage {
    if (this.#storage === null) throw new MixprecError('E_DISPOSED', 'tensor was disposed');
    return this.#storage;
  }
  /** @internal The native handle of the storage (throws E_DISPOSED). */
  handle(): StorageHandle {
    return this.storage.handle;
  }

  /** Row-major contiguous: a view with these strides is one dense block. */
  isContiguous(): boolean {
    let s = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.strides[d] !== s) return false;
      s *= this.shape[d];
    }
    return true;
  }

  /** The values in row-major order as FP32 (exact for every float dtype; int32 converted). */
  async toFloat32(): Promise<Float32Array> {
    if (this.dtype === 'int32') return Float32Array.from(await this.toInt32());
    const t = this.isContiguous() ? this : views.contiguousCopy(this);
    try {
      return native().download(t.handle(), dtypeCode(t.dtype), t.size, t.offset);
    } finally {
      if (t !== this) t.dispose();
    }
  }

  /** The values of an int32 tensor in row-major order. */
  async toInt32(): Promise<Int32Array> {
    if (this.dtype !== 'int32') throw new MixprecError('E_DTYPE', `toInt32 needs an int32 tensor (got ${this.dtype})`);
    this.handle(); // E_DISPOSED even when empty
    if (this.size === 0) return new Int32Array(0); // an empty view may start past its storage's end
    const t = this.isContiguous() ? this : views.contiguousCopy(this);
    try {
      const bytes = native().readBytes(t.handle(), (t.offset + t.size) * 4);
      return new Int32Array(bytes.buffer, bytes.byteOffset + t.offset * 4, t.size).slice();
    } finally {
      if (t !== this) t.dispose();
    }
  }

  /** A new tensor with the values converted to `dtype` (IEEE RNE); recorded for autograd. */
  cast(dtype: DType): Tensor { return views.cast(this, checkDType(dtype)); }
  /** This tensor if contiguous, else a contiguous copy (recorded for autograd). */
  contiguous(): Tensor { return this.isContiguous() ? this : views.contiguous(this); }
  /** The same values with another shape (-1 inferred): a view when the layout allows, else a copy. */
  reshape(shape: readonly number[]): Tensor { return views.reshape(this, shape); }
  /** reshape that never copies (E_SHAPE when the layout does not allow a view). */
  view(shape: readonly number[]): Tensor { return views.view(this, shape); }
  transpose(dim0: number, dim1: number): Tensor { return views.transpose(this, dim0, dim1); }
  permute(dims: readonly number[]): Tensor { return views.permute(this, dims); }
  narrow(dim: number, start: number, length: number): Tensor { return views.narrow(this, dim, start, length); }
  /** A tensor over the same storage that is cut from the graph (requiresGrad false). */
  detach(): Tensor {
    const t = new Tensor(this.storage, this.shape, this.dtype, this.strides, this.offset);
    t.intRange = this.intRange;
    return t;
  }

  /**
   * Backpropagates from this tensor (a scalar, or give `gradient` of its shape): accumulates into
   * `.grad` of the leaves that require grad, then frees the graph (unless retainGraph).
   */
  backward(gradient?: Tensor, opts: { retainGraph?: boolean } = {}): Promise<void> {
    // Synchronous (a throw is thrown here, not as a rejection); the Promise is for symmetry with
    // the async data path, so `await loss.backward()` works.
    backwardFrom(this, gradient, opts);
    return Promise.resolve();
  }

  /**
   * Calls fn with this tensor's gradient during backward (torch's register_hook, for
   * observation: fn must not keep or modify the gradient, which backward reuses and frees).
   */
  registerHook(fn: (grad: Tensor) => void): void {
    if (typeof fn !== 'function') throw new MixprecError('E_ARG', 'registerHook(fn) needs a function');
    if (!this.requiresGrad) throw new MixprecError('E_STATE', 'registerHook on a tensor that does not require grad');
    if (this.gradFn) this.gradFn.hooks.push(fn);
    else (this.leafHooks ??= []).push(fn);
  }

  /** Releases this tensor's hold on its memory now. Idempotent. */
  dispose(): void {
    if (this.#storage === null) return;
    const s = this.#storage;
    this.#storage = null;
    if (!this.#borrowed) s.releaseRef();
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device}${this.requiresGrad ? ', requiresGrad' : ''}${this.disposed ? ', disposed' : ''})`;
  }
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

export function checkShape(shape: unknown, what = 'shape'): number[] {
  if (!Array.isArray(shape)) throw new MixprecError('E_SHAPE', `${what} must be an array of non-negative integers`);
  for (const d of shape)
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)
      throw new MixprecError('E_SHAPE', `${what} must hold non-negative integers (got ${show(shape)})`);
  if (shape.length > 8) throw new MixprecError('E_SHAPE', `at most 8 dimensions (got ${shape.length})`);
  return [...shape];
}

function checkOptions(opts: unknown, dflt: DType = 'float32'): { dtype: DType; device: Device; requiresGrad: boolean } {
  if (opts === undefined) opts = {};
  if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', 'options must be an object');
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'dtype' && k !== 'device' && k !== 'requiresGrad') throw new MixprecError('E_ARG', `unknown tensor option '${k}'`);
  const requiresGrad = o.requiresGrad ?? false;
  if (typeof requiresGrad !== 'boolean') throw new MixprecError('E_ARG', 'requiresGrad must be a boolean');
  return { dtype: checkDType(o.dtype ?? dflt), device: resolveDevice(o.device ?? 'auto'), requiresGrad };
}

/** @internal A new contiguous tensor on `device` (contents unspecified). */
export function alloc(shape: readonly number[], dtype: DType, device: Device): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const bytes = size * dtypeBytes(dtype);
  if (!Number.isSafeInteger(bytes)) throw new MixprecError('E_SHAPE', `tensor [${shape.join(', ')}] is too large`);
  return new Tensor(new Storage(native().alloc(device, bytes), bytes, device), shape, dtype);
}

function withGrad(t: Tensor, requiresGrad: boolean): Tensor {
  if (requiresGrad) t.requiresGrad = true;
  return t;
}

/** An uninitialised tensor (its contents are unspecified). */
export function empty(shape: readonly number[], opts?: TensorOptions): Tensor {
  const s = checkShape(shape);
  const { dtype, device, requiresGrad } = checkOptions(opts);
  return withGrad(alloc(s, dtype, device), requiresGrad);
}

/** @internal fill without option parsing. */
export function fillTensor(t: Tensor, value: number): Tensor {
  if (t.size > 0) native().fill({ n: t.size, value, out: t.handle(), outOffset: t.offset, outType: storageCode(t.dtype) });
  return t;
}

/** A tensor with every element set to `value` (converted to the dtype with RNE). */
export function full(shape: readonly number[], value: number, opts?: TensorOptions): Tensor {
  if (typeof value !== 'number') throw new MixprecError('E_ARG', 'value must be a number');
  const s = checkShape(shape);
  const { dtype, device, requiresGrad } = checkOptions(opts);
  if (dtype === 'int32' && !Number.isInteger(value)) throw new MixprecError('E_ARG', 'an int32 fill value must be an integer');
  const t = fillTensor(alloc(s, dtype, device), value);
  if (dtype === 'int32') t.intRange = [value, value];
  return withGrad(t, requiresGrad);
}

export function zeros(shape: readonly number[], opts?: TensorOptions): Tensor { return full(shape, 0, opts); }
export function ones(shape: readonly number[], opts?: TensorOptions): Tensor { return full(shape, 1, opts); }

/**
 * A tensor from values: a Float32Array or number[] (converted to a float dtype with RNE), or an
 * Int32Array (dtype int32 unless another is given).
 */
export function tensor(data: Float32Array | Int32Array | readonly number[], shape: readonly number[], opts?: TensorOptions): Tensor {
  const isInt = types.isInt32Array(data);
  const { dtype, device, requiresGrad } = checkOptions(opts, isInt ? 'int32' : 'float32');
  let values: Float32Array | Int32Array;
  // util.types, not instanceof: typed arrays from another realm (vm, jest, workers) are accepted too.
  if (types.isFloat32Array(data) || isInt) values = data as Float32Array | Int32Array;
  else if (Array.isArray(data)) {
    for (let i = 0; i < data.length; i++)
      if (typeof data[i] !== 'number') throw new MixprecError('E_ARG', `data must hold numbers only (index ${i} is ${typeof data[i]})`);
    values = dtype === 'int32' ? Int32Array.from(data) : Float32Array.from(data);
  } else throw new MixprecError('E_ARG', 'data must be a Float32Array, an Int32Array or an array of numbers');
  const s = checkShape(shape);
  const size = s.reduce((a, b) => a * b, 1);
  if (size !== values.length)
    throw new MixprecError('E_SHAPE', `data has ${values.length} values but shape [${s.join(', ')}] holds ${size}`);
  const t = alloc(s, dtype, device);
  if (dtype === 'int32') {
    if (!types.isInt32Array(values)) {
      for (const v of values) if (!Number.isInteger(v)) throw new MixprecError('E_ARG', 'int32 data must hold integers');
      values = Int32Array.from(values);
    }
    if (size > 0) native().writeBytes(t.handle(), new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    t.intRange = [lo, hi];
  } else {
    const f = types.isFloat32Array(values) ? (values as Float32Array) : Float32Array.from(values);
    if (size > 0) native().upload(t.handle(), f, dtypeCode(dtype));
  }
  return withGrad(t, requiresGrad);
}
