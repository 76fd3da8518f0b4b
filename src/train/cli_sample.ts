// `mixprec sample`: text from a GPT checkpoint of `mixprec train --model gpt` (its vocabulary is
// in the checkpoint), sampled with a temperature and top-k from a seeded stream (reproducible).
import { Command, InvalidArgumentError } from 'commander';
import { textVocabulary } from '../data/text';
import { MixprecError } from '../errors';
import { generate } from '../models/generate';
import { GPT } from '../models/gpt';
import { Trainer } from './trainer';

interface SampleFlags { checkpoint: string; prompt: string; tokens: number; temperature: number; topK?: number; seed: number; device: 'auto' | 'cpu' | 'cuda' }

const int = (what: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${what} must be an integer >= ${min}`);
  return n;
};

export function addSampleCommand(program: Command): void {
  program
    .command('sample')
    .description('generate text from a GPT checkpoint (mixprec train --model gpt --save FILE)')
    .requiredOption('--checkpoint <file>', 'the checkpoint')
    .option('--prompt <text>', 'the text to continue (default: a newline)', '\n')
    .option('--tokens <n>', 'characters to generate', int('--tokens', 0), 500)
    .option('--temperature <x>', 'sampling temperature (> 0; lower is greedier)', (v) => { const x = Number(v); if (!(x > 0) || !Number.isFinite(x)) throw new InvalidArgumentError('--temperature must be > 0'); return x; }, 0.8)
    .option('--top-k <n>', 'sample among the k most likely characters', int('--top-k', 1), 40)
    .option('--seed <n>', 'seed of the sampling stream', int('--seed', 0), 0)
    .option('--device <d>', "backend: 'auto', 'cpu' or 'cuda'", 'auto')
    .action(async (f: SampleFlags) => {
      const trainer = await Trainer.load<GPT>(f.checkpoint, { device: f.device });
      try {
        if (!(trainer.model instanceof GPT)) throw new MixprecError('E_CHECKPOINT', `${f.checkpoint} does not hold a GPT`);
        const vocab = trainer.metadata?.vocab;
        if (!Array.isArray(vocab)) throw new MixprecError('E_CHECKPOINT', `${f.checkpoint} has no vocabulary (it was not written by mixprec train --model gpt)`);
        const v = textVocabulary(vocab as string[]);
        const ids = await generate(trainer.model, v.encode(f.prompt), { maxNewTokens: f.tokens, temperature: f.temperature, topK: f.topK, seed: f.seed, precision: trainer.precision });
        process.stdout.write(v.decode(ids) + '\n');
      } finally {
        trainer.dispose();
      }
    });
}
