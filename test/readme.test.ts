// Every ```ts example in README.md runs as it is written (transpiled, against this checkout, in a
// scratch folder), and the outputs the README states are checked.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as mixprec from '../src';

const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

/** The heading above a block (to name the test). */
function headingOf(code: string): string {
  const before = readme.slice(0, readme.indexOf(code));
  return [...before.matchAll(/^#+ (.*)$/gm)].pop()?.[1] ?? 'README';
}

async function run(code: string): Promise<unknown[][]> {
  // Each block starts from the import every example assumes (the ones that write it repeat it).
  const src = /^import \* as mixprec/m.test(code) ? code : `import * as mixprec from 'mixprec';\nconst { nn, ops } = mixprec;\n${code}`;
  const body = src.replace(/^import \* as (\w+) from '([^']+)';$/gm, 'const $1 = require(\'$2\');');
  const js = ts.transpileModule(`(async () => {\n${body}\n})()`, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS } }).outputText;
  const logged: unknown[][] = [];
  const fakeConsole = { log: (...a: unknown[]) => logged.push(a) };
  const req = (m: string) => {
    if (m === 'mixprec') return mixprec;
    throw new Error(`the README example imports ${m}`);
  };
  const cwd = process.cwd();
  process.chdir(fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-readme-'))); // examples write run.mpk, net.mpk
  try {
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    await new Function('require', 'console', 'exports', `return ${js.replace(/^"use strict";\s*/, '')}`)(req, fakeConsole, {});
  } finally {
    process.chdir(cwd);
  }
  return logged;
}

test('the README has its examples', () => expect(blocks.length).toBeGreaterThanOrEqual(5));

for (const code of blocks) {
  test(`the README example under "${headingOf(code)}" runs unchanged`, async () => {
    const out = await run(code);
    const heading = headingOf(code);
    if (heading === 'Your own model: `nn.Module`') {
      expect(out[0][0]).toEqual(['inp.weight', 'inp.bias', 'blocks.0.ln.weight', 'blocks.0.ln.bias']);
      for (const l of out.slice(1, 4)) expect(Number.isFinite((l[0] as mixprec.StepInfo).loss)).toBe(true);
      expect(out[4][0]).toBe(3);
    } else if (heading === 'Tensors, ops and autograd') {
      // loss = mean(2 a w) over the 2x2 result: d/dw = 2/4 * a^T 1 = 0.5 * column sums of a's rows.
      expect(Array.from(out[0][0] as Float32Array)).toEqual([2.5, 2.5, 3.5, 3.5, 4.5, 4.5]);
      expect(out[1]).toEqual([[3, 2], [6]]);
      expect(out[2]).toEqual([false, 'bfloat16']);
    } else if (heading === 'Use from code') {
      expect((out[1][0] as { accuracy: number }).accuracy).toBeGreaterThan(0.9); // one MNIST epoch
      expect(out[2][1]).toBe(false); // the hand step was not skipped
    } else if (heading === 'The mixed-precision core') {
      expect(out[0][0]).toBe(false);
      expect(out[0][2]).toBe(65536);
    }
  });
}
