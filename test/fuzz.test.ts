// The seeded fuzz of the public API and of the raw binding (issue 12): test/helpers/fuzz_child.js,
// run in a child process so that a crash (a signal) fails this test instead of killing the runner.
// A fresh seed per run, printed in the test name; FUZZ_SEED=<n> replays one, FUZZ_CALLS=<n> sets
// the number of calls (default 20,000; at least 10,000). The fuzz runs against the built package
// (dist/, or FUZZ_PKG) and the addon src/native.ts would load (MIXPREC_ADDON, else build/Release).
// Also here: the fixed scenarios behind the fuzz's findings (`--regressions`), in a child too.
import { spawnSync, SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const CHILD = path.join(__dirname, 'helpers', 'fuzz_child.js');
// FUZZ_PKG: another build of the package (e.g. a private `tsc --outDir`), default dist/.
const PKG = process.env.FUZZ_PKG ? path.resolve(process.env.FUZZ_PKG) : path.join(__dirname, '..', 'dist');
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
const CALLS = Math.max(10_000, Number(process.env.FUZZ_CALLS ?? 20_000) | 0);
const LIMIT_MS = 60_000;

interface Summary {
  seed: number;
  calls: number;
  seconds: number;
  failureCount: number;
  byCode: Record<string, number>;
  failures: unknown[];
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  if (!fs.existsSync(path.join(PKG, 'index.js'))) throw new Error(`${PKG} has no index.js: run \`npm install\` (it compiles the TypeScript)`);
  return spawnSync(process.execPath, [CHILD, ...args], {
    encoding: 'utf8', timeout: LIMIT_MS, maxBuffer: 64 << 20, env: { ...process.env, ...env },
  });
}

/** How the child ended, when it did not end well: a signal, an exit status, a timeout. */
function ending(r: SpawnSyncReturns<string>): string | null {
  if (r.error) return `the child did not finish: ${r.error.message}`;
  if (r.signal) return `the child was killed by ${r.signal} (a crash)`;
  if (r.status === 134 || r.status === 139) return `the child exited ${r.status} (a crash: abort / segfault)`;
  if (r.status !== 0) return `the child exited ${r.status}`;
  return null;
}

function lastJson<T>(stdout: string): T {
  const line = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as T;
}

describe('fuzz: public API and raw binding', () => {
  test(`seed ${SEED}, ${CALLS} calls: no crash, only typed errors (replay: FUZZ_SEED=${SEED})`, () => {
    // eslint-disable-next-line no-console
    console.log(`fuzz: seed ${SEED}, ${CALLS} calls (replay with FUZZ_SEED=${SEED})`);
    const r = run([PKG, String(SEED), String(CALLS)]);
    const bad = ending(r);
    if (bad) {
      // Replay the seed with a trace of every call: the last one before the crash names it.
      const t = run([PKG, String(SEED), String(CALLS)], { FUZZ_TRACE: '1' });
      const last = (t.stderr ?? '').split('\n').filter((l) => l.startsWith('FUZZ CALL ')).pop() ?? '(no trace)';
      throw new Error(`fuzz seed ${SEED}: ${bad}\nlast call: ${last.slice(0, 2000)}\nstderr:\n${(r.stderr ?? '').slice(-4000)}`);
    }
    const s = lastJson<Summary>(r.stdout);
    // eslint-disable-next-line no-console
    console.log(`fuzz: seed ${SEED}: ${s.calls} calls in ${s.seconds} s, outcomes ${JSON.stringify(s.byCode)}`);
    expect(s.seed).toBe(SEED);
    expect(s.calls).toBeGreaterThanOrEqual(10_000);
    if (s.failureCount > 0) throw new Error(`fuzz seed ${SEED}: ${s.failureCount} failures (replay: FUZZ_SEED=${SEED}); the first ones:\n${JSON.stringify(s.failures, null, 1).slice(0, 12_000)}`);
    expect(s.failures).toEqual([]);
  }, LIMIT_MS * 2 + 30_000);

  test('the scenarios behind its findings (re-entrant getters, empty views, error messages, strided operands)', () => {
    const r = run(['--regressions', PKG]);
    const bad = ending(r);
    if (bad) throw new Error(`regressions: ${bad}\nstderr:\n${(r.stderr ?? '').slice(-4000)}`);
    const { regressions } = lastJson<{ regressions: { name: string; ok: boolean; detail?: string }[] }>(r.stdout);
    expect(regressions.length).toBeGreaterThan(20);
    expect(regressions.filter((x) => !x.ok)).toEqual([]);
  }, LIMIT_MS + 10_000);
});
