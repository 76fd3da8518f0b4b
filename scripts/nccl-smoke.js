// The NCCL path on one GPU (scripts/gpu-check.sh): a world of one rank — NCCL refuses two ranks
// on one device — so it checks loading libnccl, communicator set-up through the store, the
// collectives on CUDA tensors and a data-parallel Trainer step on the device; not the
// cross-rank arithmetic, which the Gloo tests cover. Prints one JSON line.
'use strict';
const path = require('node:path');
const mp = require(path.join(__dirname, '..', 'dist'));

(async () => {
  const out = { available: mp.distributed.available() };
  const g = mp.distributed.init({ backend: 'nccl', worldSize: 1, rank: 0, masterPort: 29517, timeoutMs: 30000 });
  out.group = g;
  const t = mp.tensor([1.5, -2, 3], [3], { device: 'cuda' });
  mp.distributed.allReduce(t, 'sum');
  mp.distributed.allReduce(t, 'avg');
  out.f32 = Array.from(await t.toFloat32());
  const h = mp.tensor([0.5, 2], [2], { dtype: 'float16', device: 'cuda' });
  mp.distributed.allReduce(h, 'max');
  out.f16 = Array.from(await h.toFloat32());
  mp.distributed.broadcast(t, 0);
  mp.distributed.barrier();
  const model = mp.sequential([mp.layers.linear(16, 32, { activation: 'relu' }), mp.layers.linear(32, 4)], { seed: 1 });
  const trainer = new mp.Trainer(model, { precision: 'fp16', distributed: { bucketBytes: 512 } });
  const x = mp.tensor(Float32Array.from({ length: 8 * 16 }, (_, i) => Math.sin(i)), [8, 16], { dtype: 'float16', device: 'cuda' });
  const y = Int32Array.from({ length: 8 }, (_, i) => i % 4);
  out.steps = [];
  for (let i = 0; i < 3; i++) out.steps.push(await trainer.step(x, y));
  out.buckets = trainer.reducer.buckets.length;
  mp.distributed.destroy();
  out.ok = out.f32.join() === '1.5,-2,3' && out.f16.join() === '0.5,2' && out.steps.every((s) => Number.isFinite(s.loss));
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
})().catch((e) => { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })); process.exit(1); });
