// A GPT with nanoGPT's architecture, parameter names and initialisation, so weights move to and
// from a PyTorch nanoGPT by name: token + position embeddings, pre-LN blocks (causal
// self-attention from one fused QKV projection, then an MLP 4C with GELU, each around a
// residual), a final LayerNorm, and the LM head tied to the token embedding (listed once, as
// transformer.wte.weight; its gradient sums the embedding's and the head's).
import { MixprecError } from '../errors';
import { Rng } from '../rng';
import { Tensor } from '../tensor';
import { add, dropout, linear, matmul, mul, scaledDotProductAttention, softmax } from '../ops';
import { tensor } from '../tensor';
import { Module } from '../nn/module';
import { Embedding, LayerNorm, Linear, ModuleList, normal } from '../nn/modules';
import { show } from '../util/show';

export interface GPTConfig {
  vocabSize: number;
  /** The longest sequence (the position table's size). */
  blockSize: number;
  nLayer: number;
  nHead: number;
  /** The model width C (a multiple of nHead). */
  nEmbd: number;
  /** Dropout on the embeddings, the attention probabilities and each residual branch (training only). Default 0. */
  dropout?: number;
  /** Biases in the Linears and LayerNorms (nanoGPT's bias). Default true. */
  bias?: boolean;
}

/** What a forward shows an observer (mixprec diagnose): a named activation, as it is computed. */
export type GPTObserver = (name: string, activation: Tensor) => void;

// The observer and attention path of the forward in progress (set by GPT.forward for its submodules).
let observer: GPTObserver | null = null;
let mathAttention = false;
const tap = (name: string, t: Tensor): Tensor => { observer?.(name, t); return t; };

const KEYS = ['vocabSize', 'blockSize', 'nLayer', 'nHead', 'nEmbd', 'dropout', 'bias'];

function checkConfig(c: unknown): Required<GPTConfig> {
  if (typeof c !== 'object' || c === null) throw new MixprecError('E_ARG', 'gpt: the config must be an object { vocabSize, blockSize, nLayer, nHead, nEmbd }');
  const o = c as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) throw new MixprecError('E_ARG', `gpt: unknown option '${k}'`);
  const int = (k: string) => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > 2 ** 24) throw new MixprecError('E_ARG', `gpt: ${k} must be an integer in [1, 2^24] (got ${show(v)})`);
    return v;
  };
  const [vocabSize, blockSize, nLayer, nHead, nEmbd] = ['vocabSize', 'blockSize', 'nLayer', 'nHead', 'nEmbd'].map(int);
  if (nEmbd % nHead !== 0) throw new MixprecError('E_ARG', `gpt: nEmbd ${nEmbd} must be a multiple of nHead ${nHead}`);
  const p = o.dropout ?? 0;
  if (typeof p !== 'number' || !(p >= 0 && p < 1)) throw new MixprecError('E_ARG', `gpt: dropout must be in [0, 1) (got ${show(p)})`);
  const bias = o.bias ?? true;
  if (typeof bias !== 'boolean') throw new MixprecError('E_ARG', 'gpt: bias must be a boolean');
  return { vocabSize, blockSize, nLayer, nHead, nEmbd, dropout: p, bias };
}

class CausalSelfAttention extends Module {
  c_attn: Linear;
  c_proj: Linear;
  constructor(readonly nHead: number, nEmbd: number, bias: boolean, readonly p: number, readonly prefix: string) {
    super();
    this.c_attn = new Linear(nEmbd, 3 * nEmbd, { bias });
    this.c_proj = new Linear(nEmbd, nEmbd, { bias });
  }
  forward(x: Tensor): Tensor {
    const [B, T, C] = x.shape, H = this.nHead, D = C / H;
    const qkv = tap(`${this.prefix}.qkv`, this.c_attn.forward(x)); // [B, T, 3C]
    // Heads are strided views into qkv: [B, T, C] -> [B, T, H, D] -> [B, H, T, D]; no copies.
    const head = (i: number) => qkv.narrow(2, i * C, C).view([B, T, H, D]).transpose(1, 2);
    const p = this.training ? this.p : 0;
    const y = mathAttention ? this.#math(head(0), head(1), head(2), T, D, p) : scaledDotProductAttention(head(0), head(1), head(2), { causal: true, dropoutP: p });
    // y is laid out [B, T, H, D] in memory: back to [B, T, C] rows without a copy.
    const merged = tap(`${this.prefix}.heads`, y.transpose(1, 2).reshape([B, T, C]));
    return dropout(tap(`${this.prefix}.c_proj`, this.c_proj.forward(merged)), this.p, { training: this.training });
  }
  /** The unfused path (diagnose: the scores and probabilities exist as tensors, so their gradients can be observed). */
  #math(q: Tensor, k: Tensor, v: Tensor, T: number, D: number, p: number): Tensor {
    const m = new Float32Array(T * T); // -inf above the diagonal: key j > query i is masked
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = -Infinity;
    const causal = tensor(m, [T, T], { device: q.device });
    const scores = tap(`${this.prefix}.scores`, add(mul(matmul(q, k.transpose(2, 3)), 1 / Math.sqrt(D)), causal));
    const probs = tap(`${this.prefix}.probs`, softmax(scores, { dim: -1 }));
    return matmul(dropout(probs, p, { training: p > 0 }), v);
  }
}

class MLP extends Module {
  c_fc: Linear;
  c_proj: Linear;
  constructor(nEmbd: number, bias: boolean, readonly p: number, readonly prefix: string) {
    super();
    this.c_fc = new Linear(nEmbd, 4 * nEmbd, { bias, activation: 'gelu' }); // GELU fused into the GEMM
    this.c_proj = new Linear(4 * nEmbd, nEmbd, { bias });
  }
  forward(x: Tensor): Tensor {
    const h = tap(`${this.prefix}.c_fc`, this.c_fc.forward(x));
    return dropout(tap(`${this.prefix}.c_proj`, this.c_proj.forward(h)), this.p, { training: this.training });
  }
}

class Block extends Module {
  ln_1: LayerNorm;
  attn: CausalSelfAttention;
  ln_2: LayerNorm;
  mlp: MLP;
  constructor(c: Required<GPTConfig>, readonly prefix: string) {
    super();
    this.ln_1 = new LayerNorm(c.nEmbd, { bias: c.bias });
    this.attn = new CausalSelfAttention(c.nHead, c.nEmbd, c.bias, c.dropout, `${prefix}.attn`);
    this.ln_2 = new LayerNorm(c.nEmbd, { bias: c.bias });
    this.mlp = new MLP(c.nEmbd, c.bias, c.dropout, `${prefix}.mlp`);
  }
  forward(x: Tensor): Tensor {
    const h = tap(`${this.prefix}.resid_mid`, add(x, this.attn.forward(tap(`${this.prefix}.ln_1`, this.ln_1.forward(x)))));
    return tap(`${this.prefix}.resid_out`, add(h, this.mlp.forward(tap(`${this.prefix}.ln_2`, this.ln_2.forward(h)))));
  }
}

class Transformer extends Module {
  wte: Embedding;
  wpe: Embedding;
  h: ModuleList;
  ln_f: LayerNorm;
  constructor(c: Required<GPTConfig>) {
    super();
    this.wte = new Embedding(c.vocabSize, c.nEmbd);
    this.wpe = new Embedding(c.blockSize, c.nEmbd);
    this.h = new ModuleList(Array.from({ length: c.nLayer }, (_, i) => new Block(c, `h.${i}`)));
    this.ln_f = new LayerNorm(c.nEmbd, { bias: c.bias });
  }
  forward(): Tensor { throw new MixprecError('E_STATE', 'call the GPT itself'); }
}

export class GPT extends Module {
  readonly config: Required<GPTConfig>;
  transformer: Transformer;
  /**
   * Sees every named activation of a forward as it is computed (embeddings, each block's norms,
   * QKV, attention output, MLP, residual stream, the logits): mixprec diagnose registers gradient
   * hooks on them. null (default): nothing is observed.
   */
  observe: GPTObserver | null = null;
  /** 'fused' (default): ops.scaledDotProductAttention. 'math': matmul + mask + softmax + matmul, so the scores and probabilities are tensors an observer sees (diagnose). */
  attention: 'fused' | 'math' = 'fused';

  constructor(config: GPTConfig, opts: { seed?: number } = {}) {
    super();
    const c = checkConfig(config);
    const seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(seed) || seed < 0) throw new MixprecError('E_ARG', 'gpt: seed must be a non-negative integer');
    this.config = Object.freeze(c);
    this.transformer = new Transformer(c);
    this.#init(seed);
  }

  /** The classes of the output (the vocabulary): the Trainer checks labels against it. */
  get outFeatures(): number { return this.config.vocabSize; }

  /** Parameters, the tied head counted once (as nanoGPT's get_num_params(non_embedding=False)). */
  numParameters(): number {
    return this.namedParameters().reduce((n, [, p]) => n + p.size, 0);
  }

  /** ids int32 [B, T] (T <= blockSize) -> logits [B, T, vocabSize]. */
  forward(ids: Tensor): Tensor {
    if (!(ids instanceof Tensor) || ids.dtype !== 'int32' || ids.ndim !== 2)
      throw new MixprecError('E_ARG', `gpt: the input must be an int32 tensor [B, T] of token ids${ids instanceof Tensor ? ` (got ${ids.dtype} [${ids.shape.join(', ')}])` : ''}`);
    const [, T] = ids.shape, tr = this.transformer;
    if (T < 1 || T > this.config.blockSize) throw new MixprecError('E_SHAPE', `gpt: sequence length ${T} must be in [1, blockSize ${this.config.blockSize}]`);
    if (this.attention !== 'fused' && this.attention !== 'math') throw new MixprecError('E_ARG', "gpt: attention must be 'fused' or 'math'");
    const prev = [observer, mathAttention] as const;
    observer = this.observe;
    mathAttention = this.attention === 'math';
    try {
      const pos = tr.wpe.weight.narrow(0, 0, T); // positions 0..T-1, broadcast over the batch
      let x = tap('embeddings', dropout(add(tr.wte.forward(ids), pos), this.config.dropout, { training: this.training }));
      for (const block of tr.h) x = (block as Block).forward(x);
      return tap('logits', linear(tap('ln_f', tr.ln_f.forward(x)), tr.wte.weight, null)); // the tied LM head: x @ wte^T
    } finally {
      [observer, mathAttention] = prev;
    }
  }

  /** nanoGPT's init: N(0, 0.02) weights and embeddings, N(0, 0.02 / sqrt(2 nLayer)) residual projections, zero biases, LayerNorm 1 / 0. */
  #init(seed: number): void {
    const resid = 0.02 / Math.sqrt(2 * this.config.nLayer);
    let stream = 0;
    this.loadParameters(this.namedParameters().map(([name, p]) => {
      const rng = new Rng(seed, ++stream);
      const leaf = name.split('.').pop();
      const isNorm = /\.ln_\d\.|\.ln_f\./.test(`.${name}`);
      const data = isNorm ? new Float32Array(p.size).fill(leaf === 'weight' ? 1 : 0)
        : leaf === 'bias' ? new Float32Array(p.size)
        : normal(p.size, name.endsWith('c_proj.weight') ? resid : 0.02, rng);
      return { name, data };
    }));
  }
}

/** mixprec.models.gpt(config, { seed }): a GPT Module with nanoGPT's architecture and init. */
export function gpt(config: GPTConfig, opts?: { seed?: number }): GPT {
  return new GPT(config, opts);
}
