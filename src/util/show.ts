// A value for an error message, never throwing (a Symbol, a null-prototype object or a Proxy
// would make String() throw a TypeError in the middle of reporting a typed error).
/**
 * A caller's value as text for an error message. Never throws: Symbols, null-prototype objects, a
 * throwing toString or Proxy trap all print (as their tag) instead of turning a typed error into a
 * TypeError. Long arrays and strings are cut short.
 */
export function show(v: unknown, depth = 0): string {
  try {
    if (Array.isArray(v)) {
      if (depth > 1) return '[...]';
      const items = Array.from(v.slice(0, 16), (x) => show(x, depth + 1));
      return `[${items.join(', ')}${v.length > 16 ? `, ... (${v.length})` : ''}]`;
    }
    const s = String(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    try { return Object.prototype.toString.call(v); } catch { return '<unprintable>'; }
  }
}
