// Layers with forward and backward passes over the backend ops. A layer's parameters live in a
// ParameterStore (flat buffers) once a Trainer binds the model; the layer then reads its weights
// as views of the working copy and writes its gradients into views of the gradient buffer.
//
// Precision policy: GEMMs and elementwise ops run in the compute dtype (FP16 / BF16 / FP32) with
// FP32 accumulation; layer-norm statistics, softmax, the loss and all reductions are FP32.
import type { ActCode } from '../../binding';
import type { ParameterStore } from '../amp/store';
import { DType, dtypeCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { Activation, matmul } from '../ops';
import { Rng } from '../rng';
import { empty, Tensor } from '../tensor';

const ACT: Record<Activation, ActCode> = { none: 0, relu: 1, gelu: 2 };

export interface ParamSpec { name: string; shape: number[]; init: (rng: Rng) => Float32Array }

/** What one forward/backward pass needs to know. */
export interface PassContext {
  training: boolean;
  /** Seeds this pass's randomness (dropout): a function of the trainer seed and step. */
  seed: number;
}

export type LayerConfig =
  | { type: 'linear'; inFeatures: number; outFeatures: number; bias: boolean; activation: Activation }
  | { type: 'activation'; activation: Exclude<Activation, 'none'> }
  | { type: 'layerNorm'; features: number; eps: number }
  | { type: 'dropout'; p: number };

/** Where a bound layer's parameters and gradients are. */
export interface LayerBinding {
  store: ParameterStore;
  /** The compute dtype: the working copy's. */
  dtype: DType;
  /** Parameter name -> { value view (working copy, or master for fp32), grad view }. */
  params: Map<string, { value: Tensor; grad: Tensor }>;
}

export abstract class Layer {
  abstract readonly config: LayerConfig;
  #binding: LayerBinding | null = null;
  #scratch = new Map<string, Tensor>();

  /** Parameter specs in order (a weight before its bias), with PyTorch's default init. */
  params(): ParamSpec[] {
    return [];
  }
  /** Output features for `inFeatures` inputs (shape inference; throws E_SHAPE on a mismatch). */
  abstract outFeatures(inFeatures: number): number;
  abstract forward(x: Tensor, ctx: PassContext): Tensor;
  /** Gradient w.r.t. the input of the last forward (null when `needInput` is false); writes parameter gradients. */
  abstract backward(dy: Tensor, ctx: PassContext, needInput: boolean): Tensor | null;

  /** @internal */
  bind(b: LayerBinding | null): void {
    this.#binding = b;
    this.release();
  }
  protected get binding(): LayerBinding {
    if (!this.#binding) throw new MixprecError('E_STATE', 'layer is not bound to a parameter store: use it through a Trainer');
    return this.#binding;
  }
  protected param(name: string): { value: Tensor; grad: Tensor } {
    const p = this.binding.params.get(name);
    if (!p) throw new MixprecError('E_STATE', `parameter '${name}' is not bound`);
    return p;
  }
  /** A reusable buffer for activations (re-allocated only when the shape or dtype changes). */
  protected scratch(key: string, shape: number[], dtype: DType, device = this.binding.store.device): Tensor {
    const t = this.#scratch.get(key);
    if (t && !t.disposed && t.dtype === dtype && t.device === device && t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i])) return t;
    t?.dispose();
    const fresh = empty(shape, { dtype, device });
    this.#scratch.set(key, fresh);
    return fresh;
  }
  /** Frees the activation buffers. */
  release(): void {
    for (const t of this.#scratch.values()) t.dispose();
    this.#scratch.clear();
  }
}

function check2d(x: Tensor, features: number, who: string): number {
  if (x.shape.length !== 2 || x.shape[1] !== features)
    throw new MixprecError('E_SHAPE', `${who} expects [batch, ${features}] input, got [${x.shape.join(', ')}]`);
  return x.shape[0];
}

export class Linear extends Layer {
  readonly config: Extract<LayerConfig, { type: 'linear' }>;
  #x: Tensor | null = null;

  constructor(inFeatures: number, outFeatures: number, opts: { bias?: boolean; activation?: Activation } = {}) {
    super();
    for (const [v, what] of [[inFeatures, 'inFeatures'], [outFeatures, 'outFeatures']] as const)
      if (!Number.isSafeInteger(v) || v < 1) throw new MixprecError('E_ARG', `linear: ${what} must be a positive integer`);
    if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', 'linear: options must be an object');
    for (const k of Object.keys(opts)) if (k !== 'bias' && k !== 'activation') throw new MixprecError('E_ARG', `linear: unknown option '${k}'`);
    const activation = opts.activation ?? 'none';
    if (!(activation in ACT)) throw new MixprecError('E_ARG', `linear: activation must be 'none', 'relu' or 'gelu'`);
    this.config = { type: 'linear', inFeatures, outFeatures, bias: opts.bias ?? true, activation };
  }

  params(): ParamSpec[] {
    const { inFeatures: fin, outFeatures: fout } = this.config;
    // PyTorch's nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) => U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias likewise.
    const bound = 1 / Math.sqrt(fin);
    const uniform = (n: number) => (rng: Rng) => Float32Array.from({ length: n }, () => rng.uniform(-bound, bound));
    const specs: ParamSpec[] = [{ name: 'weight', shape: [fout, fin], init: uniform(fout * fin) }];
    if (this.config.bias) specs.push({ name: 'bias', shape: [fout], init: uniform(fout) });
    return specs;
  }

  outFeatures(inFeatures: number): number {
    if (inFeatures !== this.config.inFeatures)
      throw new MixprecError('E_SHAPE', `linear(${this.config.inFeatures}, ${this.config.outFeatures}) got ${inFeatures} input features`);
    return this.config.outFeatures;
  }

  forward(x: Tensor, ctx: PassContext): Tensor {
    const B = check2d(x, this.config.inFeatures, 'linear');
    const { dtype } = this.binding;
    const act = this.config.activation;
    const y = this.scratch('y', [B, this.config.outFeatures], dtype);
    const bias = this.config.bias ? this.param('bias').value : undefined;
    const w = this.param('weight').value;
    // GELU's backward needs the pre-activation: the GEMM epilogue stores it beside the output.
    const preAct = ctx.training && act === 'gelu' ? this.scratch('z', [B, this.config.outFeatures], dtype) : undefined;
    matmul(x, w, { transB: true, bias, activation: act, out: y, preAct });
    this.#x = ctx.training ? x : null;
    return y;
  }

  backward(dy: Tensor, _ctx: PassContext, needInput: boolean): Tensor | null {
    const x = this.#x;
    if (!x) throw new MixprecError('E_STATE', 'linear: backward without a training forward');
    const { dtype } = this.binding;
    const [B, fout] = [dy.shape[0], this.config.outFeatures];
    let dz = dy;
    if (this.config.activation !== 'none') {
      // ReLU: y > 0 iff z > 0, so the output serves; GELU: the stored pre-activation.
      const z = this.config.activation === 'relu' ? this.scratch('y', [B, fout], dtype) : this.scratch('z', [B, fout], dtype);
      dz = this.scratch('dz', [B, fout], dtype);
      native().activationBackward({
        act: ACT[this.config.activation], dy: dy.handle(), dyType: dtypeCode(dy.dtype), z: z.handle(), zType: dtypeCode(z.dtype),
        dx: dz.handle(), dxType: dtypeCode(dtype), n: B * fout,
      });
    }
    const gw = this.param('weight').grad;
    matmul(dz, x, { transA: true, out: gw }); // dW = dz^T x  [out, in], FP32 accumulation
    if (this.config.bias) {
      const gb = this.param('bias').grad;
      native().columnSum({ x: dz.handle(), xType: dtypeCode(dz.dtype), M: B, N: fout, out: gb.handle(), outType: dtypeCode(gb.dtype) });
    }
    if (!needInput) return null;
    const dx = this.scratch('dx', [B, this.config.inFeatures], dtype);
    return matmul(dz, this.param('weight').value, { out: dx }); // dx = dz W
  }
}

export class ActivationLayer extends Layer {
  readonly config: Extract<LayerConfig, { type: 'activation' }>;
  #z: Tensor | null = null;
  constructor(activation: 'relu' | 'gelu') {
    super();
    if (activation !== 'relu' && activation !== 'gelu') throw new MixprecError('E_ARG', `activation must be 'relu' or 'gelu'`);
    this.config = { type: 'activation', activation };
  }
  outFeatures(n: number): number {
    return n;
  }
  forward(x: Tensor, ctx: PassContext): Tensor {
    const y = this.scratch('y', [...x.shape], this.binding.dtype);
    native().activationForward({ act: ACT[this.config.activation], x: x.handle(), xType: dtypeCode(x.dtype), y: y.handle(), yType: dtypeCode(y.dtype), n: x.size });
    this.#z = ctx.training ? x : null;
    return y;
  }
  backward(dy: Tensor, _ctx: PassContext, needInput: boolean): Tensor | null {
    if (!needInput) return null;
    const z = this.#z;
    if (!z) throw new MixprecError('E_STATE', 'activation: backward without a training forward');
    const dx = this.scratch('dx', [...dy.shape], this.binding.dtype);
    native().activationBackward({
      act: ACT[this.config.activation], dy: dy.handle(), dyType: dtypeCode(dy.dtype), z: z.handle(), zType: dtypeCode(z.dtype),
      dx: dx.handle(), dxType: dtypeCode(dx.dtype), n: dy.size,
    });
    return dx;
  }
}

export class LayerNorm extends Layer {
  readonly config: Extract<LayerConfig, { type: 'layerNorm' }>;
  #x: Tensor | null = null;
  constructor(features: number, opts: { eps?: number } = {}) {
    super();
    if (!Number.isSafeInteger(features) || features < 1) throw new MixprecError('E_ARG', 'layerNorm: features must be a positive integer');
    const eps = opts.eps ?? 1e-5;
    if (typeof eps !== 'number' || !(eps >= 0)) throw new MixprecError('E_ARG', 'layerNorm: eps must be >= 0');
    this.config = { type: 'layerNorm', features, eps };
  }
  params(): ParamSpec[] {
    const n = this.config.features;
    return [
      { name: 'weight', shape: [n], init: () => new Float32Array(n).fill(1) },
      { name: 'bias', shape: [n], init: () => new Float32Array(n) },
    ];
  }
  outFeatures(n: number): number {
    if (n !== this.config.features) throw new MixprecError('E_SHAPE', `layerNorm(${this.config.features}) got ${n} features`);
    return n;
  }
  forward(x: Tensor, ctx: PassContext): Tensor {
    const M = check2d(x, this.config.features, 'layerNorm'), N = this.config.features;
    const { dtype } = this.binding;
    const y = this.scratch('y', [M, N], dtype);
    const g = this.param('weight').value, b = this.param('bias').value;
    native().layerNormForward({
      x: x.handle(), xType: dtypeCode(x.dtype), gamma: g.handle(), beta: b.handle(), gType: dtypeCode(g.dtype), M, N, eps: this.config.eps,
      y: y.handle(), yType: dtypeCode(dtype), mean: this.scratch('mean', [M], 'float32').handle(), rstd: this.scratch('rstd', [M], 'float32').handle(),
    });
    this.#x = ctx.training ? x : null;
    return y;
  }
  backward(dy: Tensor, _ctx: PassContext, needInput: boolean): Tensor | null {
    const x = this.#x;
    if (!x) throw new MixprecError('E_STATE', 'layerNorm: backward without a training forward');
    const [M, N] = [x.shape[0], this.config.features];
    const { dtype } = this.binding;
    const g = this.param('weight'), b = this.param('bias');
    const dx = this.scratch('dx', [M, N], dtype);
    native().layerNormBackward({
      dy: dy.handle(), dyType: dtypeCode(dy.dtype), x: x.handle(), xType: dtypeCode(x.dtype), gamma: g.value.handle(), gType: dtypeCode(g.value.dtype),
      mean: this.scratch('mean', [M], 'float32').handle(), rstd: this.scratch('rstd', [M], 'float32').handle(), M, N,
      dx: dx.handle(), dxType: dtypeCode(dtype), dgamma: g.grad.handle(), dbeta: b.grad.handle(), dgType: dtypeCode(g.grad.dtype),
    });
    return needInput ? dx : null;
  }
}

export class Dropout extends Layer {
  readonly config: Extract<LayerConfig, { type: 'dropout' }>;
  #seed = 0;
  constructor(p: number) {
    super();
    if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw new MixprecError('E_ARG', 'dropout: p must be in [0, 1)');
    this.config = { type: 'dropout', p };
  }
  outFeatures(n: number): number {
    return n;
  }
  #apply(x: Tensor, key: string): Tensor {
    const y = this.scratch(key, [...x.shape], this.binding.dtype);
    native().dropout({ x: x.handle(), xType: dtypeCode(x.dtype), y: y.handle(), yType: dtypeCode(y.dtype), n: x.size, p: this.config.p, seedHi: 0, seedLo: this.#seed });
    return y;
  }
  forward(x: Tensor, ctx: PassContext): Tensor {
    if (!ctx.training || this.config.p === 0) return x;
    this.#seed = ctx.seed >>> 0;
    return this.#apply(x, 'y');
  }
  backward(dy: Tensor, ctx: PassContext, needInput: boolean): Tensor | null {
    if (!needInput) return null;
    if (this.config.p === 0) return dy;
    return this.#apply(dy, 'dx'); // the same mask: regenerated from the same seed
  }
}

export function layerFromConfig(c: LayerConfig): Layer {
  switch (c?.type) {
    case 'linear': return new Linear(c.inFeatures, c.outFeatures, { bias: c.bias, activation: c.activation });
    case 'activation': return new ActivationLayer(c.activation);
    case 'layerNorm': return new LayerNorm(c.features, { eps: c.eps });
    case 'dropout': return new Dropout(c.p);
    default: throw new MixprecError('E_CHECKPOINT', `unknown layer type '${String((c as { type?: unknown })?.type)}'`);
  }
}
