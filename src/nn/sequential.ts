// A stack of layers: PyTorch-style parameter names ("0.weight", "0.bias", "2.weight", ...), layer
// order, each layer's weight before its bias, a Linear weight [out, in].
import { ParameterStore, Precision } from '../amp/store';
import type { Device } from '../backends';
import { DType } from '../dtype';
import { MixprecError } from '../errors';
import { Rng } from '../rng';
import { Tensor } from '../tensor';
import { Layer, LayerConfig, layerFromConfig, PassContext } from './layers';

export interface NamedParameter { name: string; shape: readonly number[]; data: Float32Array }
export interface ModelConfig { layers: LayerConfig[]; inFeatures: number; seed: number }

const LOW: Record<Precision, DType> = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' };

export class Sequential {
  readonly layers: readonly Layer[];
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly seed: number;
  /** FP32 values while unbound; once bound, the store holds the truth. */
  #values: Map<string, Float32Array>;
  #specs: { name: string; shape: number[]; layer: number; local: string }[];
  #store: ParameterStore | null = null;

  constructor(layers: readonly Layer[], opts: { inFeatures?: number; seed?: number } = {}) {
    if (!Array.isArray(layers) || layers.length === 0 || !layers.every((l) => l instanceof Layer))
      throw new MixprecError('E_ARG', 'sequential() takes a non-empty array of layers');
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new MixprecError('E_ARG', 'seed must be a non-negative integer');
    const first = layers[0].config;
    const inFeatures = opts.inFeatures ?? (first.type === 'linear' ? first.inFeatures : first.type === 'layerNorm' ? first.features : NaN);
    if (!Number.isSafeInteger(inFeatures)) throw new MixprecError('E_ARG', 'sequential(): give { inFeatures } when the first layer is not linear or layerNorm');
    let n = inFeatures;
    for (const l of layers) n = l.outFeatures(n); // shape check across layers
    this.layers = Object.freeze([...layers]);
    this.inFeatures = inFeatures;
    this.outFeatures = n;
    this.seed = seed;
    this.#specs = [];
    this.#values = new Map();
    layers.forEach((layer, i) => {
      for (const p of layer.params()) {
        const name = `${i}.${p.name}`;
        this.#specs.push({ name, shape: p.shape, layer: i, local: p.name });
        // Each parameter its own stream: adding a layer does not change the others' init.
        this.#values.set(name, p.init(new Rng(seed, this.#specs.length)));
      }
    });
  }

  get config(): ModelConfig {
    return { layers: this.layers.map((l) => ({ ...l.config })), inFeatures: this.inFeatures, seed: this.seed };
  }

  static fromConfig(c: ModelConfig): Sequential {
    if (typeof c !== 'object' || c === null || !Array.isArray(c.layers)) throw new MixprecError('E_CHECKPOINT', 'malformed model config');
    return new Sequential(c.layers.map(layerFromConfig), { inFeatures: c.inFeatures, seed: c.seed });
  }

  /** The parameters' names and shapes, in order. */
  parameterSpecs(): { name: string; shape: readonly number[] }[] {
    return this.#specs.map((s) => ({ name: s.name, shape: s.shape }));
  }

  /** Copies of the FP32 (master) parameters, in order. */
  parameters(): NamedParameter[] {
    if (this.#store) return this.#store.parameters();
    return this.#specs.map((s) => ({ name: s.name, shape: s.shape, data: this.#values.get(s.name)!.slice() }));
  }

  /** Sets parameters by name (all checked before any is written). */
  loadParameters(entries: readonly { name: string; data: Float32Array | readonly number[] }[]): void {
    if (this.#store) return this.#store.loadParameters(entries);
    if (!Array.isArray(entries)) throw new MixprecError('E_ARG', 'expected an array of { name, data }');
    const checked = entries.map((e) => {
      const spec = this.#specs.find((s) => s.name === e?.name);
      if (!spec) throw new MixprecError('E_ARG', `no parameter named '${String(e?.name)}'`);
      const data = Float32Array.from(e.data as ArrayLike<number>);
      const size = spec.shape.reduce((a, b) => a * b, 1);
      if (data.length !== size) throw new MixprecError('E_SHAPE', `'${spec.name}' has ${size} values, got ${data.length}`);
      return [spec.name, data] as const;
    });
    for (const [name, data] of checked) this.#values.set(name, data);
  }

  /** @internal Moves the parameters into a new store of this precision / device (a Trainer calls this). */
  bind(precision: Precision, device: Device | 'auto'): ParameterStore {
    if (this.#store) throw new MixprecError('E_STATE', 'this model already belongs to a Trainer; create a new model for another one');
    const store = new ParameterStore(this.#specs.map((s) => ({ name: s.name, shape: s.shape })), { precision, device });
    store.loadParameters(this.#specs.map((s) => ({ name: s.name, data: this.#values.get(s.name)! })));
    const valueBuf = store.working ?? store.master;
    const dtype = LOW[precision];
    this.layers.forEach((layer, i) => {
      const params = new Map<string, { value: Tensor; grad: Tensor }>();
      for (const s of this.#specs.filter((x) => x.layer === i)) {
        const v = store.view(s.name);
        params.set(s.local, { value: valueBuf.view(v.offset, s.shape), grad: store.grads.view(v.offset, s.shape) });
      }
      layer.bind({ store, dtype, params });
    });
    this.#store = store;
    this.#values.clear();
    return store;
  }

  get store(): ParameterStore | null {
    return this.#store;
  }

  forward(x: Tensor, ctx: PassContext): Tensor {
    let h = x;
    this.layers.forEach((l, i) => (h = l.forward(h, { ...ctx, seed: (ctx.seed + i * 0x9e3779b1) >>> 0 })));
    return h;
  }

  /**
   * Backward through every layer (the input's own gradient is not computed). `observe`, if given,
   * sees the gradient arriving at each layer's output (diagnostics), before that layer's backward.
   */
  backward(dy: Tensor, ctx: PassContext, observe?: (layer: number, grad: Tensor) => void): void {
    let g: Tensor | null = dy;
    for (let i = this.layers.length - 1; i >= 0 && g; i--) {
      observe?.(i, g);
      g = this.layers[i].backward(g, { ...ctx, seed: (ctx.seed + i * 0x9e3779b1) >>> 0 }, i > 0);
    }
  }

  /** Frees the store and every activation buffer. */
  dispose(): void {
    this.layers.forEach((l) => l.bind(null));
    this.#store?.dispose();
  }
}
