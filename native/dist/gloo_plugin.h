// The boundary between the addon and its Gloo plugin (libmixprec_gloo.so, built beside the addon
// when Gloo is found). The addon loads the plugin at run time, as it loads NCCL: an addon built
// with Gloo still loads, and trains on one process, where libgloo is not installed (a GPU
// machine, a copied build); `mixprec info` then says why distributed training is unavailable.
// Both sides are built from this tree by one compiler, so the interface is plain C++.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "store.h"

namespace mp::dist {

enum class RedOp { Sum, Max, Min, Avg };
enum class Elem { F32, F64, I32 };

// A connected Gloo context. Calls come from one thread at a time (the communication thread); a
// failure throws (gloo::IoException for a closed peer, a "Timed out" message for a silent one).
class GlooComm {
 public:
  virtual ~GlooComm() = default;
  // In place; Avg is the sum divided by the world size after it (the same bits on every rank).
  virtual void allReduce(void* ptr, size_t count, Elem elem, RedOp op, uint32_t tag) = 0;
  virtual void broadcast(void* ptr, size_t bytes, int root, uint32_t tag) = 0;
  virtual void barrier(uint32_t tag) = 0;
};

// The plugin's one entry point (extern "C", looked up with dlsym): meets the other ranks through
// `store` and connects to every one of them, listening on `hostname`.
using GlooConnectFn = GlooComm* (*)(Store& store, int rank, int size, Millis timeout, const std::string& hostname);
constexpr const char* kGlooConnectSymbol = "mixprec_gloo_connect";
constexpr const char* kGlooPluginName = "libmixprec_gloo.so";

}  // namespace mp::dist
