// CUDA status -> mp::Error. Every runtime call and every kernel launch in the CUDA backend goes
// through these, so a failure reaches JS as E_CUDA / E_OOM with a message instead of aborting
// the process or surfacing later as an unrelated error.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
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
    message += "; the GPU context is now unusable, restart the process to use CUDA again";
  fail("E_CUDA", message);
}

inline void checkCuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throwCudaError(status, what);
}

// Launch-configuration errors are reported only through cudaGetLastError.
inline void checkLaunch(const char* kernelName) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throwCudaError(status, (std::string("launch of ") + kernelName).c_str());
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

// Resident blocks of `Threads` threads per SM for a kernel, queried once per kernel (device 0 is
// the only device): sizes grids to one full wave.
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
