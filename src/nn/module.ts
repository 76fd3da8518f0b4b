// mixprec.nn.Module, as PyTorch's: parameters and submodules are registered by assigning them to
// properties (this.fc = new nn.Linear(16, 16) gives "fc.weight", "fc.bias"), in assignment order.
// A Trainer binds a module's parameters into one flat ParameterStore: each parameter property is
// then replaced by a view of the store's working copy (the FP32 master for fp32) whose gradient
// is a view of the store's flat gradient buffer, so the unscale / check / norm pass and the
// optimizer stay one pass each over the whole model.
import { ParameterStore, Precision } from '../amp/store';
import type { Device } from '../backends';
import { DType, dtypeCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { Storage, Tensor, tensor } from '../tensor';
import { keep } from '../autograd/scope';
import { copyTo } from '../ops/kernels';
import { show } from '../util/show';

/** A tensor registered as a module's parameter (a leaf that requires grad). */
export class Parameter extends Tensor {
  /** @internal */
  constructor(storage: Storage, shape: readonly number[], dtype: DType, strides?: readonly number[], offset = 0) {
    super(storage, shape, dtype, strides, offset);
    this.requiresGrad = true;
    keep(this);
  }
}

/** A new parameter: a copy of `data` (a Tensor, or FP32 values with `shape` on `device`, default 'auto'). */
export function parameter(data: Float32Array | readonly number[] | Tensor, shape?: readonly number[], opts: { device?: Device | 'auto' } = {}): Parameter {
  if (data instanceof Tensor && data.dtype === 'int32') throw new MixprecError('E_DTYPE', 'a parameter must be a float tensor');
  // A parameter owns contiguous memory of its own (a view of another tensor is copied).
  const t = data instanceof Tensor ? copyTo(data, data.dtype) : tensor(data, shape ?? [data.length], { device: opts.device ?? 'auto' });
  const p = new Parameter(t.storage, t.shape, t.dtype, t.strides, t.offset);
  t.dispose();
  return p;
}

export interface NamedParameter { name: string; shape: readonly number[]; data: Float32Array }
interface Slot { owner: Module; key: string; name: string; param: Parameter }

export abstract class Module {
  /** Training mode (dropout active); train() / eval() set it on the whole tree. */
  training = true;
  #store: ParameterStore | null = null;

  /** The computation. Built-ins take and return Tensors; user modules may take anything. */
  abstract forward(...inputs: unknown[]): Tensor;

  /** Direct submodules by property name, in registration order. */
  children(): [string, Module][] {
    return Object.entries(this).filter((e): e is [string, Module] => e[1] instanceof Module);
  }

  /** @internal Every parameter with its owner and property, dotted names, each parameter once (tied weights keep their first name). */
  parameterSlots(): Slot[] {
    const slots: Slot[] = [];
    const seen = new Map<Parameter, string>();
    const walk = (m: Module, prefix: string, visiting: Set<Module>) => {
      if (visiting.has(m)) throw new MixprecError('E_ARG', `module '${prefix || '<root>'}' contains itself`);
      visiting.add(m);
      for (const [key, v] of Object.entries(m)) {
        const name = prefix + key;
        if (v instanceof Parameter) {
          slots.push({ owner: m, key, name: seen.get(v) ?? name, param: v });
          if (!seen.has(v)) seen.set(v, name);
        } else if (v instanceof Module) walk(v, name + '.', visiting);
      }
      visiting.delete(m);
    };
    walk(this, '', new Set());
    return slots;
  }

  /** [name, parameter] pairs in registration order, each parameter once. */
  namedParameters(): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    const names = new Set<string>();
    for (const s of this.parameterSlots()) if (!names.has(s.name)) { names.add(s.name); out.push([s.name, s.param]); }
    return out;
  }

  /** The parameters' names and shapes, in order. */
  parameterSpecs(): { name: string; shape: readonly number[] }[] {
    return this.namedParameters().map(([name, p]) => ({ name, shape: p.shape }));
  }

  /** Copies of the FP32 values (the masters once a Trainer owns the module), by dotted name. */
  parameters(): NamedParameter[] {
    if (this.#store) return this.#store.parameters();
    return this.namedParameters().map(([name, p]) => ({ name, shape: p.shape, data: native().download(p.handle(), dtypeCode(p.dtype), p.size, p.offset) }));
  }

  /** Sets parameters by name; all are checked (name, length) before any is written. */
  loadParameters(entries: readonly { name: string; data: Float32Array | readonly number[] }[]): void {
    if (this.#store) return this.#store.loadParameters(entries);
    if (!Array.isArray(entries)) throw new MixprecError('E_ARG', 'loadParameters: expected an array of { name, data }');
    const byName = new Map(this.namedParameters());
    const checked = entries.map((e) => {
      const p = byName.get(e?.name);
      if (!p) throw new MixprecError('E_ARG', `loadParameters: no parameter named '${show(e?.name)}'`);
      const d = e.data as ArrayLike<number>;
      if (!d || typeof d.length !== 'number') throw new MixprecError('E_ARG', `loadParameters: data for '${e.name}' must be a Float32Array or number[]`);
      const data = Float32Array.from(d);
      if (data.length !== p.size) throw new MixprecError('E_SHAPE', `loadParameters: '${e.name}' has ${p.size} values (shape [${p.shape.join(', ')}]), got ${data.length}`);
      return [p, data] as const;
    });
    for (const [p, data] of checked) native().upload(p.handle(), data, dtypeCode(p.dtype), p.offset);
  }

  train(mode = true): this {
    if (typeof mode !== 'boolean') throw new MixprecError('E_ARG', 'train(mode): mode must be a boolean');
    const visit = (m: Module) => { m.training = mode; for (const [, c] of m.children()) visit(c); };
    visit(this);
    return this;
  }
  eval(): this { return this.train(false); }

  /** The store a Trainer bound this module's parameters into (null before). */
  get store(): ParameterStore | null { return this.#store; }

  /**
   * @internal Moves the parameters into a new flat store of this precision / device and replaces
   * each parameter property by a view of it (a Trainer calls this).
   */
  bind(precision: Precision, device: Device | 'auto'): ParameterStore {
    if (this.#store) throw new MixprecError('E_STATE', 'this model already belongs to a Trainer; create a new model for another one');
    const slots = this.parameterSlots();
    if (slots.length === 0) throw new MixprecError('E_ARG', 'the model has no parameters');
    const named = this.namedParameters();
    const store = new ParameterStore(named.map(([name, p]) => ({ name, shape: p.shape })), { precision, device });
    try {
      store.loadParameters(this.parameters());
    } catch (e) {
      store.dispose();
      throw e;
    }
    const value = store.working ?? store.master;
    const views = new Map<Parameter, Parameter>();
    for (const [name, p] of named) {
      const v = store.view(name);
      const pv = new Parameter(value.storage, v.shape, value.dtype, undefined, v.offset);
      const g = new Tensor(store.grads.storage, v.shape, store.grads.dtype, undefined, v.offset);
      keep(g);
      pv.gradSink = { tensor: g, generation: -1, current: () => store.gradGeneration };
      views.set(p, pv);
    }
    for (const s of slots) (s.owner as unknown as Record<string, unknown>)[s.key] = views.get(s.param);
    for (const p of views.keys()) p.dispose();
    this.#store = store;
    return store;
  }

  /** Frees the parameters (and the store, when bound). */
  dispose(): void {
    for (const [, p] of this.namedParameters()) { p.gradSink?.tensor.dispose(); p.dispose(); }
    this.#store?.dispose();
  }
}
