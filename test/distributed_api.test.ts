// mixprec.distributed's API: argument and state errors, rendezvous failures (no master, a port
// in use, a rank that never arrives) as E_DIST within the timeout, a world of one in this
// process, and collectives of every dtype between real processes over the file store.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as mixprec from '../src';
import { freePort } from '../src/util/ports';

const dist = mixprec.distributed;
const have = dist.available();
const compiled = fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'));
const maybe = have.gloo ? describe : describe.skip;
if (!have.gloo) test.skip(`distributed API tests skipped: Gloo unavailable: ${have.glooReason}`, () => undefined);

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(mixprec.MixprecError);
    return (e as mixprec.MixprecError).code;
  }
  return 'no error';
}

function errorOf(f: () => unknown): mixprec.MixprecError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(mixprec.MixprecError);
    return e as mixprec.MixprecError;
  }
  throw new Error('expected an error');
}

maybe('mixprec.distributed', () => {
  afterEach(() => dist.destroy());

  test('bad options are E_ARG, order mistakes E_STATE', async () => {
    const port = await freePort();
    expect(codeOf(() => dist.init({ rank: 2, worldSize: 2, masterPort: port }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ rank: -1, worldSize: 2, masterPort: port }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 0, masterPort: port }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1.5, masterPort: port }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ backend: 'mpi' as 'gloo', worldSize: 1, rank: 0, masterPort: port }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0, masterPort: 0 }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0, masterPort: 70000 }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0, masterPort: port, timeoutMs: 0 }))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0, masterPort: port, bogus: 1 } as never))).toBe('E_ARG');
    expect(codeOf(() => dist.init(null as never))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ get worldSize(): number { throw new Error('boom'); } }))).toBe('E_ARG');
    expect(codeOf(() => dist.init(new Proxy({}, { ownKeys() { throw new Error('boom'); } })))).toBe('E_ARG');
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0, masterPort: port, storeDir: '/nonexistent/folder' }))).toBe('E_DIST');
    // Before init: the collectives say so; rank / worldSize are those of a one-process job.
    expect(dist.isInitialized()).toBe(false);
    expect([dist.rank(), dist.worldSize()]).toEqual([0, 1]);
    expect(codeOf(() => dist.barrier())).toBe('E_STATE');
    expect(codeOf(() => dist.allReduce(mixprec.zeros([2])))).toBe('E_STATE');
    expect(codeOf(() => new mixprec.Trainer(mixprec.sequential([mixprec.layers.linear(2, 2)]), { distributed: true }))).toBe('E_STATE');
  });

  test('a world of one in this process: collectives are the identity; init twice is E_STATE', async () => {
    const g = dist.init({ worldSize: 1, rank: 0, masterPort: await freePort(), timeoutMs: 5000 });
    expect(g).toEqual({ rank: 0, worldSize: 1, backend: 'gloo', localRank: 0, device: 'cpu' });
    expect(codeOf(() => dist.init({ worldSize: 1, rank: 0 }))).toBe('E_STATE');
    const t = mixprec.tensor([1.5, -2, 3e-3], [3]);
    dist.allReduce(t, 'sum');
    expect(Array.from(await t.toFloat32())).toEqual(Array.from(Float32Array.of(1.5, -2, 3e-3)));
    dist.broadcast(t, 0);
    dist.barrier();
    expect(codeOf(() => dist.allReduce(t, 'prod' as 'sum'))).toBe('E_ARG');
    expect(codeOf(() => dist.broadcast(t, 1))).toBe('E_ARG');
    const m = mixprec.tensor([1, 2, 3, 4], [2, 2]);
    expect(codeOf(() => dist.allReduce(m.transpose(0, 1)))).toBe('E_ARG'); // not contiguous
    expect(codeOf(() => dist.allReduce([1, 2] as never))).toBe('E_ARG');
    t.dispose();
    expect(codeOf(() => dist.allReduce(t))).toBe('E_DISPOSED');
    dist.destroy();
    expect(dist.isInitialized()).toBe(false);
    dist.destroy(); // idempotent
  });

  test('no master at the address: E_DIST naming it, within the timeout', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const e = errorOf(() => dist.init({ worldSize: 2, rank: 1, masterPort: port, timeoutMs: 600 }));
    expect(e.code).toBe('E_DIST');
    expect(e.message).toMatch(new RegExp(`rank 1 could not reach the rendezvous store at 127\\.0\\.0\\.1:${port} \\(served by rank 0\\) within 600 ms`));
    expect(Date.now() - t0).toBeLessThan(10000); // the timeout plus one retry interval; generous for a loaded machine
    expect(dist.isInitialized()).toBe(false);
  });

  test('the master port already in use: E_DIST saying so', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, () => r()));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const e = errorOf(() => dist.init({ worldSize: 2, rank: 0, masterPort: port, timeoutMs: 600 }));
      expect(e.code).toBe('E_DIST');
      expect(e.message).toMatch(new RegExp(`port ${port}.*(in use|choose another MASTER_PORT)`));
    } finally {
      server.close();
    }
  });

  test('a rank that never arrives: rank 0 fails with E_DIST after the timeout', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const e = errorOf(() => dist.init({ worldSize: 2, rank: 0, masterPort: port, timeoutMs: 700 }));
    expect(e.code).toBe('E_DIST');
    expect(e.message).toMatch(/rank 1 did not join the job within 700 ms/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  (compiled ? test : test.skip)('3 processes over the file store: sum / avg / max / min of float32, float16, bfloat16 and int32; broadcast from rank 2', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-store-'));
    const pkg = path.join(__dirname, '..', 'dist');
    const script = `
      const mp = require(${JSON.stringify(pkg)});
      (async () => {
        const rank = Number(process.argv[1]);
        mp.distributed.init({ rank, worldSize: 3, storeDir: ${JSON.stringify(dir)}, timeoutMs: 20000 });
        const out = {};
        for (const dtype of ['float32', 'float16', 'bfloat16']) for (const op of ['sum', 'avg', 'max', 'min']) {
          const t = mp.tensor([rank + 1, -(rank + 1) * 0.5, 3 - rank], [3], { dtype });
          mp.distributed.allReduce(t, op);
          out[dtype + ':' + op] = Array.from(await t.toFloat32());
        }
        const i = mp.tensor(Int32Array.of(rank, 10 * rank), [2], { dtype: 'int32' });
        mp.distributed.allReduce(i, 'max');
        out.int32 = Array.from(await i.toInt32());
        const b = mp.tensor([rank, rank, rank], [3], { dtype: 'float16' });
        mp.distributed.broadcast(b, 2);
        out.broadcast = Array.from(await b.toFloat32());
        mp.distributed.barrier();
        mp.distributed.destroy();
        console.log(JSON.stringify(out));
      })().catch((e) => { console.error(e.code, e.message); process.exit(3); });`;
    const outs = await Promise.all([0, 1, 2].map((r) => new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, ['-e', script, String(r)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MIXPREC_NUM_THREADS: '1' } });
      let o = '', e = '';
      c.stdout.on('data', (d) => (o += d));
      c.stderr.on('data', (d) => (e += d));
      c.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`rank ${r} exited ${code}: ${e}`))));
    })));
    const results = outs.map((o) => JSON.parse(o.trim().split('\n').pop()!));
    // Hand-worked: ranks hold [1, -0.5, 3], [2, -1, 2], [3, -1.5, 1].
    const want: Record<string, number[]> = { sum: [6, -3, 6], avg: [2, -1, 2], max: [3, -0.5, 3], min: [1, -1.5, 1] };
    for (const r of results) {
      for (const dtype of ['float32', 'float16', 'bfloat16']) for (const op of ['sum', 'avg', 'max', 'min']) expect(r[`${dtype}:${op}`]).toEqual(want[op]);
      expect(r.int32).toEqual([2, 20]);
      expect(r.broadcast).toEqual([2, 2, 2]);
    }
  });
});
