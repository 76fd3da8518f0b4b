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
    await new Promise((r) => setImmediate(r)); // finalizers run after the GC, on the loop
  }
  expect(mixprec.memoryStats().cpu.allocations - before).toBeLessThan(20);
});

test('without a built addon, the first call is MixprecError E_NO_ADDON naming the commands to run', () => {
  const dist = path.join(__dirname, '..', 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) throw new Error('dist/ missing: run `npm install` (it compiles the TypeScript)');
  // A copy of the package with its compiled JS but no build/ folder.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-noaddon-'));
  fs.cpSync(dist, path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, '..', 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(__dirname, '..', 'node_modules'), path.join(dir, 'node_modules'));
  const script = `const m = require('./dist'); try { m.backends(); console.log('no error'); } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }`;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: dir, encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true, force: true });
  const out = JSON.parse(r.stdout.trim());
  expect(out).toMatchObject({ name: 'MixprecError', code: 'E_NO_ADDON' });
  expect(out.message).toContain('npm install-scripts approve mixprec');
  expect(out.message).toContain('npm rebuild mixprec');
});
