// The per-step AmpState (native/shared/amp.h), as a host-side byte buffer: uploaded before a
// fused step, read back after it (the one read-back a step makes). Field order and types mirror
// the C++ struct exactly; the addon's static_assert and ampStateBytes guard the size.
import { native } from '../native';

const FIELDS = [
  ['scale', 'f32'], ['sumsq', 'f32'], ['foundInf', 'i32'], ['growthTracker', 'i32'],
  ['hysteresisLeft', 'i32'], ['optimizerStep', 'i32'], ['gradNorm', 'f32'], ['clipCoef', 'f32'],
  ['invScale', 'f32'], ['stepSize', 'f32'], ['biasCorrection2Sqrt', 'f32'], ['skipped', 'i32'],
  ['steps', 'i32'], ['skippedSteps', 'i32'], ['backoffs', 'i32'], ['growths', 'i32'], ['minScaleHits', 'i32'],
] as const;

export type AmpField = (typeof FIELDS)[number][0];
export const AMP_STATE_BYTES = FIELDS.length * 4;

/** A typed view over one AmpState's bytes. */
export class AmpStateBuffer {
  readonly bytes = new Uint8Array(AMP_STATE_BYTES);
  readonly #view = new DataView(this.bytes.buffer);

  constructor() {
    const expected = native().ampStateBytes;
    if (expected !== AMP_STATE_BYTES) throw new Error(`AmpState layout mismatch: native ${expected} bytes, TS ${AMP_STATE_BYTES}`);
  }

  get(field: AmpField): number {
    const i = FIELDS.findIndex((f) => f[0] === field);
    return FIELDS[i][1] === 'f32' ? this.#view.getFloat32(i * 4, true) : this.#view.getInt32(i * 4, true);
  }

  set(field: AmpField, value: number): void {
    const i = FIELDS.findIndex((f) => f[0] === field);
    if (FIELDS[i][1] === 'f32') this.#view.setFloat32(i * 4, value, true);
    else this.#view.setInt32(i * 4, value, true);
  }
}
