// A process group: this process's place in a data-parallel job and its collectives. Host memory
// (the CPU backend) goes through Gloo over TCP, device memory (CUDA) through NCCL, both libraries
// doing the work; this file only orders the calls, bounds them by the timeout and names the rank
// behind a failure.
//
// Host collectives run on one communication thread, in the order they were enqueued (the same
// order on every rank), so the Trainer can all-reduce a gradient bucket while its JS thread runs
// the rest of the backward. A failure is sticky: the group is broken for good, every later call
// reports the first error (E_DIST), and nothing blocks longer than the timeout.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "../core/backend.h"
#include "gloo_plugin.h"
#include "store.h"

namespace mp::dist {

struct GroupOptions {
  std::string backend;  // "gloo" | "nccl"
  int rank = 0, worldSize = 1;
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  std::string storeDir;  // non-empty: a file store in this folder instead of the TCP store
  std::string device = "cuda";  // nccl: the backend whose GPU and stream the collectives use
  Millis timeout{60000};
};

// Whether the Gloo plugin was built and loads here; why not, when it does not.
bool glooAvailable(std::string* why);

class ProcessGroup {
 public:
  explicit ProcessGroup(const GroupOptions& o);
  ~ProcessGroup();  // drains the queue (no barrier: see shutdown())
  int rank() const { return opts_.rank; }
  int size() const { return opts_.worldSize; }
  const std::string& backend() const { return opts_.backend; }

  // Enqueued (host memory) or run at once (device memory); the memory must stay valid until
  // wait(). count elements of `elem` at ptr, reduced in place.
  void allReduce(Backend* be, void* ptr, size_t count, Elem elem, RedOp op);
  void broadcast(Backend* be, void* ptr, size_t bytes, int root);
  void barrier();
  // Blocks until everything enqueued has run; throws the group's first failure.
  void wait();
  // A final barrier (so rank 0's store outlives every rank's last use of it), then teardown.
  void shutdown();

 private:
  struct Impl;
  void enqueue(const char* what, std::function<void(uint32_t tag)> job);
  void worker();
  [[noreturn]] void failWith(const std::string& what, uint64_t seq, const std::exception& e);
  std::string whoFailed(uint64_t seq, bool timedOut);

  GroupOptions opts_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Impl> impl_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool busy_ = false, stopping_ = false;
  std::string error_;  // the first failure ("" while healthy)
  uint64_t seq_ = 0;   // collectives issued, the same count on every rank
  std::thread thread_;
};

}  // namespace mp::dist
