// CPUID / XGETBV detection, the active level, and the cache sizes (isa.h).
#include "isa.h"

#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "../core/error.h"

#if MP_X86
#include <cpuid.h>
#endif

namespace mp {
namespace cpu {
namespace {

struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
  bool avx512bf16 = false, avx512fp16 = false, amxBf16 = false, amxFp16 = false;
  bool ymmState = false, zmmState = false;  // the OS saves these registers across switches
};

Features detect() {
  Features f;
#if MP_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (osxsave && avx) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    f.ymmState = (lo & 0x6) == 0x6;            // SSE + AVX state
    f.zmmState = (lo & 0xe6) == 0xe6;          // + opmask, ZMM0-15 upper halves, ZMM16-31
  }
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned maxSub = a;
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    f.amxBf16 = d & (1u << 22);
    f.avx512fp16 = d & (1u << 23);
    if (maxSub >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx512bf16 = a & (1u << 5);
      f.amxFp16 = a & (1u << 21);
    }
  }
#endif
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

Isa computeBest() {
#ifdef MP_EMULATE_AVX512
  return Isa::Avx512Bf16;
#endif
  const Features& f = features();
  if (!(f.avx2 && f.fma && f.f16c && f.ymmState)) return Isa::Scalar;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.zmmState)) return Isa::Avx2;
  return f.avx512bf16 && MP_HAVE_AVX512BF16 ? Isa::Avx512Bf16 : Isa::Avx512;
}

std::atomic<int> gActive{-1};  // -1: not chosen yet (the best)

const Isa kLevels[] = {Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Scalar};

// "32K", "512K", "32768K", "1M" as sysfs writes them; 0 when unreadable.
size_t readSysfsSize(int index, int& level, bool& data) {
  char path[96];
  snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
  FILE* f = fopen(path, "r");
  if (!f) return 0;
  const bool gotLevel = fscanf(f, "%d", &level) == 1;
  fclose(f);
  snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
  char type[32] = {0};
  if ((f = fopen(path, "r"))) {
    if (fscanf(f, "%31s", type) != 1) type[0] = 0;
    fclose(f);
  }
  data = std::string(type) != "Instruction";
  snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
  size_t size = 0;
  char unit = 0;
  if ((f = fopen(path, "r"))) {
    if (fscanf(f, "%zu%c", &size, &unit) < 1) size = 0;
    fclose(f);
  }
  if (!gotLevel) return 0;
  return unit == 'K' ? size << 10 : unit == 'M' ? size << 20 : unit == 'G' ? size << 30 : size;
}

CacheSizes readCacheSizes() {
  CacheSizes c{0, 0, 0};
  for (int i = 0; i < 8; ++i) {
    int level = 0;
    bool data = true;
    const size_t size = readSysfsSize(i, level, data);
    if (!size || !data) continue;
    if (level == 1) c.l1d = size;
    else if (level == 2) c.l2 = size;
    else if (level == 3) c.l3 = size;
  }
#ifdef _SC_LEVEL1_DCACHE_SIZE
  // sysconf reports the whole package's L3 on some CPUs, so only L1d / L2 come from it.
  if (!c.l1d) c.l1d = (size_t)std::max<long>(0, sysconf(_SC_LEVEL1_DCACHE_SIZE));
  if (!c.l2) c.l2 = (size_t)std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
  // Implausible or missing values: Zen 3's (the blocking still works, only less well).
  if (c.l1d < (16u << 10) || c.l1d > (1u << 20)) c.l1d = 32u << 10;
  if (c.l2 < (128u << 10) || c.l2 > (64u << 20)) c.l2 = 512u << 10;
  if (c.l3 < c.l2 || c.l3 > (size_t(1) << 30)) c.l3 = std::max<size_t>(c.l2 * 4, 8u << 20);
  return c;
}

}  // namespace

Isa bestIsa() {
  static const Isa best = computeBest();
  return best;
}

Isa activeIsa() {
  const int v = gActive.load(std::memory_order_relaxed);
  return v < 0 ? bestIsa() : static_cast<Isa>(v);
}

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::Avx512Bf16: return "avx512bf16";
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

std::vector<std::string> availableIsas() {
  std::vector<std::string> out;
  for (Isa l : kLevels)
    if (l <= bestIsa()) out.push_back(isaName(l));
  return out;
}

void setIsa(const std::string& name) {
  if (name == "auto") {
    gActive.store(-1);
    return;
  }
  for (Isa l : kLevels) {
    if (name != isaName(l)) continue;
    if (l > bestIsa()) {
      std::string have;
      for (const std::string& s : availableIsas()) have += (have.empty() ? "" : ", ") + s;
      fail("E_ARG", "CPU ISA '" + name + "' is not supported by this CPU" +
                        (l >= Isa::Avx512 && features().avx512f && !features().zmmState
                             ? " (the OS does not save the AVX-512 registers)"
                             : "") +
                        "; it has: " + have);
    }
    gActive.store(static_cast<int>(l));
    return;
  }
  fail("E_ARG", "unknown CPU ISA '" + name + "' (expected auto, avx512bf16, avx512, avx2 or scalar)");
}

std::vector<std::string> cpuFeatureNames() {
  const Features& f = features();
  std::vector<std::string> out;
  const std::pair<bool, const char*> all[] = {
      {f.avx2, "avx2"},           {f.fma, "fma"},             {f.f16c, "f16c"},
      {f.avx512f, "avx512f"},     {f.avx512bw, "avx512bw"},   {f.avx512vl, "avx512vl"},
      {f.avx512dq, "avx512dq"},   {f.avx512vnni, "avx512vnni"}, {f.avx512bf16, "avx512bf16"},
      {f.avx512fp16, "avx512fp16"}, {f.amxBf16, "amx-bf16"},  {f.amxFp16, "amx-fp16"}};
  for (const auto& p : all)
    if (p.first) out.push_back(p.second);
  return out;
}

const CacheSizes& cacheSizes() {
  static const CacheSizes c = readCacheSizes();
  return c;
}

}  // namespace cpu
}  // namespace mp
