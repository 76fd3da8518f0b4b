// Learning-rate schedules, as a function of the optimizer step (0-based): an optional linear
// warmup from 0, then constant, step decay (PyTorch's StepLR), or cosine annealing to minLr.
import { MixprecError } from '../errors';
import { show } from '../util/show';

export type LrSchedule =
  | { type: 'constant'; warmupSteps?: number }
  | { type: 'step'; stepSize: number; gamma?: number; warmupSteps?: number }
  | { type: 'cosine'; totalSteps: number; minLr?: number; warmupSteps?: number };

export function checkSchedule(s: unknown): LrSchedule {
  if (s === undefined) return { type: 'constant' };
  if (typeof s !== 'object' || s === null) throw new MixprecError('E_ARG', 'lrSchedule must be an object');
  const o = s as Record<string, unknown>;
  const intOk = (k: string, min: number) => {
    if (o[k] === undefined) return;
    if (!Number.isSafeInteger(o[k]) || (o[k] as number) < min) throw new MixprecError('E_ARG', `lrSchedule.${k} must be an integer >= ${min}`);
  };
  intOk('warmupSteps', 0);
  if (o.type === 'constant') return o as LrSchedule;
  if (o.type === 'step') {
    intOk('stepSize', 1);
    if (o.stepSize === undefined) throw new MixprecError('E_ARG', 'lrSchedule step needs stepSize');
    if (o.gamma !== undefined && (typeof o.gamma !== 'number' || !(o.gamma > 0))) throw new MixprecError('E_ARG', 'lrSchedule.gamma must be > 0');
    return o as LrSchedule;
  }
  if (o.type === 'cosine') {
    intOk('totalSteps', 1);
    if (o.totalSteps === undefined) throw new MixprecError('E_ARG', 'lrSchedule cosine needs totalSteps');
    if (o.minLr !== undefined && (typeof o.minLr !== 'number' || !(o.minLr >= 0))) throw new MixprecError('E_ARG', 'lrSchedule.minLr must be >= 0');
    return o as LrSchedule;
  }
  throw new MixprecError('E_ARG', `lrSchedule.type must be 'constant', 'step' or 'cosine' (got ${show(o.type)})`);
}

/** The learning rate for (0-based) optimizer step `t`. */
export function lrAt(s: LrSchedule, baseLr: number, t: number): number {
  const warm = s.warmupSteps ?? 0;
  if (t < warm) return (baseLr * (t + 1)) / warm;
  const u = t - warm;
  switch (s.type) {
    case 'step': return baseLr * (s.gamma ?? 0.1) ** Math.floor(u / s.stepSize);
    case 'cosine': {
      const total = Math.max(1, s.totalSteps - warm), min = s.minLr ?? 0;
      return min + (baseLr - min) * 0.5 * (1 + Math.cos((Math.PI * Math.min(u, total)) / total));
    }
    default: return baseLr;
  }
}
