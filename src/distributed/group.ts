// The process group, as torch.distributed's default group: init() once per process (from
// torchrun's environment variables by default, which `mixprec launch` sets), then collectives on
// tensors. Host tensors go through Gloo, CUDA tensors through NCCL (native/dist).
import { backends, Device, resolveDevice } from '../backends';
import { MixprecError } from '../errors';
import { native } from '../native';
import { noGrad } from '../autograd/scope';
import { copyInto } from '../ops/kernels';
import { empty, Tensor } from '../tensor';
import { readOptions } from '../util/options';
import { show } from '../util/show';

export type DistBackend = 'auto' | 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';

export interface InitOptions {
  /** 'auto' (default): NCCL when CUDA is available and libnccl loads, else Gloo. */
  backend?: DistBackend;
  /** Default: $RANK (0). */
  rank?: number;
  /** Default: $WORLD_SIZE (1). */
  worldSize?: number;
  /** Where rank 0 serves the rendezvous store. Default: $MASTER_ADDR (127.0.0.1). */
  masterAddr?: string;
  /** Default: $MASTER_PORT (29500, as torchrun). */
  masterPort?: number;
  /** Rendezvous through files in this folder (shared by every rank, empty at the start) instead of rank 0's TCP store. */
  storeDir?: string;
  /** Every wait (rendezvous, collective) fails with E_DIST after this. Default: $MIXPREC_DIST_TIMEOUT_MS (60000). */
  timeoutMs?: number;
}

export interface GroupInfo {
  rank: number;
  worldSize: number;
  backend: 'gloo' | 'nccl';
  /** Rank within this machine ($LOCAL_RANK): the GPU a CUDA job uses is cuda:localRank. */
  localRank: number;
  /** The device this rank trains on: 'cpu' for Gloo, cuda:localRank for NCCL ('cuda' for GPU 0). */
  device: Device;
}

let current: GroupInfo | null = null;

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new MixprecError('E_ARG', `$${name} must be an integer (got '${v}')`);
  return n;
}

/** What this build and machine offer: Gloo compiled in, NCCL loadable (and why not). */
export function available(): { gloo: boolean; glooReason?: string; nccl: boolean; ncclReason?: string; ncclVersion?: number } {
  const { group: _group, ...rest } = native().distInfo();
  return rest;
}

/**
 * Joins the job: meets the other ranks at the rendezvous store and connects to them. Returns
 * this rank's place. Fails with E_DIST (the message says which rank or address) within timeoutMs.
 */
export function init(options: InitOptions = {}): GroupInfo {
  const opts = readOptions<InitOptions>(options, 'distributed.init', ['backend', 'rank', 'worldSize', 'masterAddr', 'masterPort', 'storeDir', 'timeoutMs']);
  if (current) throw new MixprecError('E_STATE', 'distributed.init: already initialized (call distributed.destroy() first)');
  const worldSize = opts.worldSize ?? envInt('WORLD_SIZE', 1);
  const rank = opts.rank ?? envInt('RANK', 0);
  const localRank = envInt('LOCAL_RANK', rank);
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) throw new MixprecError('E_ARG', `worldSize must be a positive integer (got ${show(worldSize)})`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) throw new MixprecError('E_ARG', `rank must be an integer in [0, ${worldSize}) (got ${show(rank)})`);
  const masterAddr = opts.masterAddr ?? (process.env.MASTER_ADDR || '127.0.0.1');
  const masterPort = opts.masterPort ?? envInt('MASTER_PORT', 29500);
  const timeoutMs = opts.timeoutMs ?? envInt('MIXPREC_DIST_TIMEOUT_MS', 60000);
  if (typeof masterAddr !== 'string' || masterAddr === '') throw new MixprecError('E_ARG', 'masterAddr must be a host name or address');
  if (!Number.isSafeInteger(masterPort) || masterPort < 1 || masterPort > 65535) throw new MixprecError('E_ARG', `masterPort must be in 1..65535 (got ${show(masterPort)})`);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2 ** 31 - 1) throw new MixprecError('E_ARG', 'timeoutMs must be a positive integer (milliseconds)');
  if (opts.storeDir !== undefined && (typeof opts.storeDir !== 'string' || opts.storeDir === '')) throw new MixprecError('E_ARG', 'storeDir must be a folder path');
  let backend = opts.backend ?? 'auto';
  if (!['auto', 'gloo', 'nccl'].includes(backend)) throw new MixprecError('E_ARG', `backend must be 'auto', 'gloo' or 'nccl' (got ${show(backend)})`);
  if (backend === 'auto') {
    const cuda = backends().find((b) => b.name === 'cuda');
    backend = cuda?.available && available().nccl ? 'nccl' : 'gloo';
  }
  // NCCL: this rank's GPU is cuda:LOCAL_RANK (as torchrun's convention).
  const device: Device = backend === 'nccl' ? resolveDevice(`cuda:${localRank}`) : 'cpu';
  native().distInit({ backend, rank, worldSize, masterAddr, masterPort, storeDir: opts.storeDir, timeoutMs, device });
  current = { rank, worldSize, backend: backend as 'gloo' | 'nccl', localRank, device };
  return { ...current };
}

/** Whether init() has run (and destroy() has not). */
export function isInitialized(): boolean { return current !== null; }

/** This rank's place; E_STATE before init(). */
export function group(): GroupInfo {
  if (!current) throw new MixprecError('E_STATE', 'the process group is not initialized: call mixprec.distributed.init() first');
  return { ...current };
}

/** This rank (0 when not initialized, as a single-process job is rank 0 of 1). */
export function rank(): number { return current?.rank ?? 0; }
/** The number of ranks (1 when not initialized). */
export function worldSize(): number { return current?.worldSize ?? 1; }

/** Leaves the job: a final barrier (so rank 0's store outlives every rank's last use), then teardown. */
export function destroy(): void {
  if (!current) return;
  current = null;
  native().distDestroy();
}

const ELEM = { float32: 'f32', int32: 'i32' } as const;

function checkTensor(t: unknown, what: string): Tensor {
  if (!(t instanceof Tensor)) throw new MixprecError('E_ARG', `${what} needs a Tensor`);
  if (!t.isContiguous()) throw new MixprecError('E_ARG', `${what} needs a contiguous tensor (call .contiguous() first)`);
  group();
  return t;
}

/**
 * In place, on every rank: t := op over the ranks' t (every rank gets the same bits). FP16 /
 * BF16 tensors are reduced in FP32 and rounded back once. Returns t.
 */
export function allReduce(t: Tensor, op: ReduceOp = 'sum'): Tensor {
  checkTensor(t, 'allReduce');
  if (!['sum', 'avg', 'max', 'min'].includes(op)) throw new MixprecError('E_ARG', `op must be 'sum', 'avg', 'max' or 'min' (got ${show(op)})`);
  if (t.dtype === 'float32' || t.dtype === 'int32') {
    native().distAllReduce(t.handle(), t.offset * 4, t.size, ELEM[t.dtype], op, true);
    return t;
  }
  noGrad(() => {
    const wide = empty(t.shape, { dtype: 'float32', device: t.device });
    try {
      copyInto(wide, t);
      native().distAllReduce(wide.handle(), 0, wide.size, 'f32', op, true);
      copyInto(t, wide);
    } finally {
      wide.dispose();
    }
  });
  return t;
}

/** In place: every rank's t := root's t. Returns t. */
export function broadcast(t: Tensor, root = 0): Tensor {
  checkTensor(t, 'broadcast');
  if (!Number.isSafeInteger(root) || root < 0 || root >= worldSize()) throw new MixprecError('E_ARG', `root must be a rank in [0, ${worldSize()})`);
  const bytes = t.dtype === 'float32' || t.dtype === 'int32' ? 4 : 2;
  native().distBroadcast(t.handle(), t.offset * bytes, t.size * bytes, root, true);
  return t;
}

/** Returns once every rank has called it (E_DIST when one does not within the timeout). */
export function barrier(): void {
  group();
  native().distBarrier();
}

/** @internal Host numbers reduced in float64 (metrics): in place. */
export function allReduceNumbers(values: Float64Array, op: ReduceOp = 'sum'): Float64Array {
  group();
  if (current!.backend === 'nccl') {
    // NCCL reduces device memory only: through a small FP32 tensor (metrics need no more).
    noGrad(() => {
      const t = empty([values.length], { dtype: 'float32', device: current!.device });
      try {
        native().upload(t.handle(), Float32Array.from(values), 0);
        native().distAllReduce(t.handle(), 0, values.length, 'f32', op, true);
        values.set(native().download(t.handle(), 0, values.length));
      } finally {
        t.dispose();
      }
    });
    return values;
  }
  native().distAllReduceHost(values, op);
  return values;
}
