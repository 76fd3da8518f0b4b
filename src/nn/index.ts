import type { Activation } from '../ops';
import { ActivationLayer, Dropout, Layer, LayerNorm, Linear } from './layers';
import { Sequential } from './sequential';

export { Layer, Linear, ActivationLayer, LayerNorm, Dropout } from './layers';
export type { LayerConfig, ParamSpec, PassContext } from './layers';
export { Sequential } from './sequential';
export type { ModelConfig, NamedParameter } from './sequential';

/** mixprec.layers: constructors with PyTorch's defaults. */
export const layers = {
  /** Linear(in, out): y = act(x W^T + b), W [out, in]; Kaiming-uniform init as nn.Linear; bias and ReLU/GELU fused into the GEMM. */
  linear: (inFeatures: number, outFeatures: number, opts?: { bias?: boolean; activation?: Activation }): Layer => new Linear(inFeatures, outFeatures, opts),
  relu: (): Layer => new ActivationLayer('relu'),
  gelu: (): Layer => new ActivationLayer('gelu'),
  /** LayerNorm over the last dimension, FP32 statistics; weight 1, bias 0. */
  layerNorm: (features: number, opts?: { eps?: number }): Layer => new LayerNorm(features, opts),
  /** Dropout(p), seeded from the trainer's seed and step; identity in evaluation. */
  dropout: (p: number): Layer => new Dropout(p),
};

/** A stack of layers; parameters initialised from `seed` (default 0). */
export function sequential(ls: Layer[], opts?: { inFeatures?: number; seed?: number }): Sequential {
  return new Sequential(ls, opts);
}
