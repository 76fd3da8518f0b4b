// Shared pieces of the N-API layer: storage handles, argument checks, error translation.
#pragma once
#include <napi.h>

#include <atomic>
#include <string>

#include "../core/backend.h"

namespace mpnapi {

using mp::Backend;
using mp::DType;

inline const napi_type_tag kStorageTag = {0x6d697870726563ULL, 0x73746f7261676531ULL};

// What a handle (a type-tagged External) owns: one backend allocation. Views of it are element
// offsets and strides in the op arguments (src/tensor.ts), never separate handles.
struct Storage {
  Backend* backend;
  void* ptr;
  size_t bytes;
};

// Live allocations made through handles, per backend name (for memoryStats() and leak tests).
// Atomic: the addon may be loaded in several worker_threads, which share these counters.
struct LiveCount { std::atomic<int64_t> bytes{0}, allocations{0}; };
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
  } catch (const Napi::Error&) {
    throw;  // a JS exception (e.g. from a getter) propagates as it is
  } catch (const std::exception& e) {
    // Anything else a library throws must not terminate Node.
    throwJs(info.Env(), "E_INTERNAL", std::string("internal error: ") + e.what());
  }
}

// Runs inside GC (a basic finalizer) as well as from release(): no JS here.
inline void releaseStorage(Napi::BasicEnv env, Storage* s) {
  if (!s->ptr) return;
  s->backend->release(s->ptr);
  Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(s->bytes));
  s->ptr = nullptr;
  LiveCount& live = liveCount(s->backend->name());
  live.bytes -= static_cast<int64_t>(s->bytes);
  live.allocations -= 1;
}

// A storage handle value (or null when optional and absent); E_ARG if it is something else,
// E_DISPOSED if its memory was released.
inline Storage* storageValue(const Napi::Value& v, const std::string& what, bool optional = false,
                             bool allowReleased = false) {
  if (optional && (v.IsUndefined() || v.IsNull())) return nullptr;
  if (!v.IsExternal() || !v.As<Napi::Object>().CheckTypeTag(&kStorageTag))
    mp::fail("E_ARG", what + " is not a mixprec storage handle");
  Storage* s = v.As<Napi::External<Storage>>().Data();
  if (!allowReleased && !s->ptr) mp::fail("E_DISPOSED", what + ": tensor storage was disposed");
  return s;
}

inline Storage* storageArg(const Napi::CallbackInfo& info, size_t i, bool allowReleased = false) {
  return storageValue(info[i], "argument " + std::to_string(i), false, allowReleased);
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

// The address of elements [offset, offset + n) of dtype t in s; E_SHAPE unless they lie inside it.
// n == 0 touches nothing: any offset is fine (an empty view may start past the storage's end).
inline char* elementRange(const Storage* s, size_t offset, size_t n, DType t, const char* what) {
  if (n == 0) return static_cast<char*>(s->ptr);
  const size_t avail = s->bytes / mp::dtype_size(t);
  if (offset > avail || n > avail - offset)
    mp::fail("E_SHAPE", std::string(what) + ": elements [" + std::to_string(offset) + ", " + std::to_string(offset) + " + " +
                            std::to_string(n) + ") do not fit in a " + std::to_string(s->bytes) + "-byte storage");
  return static_cast<char*>(s->ptr) + offset * mp::dtype_size(t);
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

// Registers one function per op of native/core/ops.def, plus the host-side scaler update (native/napi/ops.cpp).
void registerOps(Napi::Env env, Napi::Object exports);
// Registers the test hooks (native/napi/testing.cpp).
void registerTesting(Napi::Env env, Napi::Object exports);
// Registers the process-group functions (native/napi/dist.cpp).
void registerDist(Napi::Env env, Napi::Object exports);

}  // namespace mpnapi
