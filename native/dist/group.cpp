// The process group (group.h): Gloo for host memory on a communication thread, NCCL for device
// memory on the caller's thread, one rendezvous store, failures named by rank.
#include "group.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "../core/error.h"
#include "nccl_api.h"

#ifdef MIXPREC_WITH_GLOO
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace mp::dist {

bool glooCompiled(std::string* why) {
#ifdef MIXPREC_WITH_GLOO
  return true;
#else
  if (why) *why = "Gloo was not found when the addon was built (install Debian's libgloo-dev and run `npm rebuild`, or build with MIXPREC_GLOO=ON)";
  return false;
#endif
}

namespace {

#ifdef MIXPREC_WITH_GLOO
// Gloo rendezvous through our store (Gloo's own stores are file / Redis / in-process only).
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(dist::Store& s, Millis timeout) : s_(s), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override { s_.set("gloo/" + key, data); }
  std::vector<char> get(const std::string& key) override { return s_.get("gloo/" + key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const Millis& timeout) override {
    for (const auto& k : keys) s_.get("gloo/" + k, timeout);
  }

 private:
  dist::Store& s_;
  Millis timeout_;
};

// The address this rank's Gloo pairs listen on: loopback for a single-machine job (the master
// is a loopback address), else this host's name; MIXPREC_GLOO_HOSTNAME overrides (multi-homed
// machines).
std::string glooHostname(const std::string& master) {
  if (const char* h = getenv("MIXPREC_GLOO_HOSTNAME")) return h;
  if (master == "localhost" || master.rfind("127.", 0) == 0 || master == "::1") return "127.0.0.1";
  char name[256] = {0};
  if (gethostname(name, sizeof name - 1) == 0 && name[0]) return name;
  return "127.0.0.1";
}

template <typename T>
gloo::AllreduceOptions::Func reduceFn(RedOp op) {
  using F = void (*)(void*, const void*, const void*, size_t);
  switch (op) {
    case RedOp::Max: return static_cast<F>(&gloo::max<T>);
    case RedOp::Min: return static_cast<F>(&gloo::min<T>);
    default: return static_cast<F>(&gloo::sum<T>);
  }
}
#endif


}  // namespace

struct ProcessGroup::Impl {
#ifdef MIXPREC_WITH_GLOO
  std::shared_ptr<gloo::rendezvous::Context> gloo;
#endif
  const NcclApi* nccl = nullptr;
  ncclComm_t comm = nullptr;
};

ProcessGroup::ProcessGroup(const GroupOptions& o) : opts_(o), impl_(std::make_unique<Impl>()) {
  if (o.worldSize < 1 || o.rank < 0 || o.rank >= o.worldSize)
    fail("E_ARG", "rank " + std::to_string(o.rank) + " is outside a world of " + std::to_string(o.worldSize));
  std::string why;
  bool haveGloo = glooCompiled(&why);
  if (o.backend == "gloo" && !haveGloo) fail("E_DIST", "backend 'gloo': " + why);
  if (o.backend == "nccl" && !(impl_->nccl = ncclApi(&why))) fail("E_DIST", "backend 'nccl': " + why);
  store_ = o.storeDir.empty() ? tcpStore(o.masterAddr, o.masterPort, o.rank, o.rank == 0, o.timeout)
                              : fileStore(o.storeDir, o.timeout);
#ifdef MIXPREC_WITH_GLOO
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = glooHostname(o.masterAddr);
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    impl_->gloo = std::make_shared<gloo::rendezvous::Context>(o.rank, o.worldSize);
    impl_->gloo->setTimeout(o.timeout);
    GlooStoreAdapter adapter(*store_, o.timeout);
    impl_->gloo->connectFullMesh(adapter, dev);
  } catch (const mp::Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("E_DIST", std::string("rank ") + std::to_string(o.rank) + " could not connect to the other ranks: " + e.what());
  }
#endif
  if (impl_->nccl) {
    // Rank 0 makes the NCCL id; the others read it from the store.
    const NcclApi& api = *impl_->nccl;
    ncclUniqueId id;
    if (o.rank == 0) {
      ncclCheck(api, api.getUniqueId(&id), "ncclGetUniqueId", nullptr);
      store_->set("nccl/id", std::vector<char>(id.internal, id.internal + sizeof id.internal));
    } else {
      auto v = store_->get("nccl/id", o.timeout);
      if (v.size() != sizeof id.internal) fail("E_DIST", "the NCCL id in the store has the wrong size");
      std::memcpy(id.internal, v.data(), v.size());
    }
    ncclCheck(api, api.commInitRank(&impl_->comm, o.worldSize, id, o.rank), "ncclCommInitRank", nullptr);
  }
  thread_ = std::thread([this] { worker(); });
}

ProcessGroup::~ProcessGroup() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!error_.empty() && opts_.rank == 0) store_->drain(std::min(opts_.timeout, Millis(5000)));
  if (impl_->comm) (error_.empty() ? impl_->nccl->commDestroy : impl_->nccl->commAbort)(impl_->comm);
#ifdef MIXPREC_WITH_GLOO
  impl_->gloo.reset();
#endif
  store_.reset();
}

void ProcessGroup::shutdown() {
  bool healthy;
  {
    std::lock_guard<std::mutex> g(mu_);
    healthy = error_.empty();
  }
  if (healthy) {
    barrier();
    wait();
  }
}

void ProcessGroup::worker() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> g(mu_);
      cv_.wait(g, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and drained
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    job();
    {
      std::lock_guard<std::mutex> g(mu_);
      busy_ = false;
    }
    cv_.notify_all();
  }
}

void ProcessGroup::enqueue(const char* what, std::function<void(uint32_t)> job) {
  std::lock_guard<std::mutex> g(mu_);
  if (!error_.empty()) fail("E_DIST", error_);
  uint64_t seq = ++seq_;
  queue_.push_back([this, what, seq, job = std::move(job)] {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!error_.empty()) return;  // broken: later jobs are dropped, wait() reports the first error
    }
    try {
      job(static_cast<uint32_t>(seq));
    } catch (const std::exception& e) {
      try {
        failWith(what, seq, e);
      } catch (const mp::Error& err) {
        std::lock_guard<std::mutex> g(mu_);
        if (error_.empty()) error_ = err.message;
      }
    }
  });
  cv_.notify_all();
}

void ProcessGroup::wait() {
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait(g, [&] { return (queue_.empty() && !busy_) || !error_.empty(); });
  if (!error_.empty()) fail("E_DIST", error_);
}

void ProcessGroup::failWith(const std::string& what, uint64_t seq, const std::exception& e) {
  std::string msg = e.what();
  bool timedOut = msg.find("Timed out") != std::string::npos || msg.find("timed out") != std::string::npos;
  fail("E_DIST", "rank " + std::to_string(opts_.rank) + ": " + what + " #" + std::to_string(seq) + " failed: " +
                     whoFailed(seq, timedOut) + " (" + msg + ")");
}

// Who is behind a failed collective: a rank whose process exited closed its store connection
// (the TCP store tracks that); a rank that hangs never reaches this collective, so every rank
// that timed out marks itself in the store and the missing ones are named.
std::string ProcessGroup::whoFailed(uint64_t seq, bool timedOut) {
  try {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    std::vector<int> gone = store_->goneRanks();
    while (gone.empty() && !timedOut && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // its sockets close together, not atomically
      gone = store_->goneRanks();
    }
    if (!gone.empty()) {
      std::sort(gone.begin(), gone.end());
      std::string s;
      for (int r : gone) s += (s.empty() ? "" : ", ") + std::to_string(r);
      return (gone.size() == 1 ? "rank " : "ranks ") + s + (gone.size() == 1 ? " has" : " have") + " exited";
    }
    if (!timedOut) return "a connection to another rank failed";
    std::string key = "stalled/" + std::to_string(seq) + "/";
    store_->set(key + std::to_string(opts_.rank), {1});
    std::this_thread::sleep_for(std::min(Millis(2000), opts_.timeout / 2));  // the others time out too
    std::string missing;
    for (int r = 0; r < opts_.worldSize; ++r)
      if (!store_->check(key + std::to_string(r))) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    if (missing.empty()) return "every rank timed out in it (the network, or a rank far slower than the timeout)";
    return "rank " + missing + " did not reach it within " + std::to_string(opts_.timeout.count()) +
           " ms (alive, but it stopped answering)";
  } catch (const mp::Error&) {
    return opts_.rank == 0 ? "the store failed" : "rank 0 has exited or hangs (the rendezvous store it serves stopped answering)";
  }
}

void ProcessGroup::allReduce(Backend* be, void* ptr, size_t count, Elem elem, RedOp op) {
  if (count == 0) return;
  if (std::string(be->name()) != "cpu") {
    // Device memory: NCCL on the default stream, synchronous (the CUDA path has no overlap yet).
    if (!impl_->comm) fail("E_DIST", "a CUDA tensor needs the 'nccl' backend (this group is '" + opts_.backend + "')");
    wait();
    const NcclApi& api = *impl_->nccl;
    ncclDataType_t t = elem == Elem::F32 ? ncclFloat32 : elem == Elem::F64 ? ncclFloat64 : ncclInt32;
    ncclRedOp_t r = op == RedOp::Sum ? ncclSum : op == RedOp::Max ? ncclMax : op == RedOp::Min ? ncclMin : ncclAvg;
    be->synchronize();
    ncclCheck(api, api.allReduce(ptr, ptr, count, t, r, impl_->comm, nullptr), "ncclAllReduce", impl_->comm);
    be->synchronize();
    return;
  }
#ifdef MIXPREC_WITH_GLOO
  auto ctx = impl_->gloo;
  int world = opts_.worldSize;
  enqueue("allReduce", [ctx, ptr, count, elem, op, world](uint32_t tag) {
    gloo::AllreduceOptions o(ctx);
    o.setTag(tag);
    if (elem == Elem::F32) {
      o.setOutput(static_cast<float*>(ptr), count);
      o.setReduceFunction(reduceFn<float>(op));
    } else if (elem == Elem::F64) {
      o.setOutput(static_cast<double*>(ptr), count);
      o.setReduceFunction(reduceFn<double>(op));
    } else {
      o.setOutput(static_cast<int32_t*>(ptr), count);
      o.setReduceFunction(reduceFn<int32_t>(op));
    }
    gloo::allreduce(o);
    if (op == RedOp::Avg) {
      // Divided after the sum (not each input before it): the same bits on every rank.
      if (elem == Elem::F32) for (float* p = static_cast<float*>(ptr); p < static_cast<float*>(ptr) + count; ++p) *p /= static_cast<float>(world);
      else if (elem == Elem::F64) for (double* p = static_cast<double*>(ptr); p < static_cast<double*>(ptr) + count; ++p) *p /= world;
      else for (int32_t* p = static_cast<int32_t*>(ptr); p < static_cast<int32_t*>(ptr) + count; ++p) *p /= world;
    }
  });
#else
  (void)elem; (void)op; (void)ptr;
  std::string why;
  glooCompiled(&why);
  fail("E_DIST", "host (CPU) tensors need Gloo: " + why);
#endif
}

void ProcessGroup::broadcast(Backend* be, void* ptr, size_t bytes, int root) {
  if (root < 0 || root >= opts_.worldSize) fail("E_ARG", "broadcast: root " + std::to_string(root) + " is not a rank");
  if (bytes == 0) return;
  if (std::string(be->name()) != "cpu") {
    if (!impl_->comm) fail("E_DIST", "a CUDA tensor needs the 'nccl' backend (this group is '" + opts_.backend + "')");
    wait();
    const NcclApi& api = *impl_->nccl;
    be->synchronize();
    ncclCheck(api, api.broadcast(ptr, ptr, bytes, ncclUint8, root, impl_->comm, nullptr), "ncclBroadcast", impl_->comm);
    be->synchronize();
    return;
  }
#ifdef MIXPREC_WITH_GLOO
  auto ctx = impl_->gloo;
  enqueue("broadcast", [ctx, ptr, bytes, root](uint32_t tag) {
    gloo::BroadcastOptions o(ctx);
    o.setTag(tag);
    o.setOutput(static_cast<char*>(ptr), bytes);
    o.setRoot(root);
    gloo::broadcast(o);
  });
#else
  fail("E_DIST", "host (CPU) tensors need Gloo");
#endif
}

void ProcessGroup::barrier() {
#ifdef MIXPREC_WITH_GLOO
  auto ctx = impl_->gloo;
  enqueue("barrier", [ctx](uint32_t tag) {
    gloo::BarrierOptions o(ctx);
    o.setTag(tag);
    gloo::barrier(o);
  });
  wait();
#else
  // NCCL only: a one-element all-reduce on the device is the barrier.
  Backend* be = getBackend("cuda");
  void* p = be->alloc(4);
  try {
    int32_t zero = 0;
    be->copyIn(p, &zero, 4);
    allReduce(be, p, 1, Elem::I32, RedOp::Sum);
  } catch (...) {
    be->release(p);
    throw;
  }
  be->release(p);
#endif
}

}  // namespace mp::dist
