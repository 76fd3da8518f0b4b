// The exact type of the raw native addon (build/Release/mixprec.node). Users import the typed
// wrapper in src/ (`mixprec`); this file is the contract between native/napi/addon.cpp and src/native.ts.
// Every function throws an Error carrying a stable `code` (E_ARG, E_SHAPE, E_DTYPE, E_DISPOSED,
// E_DEVICE, E_NO_CUDA, E_OOM, E_CUDA), which src/native.ts turns into a MixprecError.

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
  device?: {
    name: string;
    computeCapability: string;
    totalMemory: number;
    freeMemory: number;
    multiprocessors: number;
  };
}

export interface NativeGemmArgs {
  M: number; N: number; K: number;
  transA: boolean; transB: boolean;
  a: StorageHandle; aType: DTypeCode;
  b: StorageHandle; bType: DTypeCode;
  c?: StorageHandle; cType?: DTypeCode;
  bias?: StorageHandle; biasType?: DTypeCode;
  alpha: number; beta: number;
  act: ActCode;
  out: StorageHandle; outType: DTypeCode;
  /** Also store the value before the activation here ([M, N] of preActType). */
  preAct?: StorageHandle; preActType?: DTypeCode;
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

export interface NativeOptimizerStepArgs {
  n: number;
  master: StorageHandle;
  working?: StorageHandle; workingType?: DTypeCode;
  grad: StorageHandle; gradType: DTypeCode;
  m?: StorageHandle; v?: StorageHandle;
  state: StorageHandle;
  config: NativeOptimConfig;
}

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
  fill(h: StorageHandle, dtype: DTypeCode, n: number, value: number): void;
  cast(src: StorageHandle, srcType: DTypeCode, dst: StorageHandle, dstType: DTypeCode, n: number): void;
  gemm(args: NativeGemmArgs): void;
  synchronize(device: string): void;
  /** Live tensor storage per backend (bytes and allocations made through alloc()). */
  memoryStats(): Record<'cpu' | 'cuda', { bytes: number; allocations: number }>;
  f16FromF32(values: Float32Array): Uint16Array;
  f16ToF32(bits: Uint16Array): Float32Array;
  bf16FromF32(values: Float32Array): Uint16Array;
  bf16ToF32(bits: Uint16Array): Float32Array;
  // --- the mixed-precision step (native/shared/amp.h; state is an AmpState in backend memory) ---
  unscaleCheckNorm(grad: StorageHandle, gradType: DTypeCode, n: number, state: StorageHandle, out32: StorageHandle | null): void;
  ampFinalize(state: StorageHandle, scaler: NativeScalerConfig, optim: NativeOptimConfig, updateScale: boolean): void;
  optimizerStep(args: NativeOptimizerStepArgs): void;
  accumulate(grad: StorageHandle, gradType: DTypeCode, acc: StorageHandle, n: number, overwrite: boolean): void;
  /** The loss-scale rule on a host-side AmpState (GradScaler.update outside a fused step). */
  scalerUpdateHost(state: Uint8Array, scaler: NativeScalerConfig, foundInf: boolean): void;
  /** sizeof(AmpState), to check the layout mirrored in src/amp/state.ts. */
  readonly ampStateBytes: number;
  // --- layers and losses (native/shared/nn.h); sizes in elements ---
  /** A handle onto bytes [byteOffset, byteOffset + bytes) of another handle's memory (no copy). */
  view(h: StorageHandle, byteOffset: number, bytes: number): StorageHandle;
  activationForward(a: { act: ActCode; x: StorageHandle; xType: DTypeCode; y: StorageHandle; yType: DTypeCode; n: number }): void;
  activationBackward(a: { act: ActCode; dy: StorageHandle; dyType: DTypeCode; z: StorageHandle; zType: DTypeCode; dx: StorageHandle; dxType: DTypeCode; n: number }): void;
  columnSum(a: { x: StorageHandle; xType: DTypeCode; M: number; N: number; out: StorageHandle; outType: DTypeCode }): void;
  /** labels: an int32 storage, values in [0, C) (checked by the caller). metrics: FP32 loss at lossOffset, int32 correct count at correctOffset (bytes). */
  softmaxCrossEntropy(a: {
    logits: StorageHandle; logitsType: DTypeCode; labels: StorageHandle; B: number; C: number; smoothing: number; lossScale: number;
    dlogits?: StorageHandle; dType?: DTypeCode; metrics: StorageHandle; lossOffset?: number; correctOffset?: number;
  }): void;
  mseLoss(a: {
    pred: StorageHandle; predType: DTypeCode; target: StorageHandle; targetType: DTypeCode; n: number; lossScale: number;
    dpred?: StorageHandle; dType?: DTypeCode; metrics: StorageHandle; lossOffset?: number;
  }): void;
  layerNormForward(a: {
    x: StorageHandle; xType: DTypeCode; gamma: StorageHandle; beta: StorageHandle; gType: DTypeCode; M: number; N: number; eps: number;
    y: StorageHandle; yType: DTypeCode; mean: StorageHandle; rstd: StorageHandle;
  }): void;
  layerNormBackward(a: {
    dy: StorageHandle; dyType: DTypeCode; x: StorageHandle; xType: DTypeCode; gamma: StorageHandle; gType: DTypeCode;
    mean: StorageHandle; rstd: StorageHandle; M: number; N: number; dx: StorageHandle; dxType: DTypeCode;
    dgamma: StorageHandle; dbeta: StorageHandle; dgType: DTypeCode;
  }): void;
  /** seed = seedHi * 2^32 + seedLo (each a uint32). */
  dropout(a: { x: StorageHandle; xType: DTypeCode; y: StorageHandle; yType: DTypeCode; n: number; p: number; seedHi: number; seedLo: number }): void;
  /** Test hook: force the CPU GEMM's scalar fallback ('scalar') or run-time dispatch ('auto'). Returns the path now in use. */
  setCpuGemmIsa(isa: 'auto' | 'scalar'): string;
}
