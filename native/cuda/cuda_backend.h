// Plain C++ header (no CUDA types): included by the registry, which is compiled by the host
// compiler, only when MIXPREC_WITH_CUDA is defined.
#pragma once
#include "../core/backend.h"

namespace mp {
// Probes the driver and GPU `index`; never throws. available=false with a reason when it is not
// usable (no driver, no such device, compute capability < 7.5, ...). deviceCount: GPUs found.
BackendInfo cudaBackendInfo(int index = 0);
// The backend of GPU `index` (one per GPU, made on first use: its own stream and memory);
// throws Error("E_NO_CUDA", reason) when unavailable.
Backend* cudaBackend(int index = 0);
}  // namespace mp
