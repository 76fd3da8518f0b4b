// Optimizers with PyTorch's parameter names, defaults and formulas. The update itself is the fused
// native kernel (native/shared/amp.h); an Optimizer holds the hyper-parameters, the step count
// and the moment buffers (flat, FP32, on the store's device), created at its first step.
import type { NativeOptimConfig } from '../binding';
import { MixprecError } from './errors';
import { native } from './native';
import { full, Tensor } from './tensor';
import type { Device } from './backends';
import { readOption, readOptions } from './util/options';
import { show } from './util/show';

export type OptimizerKind = 'sgd' | 'adam' | 'adamw';

/**
 * Which parameters weight decay applies to: 'all' (torch.optim's default, one parameter group), or
 * 'matrices' (nanoGPT's two groups: parameters with 2 or more dims — Linear weights, embeddings —
 * decay; biases and LayerNorm weights do not).
 */
export type DecayParameters = 'all' | 'matrices';
export interface SGDOptions { lr?: number; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean; decayParameters?: DecayParameters }
export interface AdamOptions { lr?: number; betas?: [number, number]; eps?: number; weightDecay?: number; decayParameters?: DecayParameters }

interface Hyper { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean; beta1: number; beta2: number; eps: number; decayParameters: DecayParameters }

export interface OptimizerStateDict {
  kind: OptimizerKind;
  hyper: Hyper;
  step: number;
  /** Moments as FP32 (absent before the first step): SGD momentum in m; Adam's exp_avg / exp_avg_sq in m / v. */
  m?: Float32Array;
  v?: Float32Array;
}

const KIND_CODE: Record<OptimizerKind, 0 | 1 | 2> = { sgd: 0, adam: 1, adamw: 2 };

function num(v: unknown, what: string, ok: (x: number) => boolean, rule: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new MixprecError('E_ARG', `${what} ${rule} (got ${show(v)})`);
  return v;
}

export class Optimizer {
  readonly kind: OptimizerKind;
  #hyper: Hyper;
  #step = 0;
  #m: Tensor | null = null;
  #v: Tensor | null = null;

  /** @internal Use mixprec.optim.sgd / adam / adamw. */
  constructor(kind: OptimizerKind, hyper: Hyper) {
    this.kind = kind;
    this.#hyper = { ...hyper };
  }

  /** Learning rate; settable (LR schedules). */
  get lr(): number { return this.#hyper.lr; }
  set lr(v: number) { this.#hyper.lr = num(v, 'lr', (x) => x >= 0, 'must be >= 0'); }
  /** Applied (not skipped) optimizer steps. */
  get stepCount(): number { return this.#step; }
  get hyper(): Readonly<Hyper> { return { ...this.#hyper }; }

  /** @internal */
  nativeConfig(maxNorm: number): NativeOptimConfig {
    const h = this.#hyper;
    return { kind: KIND_CODE[this.kind], lr: h.lr, beta1: h.beta1, beta2: h.beta2, eps: h.eps, weightDecay: h.weightDecay, momentum: h.momentum, dampening: h.dampening, nesterov: h.nesterov, maxNorm };
  }

  /** @internal The moment buffers for a store of `length` elements on `device` (created zeroed on first use). */
  buffers(length: number, device: Device): { m?: Tensor; v?: Tensor } {
    const needM = this.kind !== 'sgd' || this.#hyper.momentum !== 0;
    const needV = this.kind !== 'sgd';
    for (const t of [this.#m, this.#v])
      if (t && (t.size !== length || t.device !== device))
        throw new MixprecError('E_STATE', `this optimizer's state belongs to a store of ${t.size} parameters on ${t.device}; use one optimizer per store`);
    if (needM && !this.#m) this.#m = full([length], 0, { device });
    if (needV && !this.#v) this.#v = full([length], 0, { device });
    return { m: this.#m ?? undefined, v: this.#v ?? undefined };
  }

  /** @internal */
  setStepCount(n: number): void { this.#step = n; }

  stateDict(): OptimizerStateDict {
    const d: OptimizerStateDict = { kind: this.kind, hyper: { ...this.#hyper }, step: this.#step };
    if (this.#m) d.m = downloadSync(this.#m);
    if (this.#v) d.v = downloadSync(this.#v);
    return d;
  }

  /** Restores a stateDict() of an optimizer of the same kind (validated whole, see checkOptimizerState, before anything changes). */
  loadStateDict(d: OptimizerStateDict, device?: Device): void {
    if (typeof d !== 'object' || d === null) throw new MixprecError('E_STATE', 'optimizer state must be an object');
    if (d.kind !== this.kind) throw new MixprecError('E_STATE', `optimizer state is for '${show(d.kind)}', this optimizer is '${this.kind}'`);
    const { hyper } = checkOptimizerState(d);
    const dev = device ?? this.#m?.device ?? 'cpu';
    const load = (x: Float32Array | undefined) => {
      if (!x) return null;
      const t = full([x.length], 0, { device: dev });
      uploadSync(t, x);
      return t;
    };
    const m = load(d.m), v = load(d.v);
    this.#m?.dispose();
    this.#v?.dispose();
    this.#m = m;
    this.#v = v;
    this.#hyper = hyper;
    this.#step = d.step;
  }

  /** Frees the moment buffers. */
  dispose(): void {
    this.#m?.dispose();
    this.#v?.dispose();
    this.#m = this.#v = null;
  }
}

/**
 * @internal Checks an optimizer state dict whole, allocating nothing (E_STATE naming what is
 * wrong): kind, step, hyper-parameters; m / v Float32Arrays of one length (`length` when given),
 * finite, v >= 0; and the moments the kind has once it has stepped — Adam / AdamW both m and v
 * (exp_avg, exp_avg_sq), SGD with momentum m, SGD never v. Returns the validated hyper-parameters.
 */
export function checkOptimizerState(d: unknown, length?: number): { kind: OptimizerKind; hyper: Hyper; step: number; m?: Float32Array; v?: Float32Array } {
  if (typeof d !== 'object' || d === null) throw new MixprecError('E_STATE', 'optimizer state must be an object');
  const o = d as Record<string, unknown>;
  const kind = o.kind;
  if (kind !== 'sgd' && kind !== 'adam' && kind !== 'adamw') throw new MixprecError('E_STATE', `optimizer state: kind must be 'sgd', 'adam' or 'adamw' (got ${show(kind)})`);
  const step = o.step;
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) throw new MixprecError('E_STATE', 'optimizer state: step must be a non-negative integer');
  const hyper = validateHyper(kind, o.hyper);
  const moments: { m?: Float32Array; v?: Float32Array } = {};
  for (const k of ['m', 'v'] as const) {
    const x = o[k];
    if (x === undefined) continue;
    if (Object.prototype.toString.call(x) !== '[object Float32Array]') throw new MixprecError('E_STATE', `optimizer state: ${k} must be a Float32Array`);
    const a = x as Float32Array;
    if (length !== undefined && a.length !== length) throw new MixprecError('E_STATE', `optimizer state: ${k} has ${a.length} values, the parameters ${length}`);
    for (let i = 0; i < a.length; i++)
      if (!Number.isFinite(a[i]) || (k === 'v' && a[i] < 0)) throw new MixprecError('E_STATE', `optimizer state: ${k}[${i}] is ${a[i]} (must be finite${k === 'v' ? ' and >= 0' : ''})`);
    moments[k] = a;
  }
  const { m, v } = moments;
  if (m && v && m.length !== v.length) throw new MixprecError('E_STATE', 'optimizer state: m and v differ in length');
  if (kind === 'sgd') {
    if (v) throw new MixprecError('E_STATE', "optimizer state: SGD has no second moment 'v'");
    if (step > 0 && hyper.momentum !== 0 && !m) throw new MixprecError('E_STATE', `optimizer state: SGD with momentum after ${step} steps needs its momentum buffer 'm'`);
  } else {
    if (!m !== !v) throw new MixprecError('E_STATE', `optimizer state: ${kind} needs both moments 'm' and 'v' (got only '${m ? 'm' : 'v'}')`);
    if (step > 0 && !m) throw new MixprecError('E_STATE', `optimizer state: ${kind} after ${step} steps needs its moments 'm' and 'v'`);
  }
  return { kind, hyper, step, ...moments };
}

// Synchronous helpers over the native addon (reads are synchronous underneath).
function downloadSync(t: Tensor): Float32Array {
  return native().download(t.handle(), 0, t.size);
}
function uploadSync(t: Tensor, x: Float32Array): void {
  native().upload(t.handle(), x, 0);
}

function validateHyper(kind: OptimizerKind, h: unknown): Hyper {
  if (typeof h !== 'object' || h === null) throw new MixprecError('E_STATE', 'optimizer state: hyper must be an object');
  const o = h as Record<string, unknown>;
  try {
    return kind === 'sgd'
      ? sgdHyper({ lr: o.lr as number, momentum: o.momentum as number, dampening: o.dampening as number, weightDecay: o.weightDecay as number, nesterov: o.nesterov as boolean, decayParameters: o.decayParameters as DecayParameters })
      : adamHyper({ lr: o.lr as number, betas: [o.beta1 as number, o.beta2 as number], eps: o.eps as number, weightDecay: o.weightDecay as number, decayParameters: o.decayParameters as DecayParameters }, 0);
  } catch (e) {
    throw new MixprecError('E_STATE', `optimizer state: ${(e as Error).message}`);
  }
}

function decayOption(d: unknown): DecayParameters {
  if (d === undefined || d === 'all' || d === 'matrices') return d ?? 'all';
  throw new MixprecError('E_ARG', `decayParameters must be 'all' or 'matrices' (got ${show(d)})`);
}

/**
 * @internal The store's element ranges [start, start + n) with their weight decay: one range for
 * 'all', else maximal runs of parameters that decay (2+ dims) or not.
 */
export function decayRuns(views: readonly { shape: readonly number[]; offset: number; size: number }[], length: number, d: DecayParameters): { start: number; n: number; decay: boolean }[] {
  if (d === 'all' || views.length === 0) return [{ start: 0, n: length, decay: true }];
  const runs: { start: number; n: number; decay: boolean }[] = [];
  views.forEach((v, i) => {
    const decay = v.shape.length >= 2, end = i + 1 < views.length ? views[i + 1].offset : length; // padding goes with its parameter
    const last = runs[runs.length - 1];
    if (last && last.decay === decay) last.n = end - last.start;
    else runs.push({ start: v.offset, n: end - v.offset, decay });
  });
  return runs;
}

function sgdHyper(options: SGDOptions): Hyper {
  const o = readOptions<SGDOptions>(options, 'sgd', ['lr', 'momentum', 'dampening', 'weightDecay', 'nesterov', 'decayParameters']);
  const lr = num(o.lr ?? 1e-3, 'lr', (x) => x >= 0, 'must be >= 0');
  const momentum = num(o.momentum ?? 0, 'momentum', (x) => x >= 0, 'must be >= 0');
  const dampening = num(o.dampening ?? 0, 'dampening', () => true, 'must be a finite number');
  const weightDecay = num(o.weightDecay ?? 0, 'weightDecay', (x) => x >= 0, 'must be >= 0');
  const nesterov = o.nesterov ?? false;
  if (typeof nesterov !== 'boolean') throw new MixprecError('E_ARG', 'nesterov must be a boolean');
  if (nesterov && (momentum <= 0 || dampening !== 0)) throw new MixprecError('E_ARG', 'Nesterov momentum requires a momentum and zero dampening');
  return { lr, momentum, dampening, weightDecay, nesterov, beta1: 0, beta2: 0, eps: 0, decayParameters: decayOption(o.decayParameters) };
}

function adamHyper(options: AdamOptions, defaultWeightDecay: number, kind = 'adam'): Hyper {
  const o = readOptions<AdamOptions>(options, kind, ['lr', 'betas', 'eps', 'weightDecay', 'decayParameters']);
  const lr = num(o.lr ?? 1e-3, 'lr', (x) => x >= 0, 'must be >= 0');
  const betas: unknown = o.betas ?? [0.9, 0.999];
  if (!Array.isArray(betas) || readOption(betas, 'length', `${kind} betas`) !== 2) throw new MixprecError('E_ARG', 'betas must be [beta1, beta2]');
  const beta1 = num(readOption(betas, '0', `${kind} betas`), 'betas[0]', (x) => x >= 0 && x < 1, 'must be in [0, 1)');
  const beta2 = num(readOption(betas, '1', `${kind} betas`), 'betas[1]', (x) => x >= 0 && x < 1, 'must be in [0, 1)');
  const eps = num(o.eps ?? 1e-8, 'eps', (x) => x >= 0, 'must be >= 0');
  const weightDecay = num(o.weightDecay ?? defaultWeightDecay, 'weightDecay', (x) => x >= 0, 'must be >= 0');
  return { lr, beta1, beta2, eps, weightDecay, momentum: 0, dampening: 0, nesterov: false, decayParameters: decayOption(o.decayParameters) };
}

/** torch.optim.SGD: lr 1e-3, momentum 0, dampening 0, weightDecay 0 (L2), nesterov false. */
export function sgd(options: SGDOptions = {}): Optimizer {
  return new Optimizer('sgd', sgdHyper(options));
}
/** torch.optim.Adam: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 0 (L2 added to the gradient). */
export function adam(options: AdamOptions = {}): Optimizer {
  return new Optimizer('adam', adamHyper(options, 0, 'adam'));
}
/** torch.optim.AdamW: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 1e-2 (decoupled). */
export function adamw(options: AdamOptions = {}): Optimizer {
  return new Optimizer('adamw', adamHyper(options, 1e-2, 'adamw'));
}
