// mixprec.models: ready-made models (a nanoGPT-compatible GPT) and sampling from them.
export { gpt, GPT } from './gpt';
export type { GPTConfig } from './gpt';
export { generate, sampleLogits } from './generate';
export type { GenerateOptions } from './generate';
