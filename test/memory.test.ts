// Memory ownership: dispose() frees at once; garbage collection frees what was never disposed;
// a missing addon is a typed error naming the command to run.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import * as mixprec from '../src';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

test('dispose() frees the storage at once; memoryStats() counts live bytes', () => {
  const before = mixprec.memoryStats().cpu;
  const t = mixprec.full([1000, 250], 1.5, { device: 'cpu' });
  expect(mixprec.memoryStats().cpu.bytes - before.bytes).toBe(1e6);
  t.dispose();
  expect(mixprec.memoryStats().cpu).toEqual(before);
});

test('tensors that are never disposed are freed when garbage-collected (the backstop)', async () => {
  const before = mixprec.memoryStats().cpu.allocations;
  (() => {
    for (let i = 0; i < 200; i++) mixprec.full([256], i, { device: 'cpu' });
  })();
  expect(mixprec.memoryStats().cpu.allocations - before).toBe(200);
  for (let i = 0; i < 10 && mixprec.memoryStats().cpu.allocations - before > 0; i++) {
    gc();
    await new Promise((r) => setImmediate(r)); // (finalizers run inside the GC now; kept for older Node)
  }
  expect(mixprec.memoryStats().cpu.allocations - before).toBeLessThan(20);
});

// The backstop must work where the event loop never turns: finalizers run inside the GC itself.
// 3,000 dropped 1 MiB inputs (3 GiB in all) must stay under a fixed bound, in a synchronous loop and
// in an `await trainer.step(...)` loop (which never yields). In a child process, so the bound is
// that of a fresh process and an OOM kill fails this test, not the runner.
for (const loop of ['sync', 'step'] as const) {
  test(`3,000 dropped [256, 1024] tensors in a${loop === 'sync' ? ' synchronous' : 'n await trainer.step()'} loop stay under 600 MB`, () => {
    const pkg = path.join(__dirname, '..', 'dist');
    if (!fs.existsSync(path.join(pkg, 'index.js'))) throw new Error('dist/ missing: run `npm install` (it compiles the TypeScript)');
    const script = `
      const mp = require(${JSON.stringify(pkg)});
      (async () => {
        let peak = 0;
        const sample = () => { peak = Math.max(peak, process.memoryUsage().rss); };
        const data = new Float32Array(256 * 1024).fill(0.5), y = new Int32Array(256);
        const trainer = ${loop === 'step' ? "new mp.Trainer(mp.sequential([mp.layers.linear(1024, 10)], { seed: 1 }), { precision: 'fp32', device: 'cpu' })" : 'null'};
        for (let i = 0; i < 3000; i++) {
          const x = mp.tensor(data, [256, 1024]); // never disposed
          if (trainer) await trainer.step(x, y);
          if (i % 50 === 0) sample();
        }
        sample();
        console.log(JSON.stringify({ peakMb: peak / 2 ** 20, live: mp.memoryStats().cpu }));
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, MIXPREC_NUM_THREADS: '1' } });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { peakMb: number; live: { bytes: number } };
    expect(out.peakMb).toBeLessThan(600);
    expect(out.live.bytes).toBeLessThan(400 * 2 ** 20); // what GC has not reached yet, not 3 GiB
  });
}

test('without a built addon, the first call is MixprecError E_NO_ADDON naming the commands to run', () => {
  const dist = path.join(__dirname, '..', 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) throw new Error('dist/ missing: run `npm install` (it compiles the TypeScript)');
  // A copy of the package with its compiled JS but no build/ folder.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-noaddon-'));
  fs.cpSync(dist, path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, '..', 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(__dirname, '..', 'node_modules'), path.join(dir, 'node_modules'));
  const script = `const m = require('./dist'); try { m.backends(); console.log('no error'); } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: dir, encoding: 'utf8', env: { ...process.env, MIXPREC_ADDON: '' } }); // no addon elsewhere either
  fs.rmSync(dir, { recursive: true, force: true });
  const out = JSON.parse(r.stdout.trim());
  expect(out).toMatchObject({ name: 'MixprecError', code: 'E_NO_ADDON' });
  expect(out.message).toContain('npm install-scripts approve mixprec');
  expect(out.message).toContain('npm rebuild mixprec');
});
