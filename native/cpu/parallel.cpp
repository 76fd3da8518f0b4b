#include "parallel.h"

#include <stdlib.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
#define MP_CPU_RELAX() _mm_pause()
#else
#define MP_CPU_RELAX() ((void)0)
#endif

namespace mp {
namespace {

using ChunkFn = std::function<void(int64_t, int64_t)>;

constexpr int kMaxThreads = 1024;  // chunk indices must fit the 16-bit fields of the claim word

// Set on pool workers for their whole life and on the caller while it runs a job: a nested
// parallelFor must not wait for workers that are busy running its own parent.
thread_local bool tlsInsideParallelFor = false;

int threadCountFromEnvironment() {
  if (const char* env = getenv("MIXPREC_NUM_THREADS")) {
    char* end = nullptr;
    const long v = strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1) return (int)std::min<long>(v, kMaxThreads);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : (int)std::min<unsigned>(hw, kMaxThreads);
}

// Waits for `ready`: first a short busy spin (a GEMM issues several jobs back to back, and a
// futex sleep/wake per job would cost more than small jobs), then yielding, so that when the
// machine is oversubscribed the thread we wait for can have this core, then blocking.
template <class Ready, class Block>
void waitUntil(Ready ready, std::chrono::microseconds yieldBudget, Block block) {
  for (int i = 0; i < 2000; ++i) {
    if (ready()) return;
    MP_CPU_RELAX();
  }
  const auto start = std::chrono::steady_clock::now();
  while (!ready()) {
    std::this_thread::yield();
    if (std::chrono::steady_clock::now() - start > yieldBudget) return block();
  }
}

// Chunks are claimed, not assigned: every thread, the caller included, takes chunk indices from
// one atomic word until none are left. A worker that wakes up late (its core busy with another
// process) then finds nothing to do, instead of the caller waiting for it to run its share.
//
// The claim word packs generation (32 bits) | chunk count (16) | next chunk (16), so a claim is
// only granted for the job it was meant for: a stale worker's compare-exchange fails once the
// next job is posted, and a granted claim proves the job is still live (its chunk is not done),
// hence job_ and n_ are still that job's.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int w = 1; w < threads; ++w) {
      try {
        std::thread(&ThreadPool::workerLoop, this).detach();
      } catch (...) {
        break;  // the OS refused another thread: run with the ones we have
      }
      ++size_;
    }
  }

  int size() const { return size_; }

  // n >= 2 and size() >= 2; the caller holds callMutex.
  void run(int64_t n, const ChunkFn& fn) {
    const int chunks = (int)std::min<int64_t>(size_, n);
    job_ = &fn;
    n_ = n;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    const uint32_t generation = ++lastGeneration_;
    claim_.store(packClaim(generation, chunks, 0), std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.store(generation, std::memory_order_release);
    }
    workCv_.notify_all();

    runClaimedChunks(generation);
    auto allDone = [&] { return done_.load(std::memory_order_acquire) == chunks; };
    waitUntil(allDone, std::chrono::microseconds(2000), [&] {
      std::unique_lock<std::mutex> lock(mutex_);
      doneCv_.wait(lock, allDone);
    });
    if (error_) std::rethrow_exception(error_);
  }

  std::mutex callMutex;

 private:
  static uint64_t packClaim(uint32_t generation, int chunks, int next) {
    return (uint64_t)generation << 32 | (uint64_t)chunks << 16 | (uint64_t)next;
  }

  void workerLoop() {
    tlsInsideParallelFor = true;
    uint32_t seen = 0;
    for (;;) {
      auto posted = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      waitUntil(posted, std::chrono::microseconds(200), [&] {
        std::unique_lock<std::mutex> lock(mutex_);
        workCv_.wait(lock, posted);
      });
      seen = generation_.load(std::memory_order_acquire);
      runClaimedChunks(seen);
    }
  }

  void runClaimedChunks(uint32_t generation) {
    uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      const int chunks = (int)((word >> 16) & 0xffff), next = (int)(word & 0xffff);
      if ((uint32_t)(word >> 32) != generation || next >= chunks) return;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      runChunk(next, chunks);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex_);
        doneCv_.notify_all();
      }
      word = claim_.load(std::memory_order_acquire);
    }
  }

  void runChunk(int chunk, int chunks) {
    const int64_t begin = n_ * chunk / chunks, end = n_ * (chunk + 1) / chunks;
    try {
      if (begin < end) (*job_)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(errorMutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  int size_ = 1;
  const ChunkFn* job_ = nullptr;
  int64_t n_ = 0;
  uint32_t lastGeneration_ = 0;  // caller only
  std::exception_ptr error_;
  std::mutex errorMutex_;
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<int> done_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::mutex mutex_;
  std::condition_variable workCv_, doneCv_;
};

// Deliberately leaked, with detached workers: joining threads from a static destructor during
// process (or addon) teardown can deadlock, and the OS reclaims them at exit anyway.
ThreadPool& pool() {
  static ThreadPool* instance = new ThreadPool(threadCountFromEnvironment());
  return *instance;
}

}  // namespace

int numThreads() { return pool().size(); }

void parallelFor(int64_t n, const ChunkFn& fn) {
  if (n <= 0) return;
  ThreadPool& p = pool();
  if (n == 1 || p.size() == 1 || tlsInsideParallelFor) {
    fn(0, n);
    return;
  }
  std::unique_lock<std::mutex> callLock(p.callMutex, std::try_to_lock);
  if (!callLock.owns_lock()) {  // another thread owns the workers right now
    fn(0, n);
    return;
  }
  struct InsideGuard {
    InsideGuard() { tlsInsideParallelFor = true; }
    ~InsideGuard() { tlsInsideParallelFor = false; }
  } inside;
  p.run(n, fn);
}

}  // namespace mp
