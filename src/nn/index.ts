import type { Activation } from '../ops';
import type { Module } from './module';
import { Dropout, Embedding, GELU, LayerNorm, Linear, ModuleList, ReLU } from './modules';
import { Sequential } from './sequential';

export { Module, Parameter, parameter } from './module';
export type { NamedParameter } from './module';
export { BuiltinModule, Linear, ReLU, GELU, LayerNorm, Dropout, Embedding, ModuleList } from './modules';
export type { LayerConfig } from './modules';
export { Sequential } from './sequential';
export type { ModelConfig } from './sequential';
/** The old name of a module in a sequential() stack. */
export type Layer = Module;

/** mixprec.layers: built-in modules with PyTorch's defaults (the original layer constructors). */
export const layers = {
  /** Linear(in, out): y = act(x W^T + b), W [out, in]; Kaiming-uniform init as nn.Linear; bias and ReLU/GELU fused into the GEMM. */
  linear: (inFeatures: number, outFeatures: number, opts?: { bias?: boolean; activation?: Activation }): Linear => new Linear(inFeatures, outFeatures, opts),
  relu: (): ReLU => new ReLU(),
  gelu: (): GELU => new GELU(),
  /** LayerNorm over the last dimension, FP32 statistics; weight 1, bias 0. */
  layerNorm: (features: number, opts?: { eps?: number }): LayerNorm => new LayerNorm(features, opts),
  /** Dropout(p), seeded from the trainer's seed and step; identity in evaluation. */
  dropout: (p: number): Dropout => new Dropout(p),
  embedding: (numEmbeddings: number, embeddingDim: number): Embedding => new Embedding(numEmbeddings, embeddingDim),
};

/** A stack of modules; built-in parameters initialised from `seed` (default 0). */
export function sequential(ms: Module[], opts?: { inFeatures?: number; seed?: number }): Sequential {
  return new Sequential(ms, opts);
}
