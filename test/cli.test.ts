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

describe('the GPT job', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-cli-gpt-'));
  const textFile = path.join(dir, 'tiny.txt');
  fs.writeFileSync(textFile, 'the quick brown fox jumps over the lazy dog. '.repeat(60));
  const small = ['--layers', '1', '--heads', '2', '--embd', '16', '--block-size', '16', '--batch-size', '4', '--eval-iters', '2', '--device', 'cpu', '--text', textFile];
  const ckpt = path.join(dir, 'gpt.mpk');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('train --model gpt --json: per-evaluation lines, a summary, a checkpoint; --resume loads it and keeps the planned schedule', () => {
    const a = run('train', '--model', 'gpt', ...small, '--iters', '20', '--eval-interval', '10', '--json', '--save', ckpt);
    expect(a.status).toBe(0);
    const lines = a.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ event: 'start', model: 'gpt', precision: 'fp16', batchSize: 4, iters: 20 });
    expect(lines.filter((l) => l.event === 'eval').map((l) => l.iter)).toEqual([10, 20]);
    const s = lastJson(a.stdout);
    expect(s).toMatchObject({ event: 'summary', model: 'gpt', iters: 20 });
    expect(s.finalValLoss).toBeLessThan(Math.log(28)); // below a uniform guess over the text's 28 characters
    expect(s.tokensPerSecond).toBeGreaterThan(0);
    const again = ['--text', textFile, '--device', 'cpu', '--eval-iters', '2', '--eval-interval', '10', '--json'];
    // Resuming the finished run loads it (iteration 20 of 20) and stops at once.
    const b = run('train', '--model', 'gpt', ...again, '--iters', '20', '--resume', ckpt);
    expect(b.status).toBe(0);
    expect(lastJson(b.stdout)).toMatchObject({ event: 'summary', iters: 20 });
    // The cosine schedule was planned for 20 iterations, and the checkpoint fixes the model: usage errors.
    const longer = run('train', '--model', 'gpt', ...again, '--iters', '30', '--resume', ckpt);
    expect(longer.status).toBe(2);
    expect(longer.stderr).toMatch(/planned for 20 iterations/);
    expect(run('train', '--model', 'gpt', ...again, '--iters', '20', '--resume', ckpt, '--embd', '32').status).toBe(2);
  });

  test('sample: reproducible for a seed, the prompt first; bad input is a typed error', () => {
    const s1 = run('sample', '--checkpoint', ckpt, '--prompt', 'the ', '--tokens', '40', '--seed', '3', '--device', 'cpu');
    const s2 = run('sample', '--checkpoint', ckpt, '--prompt', 'the ', '--tokens', '40', '--seed', '3', '--device', 'cpu');
    expect(s1.status).toBe(0);
    expect(s1.stdout).toBe(s2.stdout);
    expect(s1.stdout.startsWith('the ')).toBe(true);
    expect([...s1.stdout.trimEnd()].length).toBe(44);
    const bad = run('sample', '--checkpoint', ckpt, '--prompt', 'Z', '--device', 'cpu');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/E_DATA/);
    expect(run('sample', '--checkpoint', path.join(dir, 'nope.mpk')).status).toBe(1);
  });

  test('train --model gpt: an empty or binary --text is E_DATA before any training', () => {
    const empty = path.join(dir, 'empty.txt'), bin = path.join(dir, 'bin.txt');
    fs.writeFileSync(empty, '');
    fs.writeFileSync(bin, Buffer.from([0x68, 0x00, 0xff, 0x10, 0x20]));
    for (const f of [empty, bin]) {
      const r = run('train', '--model', 'gpt', '--text', f, '--iters', '5');
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/E_DATA/);
    }
  });

  test('diagnose --model gpt --json: parameter and activation gradients, attention scores included', () => {
    const r = run('diagnose', '--model', 'gpt', '--layers', '1', '--heads', '2', '--embd', '16', '--block-size', '16', '--text', textFile, '--steps', '3', '--ablation-steps', '3', '--json', '--device', 'cpu');
    expect(r.status).toBe(0);
    const d = lastJson(r.stdout);
    const names = d.groups.map((g: { name: string }) => g.name);
    expect(names).toEqual(expect.arrayContaining(['transformer.wte.weight', 'h.0.attn.scores', 'h.0.attn.probs', 'logits', 'all gradients']));
    expect(d.modelName).toMatch(/^GPT/);
    expect(d.ablation.runs).toHaveLength(4);
    expect(d.underflowFraction).toBeGreaterThan(0);
  });
});

test('outputs are checked before training: a new --save folder is created; an unwritable --plot fails at once with E_IO', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-cli-out-'));
  const nested = path.join(dir, 'new', 'sub', 'x.mpk');
  const t0 = Date.now();
  const bad = run('train', '--epochs', '1', '--hidden', '8', '--batch-size', '1024', '--device', 'cpu', '--save', nested, '--plot', '/proc/mixprec-nope/x.svg');
  expect(bad.status).toBe(1);
  expect(bad.stderr).toMatch(/E_IO: cannot write \/proc\/mixprec-nope\/x.svg/);
  expect(bad.stdout).not.toMatch(/epoch 1/); // failed before any training
  expect(Date.now() - t0).toBeLessThan(60_000);
  const ok = run('train', '--epochs', '1', '--hidden', '8', '--batch-size', '1024', '--device', 'cpu', '--save', nested);
  expect(ok.status).toBe(0);
  expect(fs.statSync(nested).isFile()).toBe(true);
  fs.rmSync(dir, { recursive: true, force: true });
});
