// The CUDA backend: device probing, memory, element-wise kernels, and the GEMM dispatch.
// Everything runs on one stream the backend owns; calls that hand data back to the host
// synchronise that stream, the rest are asynchronous.
#include "cuda_backend.h"

#include <cuda_runtime.h>
#include <stdint.h>
#include <algorithm>
#include <exception>
#include <map>
#include <mutex>
#include <unordered_map>
#include <string>
#include "amp.cuh"
#include "check.cuh"
#include "gemm.cuh"
#include "nn.cuh"

namespace mp {
namespace {

constexpr int kMinComputeCapability = 75;  // Turing: ldmatrix and f16 mma.sync
constexpr int kElementwiseThreads = 256;

// ------------------------------------------------------------------------------------------
// Element-wise kernels

// pattern holds the fill value already converted (by store_f32 on the host), so every element
// gets the exact bits the CPU backend would write, without converting per element.
__global__ void fillKernel(void* dst, DType type, size_t n, uint32_t pattern) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  if (type == DType::F32) {
    uint32_t* out = static_cast<uint32_t*>(dst);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = pattern;
  } else {
    uint16_t* out = static_cast<uint16_t*>(dst);
    const uint16_t bits = (uint16_t)pattern;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = bits;
  }
}

__global__ void castKernel(const void* src, DType srcType, void* dst, DType dstType, size_t n) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    store_f32(dst, dstType, i, load_f32(src, srcType, i));
}

// Enough blocks to fill the GPU several times over; grid-stride loops cover the rest.
unsigned elementwiseBlocks(size_t n, int multiprocessors) {
  const size_t needed = (n + kElementwiseThreads - 1) / kElementwiseThreads;
  const size_t cap = (size_t)std::max(multiprocessors, 1) * 32;
  return (unsigned)std::min(needed, cap);
}

// ------------------------------------------------------------------------------------------
// Device memory. Nothing else in the backend calls cudaMalloc / cudaFree, so a caching
// allocator can replace these few lines later without touching anything else.

// cudaMalloc(0) returns nullptr, which callers could not tell from "no buffer"; a zero-byte
// tensor still needs a distinct, valid token.
constexpr size_t kZeroByteAllocation = 256;

void* deviceAlloc(size_t bytes) {
  const size_t request = bytes == 0 ? kZeroByteAllocation : bytes;
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, request);
  if (status == cudaErrorMemoryAllocation) throwOutOfMemory(request);
  checkCuda(status, "cudaMalloc");
  return p;
}

void deviceFree(void* p) { MP_CUDA_CHECK(cudaFree(p)); }

// For cleanup that must not throw (destructors during unwinding): whatever failed has already
// been reported by the exception in flight.
void deviceFreeQuietly(void* p) noexcept {
  cudaFree(p);
  cudaGetLastError();
}

bool rangesOverlap(const void* a, size_t aBytes, const void* b, size_t bBytes) {
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + bBytes && b0 < a0 + aBytes;
}

// A temporary device buffer for work queued on `stream`, freed once that work is done. The
// destructor cannot throw: a kernel fault it might see resurfaces at the next synchronising call.
class ScratchBuffer {
 public:
  ScratchBuffer(void* p, cudaStream_t stream) : p_(p), stream_(stream) {}
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() {
    cudaStreamSynchronize(stream_);
    deviceFreeQuietly(p_);
  }
  void* get() const { return p_; }

 private:
  void* p_;
  cudaStream_t stream_;
};

// ------------------------------------------------------------------------------------------
// Probing

std::string describeInitFailure(cudaError_t status) {
  int driverVersion = 0;
  cudaDriverGetVersion(&driverVersion);  // leaves 0 when no driver is loaded
  cudaGetLastError();
  const std::string code = " [" + std::string(cudaGetErrorName(status)) + "]";
  const int runtimeMajor = CUDART_VERSION / 1000, runtimeMinor = (CUDART_VERSION % 1000) / 10;
  const std::string runtime = std::to_string(runtimeMajor) + "." + std::to_string(runtimeMinor);
  switch (status) {
    case cudaErrorNoDevice:
      return "no CUDA-capable GPU was found (check the NVIDIA driver and CUDA_VISIBLE_DEVICES)" + code;
    case cudaErrorInsufficientDriver:
      if (driverVersion == 0) return "no NVIDIA driver is installed (libcuda could not be loaded)" + code;
      return "the NVIDIA driver supports CUDA up to " + std::to_string(driverVersion / 1000) + "." +
             std::to_string((driverVersion % 1000) / 10) + ", but this build of mixprec needs CUDA " +
             runtime + "; update the NVIDIA driver" + code;
    case cudaErrorStubLibrary:
      return "only the CUDA driver stub library was found, not a real NVIDIA driver" + code;
    case cudaErrorSystemDriverMismatch:
      return "the NVIDIA kernel module and the user-mode driver versions do not match (reboot or "
             "reinstall the driver)" + code;
    case cudaErrorCompatNotSupportedOnDevice:
      return "the installed CUDA forward-compatibility driver does not support this GPU" + code;
    case cudaErrorDevicesUnavailable:
      return "the GPU is busy or unavailable (exclusive-process compute mode?)" + code;
    default:
      return "CUDA initialisation failed: " + cudaErrorText(status);
  }
}

// Fills info; returns normally with info.available == false and a reason when unusable. CUDA
// failures here are expected (no driver, no GPU), so none of them throws.
void probeDevice(BackendInfo& info) {
  int deviceCount = 0;
  const cudaError_t countStatus = cudaGetDeviceCount(&deviceCount);
  if (countStatus != cudaSuccess) { info.reason = describeInitFailure(countStatus); return; }
  if (deviceCount <= 0) { info.reason = "no CUDA-capable GPU was found"; return; }

  DeviceInfo& device = info.device;
  cudaDeviceProp props;
  cudaError_t status = cudaGetDeviceProperties(&props, 0);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.ccMajor, cudaDevAttrComputeCapabilityMajor, 0);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.ccMinor, cudaDevAttrComputeCapabilityMinor, 0);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.multiprocessors, cudaDevAttrMultiProcessorCount, 0);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = "could not query GPU 0: " + cudaErrorText(status);
    return;
  }
  device.name = props.name;
  device.totalMemory = props.totalGlobalMem;
  info.hasDevice = true;
  info.features = gemmFeatures(device.ccMajor, device.ccMinor);

  const std::string capability = std::to_string(device.ccMajor) + "." + std::to_string(device.ccMinor);
  if (device.ccMajor * 10 + device.ccMinor < kMinComputeCapability) {
    info.reason = "GPU 0 (" + device.name + ") has compute capability " + capability +
                  "; mixprec's CUDA backend needs 7.5 (Turing) or newer";
    return;
  }

  // Creates the context: fails when the GPU is unusable for this process (busy, out of memory).
  size_t freeBytes = 0, totalBytes = 0;
  status = cudaSetDevice(0);
  if (status == cudaSuccess) status = cudaMemGetInfo(&freeBytes, &totalBytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = "GPU 0 (" + device.name + ") cannot be used: " + cudaErrorText(status);
    return;
  }
  device.freeMemory = freeBytes;
  device.totalMemory = totalBytes;

  // A GPU newer than every architecture this addon was built for, with no PTX it can JIT.
  cudaFuncAttributes attributes;
  status = cudaFuncGetAttributes(&attributes, fillKernel);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = "this build of mixprec has no kernels for GPU 0 (" + device.name + ", compute capability " +
                  capability + "): " + cudaErrorText(status) +
                  "; rebuild with MIXPREC_CUDA_ARCHS including " + std::to_string(device.ccMajor * 10 + device.ccMinor);
    return;
  }
  info.available = true;
}

// ------------------------------------------------------------------------------------------
// The backend

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const DeviceInfo& device)
      : ccMajor_(device.ccMajor), ccMinor_(device.ccMinor), multiprocessors_(device.multiprocessors) {
    useDevice();
    // Non-blocking: never serialised against the legacy default stream other code may use.
    MP_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  const char* name() const override { return "cuda"; }

  // A caching allocator: released blocks are kept (by size) and handed out again, so a training
  // step's activations and batches cost no cudaMalloc / cudaFree. Every kernel runs on the one
  // stream, so a block released here can be reused at once: work queued later on the stream runs
  // after the work that used it. Sizes are rounded (512 B below 1 MiB, 2 MiB above) so similar
  // requests share blocks; a cached block serves a request of at least half its size. On
  // cudaMalloc failure the cache is emptied and the allocation retried once.
  void* alloc(size_t bytes) override {
    useDevice();
    const size_t size = roundedSize(bytes);
    auto it = cached_.lower_bound(size);
    if (it != cached_.end() && it->first <= 2 * size) {
      void* p = it->second;
      live_[p] = it->first;
      cached_.erase(it);
      return p;
    }
    void* p = nullptr;
    try {
      p = deviceAlloc(size);
    } catch (const Error& e) {
      if (e.code != "E_OOM" || cached_.empty()) throw;
      emptyCache();
      p = deviceAlloc(size);
    }
    live_[p] = size;
    return p;
  }

  void release(void* p) override {
    if (p == nullptr) return;
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: nothing to do (never happens through the N-API layer)
    cached_.emplace(it->second, p);
    live_.erase(it);
  }

  // Frees every cached block (after the stream drained: queued kernels may still use them).
  void emptyCache() {
    MP_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (auto& [size, p] : cached_) deviceFree(p);
    cached_.clear();
  }

  void copyIn(void* dst, const void* hostSrc, size_t bytes) override {
    if (bytes == 0) return;
    useDevice();
    MP_CUDA_CHECK(cudaMemcpyAsync(dst, hostSrc, bytes, cudaMemcpyHostToDevice, stream_));
    // The caller's (pageable) buffer may be freed as soon as we return.
    MP_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void copyOut(void* hostDst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    useDevice();
    // On our stream, so it sees the results of every kernel queued before it.
    MP_CUDA_CHECK(cudaMemcpyAsync(hostDst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    MP_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void fill(void* dst, DType t, size_t n, float value) override {
    if (n == 0) return;
    useDevice();
    uint32_t pattern = 0;
    store_f32(&pattern, t, 0, value);  // little-endian: a 16-bit value sits in the low half
    fillKernel<<<elementwiseBlocks(n, multiprocessors_), kElementwiseThreads, 0, stream_>>>(dst, t, n, pattern);
    checkLaunch("fillKernel");
  }

  void cast(const void* src, DType srcType, void* dst, DType dstType, size_t n) override {
    if (n == 0) return;
    useDevice();
    castKernel<<<elementwiseBlocks(n, multiprocessors_), kElementwiseThreads, 0, stream_>>>(src, srcType, dst,
                                                                                            dstType, n);
    checkLaunch("castKernel");
  }

  void gemm(const GemmArgs& args) override {
    useDevice();
    const size_t outputs = (size_t)args.M * (size_t)args.N;
    const size_t cBytes = outputs * dtype_size(args.cType);
    const bool cOverlapsOut = args.beta != 0.0f && args.C != nullptr &&
                              rangesOverlap(args.C, cBytes, args.out, outputs * dtype_size(args.outType));
    // The kernels read C[i] and then write out[i] in the same thread, which is only safe when
    // C and out are the very same array; any other overlap (an offset view, another dtype over
    // the same bytes) would let one thread overwrite C that another has yet to read.
    // The same holds for preAct, which the epilogue also writes.
    const bool cOverlapsPreAct = args.beta != 0.0f && args.C != nullptr && args.preAct != nullptr &&
                                 rangesOverlap(args.C, cBytes, args.preAct, outputs * dtype_size(args.preActType));
    const bool preActSafe = !cOverlapsPreAct || (args.C == args.preAct && args.cType == args.preActType);
    if (preActSafe && (!cOverlapsOut || (args.C == args.out && args.cType == args.outType))) {
      launchGemm(args, stream_, ccMajor_, ccMinor_);
      return;
    }
    ScratchBuffer copyOfC(deviceAlloc(cBytes), stream_);
    MP_CUDA_CHECK(cudaMemcpyAsync(copyOfC.get(), args.C, cBytes, cudaMemcpyDeviceToDevice, stream_));
    GemmArgs staged = args;
    staged.C = copyOfC.get();
    launchGemm(staged, stream_, ccMajor_, ccMinor_);
  }

  void synchronize() override {
    useDevice();
    MP_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // The mixed-precision step (kernels in amp.cu): asynchronous, on the stream; the AmpState stays
  // in device memory, so a whole step (unscale, finalize, optimizer) needs no host round trip.
  void unscaleCheckNorm(const void* g, DType t, size_t n, AmpState* state, float* out32) override {
    if (n == 0) return;
    useDevice();
    launchUnscaleCheckNorm(g, t, n, state, out32, stream_, multiprocessors_);
  }
  void ampFinalize(AmpState* state, const ScalerConfig& c, const OptimConfig& o, bool updateScale) override {
    useDevice();
    launchAmpFinalize(state, c, o, updateScale, stream_);
  }
  void optimizerStep(const OptimStepArgs& args) override {
    if (args.n == 0) return;
    useDevice();
    launchOptimizerStep(args, stream_, multiprocessors_);
  }
  void accumulate(const void* g, DType t, float* acc, size_t n, bool overwrite) override {
    if (n == 0) return;
    useDevice();
    launchAccumulate(g, t, acc, n, overwrite, stream_, multiprocessors_);
  }

  // Layers and losses (kernels in nn.cu): asynchronous, on the stream; the loss and the correct
  // count are written by the device into backend memory (no host round trip).
  void activationForward(Act act, const void* x, DType xType, void* y, DType yType, size_t n) override {
    if (n == 0) return;
    useDevice();
    launchActivationForward(act, x, xType, y, yType, n, stream_, multiprocessors_);
  }
  void activationBackward(Act act, const void* dy, DType dyType, const void* z, DType zType, void* dx,
                          DType dxType, size_t n) override {
    if (n == 0) return;
    useDevice();
    launchActivationBackward(act, dy, dyType, z, zType, dx, dxType, n, stream_, multiprocessors_);
  }
  void columnSum(const void* x, DType xType, int64_t M, int64_t N, void* out, DType outType) override {
    if (N <= 0) return;
    useDevice();
    launchColumnSum(x, xType, M, N, out, outType, stream_);
  }
  void softmaxCrossEntropy(const CrossEntropyArgs& args) override {
    useDevice();
    launchSoftmaxCrossEntropy(args, stream_);
  }
  void mseLoss(const MseArgs& args) override {
    useDevice();
    launchMseLoss(args, stream_);
  }
  void layerNormForward(const LayerNormArgs& args) override {
    if (args.M <= 0) return;
    useDevice();
    launchLayerNormForward(args, stream_, multiprocessors_);
  }
  void layerNormBackward(const LayerNormBackwardArgs& args) override {
    if (args.N <= 0) return;
    useDevice();
    launchLayerNormBackward(args, stream_, multiprocessors_);
  }
  void dropout(const void* x, DType xType, void* y, DType yType, size_t n, float p, uint64_t seed) override {
    if (n == 0) return;
    useDevice();
    launchDropout(x, xType, y, yType, n, p, seed, stream_, multiprocessors_);
  }

 private:
  // The current device is per host thread; a call may come from a thread (a worker) that never
  // selected device 0, or one where other code selected another device.
  static void useDevice() { MP_CUDA_CHECK(cudaSetDevice(0)); }

  cudaStream_t stream_ = nullptr;
  int ccMajor_, ccMinor_, multiprocessors_;
  std::multimap<size_t, void*> cached_;         // released blocks by size
  std::unordered_map<void*, size_t> live_;      // handed-out blocks and their rounded size

  static size_t roundedSize(size_t bytes) {
    if (bytes == 0) return kZeroByteAllocation;
    const size_t unit = bytes < (1u << 20) ? 512 : (2u << 20);
    return (bytes + unit - 1) / unit * unit;
  }
};

}  // namespace

BackendInfo cudaBackendInfo() {
  BackendInfo info;
  try {
    info.name = "cuda";
    info.compiled = true;
    probeDevice(info);
  } catch (const std::exception& e) {  // std::bad_alloc from the strings, at worst
    info.available = false;
    info.reason = std::string("probing the GPU failed: ") + e.what();
  } catch (...) {
    info.available = false;
    info.reason = "probing the GPU failed";
  }
  return info;
}

Backend* cudaBackend() {
  static std::mutex mutex;
  // Deliberately never deleted: at process exit the CUDA runtime may already be torn down, and
  // destroying the stream then would fail. The driver reclaims everything with the process.
  static CudaBackend* instance = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (instance == nullptr) {
    const BackendInfo info = cudaBackendInfo();
    if (!info.available) fail("E_NO_CUDA", "CUDA backend unavailable: " + info.reason);
    instance = new CudaBackend(info.device);  // a failed construction is retried on the next call
  }
  return instance;
}

}  // namespace mp
