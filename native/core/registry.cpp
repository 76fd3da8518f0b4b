// The one place that knows whether the CUDA backend was compiled in.
#include "backend.h"
#include "../cpu/cpu_backend.h"
#ifdef MIXPREC_WITH_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace mp {

std::vector<BackendInfo> backendInfos() {
  BackendInfo cpu;
  cpu.name = "cpu"; cpu.compiled = true; cpu.available = true; cpu.features = cpuFeatures();
#ifdef MIXPREC_WITH_CUDA
  BackendInfo cuda = cudaBackendInfo();
#else
  BackendInfo cuda;
  cuda.name = "cuda";
  cuda.reason = "not compiled: nvcc was not found when the addon was built (or MIXPREC_CUDA=OFF); "
                "install the CUDA toolkit and run `npm rebuild mixprec`";
#endif
  return {cpu, cuda};
}

Backend* getBackend(const std::string& name) {
  if (name == "cpu") return cpuBackend();
  if (name == "cuda") {
#ifdef MIXPREC_WITH_CUDA
    return cudaBackend();
#else
    fail("E_NO_CUDA", backendInfos()[1].reason);
#endif
  }
  fail("E_ARG", "unknown device '" + name + "' (expected 'cpu' or 'cuda')");
}

}  // namespace mp
