// GradScaler: PyTorch's dynamic loss scaling (same defaults, same update rule, same misuse
// errors), plus Megatron's hysteresis / min / max, static scaling and a pass-through mode. The
// rule itself is native (native/shared/amp.h scaler_update): the same function runs in a fused
// step on the device and here on the host in update().
import type { NativeScalerConfig } from '../../binding';
import { dtypeCode } from '../dtype';
import { MixprecError } from '../errors';
import { native } from '../native';
import { decayRuns, Optimizer } from '../optim';
import { AmpStateBuffer } from './state';
import type { ParameterStore } from './store';
import type { Tensor } from '../tensor';
import { isInstance, readOptions } from '../util/options';
import { show } from '../util/show';

export interface GradScalerOptions {
  /** false: a pass-through scaler (scale 1, never skips): plain fp32 training. Default true. */
  enabled?: boolean;
  /** false: static scaling (the scale never changes; overflow steps are still skipped). Default true. */
  dynamic?: boolean;
  initScale?: number;      // 2^16
  growthFactor?: number;   // 2
  backoffFactor?: number;  // 0.5
  growthInterval?: number; // 2000
  hysteresis?: number;     // 1 (PyTorch's behaviour): overflows tolerated before a backoff
  minScale?: number;       // 0: none (the rule's own floor, 2^-126, still holds). Reaching it is counted in minScaleHits, never an error.
  maxScale?: number;       // Infinity: none
}

export interface GradScalerStateDict {
  version: 1;
  options: Required<GradScalerOptions>;
  scale: number;
  growthTracker: number;
  hysteresisLeft: number;
  counters: ScalerCounters;
}

export interface ScalerCounters { steps: number; skippedSteps: number; backoffs: number; growths: number; minScaleHits: number }

export interface StepResult {
  /** @internal With step(..., { readExtra }): the bytes after the AmpState, read in the same transfer. */
  extra?: Uint8Array;
  /** The update was skipped because a gradient was inf/NaN. */
  skipped: boolean;
  /** Global L2 norm of the unscaled gradients (before clipping); Infinity when skipped. */
  gradNorm: number;
  /** The loss scale for the next backward pass. */
  scale: number;
}

const DEFAULTS: Required<GradScalerOptions> = {
  enabled: true, dynamic: true, initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5,
  growthInterval: 2000, hysteresis: 1, minScale: 0, maxScale: Infinity,
};

/** A plain copy of an options object (each own key read once; undefined values kept out), as src/util/options.ts reads every option. */
const snapshot = (o: object, what: string, code: 'E_ARG' | 'E_STATE') => readOptions<Record<string, unknown>>(o, what, null, 'reject', code) as Record<string, unknown>;

function checkOptions(options: GradScalerOptions, code: 'E_ARG' | 'E_STATE' = 'E_ARG'): Required<GradScalerOptions> {
  if (typeof options !== 'object' || options === null) throw new MixprecError(code, 'GradScaler options must be an object');
  const o = snapshot(options, 'GradScaler options', code);
  for (const k of Object.keys(o)) if (!Object.prototype.hasOwnProperty.call(DEFAULTS, k)) throw new MixprecError(code, `unknown GradScaler option '${k}'`);
  const r = { ...DEFAULTS, ...o } as Required<GradScalerOptions>;
  const bad = (msg: string) => new MixprecError(code, `GradScaler: ${msg}`);
  if (typeof r.enabled !== 'boolean' || typeof r.dynamic !== 'boolean') throw bad('enabled and dynamic must be booleans');
  const isNum = (x: unknown) => typeof x === 'number' && !Number.isNaN(x);
  // Checked as the float32 the state stores: 1e-46 is 0 there, 1e39 is inf.
  if (!isNum(r.initScale) || !(Math.fround(r.initScale) >= MIN_LOSS_SCALE) || !Number.isFinite(Math.fround(r.initScale)))
    throw bad(`initScale must be a finite float32 >= 2^-126 (got ${show(r.initScale)})`);
  if (!isNum(r.growthFactor) || !(r.growthFactor > 1) || !Number.isFinite(r.growthFactor)) throw bad('growthFactor must be > 1');
  if (!isNum(r.backoffFactor) || !(r.backoffFactor > 0 && r.backoffFactor < 1)) throw bad('backoffFactor must be in (0, 1)');
  if (!Number.isSafeInteger(r.growthInterval) || r.growthInterval <= 0 || r.growthInterval > 2 ** 31 - 1) throw bad('growthInterval must be a positive integer');
  if (!Number.isSafeInteger(r.hysteresis) || r.hysteresis < 1 || r.hysteresis > 2 ** 31 - 1) throw bad('hysteresis must be an integer >= 1');
  if (!isNum(r.minScale) || r.minScale < 0 || !Number.isFinite(r.minScale)) throw bad('minScale must be a finite number >= 0');
  if (!isNum(r.maxScale) || !(r.maxScale > 0)) throw bad('maxScale must be > 0 (Infinity: none)');
  if (r.minScale > r.maxScale) throw bad('minScale must not exceed maxScale');
  if (r.dynamic && (Math.fround(r.initScale) < r.minScale || Math.fround(r.initScale) > r.maxScale))
    throw bad(`initScale ${r.initScale} must lie in [minScale ${r.minScale}, maxScale ${r.maxScale}]`);
  return r;
}

/** The smallest scale the update rule produces (native/shared/amp.h kMinLossScale, 2^-126): its reciprocal is finite in FP32. */
export const MIN_LOSS_SCALE = 2 ** -126;

type Stage = 'unscaled' | 'stepped';

function describeStore(store: ParameterStore): string {
  return `a store of ${store.length} parameters on ${store.device}`;
}

export class GradScaler {
  #options: Required<GradScalerOptions>;
  #state = new AmpStateBuffer();
  /**
   * Per optimizer since the last update(): the store it was unscaled / stepped with, and how far
   * it got. PyTorch's misuse checks are per optimizer; here they are per (store, optimizer), since
   * a store is the unit of gradients (and of AmpState): an optimizer meets one store, and a store
   * one optimizer, between update()s.
   */
  #stages = new Map<Optimizer, { store: ParameterStore; stage: Stage }>();
  /** OR of found_inf over the steps since the last update(); null when none was recorded. */
  #pendingInf: boolean | null = null;

  constructor(options: GradScalerOptions = {}) {
    this.#options = checkOptions(options);
    this.#state.set('scale', this.#options.initScale);
    this.#state.set('hysteresisLeft', this.#options.hysteresis);
  }

  /** A static scaler: `GradScaler.static(1024)`. */
  static static(scale: number): GradScaler {
    return new GradScaler({ dynamic: false, initScale: scale });
  }

  /** A GradScaler, GradScaler options, or a plain number (static scale). */
  static from(x: GradScaler | GradScalerOptions | number): GradScaler {
    if (isInstance(x, GradScaler, 'GradScaler options')) return x;
    if (typeof x === 'number') return GradScaler.static(x);
    return new GradScaler(x as GradScalerOptions);
  }

  get enabled(): boolean { return this.#options.enabled; }
  get dynamic(): boolean { return this.#options.dynamic; }
  get options(): Readonly<Required<GradScalerOptions>> { return { ...this.#options }; }
  /** The current loss scale (1 when disabled): multiply the loss (or its gradient) by it. */
  get scale(): number { return this.#options.enabled ? this.#state.get('scale') : 1; }
  get growthTracker(): number { return this.#state.get('growthTracker'); }
  get hysteresisLeft(): number { return this.#state.get('hysteresisLeft'); }
  get counters(): ScalerCounters {
    const s = this.#state;
    return { steps: s.get('steps'), skippedSteps: s.get('skippedSteps'), backoffs: s.get('backoffs'), growths: s.get('growths'), minScaleHits: s.get('minScaleHits') };
  }

  /** @internal */
  nativeConfig(): NativeScalerConfig {
    const o = this.#options;
    return { growthFactor: o.growthFactor, backoffFactor: o.backoffFactor, minScale: o.minScale, maxScale: o.maxScale, growthInterval: o.growthInterval, hysteresis: o.hysteresis, dynamic: o.dynamic, enabled: o.enabled };
  }

  /**
   * The fused pass over the store's gradients: writes g / scale as FP32 (store.unscaledGradients()),
   * checks inf/NaN and sums squares for the norm. Returns whether an inf/NaN was found.
   * Like PyTorch, at most once per optimizer between update()s; and (E_STATE) never for a store
   * that another optimizer has unscaled or stepped, nor with an optimizer that has unscaled or
   * stepped another store, since the last update(), nor with an optimizer whose moments were made
   * for a store of another size.
   */
  unscale(store: ParameterStore, optimizer: Optimizer): boolean {
    const stage = this.#stageOf(store, optimizer, 'unscale');
    if (stage === 'unscaled') throw new MixprecError('E_STATE', 'unscale() has already been called on this optimizer since the last update()');
    if (stage === 'stepped') throw new MixprecError('E_STATE', 'unscale() is being called after step()');
    GradScaler.#moments(store, optimizer, 'unscale');
    this.#beginStep(store, optimizer, true);
    this.#stages.set(optimizer, { store, stage: 'unscaled' });
    const back = new Uint8Array(native().readBytes(store.ampState.handle(), this.#state.bytes.length));
    return new DataView(back.buffer).getInt32(8, true) !== 0; // AmpState.foundInf
  }

  /**
   * Unscale (unless unscale() already ran), clip to maxNorm, and apply the fused optimizer unless
   * a gradient overflowed (then masters, moments, step count and working copy stay unchanged).
   * With `update: true` the scale update runs in the same place (what amp.step does).
   * After unscale(), step() takes the same store and optimizer (E_STATE otherwise, before anything
   * changes); the other misuse errors are unscale()'s.
   */
  step(store: ParameterStore, optimizer: Optimizer, options: { maxNorm?: number; update?: boolean; readExtra?: number } = {}): StepResult {
    if (typeof options !== 'object' || options === null) throw new MixprecError('E_ARG', 'step options must be an object');
    const opts = snapshot(options, 'step options', 'E_ARG') as { maxNorm?: number; update?: boolean; readExtra?: number };
    const maxNorm = opts.maxNorm ?? 0;
    if (typeof maxNorm !== 'number' || !(maxNorm >= 0) || !Number.isFinite(maxNorm)) throw new MixprecError('E_ARG', 'maxNorm must be a finite number >= 0 (0: no clipping)');
    const stage = this.#stageOf(store, optimizer, 'step');
    if (stage === 'stepped') throw new MixprecError('E_STATE', 'step() has already been called since the last update()');
    // Before any pass over the store: the moments must be this store's (created on first use).
    const { m, v } = GradScaler.#moments(store, optimizer, 'step');
    if (stage !== 'unscaled') this.#beginStep(store, optimizer, false);
    const n = native();
    const { tensor: g, dtype } = store.stepGradients();
    const state = store.ampState.handle();
    n.ampFinalize({ state, scaler: this.nativeConfig(), optim: optimizer.nativeConfig(maxNorm), updateScale: Boolean(opts.update) });
    const config = optimizer.nativeConfig(maxNorm);
    // One pass over the store, or one per run of parameters that share their weight decay.
    for (const r of decayRuns(store.views, store.length, config.weightDecay > 0 ? optimizer.hyper.decayParameters : 'all')) {
      const at = r.start;
      n.optimizerStep({
        n: r.n, master: store.master.handle(), masterOffset: at,
        working: store.working?.handle(), workingOffset: at, workingType: store.working ? dtypeCode(store.working.dtype) : undefined,
        grad: g.handle(), gradOffset: at, gradType: dtypeCode(dtype), m: m?.handle(), mOffset: at, v: v?.handle(), vOffset: at, state,
        config: r.decay ? config : { ...config, weightDecay: 0 },
      });
    }
    // The one read-back of the step: a few bytes of AmpState (and, for a Trainer, the loss after it).
    const back = n.readBytes(state, this.#state.bytes.length + (opts.readExtra ?? 0));
    this.#state.bytes.set(back.subarray(0, this.#state.bytes.length));
    store.stepDone();
    optimizer.setStepCount(this.#state.get('optimizerStep'));
    const foundInf = this.#state.get('foundInf') !== 0;
    if (opts.update) this.#stages.delete(optimizer);
    else {
      this.#stages.set(optimizer, { store, stage: 'stepped' });
      this.#pendingInf = (this.#pendingInf ?? false) || foundInf;
    }
    const result: StepResult = { skipped: this.#state.get('skipped') !== 0, gradNorm: this.#state.get('gradNorm'), scale: this.scale };
    if (opts.readExtra) result.extra = back.subarray(this.#state.bytes.length);
    return result;
  }

  /**
   * The loss-scale update. With no argument, uses the inf/NaN found by the steps since the last
   * update (PyTorch's form); `update(foundInf)` applies the rule to an explicit outcome.
   */
  update(foundInf?: boolean): void {
    if (foundInf !== undefined && typeof foundInf !== 'boolean') throw new MixprecError('E_ARG', 'update(foundInf) takes a boolean');
    const inf = foundInf ?? this.#pendingInf;
    if (inf === null) throw new MixprecError('E_STATE', 'No inf checks were recorded prior to update(): call step() first, or update(foundInf)');
    native().scalerUpdateHost(this.#state.bytes, this.nativeConfig(), inf);
    this.#state.set('foundInf', 0);
    this.#pendingInf = null;
    this.#stages.clear();
  }

  stateDict(): GradScalerStateDict {
    return {
      version: 1,
      options: { ...this.#options },
      scale: this.#state.get('scale'),
      growthTracker: this.growthTracker,
      hysteresisLeft: this.hysteresisLeft,
      counters: this.counters,
    };
  }

  /** Restores a stateDict() (also after a JSON round trip). Validated whole before anything changes. */
  loadStateDict(state: GradScalerStateDict): void {
    if (typeof state !== 'object' || state === null) throw new MixprecError('E_STATE', 'GradScaler state must be an object');
    // Read once, inside a try (getters, Proxies: E_STATE), then validated.
    const d = snapshot(state, 'GradScaler state', 'E_STATE') as unknown as GradScalerStateDict;
    for (const k of ['options', 'counters'] as const) {
      const x: unknown = d[k];
      if (typeof x === 'object' && x !== null) (d as unknown as Record<string, unknown>)[k] = snapshot(x, `GradScaler state ${k}`, 'E_STATE');
    }
    if (d.version !== 1) throw new MixprecError('E_STATE', `GradScaler state version ${show(d.version)} is not supported (expected 1)`);
    // JSON turns Infinity into null: accept that spelling for maxScale.
    const opts = { ...(d.options ?? {}) } as GradScalerOptions & { maxScale: number | null };
    if (opts.maxScale === null) opts.maxScale = Infinity;
    const options = checkOptions(opts as GradScalerOptions, 'E_STATE');
    const int = (x: unknown, what: string, min = 0) => {
      if (!Number.isSafeInteger(x) || (x as number) < min || (x as number) > 2 ** 31 - 1) throw new MixprecError('E_STATE', `GradScaler state: ${what} must be an integer >= ${min}`);
      return x as number;
    };
    if (typeof d.scale !== 'number' || !(Math.fround(d.scale) >= MIN_LOSS_SCALE) || !Number.isFinite(Math.fround(d.scale))) throw new MixprecError('E_STATE', 'GradScaler state: scale must be a finite float32 >= 2^-126');
    const c = d.counters;
    if (typeof c !== 'object' || c === null) throw new MixprecError('E_STATE', 'GradScaler state: counters missing');
    const values = {
      growthTracker: int(d.growthTracker, 'growthTracker'),
      hysteresisLeft: int(d.hysteresisLeft, 'hysteresisLeft', -(2 ** 31)),
      steps: int(c.steps, 'counters.steps'), skippedSteps: int(c.skippedSteps, 'counters.skippedSteps'),
      backoffs: int(c.backoffs, 'counters.backoffs'), growths: int(c.growths, 'counters.growths'), minScaleHits: int(c.minScaleHits, 'counters.minScaleHits'),
    };
    this.#options = options;
    const s = (this.#state = new AmpStateBuffer());
    s.set('scale', d.scale);
    for (const [k, v] of Object.entries(values)) s.set(k as never, v);
    this.#stages.clear();
    this.#pendingInf = null;
  }

  /**
   * How far `optimizer` got with `store` since the last update() (undefined: not yet). E_STATE
   * when the optimizer has been used with another store, or the store with another optimizer:
   * after unscale(A, opt), step(B, opt) would step B with gradients never unscaled (B's AmpState
   * was never written: its weights would become -Infinity and the scale 0).
   */
  #stageOf(store: ParameterStore, optimizer: Optimizer, call: 'unscale' | 'step'): Stage | undefined {
    const mine = this.#stages.get(optimizer);
    const did = (st: Stage) => (st === 'unscaled' ? 'unscale()' : 'step()');
    if (mine && mine.store !== store) {
      throw new MixprecError(
        'E_STATE',
        `${call}(store, optimizer): ${did(mine.stage)} was called with another store (${describeStore(mine.store)}) and this optimizer ` +
          `since the last update(), not with this one (${describeStore(store)})` +
          (call === 'step' && mine.stage === 'unscaled' ? '; step() must be given the store that was unscaled' : '') +
          '; use one optimizer per store',
      );
    }
    for (const [other, e] of this.#stages) {
      if (e.store === store && other !== optimizer) {
        throw new MixprecError(
          'E_STATE',
          `${call}(store, optimizer): ${did(e.stage)} was called on this store (${describeStore(store)}) with another optimizer since the last update(); ` +
            'use one optimizer per store',
        );
      }
    }
    return mine?.stage;
  }

  /** The optimizer's moments for `store` (created zeroed on first use); E_STATE when they were made for a store of another size or device. */
  static #moments(store: ParameterStore, optimizer: Optimizer, call: 'unscale' | 'step'): { m?: Tensor; v?: Tensor } {
    try {
      return optimizer.buffers(store.length, store.device);
    } catch (e) {
      if (e instanceof MixprecError && e.code === 'E_STATE') {
        throw new MixprecError('E_STATE', `${call}(store, optimizer): the optimizer's moments were made for another store (${e.message}); this is ${describeStore(store)}`);
      }
      throw e;
    }
  }

  /** Uploads scale / trackers / counters + the optimizer's step count into the store's AmpState and runs the unscale pass. */
  #beginStep(store: ParameterStore, optimizer: Optimizer, writeUnscaled: boolean): void {
    const s = this.#state;
    s.set('sumsq', 0);
    s.set('foundInf', 0);
    s.set('optimizerStep', optimizer.stepCount);
    if (!this.#options.enabled) s.set('scale', 1);
    const n = native();
    n.writeBytes(store.ampState.handle(), s.bytes);
    const { tensor: g, dtype } = store.stepGradients();
    n.unscaleCheckNorm({ n: store.length, g: g.handle(), gType: dtypeCode(dtype), state: store.ampState.handle(), out32: writeUnscaled ? store.unscaledBuffer().handle() : null });
    // Data-parallel: the gradients were all-reduced before this pass, so every rank found the same
    // inf/NaN; the flag is all-reduced (max) too, so that the skip decision — and with it the loss
    // scale — cannot differ between ranks even where their local passes did.
    if (store.distributed) n.distAllReduce(store.ampState.handle(), 8, 1, 'i32', 'max', true); // AmpState.foundInf
  }
}
