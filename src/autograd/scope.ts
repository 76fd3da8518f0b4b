// Global modes of the op layer: whether ops record the tape (noGrad), and the tidy() scopes that
// dispose the tensors created inside them.
import { MixprecError } from '../errors';
import type { Tensor } from '../tensor';

let gradEnabled = true;
const scopes: Set<Tensor>[] = [];

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with gradient recording off (as torch.no_grad): no tape, results do not require grad. */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new MixprecError('E_ARG', 'noGrad(fn) needs a function');
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      r.catch(() => undefined); // refused: its rejection must not become an unhandled one (which ends the process)
      throw new MixprecError('E_ARG', 'noGrad(fn): fn must be synchronous (an async fn would leave recording off across awaits)');
    }
    return r;
  } finally {
    gradEnabled = prev;
  }
}

/** @internal Called by the Tensor constructor. */
export function trackTensor(t: Tensor): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

/** @internal Takes t (and so its storage) out of every open scope: it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(v: unknown, out: Set<Tensor>, TensorClass: unknown, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== 'object') return;
  if (v instanceof (TensorClass as typeof Object)) { out.add(v as Tensor); return; }
  if (Array.isArray(v)) for (const x of v as unknown[]) collect(x, out, TensorClass, depth + 1);
  else if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) collect(x, out, TensorClass, depth + 1);
}

/**
 * Runs fn and disposes every tensor created inside it except those it returns (a Tensor, or
 * arrays / plain objects of them) and gradients written to leaves (as tf.tidy). fn must be
 * synchronous. Call backward() inside the scope: it needs the intermediate tensors.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new MixprecError('E_ARG', 'tidy(fn) needs a function');
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
    if (result instanceof Promise) {
      result.catch(() => undefined); // refused: its rejection must not become an unhandled one
      throw new MixprecError('E_ARG', 'tidy(fn): fn must be synchronous');
    }
  } catch (err) {
    scopes.pop();
    for (const t of scope) t.dispose(); // nothing created inside survives a throw
    throw err;
  }
  scopes.pop();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Tensor } = require('../tensor') as typeof import('../tensor');
  const kept = new Set<Tensor>();
  collect(result, kept, Tensor);
  for (const t of scope) {
    if (kept.has(t)) {
      if (scopes.length) scopes[scopes.length - 1].add(t); // it belongs to the enclosing scope now
    } else t.dispose();
  }
  return result;
}
