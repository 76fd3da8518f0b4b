// The narrow backend interface: memory (alloc / free / copy in / copy out / fill) plus the op
// table. The N-API layer talks only to this; CPU and CUDA implement it. Pointers returned by
// alloc() belong to the backend's address space (host memory for CPU, device memory for CUDA).
// Ops are called with arguments already validated by the N-API reader (every tensor's extent lies
// inside its storage, Args::check() passed); backends still throw mp::Error (never abort) on what
// only they can detect (OOM, CUDA errors).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <memory>
#include <string>
#include <vector>
#include "op_args.h"

namespace mp {

struct DeviceInfo {
  std::string name;
  int ccMajor = 0, ccMinor = 0;
  uint64_t totalMemory = 0, freeMemory = 0;
  int multiprocessors = 0;
};

struct BackendInfo {
  std::string name;        // "cpu" | "cuda"
  bool compiled = false;   // built into this addon
  bool available = false;  // usable on this machine now
  std::string reason;      // why not, when !available (or !compiled)
  bool hasDevice = false;
  DeviceInfo device;       // CUDA only: GPU 0
  int deviceCount = 0;     // CUDA only: GPUs found ("cuda:N" for N < deviceCount)
  std::string features;    // CPU: the kernel level and its GEMM kernels, e.g. "avx2: fp32 avx2+fma 6x16"
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // --- memory ---
  virtual void* alloc(size_t bytes) = 0;  // throws E_OOM; bytes may be 0 (returns a valid token)
  virtual void release(void* p) = 0;
  virtual void copyIn(void* dst, const void* hostSrc, size_t bytes) = 0;
  virtual void copyOut(void* hostDst, const void* src, size_t bytes) = 0;  // synchronous
  virtual void synchronize() {}
  // The CUDA stream every op of this backend is ordered on (nullptr for the CPU), with the
  // backend's device made current on the calling thread: NCCL enqueues its collectives there.
  virtual void* stream() { return nullptr; }
  // --- the ops: one virtual per line of native/core/ops.def, semantics at each Args struct ---
#define MP_OP(name, Args) virtual void name(const Args& args) = 0;
#include "ops.def"
#undef MP_OP
};

// Registry (native/core/registry.cpp): the only place that knows whether CUDA is compiled in.
std::vector<BackendInfo> backendInfos();
// "cpu", "cuda" (GPU 0) or "cuda:N"; throws E_NO_CUDA / E_DEVICE; one backend per device.
Backend* getBackend(const std::string& name);

}  // namespace mp
