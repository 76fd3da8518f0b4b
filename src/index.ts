export { MixprecError } from './errors';
export type { ErrorCode } from './errors';
export { backends, memoryStats } from './backends';
export type { BackendInfo, Device } from './backends';
export type { DType } from './dtype';
export { Tensor, tensor, empty, full } from './tensor';
export type { TensorOptions } from './tensor';
export { float16, bfloat16 } from './float16';
import { matmul } from './ops';
import * as amp from './amp';
import * as optim from './optim';
export { amp, optim };
export type { Optimizer, OptimizerKind, SGDOptions, AdamOptions, OptimizerStateDict } from './optim';
export type { MatmulOptions, Activation } from './ops';

export const ops = { matmul };
