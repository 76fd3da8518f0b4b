// Float64 references for PyTorch's optimizers and GradScaler, written from PyTorch's documented
// algorithms (torch.optim.SGD / Adam / AdamW, torch.amp.GradScaler, Megatron's hysteresis),
// independently of the library's code.

export interface RefHyper {
  kind: 'sgd' | 'adam' | 'adamw';
  lr: number; momentum?: number; dampening?: number; nesterov?: boolean; weightDecay?: number;
  beta1?: number; beta2?: number; eps?: number;
}

export class RefOptimizer {
  t = 0;
  m: Float64Array;
  v: Float64Array;
  constructor(readonly h: RefHyper, readonly p: Float64Array) {
    this.m = new Float64Array(p.length);
    this.v = new Float64Array(p.length);
  }

  /** One step with gradient g (already unscaled and clipped). */
  step(g: ArrayLike<number>): void {
    const h = this.h, p = this.p;
    this.t += 1;
    const wd = h.weightDecay ?? 0;
    for (let i = 0; i < p.length; i++) {
      let gi = g[i];
      if (h.kind === 'sgd') {
        if (wd) gi += wd * p[i];
        const mom = h.momentum ?? 0;
        if (mom) {
          this.m[i] = this.t === 1 ? gi : mom * this.m[i] + (1 - (h.dampening ?? 0)) * gi;
          gi = h.nesterov ? gi + mom * this.m[i] : this.m[i];
        }
        p[i] -= h.lr * gi;
        continue;
      }
      const b1 = h.beta1 ?? 0.9, b2 = h.beta2 ?? 0.999, eps = h.eps ?? 1e-8;
      if (h.kind === 'adamw') p[i] *= 1 - h.lr * wd;
      else if (wd) gi += wd * p[i];
      this.m[i] = b1 * this.m[i] + (1 - b1) * gi;
      this.v[i] = b2 * this.v[i] + (1 - b2) * gi * gi;
      const mHat = this.m[i] / (1 - b1 ** this.t);
      const vHat = this.v[i] / (1 - b2 ** this.t);
      p[i] -= (h.lr * mHat) / (Math.sqrt(vHat) + eps);
    }
  }
}

export interface RefScalerOptions {
  initScale: number; growthFactor: number; backoffFactor: number; growthInterval: number;
  hysteresis: number; minScale: number; maxScale: number;
}

/** The dynamic loss-scale rule, with the scale held in float32 as PyTorch holds it. */
export class RefScaler {
  scale: number;
  tracker = 0;
  hyst: number;
  constructor(readonly o: RefScalerOptions) {
    this.scale = Math.fround(o.initScale);
    this.hyst = o.hysteresis;
  }
  update(foundInf: boolean): void {
    const o = this.o;
    if (foundInf) {
      this.tracker = 0;
      this.hyst -= 1;
      // The floor: minScale, and never below 2^-126 (FP32's smallest normal: 1 / scale stays finite).
      if (this.hyst <= 0) this.scale = Math.max(Math.fround(this.scale * o.backoffFactor), Math.fround(Math.max(o.minScale, 2 ** -126)));
      return;
    }
    this.tracker += 1;
    if (this.tracker === o.growthInterval) {
      const next = Math.fround(this.scale * o.growthFactor);
      if (Number.isFinite(next) && next <= o.maxScale) this.scale = next;
      this.tracker = 0;
      this.hyst = o.hysteresis;
    }
  }
}
