// Autoregressive sampling from a GPT: each new token from the logits at the last position of the
// (cropped) context, divided by the temperature, restricted to the top k, sampled from a seeded
// stream, so a seed reproduces a sample exactly. No KV cache: each token runs the model on the
// last blockSize tokens (cheap at the sizes these machines train).
import { autocast } from '../amp/autocast';
import type { Precision } from '../amp/store';
import { noGrad, tidy } from '../autograd/scope';
import { MixprecError } from '../errors';
import { Rng } from '../rng';
import { tensor } from '../tensor';
import type { GPT } from './gpt';

export interface GenerateOptions {
  /** Tokens to add. */
  maxNewTokens: number;
  /** > 0; 1 samples the model's distribution, lower is greedier. Default 1. */
  temperature?: number;
  /** Sample only among the k most likely tokens (default: all). */
  topK?: number;
  /** Seed of the sampling stream. Default 0. */
  seed?: number;
  /** The compute precision of the forward (default fp32; a trained model's own precision is typical). */
  precision?: Precision;
}

/** The prompt followed by maxNewTokens sampled tokens. */
export async function generate(model: GPT, prompt: Int32Array, opts: GenerateOptions): Promise<Int32Array> {
  const { maxNewTokens, temperature = 1, topK, seed = 0, precision = 'fp32' } = opts ?? ({} as GenerateOptions);
  if (!Number.isSafeInteger(maxNewTokens) || maxNewTokens < 0) throw new MixprecError('E_ARG', 'generate: maxNewTokens must be an integer >= 0');
  if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature)) throw new MixprecError('E_ARG', 'generate: temperature must be > 0');
  const V = model.config.vocabSize;
  if (topK !== undefined && (!Number.isSafeInteger(topK) || topK < 1)) throw new MixprecError('E_ARG', 'generate: topK must be a positive integer');
  if (!Number.isSafeInteger(seed) || seed < 0) throw new MixprecError('E_ARG', 'generate: seed must be a non-negative integer');
  if (Object.prototype.toString.call(prompt) !== '[object Int32Array]' || prompt.length < 1) throw new MixprecError('E_ARG', 'generate: the prompt must be a non-empty Int32Array of token ids');
  for (const id of prompt) if (!(id >= 0 && id < V)) throw new MixprecError('E_ARG', `generate: prompt token ${id} is outside the vocabulary [0, ${V})`);
  const rng = new Rng(seed, 0);
  const out = new Int32Array(prompt.length + maxNewTokens);
  out.set(prompt);
  const wasTraining = model.training;
  model.eval();
  const device = model.namedParameters()[0][1].device;
  try {
    for (let n = prompt.length; n < out.length; n++) {
      const ctx = out.subarray(Math.max(0, n - model.config.blockSize), n);
      const last = tidy(() => noGrad(() => {
        const x = tensor(ctx, [1, ctx.length], { dtype: 'int32', device });
        const logits = precision === 'fp32' ? model.forward(x) : autocast(precision, () => model.forward(x));
        return logits.narrow(1, ctx.length - 1, 1).contiguous().cast('float32');
      }));
      const z = await last.toFloat32();
      last.dispose();
      out[n] = sampleLogits(z, temperature, topK ?? V, rng);
      if ((n & 15) === 0) await new Promise((r) => setImmediate(r)); // keep the event loop live
    }
  } finally {
    if (wasTraining) model.train();
  }
  return out;
}

/** One draw from softmax(z / temperature) over the k largest logits (ties: the lower id first), in float64. */
export function sampleLogits(z: Float32Array, temperature: number, k: number, rng: Rng): number {
  const order = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b).slice(0, Math.min(k, z.length));
  const mx = z[order[0]] / temperature;
  const w = order.map((i) => Math.exp(z[i] / temperature - mx));
  const total = w.reduce((s, x) => s + x, 0);
  let u = rng.next() * total;
  for (let i = 0; i < order.length; i++) {
    u -= w[i];
    if (u < 0) return order[i];
  }
  return order[order.length - 1];
}
