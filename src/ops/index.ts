// mixprec.ops: PyTorch's names and semantics (torch / torch.nn.functional), options as a
// trailing object. One file per family; each op is a validated forward with its gradient
// recorded beside it (src/autograd/tape.ts).
export { matmul, linear } from './matmul';
export type { MatmulOptions, Activation } from './matmul';
export { add, sub, mul, relu, gelu, dropout } from './elementwise';
export { sum, mean } from './reduce';
export { softmax, logSoftmax } from './softmax';
export { layerNorm, embedding } from './nn';
export { crossEntropy, mseLoss } from './loss';
export { reshape, view, transpose, permute, narrow, contiguous, cast, cat } from './views';
export { scaledDotProductAttention } from './attention';
export type { AttentionOptions } from './attention';
