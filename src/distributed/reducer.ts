// The data-parallel gradient all-reduce (PyTorch DDP's Reducer, on the flat gradient buffer):
// the store is cut into buckets of ~25 MB of FP32, in reverse parameter order (the order the
// backward completes them); a bucket is all-reduced (summed) as soon as the last op using its
// parameters has run, on the communication thread, while the backward goes on. Buckets launch in
// index order on every rank, so the ranks' collectives always match. FP16 / BF16 gradients are
// widened to FP32 first (summed in FP32; the step then reads that buffer). The mean is the sum
// of gradients already divided by the world size: the Trainer divides its backward's seed (as
// PyTorch's DDP divides each bucket before its all-reduce), so no pass over the buffer is added.
import type { ParameterStore } from '../amp/store';
import { MixprecError } from '../errors';
import { native } from '../native';
import { copyInto } from '../ops/kernels';
import { fillTensor, Tensor } from '../tensor';

export const DEFAULT_BUCKET_BYTES = 25 * 2 ** 20;

interface Bucket { start: number; end: number; params: number }

export class GradientReducer {
  readonly buckets: readonly Bucket[];
  readonly #store: ParameterStore;
  /** Bucket index by the parameter's offset in the flat store. */
  readonly #bucketOf = new Map<number, number>();
  #pending: number[] = [];
  #next = 0;
  #target: { tensor: Tensor; convert: boolean } | null = null;
  /** Buckets the last step launched while its backward was still running (the overlap). */
  launchedDuringBackward = 0;

  constructor(store: ParameterStore, bucketBytes = DEFAULT_BUCKET_BYTES) {
    if (!Number.isSafeInteger(bucketBytes) || bucketBytes < 4) throw new MixprecError('E_ARG', 'bucketBytes must be an integer >= 4');
    this.#store = store;
    const views = [...store.views].sort((a, b) => b.offset - a.offset);
    const buckets: Bucket[] = [];
    let end = store.length, params = 0;
    for (const [i, v] of views.entries()) {
      params += 1;
      this.#bucketOf.set(v.offset, buckets.length);
      const last = i === views.length - 1;
      if (last || (end - v.offset) * 4 >= bucketBytes) {
        const start = last ? 0 : v.offset; // the first bucket also takes the padding below it
        buckets.push({ start, end, params });
        end = start;
        params = 0;
      }
    }
    if (buckets.length === 0) buckets.push({ start: 0, end: store.length, params: 0 });
    this.buckets = buckets;
  }

  /** Before a backward whose gradients are to be reduced: nothing launched, nothing ready. */
  begin(): void {
    this.#pending = this.buckets.map((b) => b.params);
    this.#next = 0;
    // Allocated here, outside the backward's tidy scope (which would free a buffer made inside it).
    this.#target = this.#store.reduceTarget();
  }

  /** A parameter's gradient is complete (the tape's onLeafReady): launch what is ready, in order. */
  leafReady(leaf: Tensor): void {
    const sink = leaf.gradSink;
    if (!sink) return;
    const b = this.#bucketOf.get(sink.tensor.offset);
    if (b === undefined) return;
    // Reached by the graph but by no gradient: zeros now (the Trainer would write them after the
    // backward, too late for a bucket already on the wire).
    if (sink.generation !== sink.current()) {
      fillTensor(sink.tensor, 0);
      sink.generation = sink.current();
    }
    this.#pending[b] -= 1;
    while (this.#next < this.buckets.length && this.#pending[this.#next] <= 0) this.#launch(this.#next++);
  }

  /** After the backward (and after accumulation): the remaining buckets, then waits for all. */
  finish(): void {
    this.launchedDuringBackward = this.#next;
    while (this.#next < this.buckets.length) this.#launch(this.#next++);
    native().distWait();
    if (this.#target?.convert) this.#store.markReduced();
    this.#target = null;
  }

  /** All buckets at once, after the backward (gradient accumulation, or a user's own loop): sums them (divide the gradients by worldSize first for the mean). */
  allReduce(): void {
    this.begin();
    this.finish();
  }

  #launch(i: number): void {
    const b = this.buckets[i];
    const target = this.#target;
    if (!target) throw new MixprecError('E_STATE', 'GradientReducer: begin() was not called before the backward');
    if (target.convert) copyInto(target.tensor.narrow(0, b.start, b.end - b.start), this.#store.grads.narrow(0, b.start, b.end - b.start));
    native().distAllReduce(target.tensor.handle(), b.start * 4, b.end - b.start, 'f32', 'sum', false);
  }
}

/** The model's parameters are the same on every rank from here on: rank 0's masters, broadcast. */
export function broadcastParameters(store: ParameterStore): void {
  native().distBroadcast(store.master.handle(), 0, store.length * 4, 0, true);
  store.refreshWorking();
}
