// Data-parallel training over Gloo on loopback: 1-3 real processes per job, started by
// `mixprec launch`'s launch(); each rank (test/helpers/dist_worker.js) reports what it saw.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import * as mixprec from '../src';
import { launch } from '../src/distributed/launch';
import { freePort } from '../src/util/ports';

const WORKER = path.join(__dirname, 'helpers', 'dist_worker.js');
const have = mixprec.distributed.available();
const compiled = fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'));
const skipWhy = !have.gloo ? `Gloo unavailable: ${have.glooReason}` : !compiled ? 'dist/ is not built (npm install builds it)' : '';
const maybe = skipWhy ? describe.skip : describe;
if (skipWhy) test.skip(`distributed tests skipped: ${skipWhy}`, () => undefined);

interface RankRecord {
  rank: number; worldSize: number; buckets?: number; overlapped?: number; initial?: string; final?: string; scale?: number;
  steps: { loss: number; skipped: boolean; scale: number; gradNorm: number }[];
  eval?: { loss: number; accuracy: number }; error?: { code: string; message: string };
  counters?: { skippedSteps: number; backoffs: number }; loadedIteration?: number; iteration?: number; loaded?: string;
  history?: { steps: number }[];
}

/** The ranks started by hand with torchrun's variables, not by launch() (which stops the others when one fails). */
async function spawnRanks(ranks: number, port: number, timeoutMs: number, args: string[], onText: (s: string) => void): Promise<number> {
  const codes = await Promise.all(Array.from({ length: ranks }, (_, r) => new Promise<number>((resolve) => {
    const env = { ...process.env, RANK: String(r), WORLD_SIZE: String(ranks), LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), MIXPREC_DIST_TIMEOUT_MS: String(timeoutMs), MIXPREC_NUM_THREADS: '1' };
    const c = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout.on('data', (d) => onText(String(d)));
    c.stderr.on('data', (d) => onText(String(d)));
    c.on('exit', (code, signal) => resolve(code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0)));
  })));
  return codes.find((c) => c !== 0) ?? 0;
}

/** Runs a job of `ranks` workers; returns the exit status, each rank's record, the output and the wall time. */
async function job(ranks: number, cfg: Record<string, unknown>, opts: { timeoutMs?: number; dir?: string; direct?: boolean } = {}) {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-dist-'));
  const out = new PassThrough(), err = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  err.on('data', (d) => (text += d));
  const t0 = Date.now();
  const port = await freePort(), timeoutMs = opts.timeoutMs ?? 20000, args = [WORKER, JSON.stringify({ dir, ...cfg })];
  const status = opts.direct
    ? await spawnRanks(ranks, port, timeoutMs, args, (s) => (text += s))
    : await launch(
      { nprocPerNode: ranks, masterPort: port, timeoutMs, graceMs: 2000, stdout: out, stderr: err, forwardSignals: false,
        env: { ...process.env, MIXPREC_NUM_THREADS: '1' } },
      [process.execPath, ...args],
    );
  const seconds = (Date.now() - t0) / 1000;
  const records: RankRecord[] = [];
  for (let r = 0; r < ranks; r++) {
    const f = path.join(dir, `rank${r}.json`);
    if (fs.existsSync(f)) records[r] = JSON.parse(fs.readFileSync(f, 'utf8'));
    if (records[r]?.error) text += `rank ${r}: ${records[r].error!.code} ${records[r].error!.message}\n`;
  }
  return { status, records, text, seconds, dir };
}

const f32 = (b64: string) => { const b = Buffer.from(b64, 'base64'); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };

maybe('data-parallel Trainer on Gloo (loopback processes)', () => {
  for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
    test(`${precision}: 3 ranks end bitwise identical, from rank 0's initial parameters, with several overlapped buckets`, async () => {
      const { status, records, text } = await job(3, { scenario: 'train', precision, n: 300, features: 12, classes: 5, batchSize: 16, epochs: 2 });
      expect({ status, text: status ? text : '' }).toEqual({ status: 0, text: '' });
      const [r0, r1, r2] = records;
      expect(r0.buckets).toBeGreaterThan(2); // 256-byte buckets: the reduction was split
      expect(r0.overlapped).toBe(r0.buckets); // every bucket went out from the backward's hook, none waited for its end
      // Each rank built its model with another seed; the broadcast made rank 0's the start everywhere.
      expect(r1.initial).toBe(r0.initial);
      expect(r2.initial).toBe(r0.initial);
      expect(r1.final).toBe(r0.final);
      expect(r2.final).toBe(r0.final);
      expect(r0.final).not.toBe(r0.initial);
      // Steps, losses (averaged over ranks), scales and norms agree on every rank.
      expect(r1.steps).toEqual(r0.steps);
      expect(r2.steps).toEqual(r0.steps);
      expect(r0.steps).toHaveLength(2 * Math.ceil(Math.ceil(300 / 3) / 16));
      expect(r0.steps[r0.steps.length - 1].loss).toBeLessThan(r0.steps[0].loss);
      expect(r1.eval).toEqual(r0.eval);
      expect(r0.eval!.accuracy).toBeGreaterThan(0.5);
    });
  }

  test('gradient accumulation: 2 ranks x 2 micro-batches stay bitwise identical', async () => {
    const { status, records, text } = await job(2, { scenario: 'train', precision: 'fp16', n: 120, features: 12, classes: 5, batchSize: 20, gradAccumulation: 2 });
    expect({ status, text: status ? text : '' }).toEqual({ status: 0, text: '' });
    expect(records[1].final).toBe(records[0].final);
    expect(records[1].steps).toEqual(records[0].steps);
  });

  // 2 ranks x batch B against 1 rank x batch 2B, one SGD step (lr 1) of a linear layer with MSE:
  // both gradients are compared with the float64 gradient, each within the FP32 bound
  //   |g^ - g| <= (2 / (B'C)) sum_i ( |dr_ic| |x_if| + (B' + 2) u |r_ic x_if| ),  u = 2^-24, B' = 2B,
  // dr_ic <= (F + 2) u (sum_f |W_cf x_if| + |b_c| + |y_ic|) the forward's error in the residual,
  // plus u |W| for the rounding of W - g; then they agree with each other within twice that.
  test('2 ranks x batch B equal 1 rank x batch 2B within the FP32 summation bound', async () => {
    const F = 12, C = 3, B = 16, n = 2 * B;
    const cfg = { scenario: 'train', linear: true, precision: 'fp32', loss: 'mse', n, features: F, classes: C, optimizer: { type: 'sgd', lr: 1 } };
    // mse needs float targets: the worker's dataset has labels, so the scenario uses the one-hot rows below.
    const two = await job(2, { ...cfg, batchSize: B });
    const one = await job(1, { ...cfg, batchSize: 2 * B });
    expect({ status: two.status, text: two.status ? two.text : '' }).toEqual({ status: 0, text: '' });
    expect({ status: one.status, text: one.status ? one.text : '' }).toEqual({ status: 0, text: '' });
    // The same start (rank 0's model, seed 5) and the same 2B rows in the one step.
    expect(two.records[0].initial).toBe(one.records[0].initial);
    const w0 = f32(one.records[0].initial!), g1 = f32(one.records[0].final!), g2 = f32(two.records[0].final!);
    expect(two.records[0].steps).toHaveLength(1);
    // The float64 reference: rows and targets as the worker made them (Rng(11), one-hot labels).
    const { x, y } = referenceRows(n, F, C);
    const W = Array.from(w0.subarray(0, C * F)), bOff = Math.ceil((C * F) / 8) * 8, bias = Array.from(w0.subarray(bOff, bOff + C));
    const u = 2 ** -24;
    const refW = new Float64Array(C * F), bound = new Float64Array(C * F);
    for (let i = 0; i < n; i++)
      for (let c = 0; c < C; c++) {
        let out = bias[c], mag = Math.abs(bias[c]) + Math.abs(y[i * C + c]);
        for (let f = 0; f < F; f++) { out += W[c * F + f] * x[i * F + f]; mag += Math.abs(W[c * F + f] * x[i * F + f]); }
        const r = out - y[i * C + c], dr = (F + 2) * u * mag;
        for (let f = 0; f < F; f++) {
          refW[c * F + f] += (2 / (n * C)) * r * x[i * F + f];
          bound[c * F + f] += (2 / (n * C)) * (dr * Math.abs(x[i * F + f]) + (n + 2) * u * Math.abs(r * x[i * F + f]));
        }
      }
    let worst1 = 0, worst2 = 0, worst12 = 0;
    for (let j = 0; j < C * F; j++) {
      const tol = bound[j] + u * Math.abs(W[j]) * 2;
      worst1 = Math.max(worst1, Math.abs(W[j] - g1[j] - refW[j]) / tol);
      worst2 = Math.max(worst2, Math.abs(W[j] - g2[j] - refW[j]) / tol);
      worst12 = Math.max(worst12, Math.abs(g1[j] - g2[j]) / (2 * tol));
    }
    expect(worst1).toBeLessThanOrEqual(1);
    expect(worst2).toBeLessThanOrEqual(1);
    expect(worst12).toBeLessThanOrEqual(1);
    // And the bound is tight enough to matter: an FP16-accumulated gradient (u = 2^-11) would break it.
    expect(Math.max(...bound)).toBeLessThan(1e-4 * Math.max(...Array.from(refW, Math.abs)));
  });

  test('an inf in one rank\'s gradient: every rank skips that step and backs off the same', async () => {
    const { status, records, text } = await job(2, { scenario: 'inf', failAt: 3 });
    expect({ status, text: status ? text : '' }).toEqual({ status: 0, text: '' });
    const [r0, r1] = records;
    expect(r0.steps.map((s) => s.skipped)).toEqual([false, false, false, true, false, false]);
    expect(r1.steps).toEqual(r0.steps);
    expect(r0.steps[3].scale).toBe(r0.steps[2].scale / 2);
    expect(r0.counters).toEqual(r1.counters);
    expect(r0.counters!.backoffs).toBe(1);
    expect(r1.final).toBe(r0.final);
  });

  const dying = { scenario: 'die', precision: 'fp32', n: 600, features: 12, classes: 5, batchSize: 8, failAt: 3, failRank: 1 };
  test('a rank killed mid-run: the others exit with E_DIST naming it, well within the timeout', async () => {
    const { status, records, seconds } = await job(3, dying, { timeoutMs: 15000, direct: true });
    expect(status).not.toBe(0);
    expect(seconds).toBeLessThan(15);
    expect(records[1]).toBeUndefined(); // SIGKILLed
    for (const r of [records[0], records[2]]) {
      expect(r.error?.code).toBe('E_DIST');
      expect(r.error?.message).toMatch(/rank 1 has exited/);
    }
  });

  test('rank 0 (which serves the store) killed mid-run: the others exit with E_DIST saying so', async () => {
    const { status, records, seconds } = await job(2, { ...dying, failRank: 0 }, { timeoutMs: 15000, direct: true });
    expect(status).not.toBe(0);
    expect(seconds).toBeLessThan(15);
    expect(records[1].error?.code).toBe('E_DIST');
    expect(records[1].error?.message).toMatch(/rank 0 has exited/);
  });

  test('a rank killed mid-run under mixprec launch: launch stops the others and exits with the dead rank\'s status', async () => {
    const { status, text, seconds } = await job(3, dying, { timeoutMs: 15000 });
    expect(status).toBe(128 + os.constants.signals.SIGKILL);
    expect(text).toMatch(/rank 1 was killed by SIGKILL/);
    expect(seconds).toBeLessThan(15);
  });

  test('a rank that stops answering: the others exit with E_DIST naming it after the timeout', async () => {
    const { status, records, seconds } = await job(2, { scenario: 'hang', precision: 'fp32', n: 600, features: 12, classes: 5, batchSize: 8, failAt: 3, failRank: 1 }, { timeoutMs: 3000 });
    expect(status).not.toBe(0);
    expect(seconds).toBeLessThan(20);
    expect(records[0].error?.code).toBe('E_DIST');
    expect(records[0].error?.message).toMatch(/rank 1 did not reach it within 3000 ms/);
  });

  test('save with 2 ranks (rank 0 writes), resume with 1 and with 3', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-dist-'));
    const base = { precision: 'fp16', n: 96, features: 12, classes: 5, batchSize: 8 };
    const saved = await job(2, { scenario: 'train', ...base, save: true }, { dir });
    expect({ status: saved.status, text: saved.status ? saved.text : '' }).toEqual({ status: 0, text: '' });
    expect(fs.readdirSync(dir).filter((f) => f.startsWith('ckpt'))).toEqual(['ckpt.mpk']); // one file, no temp left
    const savedSteps = saved.records[0].steps.length;
    for (const ranks of [1, 3]) {
      for (let r = 0; r < 3; r++) fs.rmSync(path.join(dir, `rank${r}.json`), { force: true });
      const resumed = await job(ranks, { scenario: 'resume', ...base }, { dir });
      expect({ status: resumed.status, text: resumed.status ? resumed.text : '' }).toEqual({ status: 0, text: '' });
      const r0 = resumed.records[0];
      expect(r0.loadedIteration).toBe(savedSteps);
      expect(r0.loaded).toBe(saved.records[0].final);
      expect(r0.history![0].steps).toBe(Math.ceil(Math.ceil(96 / ranks) / 8));
      expect(r0.iteration).toBe(savedSteps + r0.history![0].steps);
      for (const r of resumed.records.slice(1)) expect(r.final).toBe(r0.final);
    }
  });
});

describe('mixprec train under mixprec launch', () => {
  const cli = path.join(__dirname, '..', 'dist', 'cli.js');
  const run = async (args: string[]) => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const status = await launch({ nprocPerNode: 2, masterPort: await freePort(), timeoutMs: 30000, stdout: out, stderr: out, forwardSignals: false, env: { ...process.env, MIXPREC_NUM_THREADS: '1' } },
      [process.execPath, cli, 'train', '--json', ...args]);
    const lines = text.trim().split('\n');
    return { status, text, lines, json: lines.filter((l) => /^\[rank \d\] \{/.test(l)).map((l) => ({ rank: Number(l[6]), ...JSON.parse(l.slice(l.indexOf('{'))) })) };
  };
  (skipWhy ? test.skip : test)('MNIST: two ranks train one job; rank 0 alone reports, and saves', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-dist-cli-'));
    const r = await run(['--epochs', '1', '--hidden', '32', '--batch-size', '256', '--save', path.join(dir, 'm.mpk')]);
    expect({ status: r.status, text: r.status ? r.text : '' }).toEqual({ status: 0, text: '' });
    expect(r.json.every((o) => o.rank === 0)).toBe(true);
    const summary = r.json.find((o) => o.event === 'summary');
    expect(summary.steps).toBe(Math.ceil(60000 / 2 / 256)); // each rank a half of every epoch
    expect(summary.testAccuracy).toBeGreaterThan(0.85);
    expect(fs.readdirSync(dir)).toEqual(['m.mpk']);
  });
  (skipWhy ? test.skip : test)('GPT: two ranks, sharded validation; rank 0 alone reports', async () => {
    const r = await run(['--model', 'gpt', '--iters', '4', '--layers', '1', '--heads', '2', '--embd', '16', '--block-size', '8', '--eval-interval', '2', '--eval-iters', '4']);
    expect({ status: r.status, text: r.status ? r.text : '' }).toEqual({ status: 0, text: '' });
    expect(r.json.every((o) => o.rank === 0)).toBe(true);
    expect(r.json.filter((o) => o.event === 'eval')).toHaveLength(2);
    const summary = r.json.find((o) => o.event === 'summary');
    expect(summary.iters).toBe(4);
    expect(summary.finalValLoss).toBeLessThan(Math.log(98) + 0.5);
  });
});

/** The worker's rows (Rng(11)) with one-hot targets: what its mse scenario trains on. */
function referenceRows(n: number, F: number, C: number): { x: Float64Array; y: Float64Array } {
  const rng = new mixprec.Rng(11);
  const x = new Float64Array(n * F), y = new Float64Array(n * C);
  const w = Array.from({ length: F * C }, () => rng.uniform(-1, 1));
  for (let i = 0; i < n; i++) {
    let best = -Infinity, label = 0;
    for (let f = 0; f < F; f++) x[i * F + f] = Math.fround(rng.uniform(-1, 1));
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let f = 0; f < F; f++) s += w[c * F + f] * x[i * F + f];
      if (s > best) { best = s; label = c; }
    }
    y[i * C + label] = 1;
  }
  return { x, y };
}
