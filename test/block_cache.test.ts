// The caching allocator both backends use (native/core/block_cache.h), through a fake device:
// out of memory while the cache holds blocks empties it and retries; a free that fails part-way
// through emptying leaves no freed block cached (no double free); two host threads never get the
// same block. And the real thing from two worker_threads at once on the CPU backend.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { native } from '../src/native';

test('bookkeeping through a fake device', () => {
  const r = native().blockCacheSelfTest();
  expect(r.oomRetrySucceeded).toBe(true);
  expect(r.oomRetryFreedCached).toBe(true);
  expect(r.reuseSameSize).toBe(true);
  expect(r.failedFreeThrew).toBe(true);
  expect(r.doubleFrees).toBe(0);
  expect(r.cachedAfterEmpty).toBe(0);
  expect(r.threadsSharedABlock).toBe(0);
  expect(r.threadsLiveAfter).toBe(0);
});

test('two worker_threads allocate, fill, check and free tensors concurrently on the CPU backend', async () => {
  const addon = path.join(__dirname, '..', 'build', 'Release', 'mixprec.node');
  // Each worker fills its tensors with its own value and checks them before freeing: a block
  // handed to both workers at once would show the other's value.
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const n = require(workerData.addon);
    let bad = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = 4 * (64 + (i % 7) * 1000);
      const h = n.alloc('cpu', bytes);
      n.fill({ n: bytes / 4, value: workerData.id, out: h, outType: 0 });
      const v = n.download(h, 0, bytes / 4);
      if (v[0] !== workerData.id || v[v.length - 1] !== workerData.id) bad++;
      n.release(h);
    }
    parentPort.postMessage(bad);`;
  const run = (id: number) => new Promise<number>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { addon, id } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  const before = native().memoryStats().cpu;
  expect(await Promise.all([run(1), run(2)])).toEqual([0, 0]);
  // The workers released all they allocated (some 70 MB in all): no more live bytes than before. (Not
  // equal: the garbage collector may free this process's own undisposed tensors meanwhile.)
  expect(native().memoryStats().cpu.bytes).toBeLessThanOrEqual(before.bytes);
});
