// Output files of the command line: their folder made (as mkdir -p) and checked before a run is
// spent on them. Folders are created one level at a time from the nearest existing ancestor:
// Node's fs.mkdirSync(..., { recursive: true }) loops forever under /proc (a missing folder there
// answers ENOENT to every mkdir), and the error must name the file, not hang.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MixprecError } from '../errors';

/** Creates the folder of `file` (and its missing parents); E_IO naming the file when it cannot. */
export function ensureParentDir(file: string): void {
  const dir = path.dirname(path.resolve(file));
  const missing: string[] = [];
  let d = dir;
  try {
    while (!fs.existsSync(d)) {
      missing.unshift(d);
      const up = path.dirname(d);
      if (up === d) break;
      d = up;
    }
    if (!fs.statSync(d).isDirectory()) throw new Error(`${d} is not a folder`);
    for (const m of missing) fs.mkdirSync(m);
  } catch (e) {
    throw new MixprecError('E_IO', `cannot write ${file}: ${(e as Error).message}`);
  }
}

/** The folder exists (created as needed) and is writable, and `file` is not something other than a regular file; E_IO otherwise. */
export function checkWritable(file: string): void {
  ensureParentDir(file);
  try {
    fs.accessSync(path.dirname(path.resolve(file)), fs.constants.W_OK);
    if (fs.existsSync(file) && !fs.statSync(file).isFile()) throw new Error('not a regular file');
  } catch (e) {
    throw new MixprecError('E_IO', `cannot write ${file}: ${(e as Error).message}`);
  }
}

/** Writes `content` to `file`, its folder created first; E_IO naming the file on failure. */
export function writeOutput(file: string, content: string): void {
  ensureParentDir(file);
  try {
    fs.writeFileSync(file, content);
  } catch (e) {
    throw new MixprecError('E_IO', `cannot write ${file}: ${(e as Error).message}`);
  }
}
