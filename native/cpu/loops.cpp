// The out-of-line pieces of loops.h: FP32 widening / narrowing and the 8-lane sums. Compiled for
// baseline x86-64; the F16C conversions carry target attributes and run from the avx2 level up,
// the plain loops run through onActiveIsa (isa.h). No FMA contraction (CMakeLists.txt), so every
// vector result has the bits of the scalar definition.
#include "loops.h"

#include <string.h>

#if MP_X86
#include <immintrin.h>
#endif

namespace mp {
namespace cpu {
namespace {

#if MP_X86
bool hasF16C() { return activeIsa() >= Isa::Avx2; }
// F16C widening is exact, and its RNE narrowing gives f32_to_f16_bits' bits, NaNs included.
MP_TARGET_AVX2 void f16ToF32Avx(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = f16_bits_to_f32(src[i]);
}
MP_TARGET_AVX2 void f32ToF16Avx(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = f32_to_f16_bits(src[i]);
}
#endif

// Plain loops over the shared definitions; the compiler vectorises them (integer ops only).
MP_ISA_BODY inline void bf16ToF32Loop(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(src[i]);
}
void bf16ToF32(const uint16_t* src, float* dst, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return bf16ToF32Loop(src, dst, n); });
}
MP_ISA_BODY inline void f32ToBf16Loop(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(src[i]);
}
void f32ToBf16(const float* src, uint16_t* dst, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return f32ToBf16Loop(src, dst, n); });
}
void f16ToF32(const uint16_t* src, float* dst, size_t n) {
#if MP_X86
  if (hasF16C()) return f16ToF32Avx(src, dst, n);
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(src[i]);
}
void f32ToF16(const float* src, uint16_t* dst, size_t n) {
#if MP_X86
  if (hasF16C()) return f32ToF16Avx(src, dst, n);
#endif
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16_bits(src[i]);
}

typedef float F8 __attribute__((vector_size(32)));

float total8(const F8& a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

}  // namespace

bool cpuHasF16C() {
#if MP_X86
  return hasF16C();
#else
  return false;
#endif
}

void widen(const void* src, DType t, size_t i0, size_t n, float* dst) {
  if (n == 0) return;
  if (t == DType::F32) { memcpy(dst, static_cast<const float*>(src) + i0, n * 4); return; }
  const uint16_t* s = static_cast<const uint16_t*>(src) + i0;
  if (t == DType::F16) f16ToF32(s, dst, n);
  else bf16ToF32(s, dst, n);
}

void narrow(const float* src, void* dst, DType t, size_t i0, size_t n) {
  if (n == 0) return;
  if (t == DType::F32) { memcpy(static_cast<float*>(dst) + i0, src, n * 4); return; }
  uint16_t* d = static_cast<uint16_t*>(dst) + i0;
  if (t == DType::F16) f32ToF16(src, d, n);
  else f32ToBf16(src, d, n);
}

void widenStrided(const void* src, DType t, int64_t off, int64_t stride, size_t n, float* dst) {
  if (stride == 1) return widen(src, t, (size_t)off, n, dst);
  if (stride == 0) {
    const float v = load_f32(src, t, (size_t)off);
    for (size_t j = 0; j < n; ++j) dst[j] = v;
    return;
  }
  for (size_t j = 0; j < n; ++j) dst[j] = load_f32(src, t, (size_t)(off + (int64_t)j * stride));
}

void convert(const void* src, DType st, void* dst, DType dt, size_t i0, size_t n) {
  if (n == 0) return;
  if (st == dt) {
    const size_t size = dtype_size(st);
    memcpy(static_cast<char*>(dst) + i0 * size, static_cast<const char*>(src) + i0 * size, n * size);
  } else if (st == DType::F32) {
    narrow(static_cast<const float*>(src) + i0, dst, dt, i0, n);
  } else if (dt == DType::F32) {
    widen(src, st, i0, n, static_cast<float*>(dst) + i0);
  } else {  // F16 <-> BF16 through FP32 (exact widening, one rounding)
    alignas(64) float buf[kChunk];
    for (size_t c = 0; c < n; c += kChunk) {
      const size_t len = std::min(kChunk, n - c);
      widen(src, st, i0 + c, len, buf);
      narrow(buf, dst, dt, i0 + c, len);
    }
  }
}

MP_ISA_BODY inline void laneAddLoop(Lanes& lanes, const float* x, size_t n) {
  F8 acc;
  memcpy(&acc, lanes.a, sizeof acc);
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    F8 v;
    memcpy(&v, x + j, sizeof v);
    acc += v;
  }
  for (int k = 0; j + k < n; ++k) acc[k] += x[j + k];
  memcpy(lanes.a, &acc, sizeof acc);
}
void laneAdd(Lanes& lanes, const float* x, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return laneAddLoop(lanes, x, n); });
}

// laneAdd into zero lanes: the same additions in the same order, so the same bits.
float laneSum(const float* x, size_t n) {
  Lanes lanes;
  laneAdd(lanes, x, n);
  return lanes.total();
}

MP_ISA_BODY inline float laneDotLoop(const float* x, const float* y, size_t n) {
  F8 acc = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    F8 u, v;
    memcpy(&u, x + j, sizeof u);
    memcpy(&v, y + j, sizeof v);
    acc += u * v;
  }
  for (int k = 0; j + k < n; ++k) acc[k] += x[j + k] * y[j + k];
  return total8(acc);
}
float laneDot(const float* x, const float* y, size_t n) {
  return onActiveIsa([&]() MP_ISA_BODY { return laneDotLoop(x, y, n); });
}

}  // namespace cpu
}  // namespace mp
