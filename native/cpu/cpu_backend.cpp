// The CPU backend: host memory, synchronous ops. Also the oracle the CUDA backend is tested against.
#include "cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#include "../core/block_cache.h"

namespace mp {
namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  // Blocks are cached (native/core/block_cache.h): a training step's activations reuse the last
  // step's memory instead of faulting fresh pages in. Up to 2 GiB of released blocks are kept.
  void* alloc(size_t bytes) override { return cache_.alloc(bytes); }
  void release(void* p) override { cache_.release(p); }
  void copyIn(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }
  void copyOut(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }

#define MP_OP(name, Args) \
  void name(const Args& a) override { cpu::name(a); }
#include "../core/ops.def"
#undef MP_OP

 private:
  // 64-byte alignment: vector loads and cache lines (block sizes are multiples of 512).
  static void* hostAlloc(size_t bytes) {
    void* p = aligned_alloc(64, bytes);
    if (!p) fail("E_OOM", "cpu: out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  BlockCache cache_{{hostAlloc, [](void* p) { free(p); }, [] {}}, size_t(2) << 30};
};

}  // namespace

Backend* cpuBackend() {
  static CpuBackend backend;
  return &backend;
}

}  // namespace mp
