// Argument checks shared by the ops: every failure is a MixprecError naming the op, the shapes
// and the rule, e.g. "E_SHAPE: matmul: [2,3,4] @ [5,6]: inner dimensions 4 and 5 differ".
import type { Device } from '../backends';
import { FloatDType } from '../dtype';
import { MixprecError } from '../errors';
import { Tensor } from '../tensor';
import { show } from '../util/show';
export { show };


/** A shape (or any caller's array) as `[2,3]`; see show(). */
export const fmt = (shape: readonly unknown[]): string => {
  try {
    return `[${Array.from(shape.slice(0, 16), (d) => (typeof d === 'number' ? String(d) : show(d, 1))).join(',')}${shape.length > 16 ? `,... (${shape.length})` : ''}]`;
  } catch {
    return show(shape);
  }
};

export function tensorArg(t: unknown, op: string, what: string): Tensor {
  if (!(t instanceof Tensor)) throw new MixprecError('E_ARG', `${op}: ${what} must be a Tensor (got ${t === null ? 'null' : typeof t})`);
  t.handle(); // E_DISPOSED here, with the operand named by the caller's stack
  return t;
}

export function floatArg(t: unknown, op: string, what: string): Tensor & { dtype: FloatDType } {
  const x = tensorArg(t, op, what);
  if (x.dtype === 'int32') throw new MixprecError('E_DTYPE', `${op}: ${what} must be a float tensor (got int32)`);
  return x as Tensor & { dtype: FloatDType };
}

export function sameDevice(op: string, ...ts: (Tensor | null | undefined)[]): Device {
  let d: Device | null = null;
  for (const t of ts) {
    if (!t) continue;
    if (d === null) d = t.device;
    else if (t.device !== d) throw new MixprecError('E_DEVICE', `${op}: tensors on ${d} and ${t.device}`);
  }
  return d ?? 'cpu';
}

/** A dim in [-ndim, ndim) as a non-negative index. */
export function normDim(dim: unknown, ndim: number, op: string, what = 'dim'): number {
  if (typeof dim !== 'number' || !Number.isInteger(dim)) throw new MixprecError('E_ARG', `${op}: ${what} must be an integer (got ${show(dim)})`);
  const n = Math.max(ndim, 1);
  if (dim < -n || dim >= n) throw new MixprecError('E_SHAPE', `${op}: ${what} ${dim} is out of range for a ${ndim}-D tensor (expected [${-n}, ${n - 1}])`);
  return dim < 0 ? dim + n : dim;
}

export function options<T extends object>(opts: unknown, op: string, keys: readonly string[]): Partial<T> {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', `${op}: options must be an object`);
  for (const k of Object.keys(opts)) if (!keys.includes(k)) throw new MixprecError('E_ARG', `${op}: unknown option '${k}' (expected ${keys.join(', ') || 'none'})`);
  return opts as Partial<T>;
}

export function finite(v: unknown, op: string, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new MixprecError('E_ARG', `${op}: ${what} must be a finite number`);
  return v;
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op: string): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1, db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1)
      throw new MixprecError('E_SHAPE', `${op}: ${fmt(a)} and ${fmt(b)} do not broadcast: dimension ${i - n} is ${da} vs ${db}`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}
