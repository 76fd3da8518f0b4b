// The tape's overhead: per-op wall time of a small model (64 wide, batch 32, where the kernels are
// tiny) with gradient recording on and off, and of the backward replay. The difference between
// the recorded and the unrecorded forward, per op, is the cost of recording; the backward's time
// per recorded op is the cost of replaying (its small kernels included).
import { backends, Device } from '../backends';
import { noGrad, tidy } from '../autograd/scope';
import { crossEntropy, linear, relu } from '../ops';
import { Linear } from '../nn';
import { tensor } from '../tensor';
import { native } from '../native';
import { medianTime } from './timing';

export interface TapeRow {
  device: Device; width: number; batch: number; ops: number;
  forwardNoGradUs: number; forwardRecordedUs: number; backwardUs: number;
  recordUsPerOp: number; replayUsPerOp: number;
}

export async function benchTape(devices?: Device[], width = 64, batch = 32, layers = 4): Promise<TapeRow[]> {
  const rows: TapeRow[] = [];
  for (const device of backends().filter((b) => b.available && (!devices || devices.includes(b.name))).map((b) => b.name)) {
    const mods = Array.from({ length: layers }, () => new Linear(width, width));
    const x = tensor(Float32Array.from({ length: batch * width }, () => Math.random() - 0.5), [batch, width], { device });
    const y = Int32Array.from({ length: batch }, () => Math.floor(Math.random() * width));
    const forward = () => {
      let h = x;
      for (const m of mods) h = relu(linear(h, m.weight, m.bias));
      return crossEntropy(h, y);
    };
    const ops = 2 * layers + 1;
    const sync = () => native().synchronize(device);
    const fNo = await medianTime(async () => tidy(() => noGrad(forward)), sync, 0.3, 20);
    const fRec = await medianTime(async () => tidy(() => { forward(); }), sync, 0.3, 20);
    const full = await medianTime(async () => tidy(() => { forward().backward(); }), sync, 0.3, 20);
    const bwd = full - fRec;
    rows.push({
      device, width, batch, ops, forwardNoGradUs: fNo * 1e6, forwardRecordedUs: fRec * 1e6, backwardUs: bwd * 1e6,
      recordUsPerOp: ((fRec - fNo) / ops) * 1e6, replayUsPerOp: (bwd / ops) * 1e6,
    });
    x.dispose();
    mods.forEach((m) => m.dispose());
  }
  return rows;
}
