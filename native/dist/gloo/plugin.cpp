// libmixprec_gloo.so: the addon's Gloo plugin (gloo_plugin.h). All of Gloo is behind this file:
// rendezvous through the addon's store, the full mesh of TCP pairs, and the three collectives.
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <type_traits>

#include "../../core/error.h"
#include "../gloo_plugin.h"

namespace mp::dist {
namespace {

// Gloo rendezvous through our store (Gloo's own stores are file / Redis / in-process only).
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(dist::Store& s, Millis timeout) : s_(s), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override { s_.set("gloo/" + key, data); }
  std::vector<char> get(const std::string& key) override { return s_.get("gloo/" + key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const Millis& timeout) override {
    for (const auto& k : keys) {
      try {
        s_.get("gloo/" + k, timeout);
      } catch (const mp::Error&) {
        // Gloo's keys are the ranks' numbers: name the one that never came.
        bool isRank = !k.empty() && k.find_first_not_of("0123456789") == std::string::npos;
        fail("E_DIST", (isRank ? "rank " + k : "the key '" + k + "'") + " did not join the job within " +
                           std::to_string(timeout.count()) + " ms (is it started, with the same MASTER_ADDR / MASTER_PORT and WORLD_SIZE?)");
      }
    }
  }

 private:
  dist::Store& s_;
  Millis timeout_;
};

template <typename T>
gloo::AllreduceOptions::Func reduceFn(RedOp op) {
  using F = void (*)(void*, const void*, const void*, size_t);
  switch (op) {
    case RedOp::Max: return static_cast<F>(&gloo::max<T>);
    case RedOp::Min: return static_cast<F>(&gloo::min<T>);
    default: return static_cast<F>(&gloo::sum<T>);
  }
}

template <typename T>
void reduce(const std::shared_ptr<gloo::Context>& ctx, T* p, size_t count, RedOp op, uint32_t tag) {
  gloo::AllreduceOptions o(ctx);
  o.setTag(tag);
  o.setOutput(p, count);
  o.setReduceFunction(reduceFn<T>(op));
  gloo::allreduce(o);
  // Divided after the sum (not each input before it): the same bits on every rank. A power-of-two
  // world multiplies by the exact reciprocal (the same bits as dividing, and it vectorises).
  if (op != RedOp::Avg) return;
  const int n = ctx->size;
  if (std::is_floating_point<T>::value && (n & (n - 1)) == 0) {
    const T r = static_cast<T>(1) / static_cast<T>(n);
    for (size_t i = 0; i < count; ++i) p[i] *= r;
  } else {
    const T d = static_cast<T>(n);
    for (size_t i = 0; i < count; ++i) p[i] /= d;
  }
}

class Comm : public GlooComm {
 public:
  Comm(dist::Store& store, int rank, int size, Millis timeout, const std::string& hostname) {
    gloo::transport::tcp::attr attr;
    attr.hostname = hostname;
    auto dev = gloo::transport::tcp::CreateDevice(attr);
    ctx_ = std::make_shared<gloo::rendezvous::Context>(rank, size);
    ctx_->setTimeout(timeout);
    StoreAdapter adapter(store, timeout);
    ctx_->connectFullMesh(adapter, dev);
  }
  void allReduce(void* ptr, size_t count, Elem elem, RedOp op, uint32_t tag) override {
    if (elem == Elem::F32) reduce(ctx_, static_cast<float*>(ptr), count, op, tag);
    else if (elem == Elem::F64) reduce(ctx_, static_cast<double*>(ptr), count, op, tag);
    else reduce(ctx_, static_cast<int32_t*>(ptr), count, op, tag);
  }
  void broadcast(void* ptr, size_t bytes, int root, uint32_t tag) override {
    gloo::BroadcastOptions o(ctx_);
    o.setTag(tag);
    o.setOutput(static_cast<char*>(ptr), bytes);
    o.setRoot(root);
    gloo::broadcast(o);
  }
  void barrier(uint32_t tag) override {
    gloo::BarrierOptions o(ctx_);
    o.setTag(tag);
    gloo::barrier(o);
  }

 private:
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
};

}  // namespace
}  // namespace mp::dist

extern "C" __attribute__((visibility("default"))) mp::dist::GlooComm* mixprec_gloo_connect(
    mp::dist::Store& store, int rank, int size, mp::dist::Millis timeout, const std::string& hostname) {
  return new mp::dist::Comm(store, rank, size, timeout, hostname);
}
