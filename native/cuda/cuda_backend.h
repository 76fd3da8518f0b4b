// Plain C++ header (no CUDA types): included by the registry, which is compiled by the host
// compiler, only when MIXPREC_WITH_CUDA is defined.
#pragma once
#include "../core/backend.h"

namespace mp {
// Probes the driver/device; never throws. available=false with a reason when there is no
// usable GPU (no driver, no device, compute capability < 7.5, ...).
BackendInfo cudaBackendInfo();
// Creates the backend on device 0; throws Error("E_NO_CUDA", reason) when unavailable.
Backend* cudaBackend();  // process-wide singleton
}  // namespace mp
