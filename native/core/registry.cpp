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
  int index = -1;
  if (name == "cuda") index = 0;
  else if (name.size() > 5 && name.compare(0, 5, "cuda:") == 0 && name.size() <= 9 &&
           name.find_first_not_of("0123456789", 5) == std::string::npos)
    index = std::stoi(name.substr(5));
  if (index < 0) fail("E_DEVICE", "unknown device '" + name + "' (expected 'cpu', 'cuda' or 'cuda:N')");
#ifdef MIXPREC_WITH_CUDA
  return cudaBackend(index);
#else
  fail("E_NO_CUDA", backendInfos()[1].reason);
#endif
}

}  // namespace mp
