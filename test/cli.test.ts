// The `mixprec` command as a user runs it (the compiled dist/cli.js, which `npm install` builds).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const cli = path.join(__dirname, '..', 'dist', 'cli.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000 });
const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);
const nvcc = spawnSync('sh', ['-c', 'command -v nvcc || test -x /usr/local/cuda/bin/nvcc']).status === 0;

beforeAll(() => {
  if (!fs.existsSync(cli)) throw new Error('dist/cli.js missing: run `npm install` (it compiles the TypeScript)');
});

test('info --json lists the CPU backend available and says why CUDA is not', () => {
  const r = run('info', '--json');
  expect(r.status).toBe(0);
  const info = JSON.parse(r.stdout);
  const [cpu, cuda] = info.backends;
  expect(cpu).toMatchObject({ name: 'cpu', compiled: true, available: true });
  expect(cuda.name).toBe('cuda');
  // The build compiles CUDA whenever nvcc is found (MIXPREC_CUDA=AUTO), as on CI.
  if (nvcc && process.env.MIXPREC_CUDA?.toUpperCase() !== 'OFF') expect(cuda.compiled).toBe(true);
  if (!cuda.available) expect(cuda.reason).toMatch(/\w/);
});

test('bad flags: a usage message and exit code 2', () => {
  for (const args of [['train', '--bogus'], ['train', '--epochs', '0'], ['train', '--precision', 'fp8'], ['train', '--loss-scale', '-3'], ['train', '--hidden', '512,x'], ['bench', 'nosuch'], ['nosuchcommand']]) {
    const r = run(...args);
    expect({ args, status: r.status }).toEqual({ args, status: 2 });
    expect(r.stderr).toMatch(/error|must|unknown|invalid|mixprec/i);
  }
});

test('train --json on MNIST, then --resume continues from the checkpoint', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-cli-'));
  const ckpt = path.join(dir, 'run.mpk');
  const a = run('train', '--epochs', '1', '--hidden', '32', '--batch-size', '256', '--device', 'cpu', '--json', '--save', ckpt, '--seed', '3', '--schedule', 'constant');
  expect(a.status).toBe(0);
  const lines = a.stdout.trim().split('\n').map((l) => JSON.parse(l));
  expect(lines[0]).toMatchObject({ event: 'start', precision: 'fp16', device: 'cpu' });
  expect(lines.filter((l) => l.event === 'epoch')).toHaveLength(1);
  const s = lastJson(a.stdout);
  expect(s).toMatchObject({ event: 'summary', epochs: 1, precision: 'fp16' });
  expect(s.testAccuracy).toBeGreaterThan(0.85);
  for (const k of ['testLoss', 'wallSeconds', 'samplesPerSecond', 'skippedSteps']) expect(typeof s[k]).toBe('number');
  expect(s.lossScale.final).toBeGreaterThan(0);
  expect(s.lossScale.min).toBeLessThanOrEqual(s.lossScale.final);
  expect(fs.existsSync(ckpt)).toBe(true);
  const b = run('train', '--resume', ckpt, '--epochs', '2', '--device', 'cpu', '--json');
  expect(b.status).toBe(0);
  const s2 = lastJson(b.stdout);
  expect(s2).toMatchObject({ event: 'summary', epochs: 2 });
  expect(s2.steps).toBe(2 * s.steps);
  // the checkpoint fixes the model: contradicting flags are a usage error
  expect(run('train', '--resume', ckpt, '--hidden', '64').status).toBe(2);
  // a cosine schedule is planned for its epochs: resuming for another count is a usage error
  const cos = path.join(dir, 'cos.mpk');
  expect(run('train', '--epochs', '1', '--hidden', '8', '--batch-size', '1024', '--device', 'cpu', '--save', cos).status).toBe(0);
  const r = run('train', '--resume', cos, '--epochs', '3', '--device', 'cpu');
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/planned for 1 epochs/);
  // a corrupted checkpoint is a clear error, not a stack trace
  fs.writeFileSync(ckpt, 'not a checkpoint');
  const c = run('train', '--resume', ckpt);
  expect(c.status).toBe(1);
  expect(c.stderr).toMatch(/E_CHECKPOINT/);
});

test('bench gemm prints a table and writes JSON', () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-bench-')), 'b.json');
  const r = run('bench', 'gemm', '--sizes', '64,96', '--device', 'cpu', '--no-reference', '--json', out);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/GFLOP\/s/);
  const j = JSON.parse(fs.readFileSync(out, 'utf8'));
  expect(j.gemm.rows.map((x: { size: number; dtype: string }) => `${x.size}/${x.dtype}`)).toEqual(['64/float32', '64/float16', '64/bfloat16', '96/float32', '96/float16', '96/bfloat16']);
  for (const row of j.gemm.rows) expect(row.gflops).toBeGreaterThan(0);
  expect(j.machine.backends[0].name).toBe('cpu');
});

const gpu = JSON.parse(run('info', '--json').stdout).backends.find((b: { name: string }) => b.name === 'cuda')?.available === true;
(gpu ? test.skip : test)(`bench --device cuda without a usable GPU is E_NO_CUDA with exit 1, not empty tables${gpu ? ' (skipped: this machine has a GPU)' : ''}`, () => {
  const r = run('bench', 'gemm', '--device', 'cuda', '--sizes', '64', '--no-reference');
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('E_NO_CUDA');
});
