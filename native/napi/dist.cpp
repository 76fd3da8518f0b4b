// N-API entry of the distributed backend (native/dist): one process group per process (as
// PyTorch's default group), collectives on storage handles. Thin: argument checks only.
#include <napi.h>

#include <algorithm>
#include <memory>

#include "../dist/group.h"
#include "../dist/nccl_api.h"
#include "common.h"

namespace mpnapi {
namespace {

using mp::dist::Elem;
using mp::dist::ProcessGroup;
using mp::dist::RedOp;

std::unique_ptr<ProcessGroup>& theGroup() {
  static std::unique_ptr<ProcessGroup> g;
  return g;
}

ProcessGroup& group() {
  auto& g = theGroup();
  if (!g) mp::fail("E_STATE", "the process group is not initialized: call mixprec.distributed.init() first");
  return *g;
}

std::string stringField(const Napi::Object& o, const char* k, const std::string& dflt) {
  Napi::Value v = o.Get(k);
  if (v.IsUndefined()) return dflt;
  if (!v.IsString()) mp::fail("E_ARG", std::string(k) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}
int intField(const Napi::Object& o, const char* k, double lo, double hi) {
  Napi::Value v = o.Get(k);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1e300;
  if (!(d >= lo && d <= hi) || d != static_cast<double>(static_cast<int64_t>(d)))
    mp::fail("E_ARG", std::string(k) + " must be an integer in [" + std::to_string(static_cast<int64_t>(lo)) + ", " +
                          std::to_string(static_cast<int64_t>(hi)) + "]");
  return static_cast<int>(d);
}

Elem elemArg(const Napi::Value& v) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "f32") return Elem::F32;
  if (s == "f64") return Elem::F64;
  if (s == "i32") return Elem::I32;
  mp::fail("E_DTYPE", "all-reduce element type must be 'f32', 'f64' or 'i32'");
}
RedOp opArg(const Napi::Value& v) {
  std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (s == "sum") return RedOp::Sum;
  if (s == "max") return RedOp::Max;
  if (s == "min") return RedOp::Min;
  if (s == "avg") return RedOp::Avg;
  mp::fail("E_ARG", "op must be 'sum', 'avg', 'max' or 'min'");
}

// distInit({ backend, rank, worldSize, masterAddr, masterPort, storeDir, timeoutMs })
Napi::Value DistInit(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) mp::fail("E_ARG", "distInit takes an options object");
    if (theGroup()) mp::fail("E_STATE", "the process group is already initialized (call destroy() first)");
    Napi::Object o = info[0].As<Napi::Object>();
    mp::dist::GroupOptions g;
    g.backend = stringField(o, "backend", "gloo");
    if (g.backend != "gloo" && g.backend != "nccl") mp::fail("E_ARG", "backend must be 'gloo' or 'nccl'");
    g.worldSize = intField(o, "worldSize", 1, 1 << 20);
    g.rank = intField(o, "rank", 0, g.worldSize - 1);
    g.masterAddr = stringField(o, "masterAddr", "127.0.0.1");
    g.masterPort = intField(o, "masterPort", 1, 65535);
    g.storeDir = stringField(o, "storeDir", "");
    g.device = stringField(o, "device", "cuda");
    g.timeout = mp::dist::Millis(intField(o, "timeoutMs", 1, 2147483647));
    theGroup() = std::make_unique<ProcessGroup>(g);
    return info.Env().Undefined();
  });
}

// distDestroy(): a final barrier, then teardown. Idempotent.
Napi::Value DistDestroy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto& g = theGroup();
    if (!g) return info.Env().Undefined();
    std::unique_ptr<ProcessGroup> owned = std::move(g);  // gone even when the barrier fails
    owned->shutdown();
    return info.Env().Undefined();
  });
}

// distAllReduce(handle, byteOffset, count, elem, op, wait): in place; wait=false returns once
// enqueued (the Trainer's gradient buckets; the storage must outlive distWait()).
Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    size_t off = sizeArg(info, 1, "byteOffset"), count = sizeArg(info, 2, "count");
    Elem e = elemArg(info[3]);
    RedOp op = opArg(info[4]);
    size_t es = e == Elem::F64 ? 8 : 4;
    if (off % es != 0 || count > (s->bytes - std::min(off, s->bytes)) / es) mp::fail("E_SHAPE", "allReduce: the range does not lie in the storage");
    ProcessGroup& g = group();
    g.allReduce(s->backend, static_cast<char*>(s->ptr) + off, count, e, op);
    if (info[5].ToBoolean()) g.wait();
    return info.Env().Undefined();
  });
}

// distAllReduceHost(values: Float64Array, op): in place, synchronous (metrics).
Napi::Value DistAllReduceHost(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto a = typedArrayArg<Napi::Float64Array>(info, 0, napi_float64_array, "values must be a Float64Array");
    RedOp op = opArg(info[1]);
    ProcessGroup& g = group();
    g.allReduce(mp::getBackend("cpu"), a.Data(), a.ElementLength(), Elem::F64, op);
    g.wait();
    return info.Env().Undefined();
  });
}

// distBroadcast(handle, byteOffset, bytes, root, wait)
Napi::Value DistBroadcast(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    size_t off = sizeArg(info, 1, "byteOffset"), bytes = sizeArg(info, 2, "bytes");
    if (off > s->bytes || bytes > s->bytes - off) mp::fail("E_SHAPE", "broadcast: the range does not lie in the storage");
    int root = static_cast<int>(sizeArg(info, 3, "root"));
    ProcessGroup& g = group();
    g.broadcast(s->backend, static_cast<char*>(s->ptr) + off, bytes, root);
    if (info[4].ToBoolean()) g.wait();
    return info.Env().Undefined();
  });
}

Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    group().barrier();
    return info.Env().Undefined();
  });
}

Napi::Value DistWait(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    group().wait();
    return info.Env().Undefined();
  });
}

// distInfo() -> { gloo, glooReason?, nccl, ncclReason?, ncclVersion?, group?: { rank, worldSize, backend } }
Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    std::string why;
    bool gloo = mp::dist::glooAvailable(&why);
    o.Set("gloo", gloo);
    if (!gloo) o.Set("glooReason", why);
    why.clear();
    const mp::dist::NcclApi* nccl = mp::dist::ncclApi(&why);
    o.Set("nccl", nccl != nullptr);
    if (nccl) o.Set("ncclVersion", nccl->version);
    else o.Set("ncclReason", why);
    if (auto& g = theGroup()) {
      Napi::Object go = Napi::Object::New(env);
      go.Set("rank", g->rank());
      go.Set("worldSize", g->size());
      go.Set("backend", g->backend());
      o.Set("group", go);
    }
    return o;
  });
}

}  // namespace

void registerDist(Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, DistInit));
  exports.Set("distDestroy", Napi::Function::New(env, DistDestroy));
  exports.Set("distAllReduce", Napi::Function::New(env, DistAllReduce));
  exports.Set("distAllReduceHost", Napi::Function::New(env, DistAllReduceHost));
  exports.Set("distBroadcast", Napi::Function::New(env, DistBroadcast));
  exports.Set("distBarrier", Napi::Function::New(env, DistBarrier));
  exports.Set("distWait", Napi::Function::New(env, DistWait));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo));
  // At environment teardown (process exit without destroy()): join the thread, no barrier.
  napi_add_env_cleanup_hook(env, [](void*) { theGroup().reset(); }, nullptr);
}

}  // namespace mpnapi
