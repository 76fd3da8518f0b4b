// The process group (group.h): Gloo for host memory on a communication thread, NCCL for device
// memory on the caller's thread, one rendezvous store, failures named by rank.
#include "group.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <dlfcn.h>

#include "../core/error.h"
#include "nccl_api.h"

namespace mp::dist {

namespace {

// The plugin beside this addon (gloo_plugin.h), loaded once.
GlooConnectFn loadGloo(std::string* why) {
  static std::string reason;
  static GlooConnectFn fn = []() -> GlooConnectFn {
#ifndef MIXPREC_WITH_GLOO
    reason = "Gloo was not found when the addon was built (install Debian's libgloo-dev and run `npm rebuild`, or build with MIXPREC_GLOO=ON)";
    return nullptr;
#else
    Dl_info self{};
    std::string dir = ".";
    if (dladdr(reinterpret_cast<void*>(&loadGloo), &self) && self.dli_fname) {
      dir = self.dli_fname;
      dir = dir.substr(0, dir.find_last_of('/') == std::string::npos ? 0 : dir.find_last_of('/'));
    }
    std::string path = dir + "/" + kGlooPluginName;
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      reason = std::string("the Gloo plugin did not load: ") + (e ? e : path) + " (Gloo's runtime library, Debian's libgloo0, must be installed where the addon runs)";
      return nullptr;
    }
    auto f = reinterpret_cast<GlooConnectFn>(dlsym(h, kGlooConnectSymbol));
    if (!f) reason = path + " lacks " + kGlooConnectSymbol + " (a stale build: run `npm rebuild`)";
    return f;
#endif
  }();
  if (!fn && why) *why = reason;
  return fn;
}

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

}  // namespace

bool glooAvailable(std::string* why) { return loadGloo(why) != nullptr; }

namespace {
std::string glooWhy() {
  std::string why;
  loadGloo(&why);
  return why;
}
}  // namespace

struct ProcessGroup::Impl {
  std::shared_ptr<GlooComm> gloo;  // shared with the queued jobs
  const NcclApi* nccl = nullptr;
  ncclComm_t comm = nullptr;
};

ProcessGroup::ProcessGroup(const GroupOptions& o) : opts_(o), impl_(std::make_unique<Impl>()) {
  if (o.worldSize < 1 || o.rank < 0 || o.rank >= o.worldSize)
    fail("E_ARG", "rank " + std::to_string(o.rank) + " is outside a world of " + std::to_string(o.worldSize));
  std::string why;
  GlooConnectFn connect = loadGloo(&why);
  if (o.backend == "gloo" && !connect) fail("E_DIST", "backend 'gloo': " + why);
  if (o.backend == "nccl" && !(impl_->nccl = ncclApi(&why))) fail("E_DIST", "backend 'nccl': " + why);
  store_ = o.storeDir.empty() ? tcpStore(o.masterAddr, o.masterPort, o.rank, o.rank == 0, o.timeout)
                              : fileStore(o.storeDir, o.timeout);
  // Gloo for host memory whenever it loads (the 'nccl' backend too: host values, barriers).
  if (connect) {
    try {
      impl_->gloo.reset(connect(*store_, o.rank, o.worldSize, o.timeout, glooHostname(o.masterAddr)));
    } catch (const mp::Error&) {
      throw;
    } catch (const std::exception& e) {
      fail("E_DIST", std::string("rank ") + std::to_string(o.rank) + " could not connect to the other ranks: " + e.what());
    }
  }
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
    getBackend(o.device)->stream();  // makes its GPU current: the communicator is bound to it
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
  impl_->gloo.reset();
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
      // The first to go is the likely cause; the others may have exited on their own E_DIST since.
      std::string then;
      for (size_t i = 1; i < gone.size(); ++i) then += (then.empty() ? "" : ", ") + std::to_string(gone[i]);
      return "rank " + std::to_string(gone[0]) + " has exited" + (then.empty() ? "" : " (then rank " + then + ")");
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
    // Device memory: NCCL, enqueued on the backend's own stream, so it is ordered after the
    // kernels that wrote the data and before those that read it (no host synchronisation).
    if (!impl_->comm) fail("E_DIST", "a CUDA tensor needs the 'nccl' backend (this group is '" + opts_.backend + "')");
    const NcclApi& api = *impl_->nccl;
    ncclDataType_t t = elem == Elem::F32 ? ncclFloat32 : elem == Elem::F64 ? ncclFloat64 : ncclInt32;
    ncclRedOp_t r = op == RedOp::Sum ? ncclSum : op == RedOp::Max ? ncclMax : op == RedOp::Min ? ncclMin : ncclAvg;
    ncclCheck(api, api.allReduce(ptr, ptr, count, t, r, impl_->comm, be->stream()), "ncclAllReduce", impl_->comm);
    return;
  }
  auto comm = impl_->gloo;
  if (!comm) fail("E_DIST", "host (CPU) tensors need Gloo: " + glooWhy());
  enqueue("allReduce", [comm, ptr, count, elem, op](uint32_t tag) { comm->allReduce(ptr, count, elem, op, tag); });
}

void ProcessGroup::broadcast(Backend* be, void* ptr, size_t bytes, int root) {
  if (root < 0 || root >= opts_.worldSize) fail("E_ARG", "broadcast: root " + std::to_string(root) + " is not a rank");
  if (bytes == 0) return;
  if (std::string(be->name()) != "cpu") {
    if (!impl_->comm) fail("E_DIST", "a CUDA tensor needs the 'nccl' backend (this group is '" + opts_.backend + "')");
    const NcclApi& api = *impl_->nccl;
    ncclCheck(api, api.broadcast(ptr, ptr, bytes, ncclUint8, root, impl_->comm, be->stream()), "ncclBroadcast", impl_->comm);
    return;
  }
  auto comm = impl_->gloo;
  if (!comm) fail("E_DIST", "host (CPU) tensors need Gloo: " + glooWhy());
  enqueue("broadcast", [comm, ptr, bytes, root](uint32_t tag) { comm->broadcast(ptr, bytes, root, tag); });
}

void ProcessGroup::barrier() {
  if (auto comm = impl_->gloo) {
    enqueue("barrier", [comm](uint32_t tag) { comm->barrier(tag); });
    wait();
    return;
  }
  // NCCL without Gloo: a one-element all-reduce on the device, waited for, is the barrier.
  Backend* be = getBackend(opts_.device);
  void* p = be->alloc(4);
  try {
    int32_t zero = 0;
    be->copyIn(p, &zero, 4);
    allReduce(be, p, 1, Elem::I32, RedOp::Sum);
    be->synchronize();
  } catch (...) {
    be->release(p);
    throw;
  }
  be->release(p);
}

}  // namespace mp::dist
