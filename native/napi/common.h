// Shared pieces of the N-API layer: storage handles, argument checks, error translation.
#pragma once
#include <napi.h>

#include <string>

#include "../core/backend.h"

namespace mpnapi {

using mp::Backend;
using mp::DType;

inline const napi_type_tag kStorageTag = {0x6d697870726563ULL, 0x73746f7261676531ULL};

// What a handle (a type-tagged External) owns: one backend allocation — or, for a view, a byte
// range of another handle's allocation (base set; the view keeps the base's External alive
// through `keep`, and is unusable once the base was released).
struct Storage {
  Backend* backend;
  void* ptr;
  size_t bytes;
  Storage* base = nullptr;
  Napi::Reference<Napi::Value> keep;
};

// Live allocations made through handles, per backend name (for memoryStats() and leak tests).
struct LiveCount { double bytes = 0, allocations = 0; };
inline LiveCount& liveCount(const std::string& backendName) {
  static LiveCount cpu, cuda;
  return backendName == "cpu" ? cpu : cuda;
}

[[noreturn]] inline void throwJs(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

// Runs f, translating native errors into JS errors with a stable `code`.
template <typename F>
inline Napi::Value guarded(const Napi::CallbackInfo& info, F f) {
  try {
    return f();
  } catch (const mp::Error& e) {
    throwJs(info.Env(), e.code, e.message);
  } catch (const std::bad_alloc&) {
    throwJs(info.Env(), "E_OOM", "out of host memory");
  }
}

inline void releaseStorage(Napi::Env env, Storage* s) {
  if (!s->ptr) return;
  if (s->base) {  // a view owns no memory
    s->ptr = nullptr;
    return;
  }
  s->backend->release(s->ptr);
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(s->bytes));
  s->ptr = nullptr;
  LiveCount& live = liveCount(s->backend->name());
  live.bytes -= static_cast<double>(s->bytes);
  live.allocations -= 1;
}

// A storage handle value (or null when optional and absent); E_ARG if it is something else,
// E_DISPOSED if its memory (or, for a view, its base's) was released.
inline Storage* storageValue(const Napi::Value& v, const std::string& what, bool optional = false,
                             bool allowReleased = false) {
  if (optional && (v.IsUndefined() || v.IsNull())) return nullptr;
  if (!v.IsExternal() || !v.As<Napi::Object>().CheckTypeTag(&kStorageTag))
    mp::fail("E_ARG", what + " is not a mixprec storage handle");
  Storage* s = v.As<Napi::External<Storage>>().Data();
  if (!allowReleased && (!s->ptr || (s->base && !s->base->ptr))) mp::fail("E_DISPOSED", what + ": tensor storage was disposed");
  return s;
}

inline Storage* storageArg(const Napi::CallbackInfo& info, size_t i, bool allowReleased = false) {
  return storageValue(info[i], "argument " + std::to_string(i), false, allowReleased);
}

// obj[key] as a storage handle.
inline Storage* storageField(const Napi::Object& o, const char* key, const char* fn, bool optional = false) {
  return storageValue(o.Get(key), std::string(fn) + ": " + key, optional);
}

inline double numberArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) mp::fail("E_ARG", std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

inline size_t sizeArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  double d = numberArg(info, i, what);
  if (!(d >= 0) || d != static_cast<double>(static_cast<uint64_t>(d)) || d > 9007199254740991.0)
    mp::fail("E_ARG", std::string(what) + " must be a non-negative integer");
  return static_cast<size_t>(d);
}

inline DType dtypeArg(const Napi::CallbackInfo& info, size_t i) {
  double d = numberArg(info, i, "dtype");
  if (d != 0 && d != 1 && d != 2) mp::fail("E_DTYPE", "unknown dtype code " + std::to_string(d));
  return static_cast<DType>(static_cast<int>(d));
}

inline void requireBytes(const Storage* s, size_t n, DType t, const char* what) {
  if (n > s->bytes / mp::dtype_size(t))
    mp::fail("E_SHAPE", std::string(what) + ": " + std::to_string(n) + " elements do not fit in a " +
                            std::to_string(s->bytes) + "-byte storage");
}

template <typename T>
inline T typedArrayArg(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* what) {
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type)
    mp::fail("E_ARG", std::string(what));
  return info[i].As<T>();
}

inline Storage* sameBackend(Storage* s, Backend* be, const char* what) {
  if (s->backend != be) mp::fail("E_DEVICE", std::string(what) + " is on device '" + s->backend->name() +
                                                 "', expected '" + be->name() + "'");
  return s;
}

// Registers the mixed-precision step's functions (native/napi/amp.cpp).
void registerAmp(Napi::Env env, Napi::Object exports);
// Registers the layers' and losses' functions (native/napi/nn.cpp).
void registerNn(Napi::Env env, Napi::Object exports);

// An options-object reader for the op entry points: numbers, dtypes, sizes, handles with the
// byte ranges they must hold, all on one backend.
class Fields {
 public:
  Fields(const Napi::Object& o, const char* fn) : o_(o), fn_(fn) {}
  double num(const char* k) const {
    Napi::Value v = o_.Get(k);
    if (!v.IsNumber()) mp::fail("E_ARG", fn_ + ": " + k + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  int64_t dim(const char* k, int64_t min = 1) const {
    double d = num(k);
    if (!(d >= (double)min) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 9007199254740991.0)
      mp::fail("E_SHAPE", fn_ + ": " + k + " must be an integer >= " + std::to_string(min));
    return static_cast<int64_t>(d);
  }
  DType dtype(const char* k) const {
    double d = num(k);
    if (d != 0 && d != 1 && d != 2) mp::fail("E_DTYPE", fn_ + ": bad " + k);
    return static_cast<DType>(static_cast<int>(d));
  }
  bool has(const char* k) const { Napi::Value v = o_.Get(k); return !v.IsUndefined() && !v.IsNull(); }
  // Handle k holding at least n elements of t, on the same backend as the first handle read.
  void* data(const char* k, size_t n, DType t) { return bytes(k, n * mp::dtype_size(t)); }
  void* bytes(const char* k, size_t need) {
    Storage* s = storageField(o_, k, fn_.c_str());
    if (!backend_) backend_ = s->backend;
    sameBackend(s, backend_, (fn_ + ": " + k).c_str());
    if (need > s->bytes) mp::fail("E_SHAPE", fn_ + ": " + k + " holds " + std::to_string(s->bytes) + " bytes, needs " + std::to_string(need));
    return s->ptr;
  }
  Backend* backend() const { return backend_; }

 private:
  Napi::Object o_;
  std::string fn_;
  Backend* backend_ = nullptr;
};

}  // namespace mpnapi
