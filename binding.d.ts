// The exact type of the raw native addon (build/Release/mixprec.node). Users import the typed
// wrapper in src/ (`mixprec`); this file is the contract between native/napi/addon.cpp and src/native.ts.
// Every function throws an Error carrying a stable `code` (E_ARG, E_SHAPE, E_DTYPE, E_DISPOSED,
// E_DEVICE, E_NO_CUDA, E_OOM, E_CUDA, E_INTERNAL), which src/native.ts turns into a MixprecError.

/** An opaque, type-tagged handle owning one backend allocation (freed by release() or on GC). */
export type StorageHandle = { readonly __mixprecStorage: unique symbol };

/** 0 = float32, 1 = float16, 2 = bfloat16 (native/shared/dtype.h). */
export type DTypeCode = 0 | 1 | 2;
/** 0 = none, 1 = relu, 2 = gelu (native/shared/activation.h). */
export type ActCode = 0 | 1 | 2;

export interface NativeBackendInfo {
  name: 'cpu' | 'cuda';
  compiled: boolean;
  available: boolean;
  reason?: string;
  features?: string;
  /** CUDA: GPUs found (devices 'cuda:0' .. 'cuda:N-1'; 'cuda' is 'cuda:0'). */
  deviceCount?: number;
  device?: {
    name: string;
    computeCapability: string;
    totalMemory: number;
    freeMemory: number;
    multiprocessors: number;
  };
}

export interface NativeScalerConfig {
  growthFactor: number; backoffFactor: number; minScale: number; maxScale: number;
  growthInterval: number; hysteresis: number; dynamic: boolean; enabled: boolean;
}

/** kind: 0 = SGD, 1 = Adam, 2 = AdamW. */
export interface NativeOptimConfig {
  kind: 0 | 1 | 2; lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
  momentum: number; dampening: number; nesterov: boolean; maxNorm: number;
}

/**
 * Op arguments (native/core/op_args.h is the reference for every field's meaning). A tensor
 * field `x` is a handle with `xOffset` (elements of its dtype, default 0) and, where its dtype
 * varies, `xType`. Shapes and strides are in elements. Optional fields may be omitted or null.
 */
type H = StorageHandle;
type Opt<T> = T | null | undefined;
export interface FillArgs { n: number; value: number; out: H; outOffset?: number; outType: DTypeCode | 3 }
export interface CopyArgs {
  shape: number[]; xStrides: number[]; outStrides: number[];
  x: H; xOffset?: number; xType: DTypeCode | 3; out: H; outOffset?: number; outType: DTypeCode | 3;
}
export interface GemmArgs {
  M: number; N: number; K: number; batch?: number;
  transA?: boolean; transB?: boolean;
  lda?: number; ldb?: number; ldc?: number; strideA?: number; strideB?: number; strideC?: number;
  alpha: number; beta: number; act: ActCode;
  a: H; aOffset?: number; aType: DTypeCode;
  b: H; bOffset?: number; bType: DTypeCode;
  out: H; outOffset?: number; outType: DTypeCode;
  c?: Opt<H>; cOffset?: number; cType?: DTypeCode;
  bias?: Opt<H>; biasOffset?: number; biasType?: DTypeCode;
  /** Also store the value before the activation here (same layout as out). */
  preAct?: Opt<H>; preActOffset?: number; preActType?: DTypeCode;
}
/** op: 0 add, 1 sub, 2 mul. b absent: b is `scalar`. out contiguous with `shape`. */
export interface BinaryArgs {
  op: 0 | 1 | 2; shape: number[]; scalar: number;
  a: H; aOffset?: number; aType: DTypeCode; aStrides: number[];
  b?: Opt<H>; bOffset?: number; bType?: DTypeCode; bStrides?: number[];
  out: H; outOffset?: number; outType: DTypeCode;
}
/** out[o, i] = alpha * sum_r x[o, r, i] + beta * out[o, i]. */
export interface ReduceArgs {
  outer: number; R: number; inner: number; alpha: number; beta: number;
  x: H; xOffset?: number; xType: DTypeCode; out: H; outOffset?: number; outType: DTypeCode;
}
export interface ActivationArgs { act: ActCode; n: number; x: H; xOffset?: number; xType: DTypeCode; y: H; yOffset?: number; yType: DTypeCode }
export interface ActivationBackwardArgs {
  act: ActCode; n: number; dy: H; dyOffset?: number; dyType: DTypeCode; z: H; zOffset?: number; zType: DTypeCode;
  dx: H; dxOffset?: number; dxType: DTypeCode;
}
/** seed = seedHi * 2^32 + seedLo (each a uint32). */
export interface DropoutArgs {
  n: number; p: number; seedHi: number; seedLo: number;
  x: H; xOffset?: number; xType: DTypeCode; y: H; yOffset?: number; yType: DTypeCode;
}
export interface SoftmaxArgs { M: number; N: number; log?: boolean; x: H; xOffset?: number; xType: DTypeCode; y: H; yOffset?: number; yType: DTypeCode }
export interface SoftmaxBackwardArgs {
  M: number; N: number; log?: boolean; y: H; yOffset?: number; yType: DTypeCode; dy: H; dyOffset?: number; dyType: DTypeCode;
  dx: H; dxOffset?: number; dxType: DTypeCode;
}
/** labels / correct: int32 storage. loss, gradScale: one FP32. */
export interface CrossEntropyArgs {
  B: number; C: number; smoothing: number; lossScale: number;
  logits: H; logitsOffset?: number; logitsType: DTypeCode; labels: H; labelsOffset?: number;
  gradScale?: Opt<H>; gradScaleOffset?: number;
  dlogits?: Opt<H>; dlogitsOffset?: number; dType?: DTypeCode;
  loss?: Opt<H>; lossOffset?: number; correct?: Opt<H>; correctOffset?: number;
}
export interface MseArgs {
  n: number; lossScale: number;
  pred: H; predOffset?: number; predType: DTypeCode; target: H; targetOffset?: number; targetType: DTypeCode;
  gradScale?: Opt<H>; gradScaleOffset?: number;
  dpred?: Opt<H>; dpredOffset?: number; dType?: DTypeCode;
  loss?: Opt<H>; lossOffset?: number;
}
export interface LayerNormArgs {
  M: number; N: number; eps: number;
  x: H; xOffset?: number; xType: DTypeCode;
  gType?: DTypeCode; gamma?: Opt<H>; gammaOffset?: number; beta?: Opt<H>; betaOffset?: number;
  y: H; yOffset?: number; yType: DTypeCode; mean: H; meanOffset?: number; rstd: H; rstdOffset?: number;
}
export interface LayerNormBackwardArgs {
  M: number; N: number; accumulate?: boolean;
  dy: H; dyOffset?: number; dyType: DTypeCode; x: H; xOffset?: number; xType: DTypeCode;
  gType?: DTypeCode; gamma?: Opt<H>; gammaOffset?: number;
  mean: H; meanOffset?: number; rstd: H; rstdOffset?: number;
  dx?: Opt<H>; dxOffset?: number; dxType?: DTypeCode;
  dgType?: DTypeCode; dgamma?: Opt<H>; dgammaOffset?: number; dbeta?: Opt<H>; dbetaOffset?: number;
}
export interface EmbeddingArgs {
  n: number; V: number; C: number; ids: H; idsOffset?: number;
  weight: H; weightOffset?: number; wType: DTypeCode; out: H; outOffset?: number; outType: DTypeCode;
}
/** dweight: FP32 [V, C], accumulated into. */
export interface EmbeddingBackwardArgs {
  n: number; V: number; C: number; ids: H; idsOffset?: number;
  dy: H; dyOffset?: number; dyType: DTypeCode; dweight: H; dweightOffset?: number;
}
/** Strides are element strides {b, h, t} of a [B, H, T, D] view whose last dim is contiguous. */
export interface AttentionArgs {
  B: number; H: number; Tq: number; Tk: number; D: number; scale: number; causal?: boolean; dropoutP: number; seedHi: number; seedLo: number;
  type: DTypeCode; qStrides: number[]; kStrides: number[]; vStrides: number[]; outStrides: number[];
  q: H; qOffset?: number; k: H; kOffset?: number; v: H; vOffset?: number; out: H; outOffset?: number;
  /** FP32 [B, H, Tq], the rows' log-sum-exp (what the backward needs). */
  lse?: Opt<H>; lseOffset?: number;
}
export interface AttentionBackwardArgs {
  B: number; H: number; Tq: number; Tk: number; D: number; scale: number; causal?: boolean; dropoutP: number; seedHi: number; seedLo: number;
  type: DTypeCode; dType: DTypeCode;
  qStrides: number[]; kStrides: number[]; vStrides: number[]; outStrides: number[]; doutStrides: number[];
  dqStrides: number[]; dkStrides: number[]; dvStrides: number[];
  q: H; qOffset?: number; k: H; kOffset?: number; v: H; vOffset?: number; out: H; outOffset?: number;
  dout: H; doutOffset?: number; lse: H; lseOffset?: number;
  dq: H; dqOffset?: number; dk: H; dkOffset?: number; dv: H; dvOffset?: number;
}
export interface UnscaleArgs { n: number; g: H; gOffset?: number; gType: DTypeCode; state: H; out32?: Opt<H>; out32Offset?: number }
export interface AmpFinalizeArgs { state: H; scaler: NativeScalerConfig; optim: NativeOptimConfig; updateScale: boolean }
export interface OptimizerStepArgs {
  n: number; master: H; masterOffset?: number; working?: Opt<H>; workingOffset?: number; workingType?: DTypeCode; grad: H; gradOffset?: number; gradType: DTypeCode;
  m?: Opt<H>; mOffset?: number; v?: Opt<H>; vOffset?: number; state: H; config: NativeOptimConfig;
}
export interface AccumulateArgs { n: number; overwrite: boolean; g: H; gOffset?: number; gType: DTypeCode; acc: H; accOffset?: number }

export interface Binding {
  backends(): NativeBackendInfo[];
  alloc(device: string, bytes: number): StorageHandle;
  release(h: StorageHandle): void;
  /** Converts `values` to dtype (RNE) and writes them at element `offset` (default 0). */
  upload(h: StorageHandle, values: Float32Array, dtype: DTypeCode, offset?: number): void;
  /** Reads elements [offset, offset + n) as FP32. */
  download(h: StorageHandle, dtype: DTypeCode, n: number, offset?: number): Float32Array;
  writeBytes(h: StorageHandle, bytes: Uint8Array): void;
  readBytes(h: StorageHandle, bytes: number): Uint8Array;
  synchronize(device: string): void;
  /** Live tensor storage per backend (bytes and allocations made through alloc()). */
  memoryStats(): Record<'cpu' | 'cuda', { bytes: number; allocations: number }>;
  f16FromF32(values: Float32Array): Uint16Array;
  f16ToF32(bits: Uint16Array): Float32Array;
  bf16FromF32(values: Float32Array): Uint16Array;
  bf16ToF32(bits: Uint16Array): Float32Array;
  /** The loss-scale rule on a host-side AmpState (GradScaler.update outside a fused step). */
  scalerUpdateHost(state: Uint8Array, scaler: NativeScalerConfig, foundInf: boolean): void;
  // --- the process group (native/dist): one per process ---
  distInit(o: { backend: string; rank: number; worldSize: number; masterAddr: string; masterPort: number; storeDir?: string; timeoutMs: number; device?: string }): void;
  distDestroy(): void;
  /** In place over [byteOffset, byteOffset + count elements); wait=false: enqueued (the storage must outlive distWait()). */
  distAllReduce(h: StorageHandle, byteOffset: number, count: number, elem: 'f32' | 'f64' | 'i32', op: 'sum' | 'avg' | 'max' | 'min', wait: boolean): void;
  distAllReduceHost(values: Float64Array, op: 'sum' | 'avg' | 'max' | 'min'): void;
  distBroadcast(h: StorageHandle, byteOffset: number, bytes: number, root: number, wait: boolean): void;
  distBarrier(): void;
  distWait(): void;
  distInfo(): { gloo: boolean; glooReason?: string; nccl: boolean; ncclReason?: string; ncclVersion?: number; group?: { rank: number; worldSize: number; backend: string } };
  /** sizeof(AmpState), to check the layout mirrored in src/amp/state.ts. */
  readonly ampStateBytes: number;
  // --- the ops: one per line of native/core/ops.def ---
  fill(a: FillArgs): void;
  copy(a: CopyArgs): void;
  gemm(a: GemmArgs): void;
  binary(a: BinaryArgs): void;
  reduceSum(a: ReduceArgs): void;
  activationForward(a: ActivationArgs): void;
  activationBackward(a: ActivationBackwardArgs): void;
  dropout(a: DropoutArgs): void;
  softmaxForward(a: SoftmaxArgs): void;
  softmaxBackward(a: SoftmaxBackwardArgs): void;
  softmaxCrossEntropy(a: CrossEntropyArgs): void;
  mseLoss(a: MseArgs): void;
  layerNormForward(a: LayerNormArgs): void;
  layerNormBackward(a: LayerNormBackwardArgs): void;
  embeddingForward(a: EmbeddingArgs): void;
  embeddingBackward(a: EmbeddingBackwardArgs): void;
  attentionForward(a: AttentionArgs): void;
  attentionBackward(a: AttentionBackwardArgs): void;
  unscaleCheckNorm(a: UnscaleArgs): void;
  ampFinalize(a: AmpFinalizeArgs): void;
  optimizerStep(a: OptimizerStepArgs): void;
  accumulate(a: AccumulateArgs): void;
  /** Test hook: the caching allocator's bookkeeping driven through a fake device (native/napi/testing.cpp). */
  blockCacheSelfTest(): {
    oomRetrySucceeded: boolean; oomRetryFreedCached: boolean; reuseSameSize: boolean;
    failedFreeThrew: boolean; doubleFrees: number; cachedAfterEmpty: number;
    threadsSharedABlock: number; threadsLiveAfter: number;
  };
  /** The CPU kernels' level from now on ('auto': the best; native/cpu/isa.h). E_ARG for an unknown name or a level the CPU lacks. Returns the level now active. */
  setCpuIsa(isa: 'auto' | 'avx512bf16' | 'avx512' | 'avx2' | 'scalar'): string;
  /** The CPU kernels' level, the levels and features this CPU has, the GEMM kernels and the cache sizes they block for. */
  cpuIsa(): {
    active: string; best: string; available: string[]; cpuFeatures: string[]; gemm: string;
    cacheBytes: { l1d: number; l2: number; l3: number };
  };
}
