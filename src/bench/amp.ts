// The fused AMP kernels as effective bandwidth (bytes each pass must move / time), as a ratio to a
// plain device copy of a buffer measured in the same run, and against the unfused sequence of
// separate passes (unscale to FP32 / norm over it / optimizer on FP32 grads / master -> FP16 cast).
import { backends, Device } from '../backends';
import { native } from '../native';
import { GradScaler } from '../amp/grad_scaler';
import { ParameterStore } from '../amp/store';
import { AmpStateBuffer } from '../amp/state';
import { adamw } from '../optim';
import { full } from '../tensor';
import { copyInto } from '../ops/kernels';
import { medianTime } from './timing';

export interface AmpRow {
  device: Device; params: number; kernel: string; ms: number; gbPerS: number; ratioToCopy: number; speedupVsUnfused?: number;
}

export async function benchAmp(devices?: Device[], paramsOverride?: number): Promise<AmpRow[]> {
  const rows: AmpRow[] = [];
  for (const device of backends().filter((b) => b.available && (!devices || devices.includes(b.name))).map((b) => b.name)) {
    // >= 64 MB of FP32 masters on the CPU, >= 1 GB on a GPU
    const n = paramsOverride ?? (device === 'cuda' ? 2 ** 28 : 2 ** 24);
    const nat = native();
    const sync = () => nat.synchronize(device);
    const store = new ParameterStore([{ name: 'p', shape: [n] }], { precision: 'fp16', device });
    store.loadGradients([{ name: 'p', data: new Float32Array(n).map(() => Math.random() - 0.5) }]);
    const scaler = new GradScaler({ initScale: 1024, growthInterval: 1 << 30 });
    const opt = adamw();
    const src = full([n], 1, { device }), dst = full([n], 0, { device });
    const copyT = await medianTime(async () => copyInto(dst, src), sync);
    const copyGbs = (2 * 4 * n) / copyT / 1e9;
    rows.push({ device, params: n, kernel: 'copy fp32 (read + write)', ms: copyT * 1e3, gbPerS: copyGbs, ratioToCopy: 1 });

    const state = store.ampState.handle();
    const cfg = scaler.nativeConfig(), ocfg = opt.nativeConfig(1);
    const { m, v } = opt.buffers(store.length, device);
    const stateBytes = new AmpStateBuffer();
    stateBytes.set('scale', 1024);
    nat.writeBytes(state, stateBytes.bytes);
    const unscaleT = await medianTime(async () => nat.unscaleCheckNorm({ n, g: store.grads.handle(), gType: 1, state }), sync);
    rows.push({ device, params: n, kernel: 'fused unscale+check+norm (fp16 grads)', ms: unscaleT * 1e3, gbPerS: (2 * n) / unscaleT / 1e9, ratioToCopy: (2 * n) / unscaleT / 1e9 / copyGbs });
    nat.ampFinalize({ state, scaler: cfg, optim: ocfg, updateScale: false });
    const stepArgs = {
      n: store.length, master: store.master.handle(), working: store.working!.handle(), workingType: 1 as const,
      grad: store.grads.handle(), gradType: 1 as const, m: m!.handle(), v: v!.handle(), state, config: ocfg,
    };
    const adamT = await medianTime(async () => nat.optimizerStep(stepArgs), sync);
    const adamBytes = 28 * n; // read master 4, grad 2, m 4, v 4; write master 4, m 4, v 4, working 2
    rows.push({ device, params: n, kernel: 'fused AdamW (+fp16 copy)', ms: adamT * 1e3, gbPerS: adamBytes / adamT / 1e9, ratioToCopy: adamBytes / adamT / 1e9 / copyGbs });

    // The unfused sequence: 4 passes, the FP32 unscaled gradient materialised in between.
    const g32 = full([n], 0, { device });
    const unfused = () => {
      nat.unscaleCheckNorm({ n, g: store.grads.handle(), gType: 1, state, out32: g32.handle() });
      nat.unscaleCheckNorm({ n, g: g32.handle(), gType: 0, state });
      nat.optimizerStep({ ...stepArgs, working: undefined, grad: g32.handle(), gradType: 0 });
      store.refreshWorking();
    };
    const unfusedT = await medianTime(async () => unfused(), sync);
    const fusedT = unscaleT + adamT;
    rows.push({ device, params: n, kernel: 'unfused sequence (4 passes)', ms: unfusedT * 1e3, gbPerS: NaN, ratioToCopy: NaN });
    rows.push({ device, params: n, kernel: 'fused step (2 passes)', ms: fusedT * 1e3, gbPerS: NaN, ratioToCopy: NaN, speedupVsUnfused: unfusedT / fusedT });
    [store, src, dst, g32].forEach((t) => t.dispose());
    opt.dispose();
  }
  return rows;
}
