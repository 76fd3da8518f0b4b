// The casts autocast inserts in front of a `low` op (matmul, linear). A leaf that requires grad
// (a weight) is cast once per autocast region and reused, as PyTorch's autocast weight cache.
import { autocastCache } from '../amp/autocast';
import type { FloatDType } from '../dtype';
import type { Tensor } from '../tensor';
import { cast } from './views';

export function castForAutocast(t: Tensor, low: FloatDType): Tensor {
  if (t.dtype === low || t.dtype === 'int32') return t;
  const cache = t.isLeaf && t.requiresGrad ? autocastCache() : null;
  const hit = cache?.get(t);
  if (hit && !hit.disposed) return hit;
  const c = cast(t, low);
  cache?.set(t, c);
  return c;
}

/** Frees a cast made by castForAutocast when the op that used it recorded nothing (not cached ones). */
export function releaseCast(used: Tensor, original: Tensor): void {
  if (used !== original && !used.requiresGrad) used.dispose();
}
