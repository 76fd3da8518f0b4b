// `mixprec launch`: real rank processes, started by launch() in this process, or by the launcher
// itself run as a child process (to send it signals).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import * as ts from 'typescript';
import { launch, LaunchOptions } from '../src/distributed/launch';
import { MixprecError } from '../src/errors';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-launch-'));
const script = (name: string, body: string) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `const fs = require('fs'), path = require('path'), env = process.env;\n${body}\n`);
  return file;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond: () => boolean, ms = 10_000) {
  for (const t0 = Date.now(); !cond(); await sleep(20)) if (Date.now() - t0 > ms) throw new Error('timed out waiting');
}
const gone = (pid: number) => {
  try { process.kill(pid, 0); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === 'ESRCH'; }
};

/** launch() with its output captured. */
async function run(opts: Omit<LaunchOptions, 'stdout' | 'stderr'>, command: string[]) {
  const out = new PassThrough(), err = new PassThrough();
  let stdout = '', stderr = '';
  out.on('data', (d) => (stdout += d));
  err.on('data', (d) => (stderr += d));
  const t0 = Date.now();
  const status = await launch({ ...opts, stdout: out, stderr: err }, command);
  return { status, stdout, stderr, ms: Date.now() - t0 };
}

// The launcher as a command, for the signal tests: launch.ts and errors.ts transpiled (no type
// check, so it takes milliseconds) beside a cli.js that registers only `launch`, as src/cli.ts does.
const dist = path.join(dir, 'dist');
beforeAll(() => {
  for (const f of ['distributed/launch', 'errors']) {
    const js = ts.transpileModule(fs.readFileSync(path.join(__dirname, '..', 'src', f + '.ts'), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    }).outputText;
    fs.mkdirSync(path.dirname(path.join(dist, f)), { recursive: true });
    fs.writeFileSync(path.join(dist, f + '.js'), js);
  }
  fs.symlinkSync(path.join(__dirname, '..', 'node_modules'), path.join(dir, 'node_modules'));
  fs.writeFileSync(path.join(dist, 'cli.js'), `const { Command } = require('commander');
const program = new Command('mixprec').exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));
require('./distributed/launch').addLaunchCommand(program);
program.parseAsync(process.argv);
`);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) => spawn(process.execPath, [path.join(dist, 'cli.js'), 'launch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
const exited = (p: ReturnType<typeof cli>) => new Promise<number | null>((r) => p.on('exit', (code) => r(code)));

const vars = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'MIXPREC_NUM_THREADS', 'MIXPREC_DIST_TIMEOUT_MS'];
const printEnv = script('env.js', `console.log(JSON.stringify(Object.fromEntries(${JSON.stringify(vars)}.map((k) => [k, env[k]]))));
process.stderr.write('no newline at the end ' + env.RANK);`);
const parse = (stdout: string) => {
  const lines = stdout.trim().split('\n');
  return lines.map((l) => {
    const m = /^\[rank (\d+)\] (.*)$/.exec(l)!;
    expect(m).not.toBeNull();
    return { prefix: Number(m[1]), env: JSON.parse(m[2]) as Record<string, string | undefined> };
  }).sort((a, b) => a.prefix - b.prefix);
};

test("each rank gets torchrun's variables, and its lines carry its rank", async () => {
  const r = await run({ nprocPerNode: 3 }, [printEnv]);
  expect(r.status).toBe(0);
  const threads = String(Math.max(1, Math.floor(os.availableParallelism() / 3)));
  expect(parse(r.stdout)).toEqual([0, 1, 2].map((i) => ({
    prefix: i,
    env: { RANK: String(i), WORLD_SIZE: '3', LOCAL_RANK: String(i), LOCAL_WORLD_SIZE: '3', GROUP_RANK: '0', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500', MIXPREC_NUM_THREADS: threads },
  })));
  // an unterminated last line still comes out, prefixed, when the rank ends
  expect(r.stderr.split('\n').filter(Boolean).sort()).toEqual([0, 1, 2].map((i) => `[rank ${i}] no newline at the end ${i}`));
});

test('the second of two nodes: global ranks 3..5 of 6; a MIXPREC_NUM_THREADS of the user is kept', async () => {
  const r = await run({ nprocPerNode: 3, nnodes: 2, nodeRank: 1, masterAddr: '10.1.2.3', masterPort: 1234, timeoutMs: 777, env: { ...process.env, MIXPREC_NUM_THREADS: '7' } }, [printEnv]);
  expect(r.status).toBe(0);
  expect(parse(r.stdout)).toEqual([0, 1, 2].map((i) => ({
    prefix: 3 + i,
    env: { RANK: String(3 + i), WORLD_SIZE: '6', LOCAL_RANK: String(i), LOCAL_WORLD_SIZE: '3', GROUP_RANK: '1', MASTER_ADDR: '10.1.2.3', MASTER_PORT: '1234', MIXPREC_NUM_THREADS: '7', MIXPREC_DIST_TIMEOUT_MS: '777' },
  })));
});

test('a failed rank stops the others at once; the status is the failed rank\'s', async () => {
  const pidDir = fs.mkdtempSync(path.join(dir, 'pids-'));
  const rankScript = script('fail3.js', `
fs.writeFileSync(path.join(${JSON.stringify(pidDir)}, env.RANK), String(process.pid));
if (env.RANK === '1') {
  // exit once the sleepers have started, so that all of them are there to be stopped
  const t = setInterval(() => { if (fs.readdirSync(${JSON.stringify(pidDir)}).length === 3) { clearInterval(t); setTimeout(() => process.exit(3), 100); } }, 10);
} else setTimeout(() => {}, 60000);`);
  const r = await run({ nprocPerNode: 3 }, [rankScript]);
  expect(r.status).toBe(3);
  expect(r.ms).toBeLessThan(10_000);
  expect(r.stderr).toContain('mixprec launch: rank 1 exited with status 3; stopping the other ranks');
  const pids = fs.readdirSync(pidDir).map((f) => Number(fs.readFileSync(path.join(pidDir, f), 'utf8')));
  expect(pids).toHaveLength(3);
  for (const pid of pids) expect(gone(pid)).toBe(true);
});

test('a rank that ignores SIGTERM is killed after the grace period', async () => {
  const pidFile = path.join(dir, 'stubborn.pid');
  const rankScript = script('stubborn.js', `
if (env.RANK === '0') { process.on('SIGTERM', () => {}); fs.writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); setTimeout(() => {}, 60000); }
else { const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(pidFile)})) process.exit(5); }, 10); }`);
  const r = await run({ nprocPerNode: 2, graceMs: 300 }, [rankScript]);
  expect(r.status).toBe(5);
  expect(r.ms).toBeLessThan(5000);
  expect(gone(Number(fs.readFileSync(pidFile, 'utf8')))).toBe(true);
});

test('a rank killed by a signal: 128 + the signal number', async () => {
  const r = await run({ nprocPerNode: 2 }, [script('kill.js', `if (env.RANK === '1') process.kill(process.pid, 'SIGKILL'); else setTimeout(() => {}, 60000);`)]);
  expect(r.status).toBe(128 + os.constants.signals.SIGKILL);
  expect(r.stderr).toContain('mixprec launch: rank 1 was killed by SIGKILL (status 137)');
});

test('a command that cannot start: 127 and a message', async () => {
  const r = await run({ nprocPerNode: 2 }, ['mixprec-no-such-command', '--flag']);
  expect(r.status).toBe(127);
  expect(r.stderr).toMatch(/^mixprec launch: cannot start 'mixprec-no-such-command': .*ENOENT\n$/);
});

test('bad options: E_ARG from launch(), a usage error (exit 2) from the command', async () => {
  for (const [o, cmd] of [[{ nprocPerNode: 0 }, ['x']], [{ nprocPerNode: 1.5 }, ['x']], [{ nprocPerNode: 2, nnodes: 2, nodeRank: 2 }, ['x']], [{ nprocPerNode: 1, masterPort: 0 }, ['x']], [{ nprocPerNode: 1, masterPort: 65536 }, ['x']], [{ nprocPerNode: 1 }, []]] as [LaunchOptions, string[]][]) {
    const e = await launch(o, cmd).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(MixprecError);
    expect((e as MixprecError).code).toBe('E_ARG');
  }
  const usage = (...args: string[]) => spawnSync(process.execPath, [path.join(dist, 'cli.js'), 'launch', ...args], { encoding: 'utf8' });
  for (const [args, msg] of [
    [['--nproc-per-node', '0', '--', 'x'], /--nproc-per-node must be an integer >= 1/],
    [['--nproc-per-node', 'two', '--', 'x'], /--nproc-per-node must be/],
    [['--nnodes', '2', '--node-rank', '2', '--', 'x'], /--node-rank must be an integer in 0\.\.1/],
    [['--master-port', '70000', '--', 'x'], /--master-port must be an integer in 1\.\.65535/],
    [['--nproc-per-node', '2', '--'], /missing command/],
  ] as [string[], RegExp][]) {
    const r = usage(...args);
    expect({ args, status: r.status }).toEqual({ args, status: 2 });
    expect(r.stderr).toMatch(msg);
  }
});

test('`mixprec ...` runs this package\'s cli.js, with no mixprec on PATH', async () => {
  // in the transpiled copy, dist/distributed/launch.js's ../cli.js is the launch-only cli.js above
  const p = cli('--nproc-per-node', '1', '--nnodes', '2', '--node-rank', '1', '--', 'mixprec', 'launch', '--nproc-per-node', '1', '--', printEnv);
  let stdout = '';
  p.stdout.on('data', (d) => (stdout += d));
  expect(await exited(p)).toBe(0);
  expect(stdout).toMatch(/^\[rank 1\] \[rank 0\] \{"RANK":"0","WORLD_SIZE":"1"/);
});

describe('signals sent to the launcher', () => {
  const trap = (name: string, exitOnSigint: boolean) => script(name, `
const d = process.argv[2];
process.on('SIGINT', () => { fs.writeFileSync(path.join(d, 'stopped-' + env.RANK), ''); ${exitOnSigint ? 'process.exit(0);' : ''} });
fs.writeFileSync(path.join(d, 'ready-' + env.RANK), '');
setTimeout(() => {}, 60000);`);
  const has = (d: string, prefix: string) => () => [0, 1, 2].every((i) => fs.existsSync(path.join(d, `${prefix}-${i}`)));

  test('SIGINT is forwarded to every rank; ranks that stop cleanly make the launch succeed', async () => {
    const d = fs.mkdtempSync(path.join(dir, 'int-'));
    const p = cli('--nproc-per-node', '3', '--', trap('trap.js', true), d);
    const status = exited(p);
    await waitFor(has(d, 'ready'));
    p.kill('SIGINT');
    expect(await status).toBe(0);
    expect(has(d, 'stopped')()).toBe(true);
  });

  test('a second SIGINT kills the ranks that did not stop', async () => {
    const d = fs.mkdtempSync(path.join(dir, 'int2-'));
    const p = cli('--nproc-per-node', '3', '--', trap('trap_stay.js', false), d);
    const status = exited(p);
    await waitFor(has(d, 'ready'));
    p.kill('SIGINT');
    await waitFor(has(d, 'stopped'));
    p.kill('SIGINT');
    expect(await status).toBe(128 + os.constants.signals.SIGKILL);
  });
});
