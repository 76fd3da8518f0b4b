// The reference libraries the benches compare against (numpy's BLAS, PyTorch), run in the same
// bench run: which interpreter has them, the environment and thread count they run with.
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * The Pythons tried, in order: the python3 on PATH (pyenv, a venv), then Debian's
 * /usr/bin/python3 (where python3-numpy / python3-torch install); MIXPREC_BENCH_PYTHON, if set,
 * instead of both.
 */
export function pythonCandidates(): string[] {
  const env = process.env.MIXPREC_BENCH_PYTHON;
  return env ? [env] : ['python3', '/usr/bin/python3'];
}

interface Probe { executable: string; python: string; modules: Record<string, boolean> }
const probes = new Map<string, Probe | null>();

/** What `py` is (its real executable) and which of `modules` it imports; cached per interpreter and module. */
function probe(py: string, modules: string[]): Probe | null {
  let p = probes.get(py);
  if (p === null) return null;
  const missing = modules.filter((m) => !p || !(m in p.modules));
  if (p && !missing.length) return p;
  const code = [
    'import json, os, platform, sys', 'r = {}',
    `for m in ${JSON.stringify(missing)}:`,
    '    try:', '        __import__(m); r[m] = True', '    except Exception:', '        r[m] = False',
    'print(json.dumps({"executable": os.path.realpath(sys.executable), "python": platform.python_version(), "modules": r}))',
  ].join('\n');
  const r = spawnSync(py, ['-c', code], { encoding: 'utf8', timeout: 120_000, env: referenceEnv() });
  try {
    const got = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as Probe;
    p = p ? { ...p, modules: { ...p.modules, ...got.modules } } : got;
  } catch {
    p = null; // not runnable
  }
  probes.set(py, p);
  return p;
}

/**
 * The first interpreter of pythonCandidates() (the same one reached twice counted once) that
 * imports every one of `modules`, as its real executable path; null when none does. Cached.
 */
export function findPython(modules: string[]): string | null {
  const seen = new Set<string>();
  for (const py of pythonCandidates()) {
    const p = probe(py, modules);
    if (!p || seen.has(p.executable)) continue;
    seen.add(p.executable);
    if (modules.every((m) => p.modules[m])) return p.executable;
  }
  return null;
}

/** The Python version of an interpreter findPython returned (from its probe). */
function pythonVersion(exe: string): string | undefined {
  for (const p of probes.values()) if (p?.executable === exe) return p.python;
  return undefined;
}

/** Variables these machines may set that lower OpenBLAS's kernel choice and blocking (a forced core type, a small L2). */
export const REFERENCE_UNSET = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

/**
 * The environment for a reference library's command: ours minus REFERENCE_UNSET, so OpenBLAS
 * picks its own kernel and cache sizes, plus `extra`. Only that command's environment changes.
 */
export function referenceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const k of REFERENCE_UNSET) delete env[k];
  return env;
}

/** The threads mixprec's CPU kernels use (native/cpu/parallel.cpp): MIXPREC_NUM_THREADS if a valid count, else every core. */
export function benchThreads(): number {
  const v = process.env.MIXPREC_NUM_THREADS;
  if (v !== undefined && /^\d+$/.test(v) && Number(v) >= 1) return Math.min(Number(v), 1024);
  return Math.max(1, os.cpus().length);
}

/** The thread variables for a reference on the CPU, `threads` each: OpenMP, OpenBLAS, MKL. */
export function threadEnv(threads: number): Record<string, string> {
  const t = String(threads);
  return { OMP_NUM_THREADS: t, OPENBLAS_NUM_THREADS: t, MKL_NUM_THREADS: t };
}

/** A GEMM out[M, N] = op(a) @ op(b): a stored [K, M] when transA, b stored [N, K] when transB (as in BLAS). */
export interface RefShape { M: number; N: number; K: number; transA: boolean; transB: boolean }

/**
 * One reference timing: a square (`size`, n x n x n) or a --shapes GEMM (`shape`); blas_ref.py
 * writes `shape` for both.
 */
export interface RefResult {
  size?: number;
  shape?: RefShape;
  dtype: string; gflops: number;
}

/** `shapes` as blas_ref.py's --shapes reads them: MxNxK:tt items, comma-separated. */
export function shapesArg(shapes: RefShape[]): string {
  return shapes.map((s) => `${s.M}x${s.N}x${s.K}:${s.transA ? 't' : 'n'}${s.transB ? 't' : 'n'}`).join(',');
}

/** One library's GEMM timings (bench/blas_ref.py), with where and how it ran. */
export interface RefLibrary {
  /** 'numpy' or 'torch'. */
  name: string;
  /** e.g. "numpy 2.4.6", "torch 1.13.0 (cuBLAS)". */
  library?: string;
  version?: string;
  /** The interpreter it ran in (its real path) and that interpreter's version. */
  interpreter?: string;
  python?: string;
  threads?: number;
  /** The kernel that ran: `summary` is one line (OpenBLAS's config string and core, torch's build lines and CPU capability). */
  blas?: { summary?: string; [k: string]: unknown };
  results?: RefResult[];
  error?: string;
}

export interface Reference {
  /** Each library measured, numpy first. */
  references: RefLibrary[];
  /** The thread count asked for (mixprec's), and the variables unset for the command. */
  threads?: number;
  unset?: readonly string[];
  /** The libraries in one string (older readers). */
  library?: string;
  error?: string;
}

const script = (name: string) => path.join(__dirname, '..', '..', 'bench', name);

/** Runs bench/blas_ref.py in `py` and returns its references, each naming the interpreter. */
function runBlasRef(py: string, args: string[], threads: number): RefLibrary[] | { error: string } {
  const r = spawnSync(py, [script('blas_ref.py'), ...args, '--threads', String(threads)], { encoding: 'utf8', timeout: 900_000, env: referenceEnv(threadEnv(threads)) });
  if (r.error) return { error: `${py} not runnable: ${r.error.message}` };
  try {
    const out = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as { interpreter?: string; python?: string; references?: RefLibrary[] };
    return (out.references ?? []).map((x) => ({ ...x, interpreter: out.interpreter ?? py, python: out.python }));
  } catch {
    return { error: `blas_ref.py failed in ${py}: ${(r.stderr || r.stdout || '').trim().split('\n').pop()}` };
  }
}

/**
 * Reference GEMMs measured in this bench run, with mixprec's thread count and OpenBLAS left to
 * pick its own kernel. CPU: numpy float32 and PyTorch float32 and bfloat16, in one run in the
 * first Python that has both, else numpy in the first with numpy and torch in the first with
 * torch (each reference names its interpreter). CUDA:
 * PyTorch (cuBLAS) float32 / float16 / bfloat16. The squares `sizes`, then each of `shapes`
 * (with its transposed operands stored transposed, so the library is handed a transposed operand).
 */
export function referenceGemm(device: 'cpu' | 'cuda', sizes: number[], shapes: RefShape[] = []): Reference {
  const threads = benchThreads();
  const sizeArgs = ['--device', device, '--sizes', sizes.join(','), ...(shapes.length ? ['--shapes', shapesArg(shapes)] : [])];
  const refs: RefLibrary[] = [];
  const add = (name: string, py: string | null, libs: string[], missing: string) => {
    if (!py) return void refs.push({ name, error: missing });
    const got = runBlasRef(py, device === 'cpu' ? [...sizeArgs, '--libs', libs.join(',')] : sizeArgs, threads);
    if ('error' in got) for (const l of libs) refs.push({ name: l, interpreter: py, error: got.error });
    else refs.push(...got);
  };
  const tried = pythonCandidates().join(', ');
  const noTorch = `no Python with torch among ${tried} (Debian: apt-get install python3-torch; or set MIXPREC_BENCH_PYTHON)`;
  if (device === 'cuda') add('torch', findPython(['torch']), ['torch'], noTorch);
  else {
    // One interpreter with both when there is one: numpy and torch then share its BLAS (Debian's
    // python3-numpy and python3-torch both call libblas.so.3), one library seen through both.
    const both = findPython(['numpy', 'torch']);
    const np = both ?? findPython(['numpy']), tp = both ?? findPython(['torch']);
    if (np && np === tp) add('numpy', np, ['numpy', 'torch'], '');
    else {
      add('numpy', np, ['numpy'], `no Python with numpy among ${tried}`);
      add('torch', tp, ['torch'], noTorch);
    }
  }
  for (const r of refs) if (r.interpreter && !r.python) r.python = pythonVersion(r.interpreter);
  const ok = refs.filter((r) => !r.error);
  return {
    references: refs, threads, unset: REFERENCE_UNSET,
    library: ok.length ? ok.map((r) => r.library).join(' + ') : undefined,
    error: ok.length ? undefined : refs.map((r) => `${r.name}: ${r.error}`).join('; '),
  };
}

/** One line naming a reference: library, interpreter, threads, the BLAS kernel. */
export function describeReference(r: RefLibrary): string {
  if (r.error) return `${r.name}: none (${r.error})`;
  const where = r.interpreter ? `, ${r.interpreter}${r.python ? ` (Python ${r.python})` : ''}` : '';
  const threads = r.threads !== undefined ? `, ${r.threads} thread${r.threads === 1 ? '' : 's'}` : '';
  return `${r.library ?? r.name}${where}${threads}; BLAS: ${r.blas?.summary ?? 'unknown'}`;
}
