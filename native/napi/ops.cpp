// N-API entry of every backend op: one function per line of native/core/ops.def, each reading
// its options object through the op's Args::visit with OpReader (the one way arguments are read),
// then Args::check(), then the backend. Every size is overflow-checked and every tensor's extent
// is checked against its storage, so a bypassed TS wrapper still cannot read or write out of bounds.
//
// Reading a field can run JS (a getter, a Proxy trap), and that JS can release a storage the reader
// has already checked (or hand its cached block to a new handle). So the reader checks no pointer
// for good while it reads: it records each storage it took a pointer from, and once every field is
// read (no JS runs after that) it checks that each one still owns that memory (E_DISPOSED if not).
#include <math.h>
#include <string.h>

#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace mpnapi {
using mp::fail;
namespace {

constexpr double kMaxSafe = 9007199254740991.0;  // 2^53 - 1

class OpReader {
 public:
  OpReader(const Napi::Object& o, const char* fn) : o_(o), fn_(fn) {}

  Backend* backend() const { return root_->backend_; }

  // After the last field is read: every storage a pointer was taken from still holds that memory
  // (a getter or Proxy trap run by a later read may have released it).
  void checkStillLive() const {
    for (const auto& [s, ptr] : taken_)
      if (s->ptr != ptr)
        fail("E_DISPOSED", fn_ + ": a tensor storage was released while the arguments were read (by a getter or Proxy)");
  }

  void dim(const char* k, int64_t& v, int64_t min) { v = integer(k, (double)min); }
  void dim(const char* k, int64_t& v, int64_t min, int64_t dflt) {
    v = present(k) ? integer(k, (double)min) : dflt;
  }
  void count(const char* k, size_t& v) { v = (size_t)integer(k, 0); }
  void number(const char* k, float& v) { v = (float)num(k); }
  void real(const char* k, double& v) { v = num(k); }
  void int32(const char* k, int32_t& v) {
    Napi::Value x = get(k);
    if (x.IsBoolean()) { v = x.As<Napi::Boolean>().Value() ? 1 : 0; return; }
    const double d = num(k);
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) bad(k, "must be a 32-bit integer");
    v = (int32_t)d;
  }
  void flag(const char* k, bool& v) {
    Napi::Value x = get(k);
    if (x.IsUndefined() || x.IsNull()) { v = false; return; }
    if (!x.IsBoolean()) bad(k, "must be a boolean");
    v = x.As<Napi::Boolean>().Value();
  }
  void code(const char* k, int& v, int max) {
    const double d = num(k);
    if (!(d >= 0 && d <= max) || d != floor(d)) bad(k, "must be an integer code in [0, " + std::to_string(max) + "]");
    v = (int)d;
  }
  void dtype(const char* k, DType& t, bool optional = false) {
    if (optional && !present(k)) return;
    const double d = num(k);
    if (d != 0 && d != 1 && d != 2) fail("E_DTYPE", what(k) + " must be a float dtype code (0 float32, 1 float16, 2 bfloat16)");
    t = (DType)(int)d;
  }
  void anyDtype(const char* k, DType& t) {
    const double d = num(k);
    if (d != 0 && d != 1 && d != 2 && d != 3) fail("E_DTYPE", what(k) + " must be a dtype code (0..3)");
    t = (DType)(int)d;
  }
  void act(const char* k, mp::Act& a) {
    int c = 0;
    code(k, c, 2);
    a = (mp::Act)c;
  }
  void dims(const char* k, int& ndim, int64_t (&shape)[mp::kMaxDims]) {
    Napi::Array arr = array(k);
    if (arr.Length() > (uint32_t)mp::kMaxDims) fail("E_SHAPE", what(k) + ": at most " + std::to_string(mp::kMaxDims) + " dimensions");
    ndim = (int)arr.Length();
    for (int i = 0; i < ndim; ++i) shape[i] = element(arr, i, k);
  }
  void strides(const char* k, int ndim, int64_t (&s)[mp::kMaxDims], bool optional = false) {
    if (optional && !present(k)) return;
    Napi::Array arr = array(k);
    if ((int)arr.Length() != ndim) fail("E_SHAPE", what(k) + " must have one stride per dimension (" + std::to_string(ndim) + ")");
    for (int i = 0; i < ndim; ++i) s[i] = element(arr, i, k);
  }
  void seed(const char* k, uint64_t& s) {
    const std::string hi = std::string(k) + "Hi", lo = std::string(k) + "Lo";
    const int64_t h = integer(hi.c_str(), 0), l = integer(lo.c_str(), 0);
    if (h > 0xffffffffLL || l > 0xffffffffLL) bad(k, "halves must be uint32");
    s = ((uint64_t)h << 32) | (uint64_t)l;
  }
  // Tensor k: a storage handle, k + "Offset" elements of t into it (default 0), holding at least
  // `need` elements from there; on the same backend as every other tensor of the call.
  template <class T>
  void tensor(const char* k, T*& p, DType t, size_t need, bool optional = false) {
    if (optional && !present(k)) { p = nullptr; return; }
    Storage* s = storageValue(get(k), what(k));
    Backend*& be = root_->backend_;
    if (!be) be = s->backend;
    sameBackend(s, be, what(k).c_str());
    // The pointer as checked now; reading the offset below may run JS that releases s.
    void* base = s->ptr;
    root_->taken_.emplace_back(s, base);
    const std::string offKey = std::string(k) + "Offset";
    const size_t offset = present(offKey.c_str()) ? (size_t)integer(offKey.c_str(), 0) : 0;
    const size_t size = mp::dtype_size(t), avail = s->bytes / size;
    // Zero elements touch no memory: any offset will do (a view of an empty tensor may start past
    // its storage's end, as in PyTorch); the backend gets the storage's own address.
    if (need == 0) { p = reinterpret_cast<T*>(base); return; }
    if (offset > avail || need > avail - offset)
      fail("E_SHAPE", what(k) + " needs " + std::to_string(need) + " elements from offset " + std::to_string(offset) +
                          ", its storage holds " + std::to_string(avail));
    char* ptr = static_cast<char*>(base) + offset * size;
    if (reinterpret_cast<uintptr_t>(ptr) % size != 0) fail("E_ARG", what(k) + " is not aligned to its dtype");
    p = reinterpret_cast<T*>(ptr);
  }
  template <class T>
  void object(const char* k, T& obj) {
    Napi::Value x = get(k);
    if (!x.IsObject()) bad(k, "must be an object");
    OpReader nested(x.As<Napi::Object>(), (fn_ + ": " + k).c_str());
    nested.root_ = root_;  // one backend and one list of taken storages per call
    mp::visitFields(nested, obj);
  }

 private:
  Napi::Value get(const char* k) const { return o_.Get(k); }
  bool present(const char* k) const { Napi::Value x = get(k); return !x.IsUndefined() && !x.IsNull(); }
  std::string what(const char* k) const { return fn_ + ": " + k; }
  [[noreturn]] void bad(const char* k, const std::string& rule) const { fail("E_ARG", what(k) + " " + rule); }
  double num(const char* k) const {
    Napi::Value x = get(k);
    if (!x.IsNumber()) bad(k, "must be a number");
    return x.As<Napi::Number>().DoubleValue();
  }
  // An integer in [min, 2^53): sizes, dims, strides, offsets.
  int64_t integer(const char* k, double min) const {
    const double d = num(k);
    if (!(d >= min && d <= kMaxSafe) || d != floor(d))
      fail("E_SHAPE", what(k) + " must be an integer >= " + std::to_string((int64_t)min) + " (got " + std::to_string(d) + ")");
    return (int64_t)d;
  }
  Napi::Array array(const char* k) const {
    Napi::Value x = get(k);
    if (!x.IsArray()) fail("E_SHAPE", what(k) + " must be an array of integers");
    return x.As<Napi::Array>();
  }
  int64_t element(const Napi::Array& arr, int i, const char* k) const {
    Napi::Value x = arr.Get((uint32_t)i);
    if (!x.IsNumber()) fail("E_SHAPE", what(k) + " must hold integers");
    const double d = x.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= kMaxSafe) || d != floor(d)) fail("E_SHAPE", what(k) + " must hold integers >= 0");
    return (int64_t)d;
  }

  Napi::Object o_;
  std::string fn_;
  OpReader* root_ = this;  // the top-level reader of the call (nested objects share its state)
  Backend* backend_ = nullptr;
  std::vector<std::pair<const Storage*, void*>> taken_;
};

template <class Args>
Napi::Value runOp(const Napi::CallbackInfo& info, const char* name, void (Backend::*fn)(const Args&)) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsObject()) mp::fail("E_ARG", std::string(name) + ": expected an options object");
    OpReader r(info[0].As<Napi::Object>(), name);
    Args a;
    a.visit(r);
    r.checkStillLive();  // no JS runs from here to the backend call
    a.check();
    if (!r.backend()) mp::fail("E_ARG", std::string(name) + ": no tensor given");
    (r.backend()->*fn)(a);
    return info.Env().Undefined();
  });
}

// scalerUpdateHost(stateBytes: Uint8Array, scaler, foundInf): the loss-scale rule applied to a
// host-side AmpState (GradScaler.update() outside a fused step): the same function as on the device.
Napi::Value ScalerUpdateHost(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    typedArrayArg<Napi::Uint8Array>(info, 0, napi_uint8_array, "scalerUpdateHost: state must be a Uint8Array");
    if (!info[1].IsObject()) mp::fail("E_ARG", "scalerUpdateHost: scaler must be an object");
    mp::ScalerConfig c;
    OpReader r(info[1].As<Napi::Object>(), "scalerUpdateHost: scaler");
    mp::visitFields(r, c);
    // Only now the buffer's memory and length: a getter of the scaler may have detached (transferred) it.
    auto bytes = typedArrayArg<Napi::Uint8Array>(info, 0, napi_uint8_array, "scalerUpdateHost: state must be a Uint8Array");
    if (bytes.ByteLength() < sizeof(mp::AmpState)) mp::fail("E_SHAPE", "scalerUpdateHost: state buffer is too small");
    mp::AmpState s;
    memcpy(&s, bytes.Data(), sizeof s);
    s.foundInf = info[2].ToBoolean() ? 1 : 0;
    mp::scaler_update(s, c);
    memcpy(bytes.Data(), &s, sizeof s);
    return info.Env().Undefined();
  });
}

static_assert(sizeof(mp::AmpState) == 17 * 4, "AmpState layout is mirrored in src/amp/state.ts");

}  // namespace

void registerOps(Napi::Env env, Napi::Object exports) {
#define MP_OP(name, Args)                                                                              \
  exports.Set(#name, Napi::Function::New(                                                             \
                         env, [](const Napi::CallbackInfo& info) { return runOp<mp::Args>(info, #name, &Backend::name); }, \
                         #name));
#include "../core/ops.def"
#undef MP_OP
  exports.Set("scalerUpdateHost", Napi::Function::New(env, ScalerUpdateHost));
  exports.Set("ampStateBytes", Napi::Number::New(env, sizeof(mp::AmpState)));
}

}  // namespace mpnapi
