// Element types and typed load/store through float32, shared by both backends.
#pragma once
#include <stddef.h>
#include "half.h"

namespace mp {

// Values match src/dtype.ts. I32 is a storage type only (token ids, labels): no op does
// arithmetic on it, and load_f32 / store_f32 are never called with it.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };

MP_HD size_t dtype_size(DType t) { return t == DType::F16 || t == DType::BF16 ? 2 : 4; }

MP_HD float load_f32(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::F16: return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
MP_HD void store_f32(void* p, DType t, size_t i, float v) {
  switch (t) {
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16_bits(v); break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

}  // namespace mp
