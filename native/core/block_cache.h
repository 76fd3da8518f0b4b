// The caching allocator both backends use: released blocks are kept by size and handed out again
// (a request takes a cached block of at least its rounded size and at most twice it), so a
// training loop that allocates the same activation sizes every step stops paying for the system
// allocator (page faults on the CPU, cudaMalloc's synchronisation on CUDA). Thread-safe (the
// addon may be loaded in worker_threads). On E_OOM the cache is emptied and the allocation
// retried once. A block is removed from the cache before it is freed, so a free that fails
// part-way through emptying leaves no freed pointer behind (no later double free).
#pragma once
#include <stddef.h>

#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "error.h"

namespace mp {

class BlockCache {
 public:
  struct Device {
    std::function<void*(size_t)> alloc;  // throws Error("E_OOM") when out of memory
    std::function<void(void*)> free;
    std::function<void()> drain;         // waits until queued work no longer uses freed blocks
  };

  // maxCachedBytes: blocks released beyond this total are freed at once instead of kept.
  BlockCache(Device device, size_t maxCachedBytes) : device_(std::move(device)), maxCached_(maxCachedBytes) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // Rounded so that nearby sizes share blocks: 512 bytes below 1 MiB, 2 MiB above (as PyTorch's
  // CUDA caching allocator). 0 bytes still gets a distinct, valid block.
  static size_t roundedSize(size_t bytes) {
    if (bytes == 0) return 512;
    const size_t unit = bytes < (size_t(1) << 20) ? 512 : (size_t(2) << 20);
    if (bytes > ~size_t(0) - unit) fail("E_OOM", "allocation of " + std::to_string(bytes) + " bytes is too large");
    return (bytes + unit - 1) / unit * unit;
  }

  void* alloc(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t size = roundedSize(bytes);
    auto it = cached_.lower_bound(size);
    if (it != cached_.end() && it->first <= 2 * size) {
      const size_t blockSize = it->first;
      void* p = it->second;
      cachedBytes_ -= blockSize;
      cached_.erase(it);
      live_[p] = blockSize;
      return p;
    }
    void* p = nullptr;
    try {
      p = device_.alloc(size);
    } catch (const Error& e) {
      if (e.code != "E_OOM" || cached_.empty()) throw;
      emptyLocked();
      p = device_.alloc(size);
    }
    live_[p] = size;
    return p;
  }

  void release(void* p) {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours (never happens through the N-API layer)
    const size_t size = it->second;
    live_.erase(it);
    if (cachedBytes_ + size > maxCached_) {
      device_.drain();
      device_.free(p);
      return;
    }
    cached_.emplace(size, p);
    cachedBytes_ += size;
  }

  // Frees every cached block.
  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    emptyLocked();
  }

  size_t cachedBytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cachedBytes_;
  }
  size_t liveBlocks() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_.size();
  }

 private:
  void emptyLocked() {
    if (cached_.empty()) return;
    device_.drain();
    while (!cached_.empty()) {
      auto it = cached_.begin();
      void* p = it->second;
      cachedBytes_ -= it->first;
      cached_.erase(it);  // out of the cache first: if free throws, p is not freed twice later
      device_.free(p);
    }
  }

  Device device_;
  size_t maxCached_;
  size_t cachedBytes_ = 0;
  std::multimap<size_t, void*> cached_;     // released blocks by size
  std::unordered_map<void*, size_t> live_;  // handed-out blocks and their size
  mutable std::mutex mutex_;
};

}  // namespace mp
