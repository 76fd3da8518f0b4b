export { readIdx, readIdxFile } from './idx';
export type { IdxArray } from './idx';
export { arrayDataset, shuffledIndices, batches } from './dataset';
export type { Dataset, Batch, BatchOptions } from './dataset';
export { loadMnist, defaultMnistDir, MNIST_MEAN, MNIST_STD, MNIST_FILES } from './mnist';
export type { MnistOptions } from './mnist';
export { text, textVocabulary, TextVocabulary, TextDataset, sotuText, sotuDir, MIN_TEXT_CHARS } from './text';
export type { TextOptions, TextSplit, TextBatch, UniformSource } from './text';
