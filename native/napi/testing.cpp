// Test hooks (not part of the public API): the caching allocator's bookkeeping driven through a
// fake device, so what only a GPU could show (out of memory while the cache holds blocks, a free
// failing part-way, two host threads at once) is tested on every machine.
#include <stdint.h>

#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "../core/block_cache.h"
#include "common.h"

namespace mpnapi {
namespace {

using mp::BlockCache;

// A device with `capacity` bytes: allocations beyond it are E_OOM; frees can be made to fail; it
// counts double frees and blocks handed to two holders at once.
struct FakeDevice {
  explicit FakeDevice(size_t cap) : capacity(cap) {}
  size_t capacity, used = 0;
  int failFreeAt = -1, frees = 0, doubleFrees = 0, allocs = 0;
  std::map<uintptr_t, size_t> live;
  std::mutex m;
  uintptr_t next = 4096;
  BlockCache::Device device() {
    return {[this](size_t bytes) -> void* {
              std::lock_guard<std::mutex> lock(m);
              if (used + bytes > capacity) mp::fail("E_OOM", "fake device full");
              used += bytes;
              allocs += 1;
              const uintptr_t p = next;
              next += bytes;
              live[p] = bytes;
              return reinterpret_cast<void*>(p);
            },
            [this](void* p) {
              std::lock_guard<std::mutex> lock(m);
              if (frees++ == failFreeAt) mp::fail("E_CUDA", "fake free failed");
              auto it = live.find(reinterpret_cast<uintptr_t>(p));
              if (it == live.end()) { doubleFrees += 1; return; }
              used -= it->second;
              live.erase(it);
            },
            [] {}};
  }
};

Napi::Value BlockCacheSelfTest(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    {  // Out of memory while the cache holds memory: emptied, then the retry succeeds.
      FakeDevice d(4096);
      BlockCache c(d.device(), ~size_t(0));
      void* a = c.alloc(2048);
      void* b = c.alloc(2048);
      c.release(a);
      c.release(b);
      bool ok = true;
      try { c.release(c.alloc(3000)); } catch (const mp::Error&) { ok = false; }
      r.Set("oomRetrySucceeded", ok);
      r.Set("oomRetryFreedCached", d.frees == 2);
      r.Set("reuseSameSize", [&] { void* x = c.alloc(3000); c.release(x); void* y = c.alloc(3000); c.release(y); return x == y; }());
    }
    {  // A free that fails while emptying: no freed block stays cached (no double free later).
      FakeDevice d(1 << 20);
      BlockCache c(d.device(), ~size_t(0));
      std::vector<void*> ps;
      for (int i = 0; i < 4; ++i) ps.push_back(c.alloc(1024 * (i + 1)));
      for (void* p : ps) c.release(p);
      d.failFreeAt = 1;
      bool threw = false;
      try { c.empty(); } catch (const mp::Error&) { threw = true; }
      c.empty();
      r.Set("failedFreeThrew", threw);
      r.Set("doubleFrees", d.doubleFrees);
      r.Set("cachedAfterEmpty", static_cast<double>(c.cachedBytes()));
    }
    {  // Two host threads allocating and releasing at once: no block handed to both.
      FakeDevice d(size_t(1) << 40);
      BlockCache c(d.device(), ~size_t(0));
      std::mutex m;
      std::set<void*> held;
      int shared = 0;
      auto work = [&](int seed) {
        uint32_t s = (uint32_t)seed * 2654435761u + 1;
        std::vector<void*> mine;
        for (int i = 0; i < 20000; ++i) {
          s = s * 1664525u + 1013904223u;
          if (mine.size() < 8 && (s >> 16) % 3 != 0) {
            void* p = c.alloc(512 * (1 + (s >> 8) % 6));
            std::lock_guard<std::mutex> lock(m);
            if (!held.insert(p).second) shared += 1;
            mine.push_back(p);
          } else if (!mine.empty()) {
            void* p = mine.back();
            mine.pop_back();
            { std::lock_guard<std::mutex> lock(m); held.erase(p); }
            c.release(p);
          }
        }
        for (void* p : mine) { { std::lock_guard<std::mutex> lock(m); held.erase(p); } c.release(p); }
      };
      std::thread t1(work, 1), t2(work, 2);
      t1.join();
      t2.join();
      r.Set("threadsSharedABlock", shared);
      r.Set("threadsLiveAfter", static_cast<double>(c.liveBlocks()));
    }
    return r;
  });
}

}  // namespace

void registerTesting(Napi::Env env, Napi::Object exports) {
  exports.Set("blockCacheSelfTest", Napi::Function::New(env, BlockCacheSelfTest));
}

}  // namespace mpnapi
