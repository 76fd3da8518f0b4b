// A model's parameters in flat buffers (llm.c style), so the unscale/check/norm pass and the
// optimizer are one launch each: FP32 master weights, the FP16/BF16 working copy, the scaled
// gradients, an optional FP32 accumulation buffer; each parameter is an aligned view into them.
import { Device, resolveDevice } from '../backends';
import { DType, dtypeCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { fillTensor, full, Tensor, checkShape } from '../tensor';
import { copyInto } from '../ops/kernels';
import { AMP_STATE_BYTES } from './state';
import { show } from '../util/show';

export type Precision = 'fp32' | 'fp16' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'bf16'];

export interface ParameterSpec { name: string; shape: readonly number[] }
export interface ParameterView { name: string; shape: readonly number[]; offset: number; size: number }
export interface NamedValues { name: string; data: Float32Array | readonly number[] }

/**
 * Bytes after the AmpState in `ampState`: per-micro-batch metrics (FP32 loss, int32 correct count)
 * that the loss kernels write, so a step's one read-back returns the state and the loss together.
 */
export const METRIC_SLOTS = 32;
export const METRICS_OFFSET = AMP_STATE_BYTES;

/** Views start on 16-byte boundaries for every dtype (8 elements), so vector loads stay aligned. */
const ALIGN = 8;

const LOW: Record<Precision, DType> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };

export interface StoreOptions { precision?: Precision; device?: Device | 'auto' }

export class ParameterStore {
  readonly precision: Precision;
  readonly device: Device;
  readonly views: readonly ParameterView[];
  /** Elements in each flat buffer (views plus alignment padding, which stays zero). */
  readonly length: number;
  /** FP32 master weights: the truth. */
  readonly master: Tensor;
  /** The low-precision working copy the forward pass reads (null for fp32: it reads the master). */
  readonly working: Tensor | null;
  /** Gradients as the backward pass writes them: scaled, in the working dtype (FP32 for fp32). */
  readonly grads: Tensor;
  #accum: Tensor | null = null;
  #accumulated = 0;
  #reduced = false;
  #unscaled: Tensor | null = null;
  /** @internal The per-step AmpState in backend memory, then METRIC_SLOTS x { loss, correct }. */
  readonly ampState: Tensor;
  #byName: Map<string, ParameterView>;

  /** @internal Use mixprec.amp.parameterStore. */
  constructor(specs: readonly ParameterSpec[], opts: StoreOptions = {}) {
    if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', 'options must be an object');
    for (const k of Object.keys(opts)) if (k !== 'precision' && k !== 'device') throw new MixprecError('E_ARG', `unknown store option '${k}'`);
    const precision = opts.precision ?? 'fp16';
    if (!PRECISIONS.includes(precision)) throw new MixprecError('E_ARG', `precision must be 'fp32', 'fp16' or 'bf16' (got ${show(precision)})`);
    if (!Array.isArray(specs) || specs.length === 0) throw new MixprecError('E_ARG', 'a parameter store needs a non-empty list of { name, shape }');
    const views: ParameterView[] = [];
    let offset = 0;
    for (const s of specs) {
      if (typeof s !== 'object' || s === null || typeof s.name !== 'string' || s.name === '') throw new MixprecError('E_ARG', 'each parameter needs a non-empty string name');
      if (views.some((v) => v.name === s.name)) throw new MixprecError('E_ARG', `duplicate parameter name '${s.name}'`);
      const shape = checkShape(s.shape);
      const size = shape.reduce((a, b) => a * b, 1);
      views.push(Object.freeze({ name: s.name, shape: Object.freeze(shape), offset, size }));
      offset += Math.ceil(size / ALIGN) * ALIGN;
    }
    this.precision = precision;
    this.device = resolveDevice(opts.device ?? 'auto');
    this.views = Object.freeze(views);
    this.length = Math.max(offset, ALIGN);
    this.#byName = new Map(views.map((v) => [v.name, v]));
    const device = this.device;
    this.master = full([this.length], 0, { device });
    this.working = precision === 'fp32' ? null : full([this.length], 0, { dtype: LOW[precision], device });
    this.grads = full([this.length], 0, { dtype: this.gradDtype, device });
    this.ampState = full([AMP_STATE_BYTES / 4 + 2 * METRIC_SLOTS], 0, { device });
  }

  get gradDtype(): DType { return LOW[this.precision]; }

  /** @internal The gradients a step reads: the FP32 accumulation buffer after accumulate(), else grads. */
  stepGradients(): { tensor: Tensor; dtype: DType } {
    return (this.#accumulated > 0 || this.#reduced) && this.#accum ? { tensor: this.#accum, dtype: 'float32' } : { tensor: this.grads, dtype: this.gradDtype };
  }
  /** @internal Called after a step: the next accumulate() starts afresh. */
  stepDone(): void { this.#accumulated = 0; this.#reduced = false; }
  /**
   * @internal Data-parallel: the FP32 buffer the gradient all-reduce works on, in place. The
   * accumulation buffer when micro-batches were accumulated; FP32 gradients themselves; else the
   * accumulation buffer, which the caller fills from the FP16 / BF16 gradients (convert) so that
   * they are summed in FP32 — and the step then reads it (markReduced).
   */
  reduceTarget(): { tensor: Tensor; convert: boolean } {
    if (this.#accumulated > 0 && this.#accum) return { tensor: this.#accum, convert: false };
    if (this.gradDtype === 'float32') return { tensor: this.grads, convert: false };
    return { tensor: (this.#accum ??= full([this.length], 0, { device: this.device })), convert: true };
  }
  /** @internal The step reads the (converted, reduced) FP32 buffer of reduceTarget(). */
  markReduced(): void { this.#reduced = true; }
  /** @internal Set by a data-parallel Trainer: GradScaler all-reduces the inf/NaN flag over it. */
  distributed = false;

  #gradGeneration = 0;
  /**
   * @internal Which backward pass the gradient views belong to: a bound parameter's first
   * gradient in a generation overwrites its view, later ones add to it (see GradSink).
   */
  get gradGeneration(): number { return this.#gradGeneration; }
  /** @internal Starts a new backward pass: every parameter's next gradient overwrites. */
  newGradGeneration(): void { this.#gradGeneration += 1; }
  /** @internal The FP32 buffer GradScaler.unscale writes. */
  unscaledBuffer(): Tensor { return (this.#unscaled ??= full([this.length], 0, { device: this.device })); }

  /** Copies of the FP32 masters, in order. */
  parameters(): { name: string; shape: readonly number[]; data: Float32Array }[] {
    return this.#read(this.master, 'float32');
  }

  /** The working copy as FP32 values (for fp32 precision: the masters). */
  workingParameters(): { name: string; shape: readonly number[]; data: Float32Array }[] {
    return this.working ? this.#read(this.working, LOW[this.precision]) : this.parameters();
  }

  /** The current gradients (as stored: scaled, in the gradient dtype), as FP32 values. */
  gradients(): { name: string; shape: readonly number[]; data: Float32Array }[] {
    return this.#read(this.grads, this.gradDtype);
  }

  /** The FP32 unscaled gradients written by the last GradScaler.unscale() on this store. */
  unscaledGradients(): { name: string; shape: readonly number[]; data: Float32Array }[] {
    if (!this.#unscaled) throw new MixprecError('E_STATE', 'no unscaled gradients yet: call scaler.unscale(store, optimizer) first');
    return this.#read(this.#unscaled, 'float32');
  }

  /** Sets masters by name (and refreshes the working copy with RNE). All entries are checked before any is written. */
  loadParameters(entries: readonly NamedValues[]): void {
    const checked = this.#check(entries);
    for (const [view, data] of checked) native().upload(this.master.handle(), data, 0, view.offset);
    if (this.working && checked.length) this.refreshWorking();
  }

  /** @internal The whole flat master buffer (padding included) as FP32. */
  masterFlat(): Float32Array {
    return native().download(this.master.handle(), 0, this.length);
  }

  /** @internal Sets the whole flat master buffer (checkpoints) and refreshes the working copy. */
  loadMasterFlat(values: Float32Array): void {
    if (values.length !== this.length) throw new MixprecError('E_SHAPE', `store holds ${this.length} values, got ${values.length}`);
    native().upload(this.master.handle(), values, 0);
    this.refreshWorking();
  }

  /** Sets gradients by name from FP32 values, converted to the gradient dtype with RNE and taken as already scaled. */
  loadGradients(entries: readonly NamedValues[]): void {
    const code = dtypeCode(this.gradDtype);
    for (const [view, data] of this.#check(entries)) native().upload(this.grads.handle(), data, code, view.offset);
  }

  zeroGradients(): void {
    fillTensor(this.grads, 0);
  }

  /** @internal The working copy := the masters rounded with RNE (a no-op for fp32). */
  refreshWorking(): void {
    if (this.working) copyInto(this.working, this.master);
  }

  /**
   * Gradient accumulation: adds the current gradients (still scaled) into an FP32 buffer; the next
   * step reads that buffer instead of `grads`, then the next accumulate() starts afresh.
   */
  accumulate(): void {
    this.#accum ??= full([this.length], 0, { device: this.device });
    native().accumulate({ n: this.length, overwrite: this.#accumulated === 0, g: this.grads.handle(), gType: dtypeCode(this.gradDtype), acc: this.#accum.handle() });
    this.#accumulated += 1;
  }
  /** Micro-batches accumulated since the last step. */
  get accumulated(): number { return this.#accumulated; }

  view(name: string): ParameterView {
    const v = this.#byName.get(name);
    if (!v) throw new MixprecError('E_ARG', `no parameter named '${name}'`);
    return v;
  }

  dispose(): void {
    for (const t of [this.master, this.working, this.grads, this.ampState, this.#accum, this.#unscaled]) t?.dispose();
  }

  #read(t: Tensor, dtype: DType) {
    const all = native().download(t.handle(), dtypeCode(dtype), this.length);
    return this.views.map((v) => ({ name: v.name, shape: v.shape, data: all.slice(v.offset, v.offset + v.size) }));
  }

  #check(entries: readonly NamedValues[]): [ParameterView, Float32Array][] {
    if (!Array.isArray(entries)) throw new MixprecError('E_ARG', 'expected an array of { name, data }');
    const seen = new Set<string>();
    return entries.map((e) => {
      if (typeof e !== 'object' || e === null) throw new MixprecError('E_ARG', 'expected { name, data }');
      const view = this.view(e.name);
      if (seen.has(e.name)) throw new MixprecError('E_ARG', `parameter '${e.name}' given twice`);
      seen.add(e.name);
      const d = e.data;
      let data: Float32Array;
      if (Object.prototype.toString.call(d) === '[object Float32Array]') data = d as Float32Array;
      else if (Array.isArray(d) && d.every((x) => typeof x === 'number')) data = Float32Array.from(d);
      else throw new MixprecError('E_ARG', `data for '${e.name}' must be a Float32Array or number[]`);
      if (data.length !== view.size) throw new MixprecError('E_SHAPE', `'${e.name}' has ${view.size} values (shape [${view.shape.join(', ')}]), got ${data.length}`);
      return [view, data];
    });
  }
}

/** mixprec.amp.parameterStore([{ name, shape }], { precision, device }) */
export function parameterStore(specs: readonly ParameterSpec[], opts?: StoreOptions): ParameterStore {
  return new ParameterStore(specs, opts);
}
