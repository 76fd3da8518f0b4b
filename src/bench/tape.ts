// The tape's overhead on a small model (64 wide, batch 32, where the kernels are tiny): wall time
// of the forward with recording off and on and of the backward replay, and the part of each spent
// outside the native calls (timed in a separate pass that wraps every native function), per op.
// That outside part is the cost of the op layer and the tape themselves: validation, tensor
// objects, recording, the reverse walk, gradient bookkeeping.
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
  /** Recorded forward minus unrecorded forward, per op (the cost of recording). */
  recordUsPerOp: number;
  /** Time outside native calls, per op: forward without the tape, forward with it, backward. */
  jsNoGradUsPerOp: number; jsRecordedUsPerOp: number; jsBackwardUsPerOp: number;
}

/** Runs fn with every native function timed; returns the microseconds spent inside them. */
function nativeMicros(fn: () => void): number {
  const nat = native() as unknown as Record<string, unknown>;
  const saved = new Map<string, (...a: unknown[]) => unknown>();
  let ns = 0n;
  for (const [k, f] of Object.entries(nat)) {
    if (typeof f !== 'function') continue;
    saved.set(k, f as (...a: unknown[]) => unknown);
    nat[k] = (...a: unknown[]) => {
      const t0 = process.hrtime.bigint();
      try { return (f as (...a: unknown[]) => unknown)(...a); } finally { ns += process.hrtime.bigint() - t0; }
    };
  }
  try { fn(); } finally { for (const [k, f] of saved) nat[k] = f; }
  return Number(ns) / 1e3;
}

/** Median over reps of (wall us, native us) of fn. */
function split(fn: () => void, reps: number): { wall: number; nat: number } {
  const walls: number[] = [], nats: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    const n = nativeMicros(fn);
    walls.push(Number(process.hrtime.bigint() - t0) / 1e3);
    nats.push(n);
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
  return { wall: med(walls), nat: med(nats) };
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
    // The same three runs again with the native calls timed: what is left is the op layer's own time.
    const no = split(() => tidy(() => noGrad(forward)), 200);
    const rec = split(() => tidy(() => { forward(); }), 200);
    const both = split(() => tidy(() => { forward().backward(); }), 200);
    rows.push({
      device, width, batch, ops, forwardNoGradUs: fNo * 1e6, forwardRecordedUs: fRec * 1e6, backwardUs: bwd * 1e6,
      recordUsPerOp: ((fRec - fNo) / ops) * 1e6,
      jsNoGradUsPerOp: (no.wall - no.nat) / ops, jsRecordedUsPerOp: (rec.wall - rec.nat) / ops,
      jsBackwardUsPerOp: ((both.wall - both.nat) - (rec.wall - rec.nat)) / ops,
    });
    x.dispose();
    mods.forEach((m) => m.dispose());
  }
  return rows;
}
