#include "parallel.h"

#include <stdlib.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#include <immintrin.h>
#define MP_CPU_RELAX() _mm_pause()
#else
#define MP_CPU_RELAX() std::this_thread::yield()
#endif

namespace mp {
namespace {

using ChunkFn = std::function<void(int64_t, int64_t)>;

// Set on pool workers for their whole life and on the caller while it runs a job: a nested
// parallelFor must not wait for workers that are busy running its own parent.
thread_local bool tlsInsideParallelFor = false;

int threadCountFromEnvironment() {
  if (const char* env = getenv("MIXPREC_NUM_THREADS")) {
    char* end = nullptr;
    const long v = strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1) return (int)std::min<long>(v, 1024);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : (int)hw;
}

// Spinning first keeps back-to-back jobs (a GEMM issues several per call) from paying a futex
// sleep/wake each; the budget bounds how long an idle core is burnt.
template <class Ready>
bool spinUntil(Ready ready, std::chrono::microseconds budget) {
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 1;; ++i) {
    if (ready()) return true;
    MP_CPU_RELAX();
    if ((i & 255u) == 0 && std::chrono::steady_clock::now() - start > budget) return false;
  }
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int w = 1; w < threads; ++w) {
      try {
        std::thread(&ThreadPool::workerLoop, this, w).detach();
      } catch (...) {
        break;  // the OS refused another thread: run with the ones we have
      }
      ++size_;
    }
  }

  int size() const { return size_; }

  // n >= 2 and size() >= 2; the caller holds callMutex.
  void run(int64_t n, const ChunkFn& fn) {
    job_ = &fn;
    n_ = n;
    chunks_ = (int)std::min<int64_t>(size_, n);
    error_ = nullptr;
    // Every worker acknowledges every job, even one with no chunk for it: otherwise an idle
    // worker could still be reading chunks_ of this job while the next job overwrites it.
    pending_.store(size_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    workCv_.notify_all();
    runChunk(0);
    waitForWorkers();
    if (error_) std::rethrow_exception(error_);
  }

  std::mutex callMutex;

 private:
  void workerLoop(int index) {
    tlsInsideParallelFor = true;
    uint64_t seen = 0;
    for (;;) {
      waitForJobAfter(seen);
      seen = generation_.load(std::memory_order_acquire);
      if (index < chunks_) runChunk(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        doneCv_.notify_one();
      }
    }
  }

  void waitForJobAfter(uint64_t seen) {
    auto posted = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    if (spinUntil(posted, std::chrono::microseconds(200))) return;
    std::unique_lock<std::mutex> lock(mutex_);
    workCv_.wait(lock, posted);
  }

  void waitForWorkers() {
    auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (spinUntil(done, std::chrono::microseconds(500))) return;
    std::unique_lock<std::mutex> lock(mutex_);
    doneCv_.wait(lock, done);
  }

  void runChunk(int chunk) {
    const int64_t begin = n_ * chunk / chunks_, end = n_ * (chunk + 1) / chunks_;
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
  int chunks_ = 0;
  std::exception_ptr error_;
  std::mutex errorMutex_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
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
