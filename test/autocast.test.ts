// The autocast table is THE policy: every op is classed in it, the README's precision table is
// generated from it, and moving an op between classes changes what the op returns.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as mixprec from '../src';
import { AUTOCAST_POLICY, policyOf, policyTable } from '../src/amp/autocast';

test('every public op has an autocast class (cast is the explicit conversion)', () => {
  for (const op of Object.keys(mixprec.ops)) if (op !== 'cast') expect(() => policyOf(op)).not.toThrow();
  const listed = Object.values(AUTOCAST_POLICY).flat();
  expect(new Set(listed).size).toBe(listed.length); // no op in two classes
});

test("the README's precision table is the one generated from the policy", () => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
  const m = /<!-- autocast-policy -->\n([\s\S]*?)\n<!-- \/autocast-policy -->/.exec(readme);
  expect(m).not.toBeNull();
  expect(m![1].trim()).toBe(policyTable());
});

test('the classes decide the result dtypes under autocast, and nothing changes outside it', () => {
  const x = mixprec.tensor(Float32Array.from({ length: 12 }, (_, i) => i / 7 - 0.8), [3, 4], { device: 'cpu' });
  const w = mixprec.tensor(Float32Array.from({ length: 8 }, (_, i) => (i % 3) - 1), [2, 4], { device: 'cpu' });
  for (const [p, low] of [['fp16', 'float16'], ['bf16', 'bfloat16']] as const) {
    mixprec.autocast(p, () => {
      expect(mixprec.ops.linear(x, w).dtype).toBe(low);                 // low
      expect(mixprec.ops.matmul(x, w, { transB: true }).dtype).toBe(low);
      const h = mixprec.ops.linear(x, w);
      expect(mixprec.ops.softmax(h).dtype).toBe('float32');            // fp32
      expect(mixprec.ops.sum(h).dtype).toBe('float32');
      expect(mixprec.ops.crossEntropy(h, Int32Array.from([0, 1, 1])).dtype).toBe('float32');
      expect(mixprec.ops.layerNorm(h, null, null).dtype).toBe(low);     // fp32Stats: the input's dtype
      expect(mixprec.ops.add(h, mixprec.ops.relu(x).narrow(1, 0, 2)).dtype).toBe('float32'); // promote
      expect(mixprec.ops.relu(h).dtype).toBe(low);                      // keep
    });
  }
  expect(mixprec.ops.linear(x, w).dtype).toBe('float32');
  const h16 = mixprec.tensor(new Float32Array(6), [3, 2], { dtype: 'float16', device: 'cpu' });
  expect(mixprec.ops.softmax(h16).dtype).toBe('float16'); // outside autocast: PyTorch keeps the dtype
  expect(mixprec.ops.crossEntropy(h16, Int32Array.from([0, 1, 1])).dtype).toBe('float16');
});
