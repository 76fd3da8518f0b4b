// The one place that decides which instruction set the CPU kernels run, and the cache sizes
// they block for. Everything is chosen at run time: the addon is compiled for baseline x86-64,
// and each ISA-specific function carries one of the target attributes below.
//
// Levels, each a superset of the one below:
//   scalar      portable C++ (what the compiler vectorises for baseline SSE2)
//   avx2        AVX2 + FMA + F16C (Haswell, Zen 1-3)
//   avx512      + AVX-512 F/BW/VL/DQ, with the OS saving ZMM state (Skylake-X, Zen 4/5)
//   avx512bf16  + AVX512-BF16 (vdpbf16ps: Cooper Lake, Sapphire Rapids, Zen 4/5)
// The active level is the best the CPU has, unless lowered by setIsa() (MIXPREC_CPU_ISA from
// JavaScript). Element-wise loops give the same bits on every level (no FMA contraction); the
// GEMM's sums differ in rounding order between kernels, and avx512bf16's BF16 GEMM also flushes
// subnormals (README: "CPU kernels").
#pragma once
#include <stddef.h>

#include <string>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MP_X86 1
// MP_EMULATE_AVX512 is for checking the AVX-512 kernels on a CPU without AVX-512, compiled
// against an emulation of the intrinsics: the AVX-512 functions are then compiled for AVX2 and
// every level is reported as present. Never set in a real build.
#ifdef MP_EMULATE_AVX512
#define MP_TARGET_AVX512 __attribute__((target("avx2,fma,f16c")))
#define MP_TARGET_AVX512BF16 MP_TARGET_AVX512
#else
#define MP_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define MP_TARGET_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
#endif
#define MP_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
// vdpbf16ps needs GCC 10 / clang 9; with an older compiler the best level is avx512.
#if defined(__clang__) ? (__clang_major__ >= 9) : (__GNUC__ >= 10)
#define MP_HAVE_AVX512BF16 1
#else
#define MP_HAVE_AVX512BF16 0
#endif
#else
#define MP_X86 0
#define MP_HAVE_AVX512BF16 0
#endif

namespace mp {
namespace cpu {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// The level the kernels use now (a relaxed atomic load: cheap enough for every call).
Isa activeIsa();
// The best level this CPU and OS support.
Isa bestIsa();
// "auto" (the best) or a level name; E_ARG for an unknown name or a level this CPU lacks.
void setIsa(const std::string& name);
const char* isaName(Isa isa);
// Every level this CPU supports, best first ("scalar" last).
std::vector<std::string> availableIsas();
// The CPUID features the levels are made of, and the ones no kernel uses yet (avx512fp16,
// amx-bf16, amx-fp16), as found on this CPU.
std::vector<std::string> cpuFeatureNames();

struct CacheSizes {
  size_t l1d, l2, l3;  // bytes: per core for L1d and L2, the L3 one core shares
};
// Read once from Linux's sysfs (per core, as a VM reports it), else sysconf, else Zen 3's.
const CacheSizes& cacheSizes();

// Runs f compiled for the active level. f is a lambda marked MP_ISA_BODY, so that it is inlined
// into (and vectorised for) each of the three copies below: one source, one function per level.
#define MP_ISA_BODY __attribute__((always_inline))
#if MP_X86
template <class F> MP_TARGET_AVX512 inline auto runAvx512(const F& f) -> decltype(f()) { return f(); }
template <class F> MP_TARGET_AVX2 inline auto runAvx2(const F& f) -> decltype(f()) { return f(); }
#endif
template <class F> inline auto runScalar(const F& f) -> decltype(f()) { return f(); }

template <class F>
inline auto onActiveIsa(const F& f) -> decltype(f()) {
#if MP_X86
  const Isa isa = activeIsa();
  if (isa >= Isa::Avx512) return runAvx512(f);
  if (isa == Isa::Avx2) return runAvx2(f);
#endif
  return runScalar(f);
}

}  // namespace cpu
}  // namespace mp
