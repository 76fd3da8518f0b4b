// Internal to the CUDA backend: the contiguous element-wise kernel (elementwise.cu), shared by the
// activations, dropout, contiguous binary ops and contiguous casts (copy.cu).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "cuda_ops.cuh"
#include "vec.cuh"

namespace mp {
namespace cuda {

enum class ElementOp : int { ActForward = 0, ActBackward = 1, Dropout = 2, Binary = 3, Cast = 4 };

// out[i] = f(a[i], b[i]) for i < n, all three contiguous. b: z (ActBackward), the second operand
// (Binary; null: `scalar`), else unused. Each element is read and written by one thread, so out
// may be the same array as a or b.
struct ElementwiseParams {
  ElementOp op = ElementOp::Cast;
  Act act = Act::None;      // ActForward / ActBackward
  int binaryOp = 0;         // Binary: BinaryOp code
  const void* a = nullptr; DType aType = DType::F32;
  const void* b = nullptr; DType bType = DType::F32;
  void* out = nullptr; DType outType = DType::F32;
  size_t n = 0;
  float scalar = 0.0f;      // Binary with b null
  float p = 0.0f, scale = 1.0f;  // Dropout: probability, dropout_scale(p)
  uint64_t seed = 0;        // Dropout
  Split split{};            // filled by launchElementwise
};

// n == 0 launches nothing.
void launchElementwise(ElementwiseParams e, const CudaContext& ctx);

}  // namespace cuda
}  // namespace mp
