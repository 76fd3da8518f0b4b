// The tape, as PyTorch and tfjs-core do it: each op that sees an input requiring grad records a
// Node (its inputs and a gradient function closing over what it saved). backward() collects the
// nodes reachable from the root and runs them in reverse recording order (recording order is a
// topological order), summing the gradients of tensors used more than once, then frees them.
import { MixprecError } from '../errors';
import type { Tensor } from '../tensor';
import * as k from '../ops/kernels';
import { isGradEnabled, keep, noGrad } from './scope';

/** Returned by a gradient function for an input whose gradient it wrote into ctx.into(i) itself. */
export const WRITTEN = Symbol('written');
export type InputGrad = Tensor | null | undefined | typeof WRITTEN;

export interface BackwardContext {
  /**
   * Where input i's gradient may be written directly (a parameter's gradient view in a store):
   * write it there (beta = 0: overwrite, 1: add to it) and return WRITTEN for i. null: return a tensor.
   */
  into(i: number): { out: Tensor; beta: 0 | 1 } | null;
}

export type GradFn = (grad: Tensor, ctx: BackwardContext) => InputGrad[];

let nextId = 0;

export class Node {
  readonly id = nextId++;
  readonly name: string;
  /** Inputs that require grad (null where an input does not). */
  readonly inputs: readonly (Tensor | null)[];
  #backward: GradFn | null;
  /** Buffers the op made only for its backward (freed with the node). */
  #owned: Tensor[];
  /** Called with the output's gradient once it is complete, before this op's backward (Tensor.registerHook). */
  readonly hooks: ((grad: Tensor) => void)[] = [];
  constructor(name: string, inputs: (Tensor | null)[], backward: GradFn, owned: Tensor[]) {
    this.name = name;
    this.inputs = inputs;
    this.#backward = backward;
    this.#owned = owned;
  }
  get freed(): boolean { return this.#backward === null; }
  run(g: Tensor, ctx: BackwardContext): InputGrad[] {
    if (!this.#backward) throw new MixprecError('E_STATE', `backward through ${this.name} a second time: its saved tensors were freed (pass { retainGraph: true } to the first backward)`);
    return this.#backward(g, ctx);
  }
  /** Drops the saved tensors (the closure) and frees the op's own buffers. */
  free(): void {
    this.#backward = null;
    for (const t of this.#owned) t.dispose();
    this.#owned = [];
  }
}

/** Whether an op on these inputs must record (grad mode on and some float input requires grad). */
export function needsGrad(...inputs: readonly (Tensor | number | null | undefined)[]): boolean {
  if (!isGradEnabled()) return false;
  for (const t of inputs) if (t !== null && typeof t === 'object' && t.requiresGrad) return true;
  return false;
}

/**
 * Records `out` as produced by op `name` from `inputs`, when any requires grad (else frees
 * `owned` at once). `backward(g)` returns one gradient per input (null for none).
 */
export function record(name: string, out: Tensor, inputs: readonly (Tensor | number | null | undefined)[], backward: GradFn, owned: Tensor[] = []): Tensor {
  if (!needsGrad(...inputs)) {
    for (const t of owned) t.dispose();
    return out;
  }
  for (const t of owned) keep(t); // owned by the node, not by the caller's tidy scope
  const ins = inputs.map((t) => (t !== null && typeof t === 'object' && t.requiresGrad ? t : null));
  out.gradFn = new Node(name, ins, backward, owned);
  out.requiresGrad = true;
  return out;
}

/** The gradient of a tensor in the tensor's own dtype and shape, contiguous. */
function conform(g: Tensor, like: Tensor, what: string): Tensor {
  if (g.dtype === 'int32') throw new MixprecError('E_DTYPE', `${what}: a gradient must be a float tensor (got int32)`);
  if (g.shape.length !== like.shape.length || g.shape.some((d, i) => d !== like.shape[i]))
    throw new MixprecError('E_SHAPE', `${what}: gradient of shape [${g.shape.join(', ')}] for a tensor of shape [${like.shape.join(', ')}]`);
  return g.dtype === like.dtype && g.isContiguous() ? g : k.copyTo(g, like.dtype);
}

export interface BackwardOptions {
  retainGraph?: boolean;
  /**
   * @internal Called once per leaf that requires grad, as soon as the last op using it has run
   * (its gradient is complete): data-parallel training all-reduces a gradient bucket then,
   * overlapping the communication with the rest of the backward.
   */
  onLeafReady?: (leaf: Tensor) => void;
}

export function backwardFrom(root: Tensor, gradient: Tensor | undefined, opts: BackwardOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new MixprecError('E_ARG', 'backward options must be an object');
  if (!root.requiresGrad) throw new MixprecError('E_STATE', 'backward() on a tensor that does not require grad (no input of it had requiresGrad)');
  let seed: Tensor;
  if (gradient === undefined) {
    if (root.size !== 1) throw new MixprecError('E_STATE', `backward() without a gradient needs a scalar (got shape [${root.shape.join(', ')}])`);
    seed = k.filled(root.shape, 1, root.dtype === 'int32' ? 'float32' : root.dtype, root.device);
  } else {
    if (!(gradient as unknown instanceof Object) || typeof (gradient as Tensor).handle !== 'function') throw new MixprecError('E_ARG', 'gradient must be a Tensor');
    if (gradient.device !== root.device) throw new MixprecError('E_DEVICE', `gradient is on ${gradient.device}, the tensor on ${root.device}`);
    seed = conform(gradient, root, 'backward');
  }
  noGrad(() => run(root, seed, gradient, opts.retainGraph === true, opts.onLeafReady));
}

function run(root: Tensor, seed: Tensor, userGradient: Tensor | undefined, retain: boolean, onLeafReady?: (leaf: Tensor) => void): void {
  // Every gradient the pass keeps (a leaf's .grad, a pending sum in `grads`) owns its storage:
  // take() copies one whose storage is already kept or still in use (the incoming gradient
  // returned as is, one tensor returned for two inputs), so in-place accumulation never aliases.
  const claimed = new Set<unknown>();
  const release = (t: Tensor, inUse: Tensor | undefined) => {
    if (t !== inUse && t !== userGradient) t.dispose();
  };
  // r in the input's shape and dtype, contiguous; r itself is released when it was replaced.
  const asGrad = (r: Tensor, like: Tensor, inUse: Tensor | undefined, what: string): Tensor => {
    const t = conform(r, like, what);
    if (t !== r) release(r, inUse);
    return t;
  };
  const take = (r: Tensor, like: Tensor, inUse: Tensor | undefined, what: string): Tensor => {
    let t = asGrad(r, like, inUse, what);
    if (t === inUse || t === userGradient || claimed.has(t.storage)) t = k.copyTo(t, like.dtype);
    claimed.add(t.storage);
    return t;
  };
  const accumulateLeaf = (leaf: Tensor, r: Tensor, inUse: Tensor | undefined, what: string) => {
    if (leaf.leafHooks) for (const h of leaf.leafHooks) h(r);
    const sink = leaf.gradSink;
    if (leaf.grad === null || sink) {
      if (!sink) { leaf.grad = keep(take(r, leaf, inUse, what)); return; }
      const g = asGrad(r, leaf, inUse, what);
      if (sink.generation !== sink.current()) k.copyInto(sink.tensor, g);
      else k.addInto(sink.tensor, g);
      sink.generation = sink.current();
      release(g, inUse);
      return;
    }
    const g = asGrad(r, leaf, inUse, what);
    k.addInto(leaf.grad, g);
    release(g, inUse);
  };

  if (root.isLeaf) {
    accumulateLeaf(root, seed, undefined, 'backward');
    return;
  }
  // The nodes reachable from the root, in reverse recording order.
  const nodes: Node[] = [];
  const seen = new Set<Node>();
  const stack: Node[] = [root.gradFn!];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    if (n.freed) n.run(seed, { into: () => null }); // throws the E_STATE
    nodes.push(n);
    for (const t of n.inputs) if (t?.gradFn) stack.push(t.gradFn);
  }
  nodes.sort((a, b) => b.id - a.id);

  // For onLeafReady: how many of the ops still to run use each leaf.
  const uses = new Map<Tensor, number>();
  if (onLeafReady)
    for (const n of nodes) for (const t of n.inputs) if (t?.isLeaf) uses.set(t, (uses.get(t) ?? 0) + 1);
  const done = (node: Node) => {
    if (!onLeafReady) return;
    for (const t of node.inputs) {
      if (!t?.isLeaf) continue;
      const left = uses.get(t)! - 1;
      uses.set(t, left);
      if (left === 0) onLeafReady(t);
    }
  };

  const grads = new Map<Node, Tensor>([[root.gradFn!, seed]]);
  for (const node of nodes) {
    const g = grads.get(node);
    grads.delete(node);
    if (!g) {
      if (!retain) node.free();
      done(node);
      continue; // no gradient reached this op
    }
    const ctx: BackwardContext = {
      into(i: number) {
        const t = node.inputs[i];
        const sink = t?.gradSink;
        if (!t || !t.isLeaf || !sink) return null;
        const beta = sink.generation === sink.current() ? 1 : 0;
        sink.generation = sink.current(); // the op writes it now
        return { out: sink.tensor, beta };
      },
    };
    for (const h of node.hooks) h(g);
    const results = node.run(g, ctx);
    node.inputs.forEach((input, i) => {
      const r = results[i];
      if (!input || r === null || r === undefined || r === WRITTEN) return;
      if (input.isLeaf) {
        if (input.requiresGrad) accumulateLeaf(input, r, g, node.name);
        return;
      }
      const prev = grads.get(input.gradFn!);
      if (!prev) grads.set(input.gradFn!, take(r, input, g, node.name));
      else {
        const gi = asGrad(r, input, g, node.name);
        k.addInto(prev, gi);
        release(gi, g);
      }
    });
    release(g, undefined);
    if (!retain) node.free();
    done(node);
  }
}
