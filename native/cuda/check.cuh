// CUDA status -> mp::Error. Every runtime call and every kernel launch in the CUDA backend goes
// through these, so a failure reaches JS as E_CUDA / E_OOM with a message instead of aborting
// the process or surfacing later as an unrelated error.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdlib.h>
#include <string>
#include "../core/error.h"

namespace mp {

inline std::string cudaErrorText(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")";
}

// Errors of this kind poison the CUDA context: every later call fails too, so say so.
inline bool cudaErrorIsSticky(cudaError_t status) {
  switch (status) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

[[noreturn]] inline void throwCudaError(cudaError_t status, const char* what) {
  // A non-sticky failure stays recorded as the runtime's "last error"; clear it so the
  // cudaGetLastError() after the next, unrelated kernel launch does not report it again.
  cudaGetLastError();
  std::string message = std::string("CUDA error in ") + what + ": " + cudaErrorText(status);
  if (cudaErrorIsSticky(status))
    message += "; the GPU context is now unusable, restart the process to use CUDA again (a fault of a kernel "
               "queued earlier surfaces at the next check: MIXPREC_CUDA_SYNC=1 names the kernel)";
  fail("E_CUDA", message);
}

inline void checkCuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throwCudaError(status, what);
}

// MIXPREC_CUDA_SYNC=1 (read once): every launch is followed by a device synchronize, so a fault
// is reported by the kernel that made it (slow: for debugging).
inline bool syncEveryLaunch() {
  static const bool on = [] {
    const char* v = getenv("MIXPREC_CUDA_SYNC");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// Launch-configuration errors are reported only through cudaGetLastError. Kernels run
// asynchronously, so without MIXPREC_CUDA_SYNC=1 an execution fault surfaces at a later check and
// may belong to an earlier kernel: the message says so.
inline void checkLaunch(const char* kernelName) {
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throwCudaError(status, (std::string("launch of ") + kernelName +
                            (syncEveryLaunch() ? "" : " (the fault may be an earlier kernel's: rerun with MIXPREC_CUDA_SYNC=1 to name it)")).c_str());
  if (!syncEveryLaunch()) return;
  status = cudaDeviceSynchronize();
  if (status != cudaSuccess) throwCudaError(status, (std::string("kernel ") + kernelName + " (MIXPREC_CUDA_SYNC=1)").c_str());
}

[[noreturn]] inline void throwOutOfMemory(size_t bytesRequested) {
  cudaGetLastError();
  size_t freeBytes = 0, totalBytes = 0;
  const bool haveInfo = cudaMemGetInfo(&freeBytes, &totalBytes) == cudaSuccess;
  cudaGetLastError();
  std::string message = "out of GPU memory: cudaMalloc of " + std::to_string(bytesRequested) + " bytes failed";
  if (haveInfo)
    message += " (device has " + std::to_string(freeBytes) + " bytes free of " + std::to_string(totalBytes) + ")";
  fail("E_OOM", message);
}

// Resident blocks of `Threads` threads per SM for a kernel, queried once per kernel on the first
// device that runs it: it only sizes grids to a full wave (of the kernels whose results do not
// depend on the grid), so several GPUs of different models stay correct.
template <auto Kernel, int Threads>
int residentBlocks() {
  static const int blocks = [] {
    int b = 0;
    checkCuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, Kernel, Threads, 0),
              "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return b > 1 ? b : 1;
  }();  // a throw leaves it uninitialised: retried on the next call
  return blocks;
}

}  // namespace mp

#define MP_CUDA_CHECK(call) ::mp::checkCuda((call), #call)
