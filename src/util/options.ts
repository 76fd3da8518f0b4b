// Options objects are read once, here: a plain snapshot that the caller validates. A getter that
// throws, or a Proxy whose trap throws, is then E_ARG naming the option instead of the raw error
// escaping from the middle of a constructor (and the caller's later reads cannot change values
// already validated).
import { MixprecError } from '../errors';

const reason = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** `obj[key]`, a throwing getter or Proxy trap as `code` (E_ARG; E_STATE for a state dict) naming `what`'s option `key`. */
export function readOption(obj: object, key: string, what: string, code: 'E_ARG' | 'E_STATE' = 'E_ARG'): unknown {
  try {
    return (obj as Record<string, unknown>)[key];
  } catch (e) {
    throw new MixprecError(code, `${what} option '${key}' could not be read: ${reason(e)}`);
  }
}

/**
 * A plain copy of an options object (undefined: {}; not an object: E_ARG), each option read once.
 * `keys`: the options it may have, read by name (own or inherited); any other own key is E_ARG
 * (`unknown: 'reject'`, the default) or left out ('ignore'). `keys` null: every own enumerable key
 * (options validated further on, e.g. GradScaler's). Values that are undefined are left out.
 */
export function readOptions<T extends object>(opts: unknown, what: string, keys: readonly string[] | null, unknown: 'reject' | 'ignore' = 'reject', code: 'E_ARG' | 'E_STATE' = 'E_ARG'): Partial<T> {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null) throw new MixprecError(code, `${what} options must be an object`);
  let own: string[];
  try {
    own = Object.keys(opts);
  } catch (e) {
    throw new MixprecError(code, `${what} options could not be listed: ${reason(e)}`);
  }
  if (keys && unknown === 'reject') for (const k of own) if (!keys.includes(k)) throw new MixprecError(code, `unknown ${what} option '${k}'`);
  const out: Record<string, unknown> = {};
  for (const k of keys ?? own) {
    const v = readOption(opts, k, what, code);
    // defineProperty: an own key "__proto__" (JSON.parse makes them) stays an ordinary key.
    if (v !== undefined) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out as Partial<T>;
}

/** `v instanceof C`, a Proxy whose getPrototypeOf trap throws as E_ARG naming `what`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function isInstance<T>(v: unknown, C: abstract new (...args: any[]) => T, what: string): v is T {
  try {
    return v instanceof C;
  } catch (e) {
    throw new MixprecError('E_ARG', `${what} could not be inspected: ${reason(e)}`);
  }
}
