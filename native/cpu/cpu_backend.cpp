// The CPU backend: host memory, synchronous ops. Also the oracle the CUDA backend is tested against.
#include "cpu_backend.h"

#include <stdlib.h>
#include <string.h>

namespace mp {
namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void* alloc(size_t bytes) override {
    // 64-byte alignment: vector loads and cache lines; size rounded up as aligned_alloc needs.
    const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    void* p = aligned_alloc(64, rounded);
    if (!p) fail("E_OOM", "cpu: out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void release(void* p) override { free(p); }
  void copyIn(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }
  void copyOut(void* dst, const void* src, size_t bytes) override { if (bytes) memcpy(dst, src, bytes); }

#define MP_OP(name, Args) \
  void name(const Args& a) override { cpu::name(a); }
#include "../core/ops.def"
#undef MP_OP
};

}  // namespace

Backend* cpuBackend() {
  static CpuBackend backend;
  return &backend;
}

}  // namespace mp
