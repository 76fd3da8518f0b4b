// Loads the addon once, lazily, and wraps every native function so that what it throws becomes a
// MixprecError with the native code. Importing mixprec never throws; the first use of a missing
// addon throws E_NO_ADDON naming the command that builds it (and a bad MIXPREC_CPU_ISA, E_ARG).
import type { Binding } from '../binding';
import { ErrorCode, MixprecError } from './errors';

const NATIVE_CODES = new Set<string>([
  'E_ARG', 'E_SHAPE', 'E_DTYPE', 'E_DEVICE', 'E_DISPOSED', 'E_NO_CUDA', 'E_OOM', 'E_CUDA', 'E_INTERNAL',
  'E_STATE', 'E_DIST',
]);

function translate(err: unknown): never {
  if (err instanceof MixprecError) throw err;
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string' && NATIVE_CODES.has(e.code))
    throw new MixprecError(e.code as ErrorCode, String(e.message));
  throw err;
}

function load(): Binding {
  let raw: Binding;
  try {
    // MIXPREC_ADDON: the path of an addon built elsewhere (a second build folder, e.g. while
    // another build of this checkout is in use); by default the one `npm install` built.
    const at = process.env.MIXPREC_ADDON;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    raw = (at ? require(require('node:path').resolve(at)) : require('bindings')('mixprec')) as Binding;
  } catch (err) {
    throw new MixprecError(
      'E_NO_ADDON',
      'the mixprec native addon is not built. In a project that depends on mixprec, npm 11 blocks ' +
        'dependency install scripts: run `npm install-scripts approve mixprec && npm rebuild mixprec` ' +
        '(CMake and a C++17 compiler are needed; nvcc adds the CUDA backend). In a mixprec checkout, ' +
        `run \`npm install\`. (${(err as Error).message.split('\n')[0]})`,
    );
  }
  // MIXPREC_CPU_ISA: the CPU kernels' level (src/cpu.ts), checked here so that a bad value is a
  // clear E_ARG on first use rather than a silent fallback.
  const isa = process.env.MIXPREC_CPU_ISA;
  if (isa !== undefined && isa !== '' && isa !== 'auto') {
    try {
      raw.setCpuIsa(isa as 'auto');
    } catch (err) {
      throw new MixprecError('E_ARG', `MIXPREC_CPU_ISA=${isa}: ${(err as Error).message}`);
    }
  }
  const wrapped = {} as Record<string, unknown>;
  for (const [name, fn] of Object.entries(raw)) {
    if (typeof fn !== 'function') {
      wrapped[name] = fn; // constants such as ampStateBytes
      continue;
    }
    wrapped[name] = (...args: unknown[]) => {
      try {
        return (fn as (...a: unknown[]) => unknown)(...args);
      } catch (err) {
        translate(err);
      }
    };
  }
  return wrapped as unknown as Binding;
}

let cached: Binding | undefined;
/** The native addon, loaded on first use. */
export function native(): Binding {
  return (cached ??= load());
}
