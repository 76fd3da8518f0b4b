// The built-in modules, with PyTorch's names, parameter names / layouts and default init. Each
// has a config (so a Sequential of built-ins is rebuilt from a checkpoint without code) and
// calls the ops: no module has a backward of its own.
import * as os from 'node:os';
import { MixprecError } from '../errors';
import { initStream } from '../random';
import { Rng } from '../rng';
import type { Tensor } from '../tensor';
import { dropout, embedding, gelu, layerNorm, linear, relu } from '../ops';
import type { Activation } from '../ops';
import { Module, Parameter, parameter } from './module';
import { readOptions } from '../util/options';
import { show } from '../util/show';

export type LayerConfig =
  | { type: 'linear'; inFeatures: number; outFeatures: number; bias: boolean; activation: Activation }
  | { type: 'activation'; activation: 'relu' | 'gelu' }
  | { type: 'layerNorm'; features: number; eps: number; bias?: boolean }
  | { type: 'dropout'; p: number }
  | { type: 'embedding'; numEmbeddings: number; embeddingDim: number };

/** A module that can be rebuilt from a config and that maps input features to output features. */
export abstract class BuiltinModule extends Module {
  abstract readonly config: LayerConfig;
  /** Output features for `n` input features (E_SHAPE on a mismatch). */
  outFeatures(n: number): number { return n; }
  /** @internal Re-draws the parameters, one stream per parameter in order (Sequential's seeded init). */
  initParameters(_next: () => Rng): void { /* no parameters */ }
}

function positiveInt(v: unknown, who: string, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new MixprecError('E_ARG', `${who}: ${what} must be a positive integer (got ${show(v)})`);
  if (v > 2 ** 31) throw new MixprecError('E_SHAPE', `${who}: ${what} ${v} is too large`);
  return v;
}

function checkKeys(opts: unknown, who: string, keys: string[]): Record<string, unknown> {
  return readOptions<Record<string, unknown>>(opts, who, keys);
}

const GiB = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GiB`;

/**
 * A parameter of `shape` can exist: E_SHAPE when its size is beyond any limit (the byte count is
 * not a safe integer, as for any tensor), E_OOM naming the bytes when it is larger than this
 * machine's memory (its FP32 initial values are made on the host). Checked before anything is
 * allocated.
 */
export function checkParameterSize(who: string, name: string, shape: readonly number[]): void {
  const n = shape.reduce((a, b) => a * b, 1), bytes = 4 * n;
  if (!Number.isSafeInteger(bytes)) throw new MixprecError('E_SHAPE', `${who}: ${name} [${shape.join(', ')}] has ${n} elements: too large for any tensor`);
  const total = os.totalmem();
  if (bytes > total) throw new MixprecError('E_OOM', `${who}: ${name} [${shape.join(', ')}] needs ${bytes} bytes (${GiB(bytes)}) of FP32 values, more than this machine's ${total} bytes (${GiB(total)}) of memory`);
}

/** new Float32Array(n) for a parameter's values, the engine's RangeError (too long, allocation failed) as E_OOM naming the bytes. */
function hostValues(n: number): Float32Array {
  try {
    return new Float32Array(n);
  } catch (e) {
    throw new MixprecError('E_OOM', `cannot allocate ${4 * n} bytes (${GiB(4 * n)}) of host memory for a parameter's ${n} FP32 values: ${(e as Error).message}`);
  }
}

const uniform = (n: number, bound: number, rng: Rng) => {
  const out = hostValues(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform(-bound, bound);
  return out;
};

/** y = activation(x W^T + b), W [out, in] (nn.Linear; the activation fused into the GEMM is mixprec's addition). */
export class Linear extends BuiltinModule {
  readonly config: Extract<LayerConfig, { type: 'linear' }>;
  weight: Parameter;
  bias: Parameter | null;
  constructor(inFeatures: number, outFeatures: number, opts: { bias?: boolean; activation?: Activation } = {}) {
    super();
    positiveInt(inFeatures, 'Linear', 'inFeatures');
    positiveInt(outFeatures, 'Linear', 'outFeatures');
    const o = checkKeys(opts, 'Linear', ['bias', 'activation']);
    const activation = (o.activation ?? 'none') as Activation;
    if (!['none', 'relu', 'gelu'].includes(activation)) throw new MixprecError('E_ARG', `Linear: activation must be 'none', 'relu' or 'gelu'`);
    const bias = o.bias ?? true;
    if (typeof bias !== 'boolean') throw new MixprecError('E_ARG', 'Linear: bias must be a boolean');
    this.config = { type: 'linear', inFeatures, outFeatures, bias, activation };
    checkParameterSize(`Linear(${inFeatures}, ${outFeatures})`, 'weight', [outFeatures, inFeatures]);
    // nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in)); the bias likewise.
    const b = 1 / Math.sqrt(inFeatures);
    this.weight = parameter(uniform(outFeatures * inFeatures, b, initStream()), [outFeatures, inFeatures]);
    this.bias = bias ? parameter(uniform(outFeatures, b, initStream()), [outFeatures]) : null;
  }
  initParameters(next: () => Rng): void {
    const { inFeatures: fin, outFeatures: fout } = this.config;
    const b = 1 / Math.sqrt(fin);
    this.loadParameters([{ name: 'weight', data: uniform(fout * fin, b, next()) }, ...(this.bias ? [{ name: 'bias', data: uniform(fout, b, next()) }] : [])]);
  }
  outFeatures(n: number): number {
    if (n !== this.config.inFeatures) throw new MixprecError('E_SHAPE', `Linear(${this.config.inFeatures}, ${this.config.outFeatures}) got ${n} input features`);
    return this.config.outFeatures;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias, { activation: this.config.activation });
  }
}

export class ReLU extends BuiltinModule {
  readonly config = { type: 'activation', activation: 'relu' } as const;
  forward(x: Tensor): Tensor { return relu(x); }
}

/** GELU, the erf form (nn.GELU()). */
export class GELU extends BuiltinModule {
  readonly config = { type: 'activation', activation: 'gelu' } as const;
  forward(x: Tensor): Tensor { return gelu(x); }
}

/** LayerNorm over the last dim (nn.LayerNorm(features)): weight 1, bias 0, FP32 statistics. */
export class LayerNorm extends BuiltinModule {
  readonly config: Extract<LayerConfig, { type: 'layerNorm' }>;
  weight: Parameter;
  /** null with { bias: false } (nn.LayerNorm(bias=False)). */
  bias: Parameter | null;
  constructor(features: number, opts: { eps?: number; bias?: boolean } = {}) {
    super();
    positiveInt(features, 'LayerNorm', 'features');
    const o = checkKeys(opts, 'LayerNorm', ['eps', 'bias']);
    const eps = o.eps ?? 1e-5;
    if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) throw new MixprecError('E_ARG', 'LayerNorm: eps must be a finite number >= 0');
    const bias = o.bias ?? true;
    if (typeof bias !== 'boolean') throw new MixprecError('E_ARG', 'LayerNorm: bias must be a boolean');
    this.config = bias ? { type: 'layerNorm', features, eps } : { type: 'layerNorm', features, eps, bias };
    checkParameterSize(`LayerNorm(${features})`, 'weight', [features]);
    this.weight = parameter(hostValues(features).fill(1), [features]);
    this.bias = bias ? parameter(hostValues(features), [features]) : null;
  }
  initParameters(next: () => Rng): void {
    next(); next();
    const n = this.config.features;
    this.loadParameters([{ name: 'weight', data: hostValues(n).fill(1) }, ...(this.bias ? [{ name: 'bias', data: hostValues(n) }] : [])]);
  }
  outFeatures(n: number): number {
    if (n !== this.config.features) throw new MixprecError('E_SHAPE', `LayerNorm(${this.config.features}) got ${n} features`);
    return n;
  }
  forward(x: Tensor): Tensor { return layerNorm(x, this.weight, this.bias, { eps: this.config.eps }); }
}

/** Dropout(p): active in training mode, the identity in eval mode; masks from mixprec.manualSeed's generator. */
export class Dropout extends BuiltinModule {
  readonly config: Extract<LayerConfig, { type: 'dropout' }>;
  constructor(p = 0.5) {
    super();
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new MixprecError('E_ARG', `Dropout: p must be in [0, 1] (got ${show(p)})`);
    this.config = { type: 'dropout', p };
  }
  forward(x: Tensor): Tensor { return dropout(x, this.config.p, { training: this.training }); }
}

/** A lookup table (nn.Embedding): weight [numEmbeddings, embeddingDim] ~ N(0, 1); ids int32. */
export class Embedding extends BuiltinModule {
  readonly config: Extract<LayerConfig, { type: 'embedding' }>;
  weight: Parameter;
  constructor(numEmbeddings: number, embeddingDim: number) {
    super();
    positiveInt(numEmbeddings, 'Embedding', 'numEmbeddings');
    positiveInt(embeddingDim, 'Embedding', 'embeddingDim');
    this.config = { type: 'embedding', numEmbeddings, embeddingDim };
    checkParameterSize(`Embedding(${numEmbeddings}, ${embeddingDim})`, 'weight', [numEmbeddings, embeddingDim]);
    this.weight = parameter(normal(numEmbeddings * embeddingDim, 1, initStream()), [numEmbeddings, embeddingDim]);
  }
  initParameters(next: () => Rng): void {
    this.loadParameters([{ name: 'weight', data: normal(this.config.numEmbeddings * this.config.embeddingDim, 1, next()) }]);
  }
  outFeatures(): number { return this.config.embeddingDim; }
  forward(ids: Tensor): Tensor { return embedding(ids, this.weight); }
}

/** N(0, std^2) by Box-Muller from a seeded stream. */
export function normal(n: number, std: number, rng: Rng): Float32Array {
  const out = hostValues(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rng.next(), v = rng.next();
    const r = std * Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Holds submodules in a list, registered as "0", "1", ... (nn.ModuleList). */
export class ModuleList extends Module {
  constructor(modules: readonly Module[] = []) {
    super();
    if (!Array.isArray(modules)) throw new MixprecError('E_ARG', 'ModuleList takes an array of modules');
    modules.forEach((m) => this.append(m));
  }
  get length(): number { return this.children().length; }
  at(i: number): Module {
    const m = (this as unknown as Record<string, Module>)[String(i < 0 ? this.length + i : i)];
    if (!(m instanceof Module)) throw new MixprecError('E_ARG', `ModuleList: no module at ${i}`);
    return m;
  }
  append(m: Module): this {
    if (!(m instanceof Module)) throw new MixprecError('E_ARG', 'ModuleList: only modules can be added');
    (this as unknown as Record<string, Module>)[String(this.length)] = m;
    return this;
  }
  [Symbol.iterator](): Iterator<Module> { return this.children().map(([, m]) => m)[Symbol.iterator](); }
  forward(): Tensor { throw new MixprecError('E_STATE', 'ModuleList has no forward: iterate over it in your module'); }
}
