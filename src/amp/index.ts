import type { Optimizer } from '../optim';
import { GradScaler, GradScalerOptions, StepResult } from './grad_scaler';
import type { ParameterStore } from './store';

export { GradScaler } from './grad_scaler';
export type { GradScalerOptions, GradScalerStateDict, ScalerCounters, StepResult } from './grad_scaler';
export { ParameterStore, parameterStore } from './store';
export type { Precision, ParameterSpec, ParameterView, NamedValues, StoreOptions } from './store';

/**
 * One fused mixed-precision step over a store: unscale + inf/NaN check + norm (one pass), clip,
 * the fused optimizer (skipped on overflow) and the loss-scale update, with one small read-back.
 * `scaler`: a GradScaler, its options, or a plain number (static scale).
 */
export async function step(
  store: ParameterStore, optimizer: Optimizer, scaler: GradScaler | GradScalerOptions | number, opts: { maxNorm?: number } = {},
): Promise<StepResult> {
  return GradScaler.from(scaler).step(store, optimizer, { ...opts, update: true });
}
