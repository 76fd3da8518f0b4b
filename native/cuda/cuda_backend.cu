// The CUDA backend: device probing, memory (a caching allocator), and the op table: one method
// per line of native/core/ops.def, each calling mp::cuda::<op> (cuda_ops.cuh; kernels by family
// in copy.cu, gemm.cu, elementwise.cu, reduce.cu, softmax.cu, layernorm.cu, embedding.cu, amp.cu).
// Everything runs on one stream the backend owns; calls that hand data back to the host
// synchronise that stream, the ops never do.
#include "cuda_backend.h"

#include <cuda_runtime.h>
#include <stdint.h>
#include <algorithm>
#include <exception>
#include <map>
#include <mutex>
#include <unordered_map>
#include <string>
#include "../core/block_cache.h"
#include "check.cuh"
#include "cuda_ops.cuh"
#include "gemm.cuh"

namespace mp {
namespace {

constexpr int kMinComputeCapability = 75;  // Turing: ldmatrix and f16 mma.sync

// Probing only: a kernel of this translation unit, to ask whether the addon has code (SASS or
// PTX) the device can run.
__global__ void probeKernel() {}

// ------------------------------------------------------------------------------------------
// Device memory. Nothing else in the backend calls cudaMalloc / cudaFree, so a caching
// allocator can replace these few lines later without touching anything else.

// Called with BlockCache's rounded sizes (never 0: a zero-byte tensor still gets a distinct,
// valid block).
void* deviceAlloc(size_t bytes) {
  const size_t request = bytes;
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, request);
  if (status == cudaErrorMemoryAllocation) throwOutOfMemory(request);
  checkCuda(status, "cudaMalloc");
  return p;
}

void deviceFree(void* p) { MP_CUDA_CHECK(cudaFree(p)); }

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
void probeDevice(BackendInfo& info, int index) {
  int deviceCount = 0;
  const cudaError_t countStatus = cudaGetDeviceCount(&deviceCount);
  if (countStatus != cudaSuccess) { info.reason = describeInitFailure(countStatus); return; }
  if (deviceCount <= 0) { info.reason = "no CUDA-capable GPU was found"; return; }
  info.deviceCount = deviceCount;
  if (index >= deviceCount) {
    info.reason = "there is no GPU " + std::to_string(index) + " (this machine has " + std::to_string(deviceCount) + ")";
    return;
  }
  const std::string gpu = "GPU " + std::to_string(index);

  DeviceInfo& device = info.device;
  cudaDeviceProp props;
  cudaError_t status = cudaGetDeviceProperties(&props, index);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.ccMajor, cudaDevAttrComputeCapabilityMajor, index);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.ccMinor, cudaDevAttrComputeCapabilityMinor, index);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&device.multiprocessors, cudaDevAttrMultiProcessorCount, index);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = "could not query " + gpu + ": " + cudaErrorText(status);
    return;
  }
  device.name = props.name;
  device.totalMemory = props.totalGlobalMem;
  info.hasDevice = true;
  info.features = gemmFeatures(device.ccMajor, device.ccMinor);

  const std::string capability = std::to_string(device.ccMajor) + "." + std::to_string(device.ccMinor);
  if (device.ccMajor * 10 + device.ccMinor < kMinComputeCapability) {
    info.reason = gpu + " (" + device.name + ") has compute capability " + capability +
                  "; mixprec's CUDA backend needs 7.5 (Turing) or newer";
    return;
  }

  // Creates the context: fails when the GPU is unusable for this process (busy, out of memory).
  size_t freeBytes = 0, totalBytes = 0;
  status = cudaSetDevice(index);
  if (status == cudaSuccess) status = cudaMemGetInfo(&freeBytes, &totalBytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = gpu + " (" + device.name + ") cannot be used: " + cudaErrorText(status);
    return;
  }
  device.freeMemory = freeBytes;
  device.totalMemory = totalBytes;

  // A GPU newer than every architecture this addon was built for, with no PTX it can JIT.
  cudaFuncAttributes attributes;
  status = cudaFuncGetAttributes(&attributes, probeKernel);
  if (status != cudaSuccess) {
    cudaGetLastError();
    info.reason = "this build of mixprec has no kernels for " + gpu + " (" + device.name + ", compute capability " +
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
  CudaBackend(const DeviceInfo& device, int index)
      : index_(index), name_(index == 0 ? "cuda" : "cuda:" + std::to_string(index)),
        ccMajor_(device.ccMajor), ccMinor_(device.ccMinor), multiprocessors_(device.multiprocessors) {
    useDevice();
    // Non-blocking: never serialised against the legacy default stream other code may use.
    MP_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  const char* name() const override { return name_.c_str(); }

  // The caching allocator (native/core/block_cache.h): a training step's activations and batches
  // cost no cudaMalloc / cudaFree; on cudaMalloc failure the cache is emptied (after the stream
  // drained) and the allocation retried once. Every kernel runs on the one stream, so a block
  // released here can be reused at once: work queued later on the stream runs after the work that
  // used it. The ops take their workspaces from here too (cuda_ops.cuh); the cache is thread-safe
  // (Node workers may share the backend).
  void* alloc(size_t bytes) override {
    useDevice();
    return cache_.alloc(bytes);
  }

  void release(void* p) override { cache_.release(p); }

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

  void synchronize() override {
    useDevice();
    MP_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void* stream() override {
    useDevice();
    return stream_;
  }

  // The ops: asynchronous, on the stream (semantics at each Args struct, native/core/op_args.h).
#define MP_OP(name, Args)                      \
  void name(const Args& args) override {       \
    useDevice();                               \
    cuda::name(args, context());               \
  }
#include "../core/ops.def"
#undef MP_OP

 private:
  // The current device is per host thread; a call may come from a thread (a worker) that never
  // selected this backend's device, or one where other code selected another device.
  void useDevice() const { MP_CUDA_CHECK(cudaSetDevice(index_)); }

  cuda::CudaContext context() {
    cuda::CudaContext c;
    c.stream = stream_;
    c.multiprocessors = multiprocessors_;
    c.ccMajor = ccMajor_;
    c.ccMinor = ccMinor_;
    c.memory = this;
    return c;
  }

  int index_;
  std::string name_;  // "cuda" for GPU 0 (the default device), "cuda:N" for the others
  cudaStream_t stream_ = nullptr;
  int ccMajor_, ccMinor_, multiprocessors_;
  BlockCache cache_{{deviceAlloc, deviceFree, [this] { MP_CUDA_CHECK(cudaStreamSynchronize(stream_)); }},
                    ~size_t(0)};
};

}  // namespace

BackendInfo cudaBackendInfo(int index) {
  BackendInfo info;
  try {
    info.name = "cuda";
    info.compiled = true;
    probeDevice(info, index);
  } catch (const std::exception& e) {  // std::bad_alloc from the strings, at worst
    info.available = false;
    info.reason = std::string("probing the GPU failed: ") + e.what();
  } catch (...) {
    info.available = false;
    info.reason = "probing the GPU failed";
  }
  return info;
}

Backend* cudaBackend(int index) {
  static std::mutex mutex;
  // One backend (its own stream, workspaces and block cache) per GPU, made on first use.
  // Deliberately never deleted: at process exit the CUDA runtime may already be torn down, and
  // destroying a stream then would fail. The driver reclaims everything with the process.
  static std::map<int, CudaBackend*> instances;
  std::lock_guard<std::mutex> lock(mutex);
  CudaBackend*& instance = instances[index];
  if (instance == nullptr) {
    const BackendInfo info = cudaBackendInfo(index);
    if (!info.available) fail("E_NO_CUDA", "CUDA backend unavailable: " + info.reason);
    instance = new CudaBackend(info.device, index);  // a failed construction is retried on the next call
  }
  return instance;
}

}  // namespace mp
