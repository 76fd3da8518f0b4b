// The README's code examples run as they are written: the custom-module example and the autograd
// example are extracted from README.md, transpiled, and run against this checkout (their outputs
// checked where the README states them).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import * as mixprec from '../src';

const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');

/** The first ```ts block after a heading. */
function block(heading: string): string {
  const at = readme.indexOf(heading);
  expect(at).toBeGreaterThanOrEqual(0);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  expect(m).not.toBeNull();
  return m![1];
}

async function run(code: string): Promise<unknown[][]> {
  const body = code.replace(/^import \* as (\w+) from '([^']+)';$/gm, 'const $1 = require(\'$2\');');
  const js = ts.transpileModule(`(async () => {\n${body}\n})()`, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS } }).outputText;
  const logged: unknown[][] = [];
  const fakeConsole = { log: (...a: unknown[]) => logged.push(a) };
  const req = (m: string) => {
    if (m === 'mixprec') return mixprec;
    throw new Error(`the README example imports ${m}`);
  };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  await new Function('require', 'console', 'exports', `return ${js.replace(/^"use strict";\s*/, '')}`)(req, fakeConsole, {});
  return logged;
}

test('the custom module example (nn.Module, Trainer in fp16, save, load with { model }) runs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mixprec-readme-'));
  const code = block('### Your own model').split("'net.mpk'").join(JSON.stringify(path.join(dir, 'net.mpk')));
  const out = await run(code);
  expect(out[0][0]).toEqual(['inp.weight', 'inp.bias', 'blocks.0.ln.weight', 'blocks.0.ln.bias']);
  const steps = out.slice(1, 4).map((l) => l[0] as mixprec.StepInfo);
  for (const s of steps) expect(Number.isFinite(s.loss) && typeof s.skipped === 'boolean').toBe(true);
  expect(out[4][0]).toBe(3);
});

test('the autograd example runs and prints what it says', async () => {
  const out = await run(`import * as mixprec from 'mixprec';\nconst { nn, ops } = mixprec;\n${block('### Tensors, ops and autograd')}`);
  // loss = mean(2 a w) over the 2x2 result: d/dw = 2/4 * a^T 1 = 0.5 * column sums of a's rows.
  expect(Array.from(out[0][0] as Float32Array)).toEqual([2.5, 2.5, 3.5, 3.5, 4.5, 4.5]);
  expect(out[1]).toEqual([[3, 2], [6]]);
  expect(out[2]).toEqual([false, 'bfloat16']);
});
