// A chain of modules (nn.Sequential): children "0", "1", ...; parameters "0.weight", "0.bias",
// "2.weight", ... A Sequential of built-in modules has a config (the checkpoint's model record,
// rebuilt by Trainer.load without code) and is shape-checked at construction.
import { MixprecError } from '../errors';
import { Rng } from '../rng';
import type { Tensor } from '../tensor';
import { Module } from './module';
import { BuiltinModule, Dropout, Embedding, GELU, LayerConfig, LayerNorm, Linear, ReLU } from './modules';
import { readOptions } from '../util/options';
import { show } from '../util/show';

export interface ModelConfig { layers: LayerConfig[]; inFeatures: number; seed: number }

export class Sequential extends Module {
  /** Input / output features when every child is a built-in (NaN otherwise). */
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly seed: number;
  /** @internal Sees each child's output gradient in backward (diagnostics): (child index, gradient). */
  observe: ((layer: number, grad: Tensor) => void) | null = null;

  constructor(modules: readonly Module[], options: { inFeatures?: number; seed?: number } = {}) {
    super();
    if (!Array.isArray(modules) || modules.length === 0 || !modules.every((m) => m instanceof Module))
      throw new MixprecError('E_ARG', 'Sequential takes a non-empty array of modules');
    const opts = readOptions<{ inFeatures: number; seed: number }>(options, 'Sequential', ['inFeatures', 'seed'], 'ignore');
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new MixprecError('E_ARG', 'seed must be a non-negative integer');
    modules.forEach((m, i) => ((this as unknown as Record<string, Module>)[String(i)] = m));
    this.seed = seed;
    const builtin = modules.every((m) => m instanceof BuiltinModule) ? (modules as BuiltinModule[]) : null;
    let nin = opts.inFeatures ?? NaN, nout = NaN;
    if (builtin) {
      const first = builtin[0].config;
      nin = opts.inFeatures ?? (first.type === 'linear' ? first.inFeatures : first.type === 'layerNorm' ? first.features : NaN);
      if (!Number.isSafeInteger(nin) && first.type !== 'embedding') throw new MixprecError('E_ARG', 'sequential(): give { inFeatures } when the first layer is not linear or layerNorm');
      nout = nin;
      for (const m of builtin) nout = m.outFeatures(nout); // shape check across layers
      // Each parameter its own stream (numbered in order): adding a layer does not change the others' init.
      let stream = 0;
      for (const m of builtin) m.initParameters(() => new Rng(seed, ++stream));
    }
    this.inFeatures = nin;
    this.outFeatures = nout;
  }

  /** The children in order. */
  get layers(): readonly Module[] {
    return this.children().map(([, m]) => m);
  }

  /** The model record of a Sequential of built-ins (null when a child is a user module). */
  get config(): ModelConfig | null {
    const ls = this.layers;
    if (!ls.every((m) => m instanceof BuiltinModule)) return null;
    return { layers: (ls as BuiltinModule[]).map((l) => ({ ...l.config })), inFeatures: this.inFeatures, seed: this.seed };
  }

  /**
   * The number of parameter values the model of a config has, without building it (a checkpoint's
   * claim is checked against the data it holds before anything is allocated). Each size is checked
   * as the layer's constructor checks it (E_ARG / E_SHAPE); an unknown layer is E_CHECKPOINT.
   */
  static configParameterCount(c: ModelConfig): number {
    if (typeof c !== 'object' || c === null || !Array.isArray(c.layers)) throw new MixprecError('E_CHECKPOINT', 'malformed model config');
    let n = 0;
    c.layers.forEach((l: LayerConfig, i: number) => {
      const dim = (v: unknown, what: string) => {
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > 2 ** 31) throw new MixprecError('E_SHAPE', `layer ${i} (${show(l?.type)}): ${what} must be an integer in [1, 2^31] (got ${show(v)})`);
        return v;
      };
      switch (l?.type) {
        case 'linear': n += dim(l.outFeatures, 'outFeatures') * (dim(l.inFeatures, 'inFeatures') + (l.bias === false ? 0 : 1)); break;
        case 'layerNorm': n += dim(l.features, 'features') * (l.bias === false ? 1 : 2); break;
        case 'embedding': n += dim(l.numEmbeddings, 'numEmbeddings') * dim(l.embeddingDim, 'embeddingDim'); break;
        case 'activation': case 'dropout': break;
        default: throw new MixprecError('E_CHECKPOINT', `unknown layer type '${show((l as { type?: unknown })?.type)}'`);
      }
    });
    return n;
  }

  static fromConfig(c: ModelConfig): Sequential {
    if (typeof c !== 'object' || c === null || !Array.isArray(c.layers)) throw new MixprecError('E_CHECKPOINT', 'malformed model config');
    return new Sequential(c.layers.map(moduleFromConfig), { inFeatures: c.inFeatures, seed: c.seed });
  }

  forward(x: Tensor): Tensor {
    let h = x;
    this.layers.forEach((m, i) => {
      h = m.forward(h);
      const observe = this.observe;
      if (observe && h.requiresGrad) h.registerHook((g) => observe(i, g));
    });
    return h;
  }
}

export function moduleFromConfig(c: LayerConfig): BuiltinModule {
  switch (c?.type) {
    case 'linear': return new Linear(c.inFeatures, c.outFeatures, { bias: c.bias, activation: c.activation });
    case 'activation': return c.activation === 'gelu' ? new GELU() : new ReLU();
    case 'layerNorm': return new LayerNorm(c.features, { eps: c.eps, ...(c.bias === false ? { bias: false } : {}) });
    case 'dropout': return new Dropout(c.p);
    case 'embedding': return new Embedding(c.numEmbeddings, c.embeddingDim);
    default: throw new MixprecError('E_CHECKPOINT', `unknown layer type '${show((c as { type?: unknown })?.type)}'`);
  }
}
