// Thin N-API entry: argument unpacking, handle checks, error translation. No math here; it calls
// the backend interface (native/core/backend.h) and the shared conversion header.
//
// A storage handle is an External (type-tagged) owning one backend allocation. dispose() frees
// it at once; the External's finalizer frees it on GC if the user never disposed it.
#include <napi.h>

#include <string>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "../cpu/isa.h"
#include "common.h"

namespace {

using namespace mpnapi;

Napi::Object infoToJs(Napi::Env env, const mp::BackendInfo& b) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", b.name);
  o.Set("compiled", b.compiled);
  o.Set("available", b.available);
  if (!b.reason.empty()) o.Set("reason", b.reason);
  if (!b.features.empty()) o.Set("features", b.features);
  if (b.name == "cuda") o.Set("deviceCount", b.deviceCount);
  if (b.hasDevice) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", b.device.name);
    d.Set("computeCapability", std::to_string(b.device.ccMajor) + "." + std::to_string(b.device.ccMinor));
    d.Set("totalMemory", static_cast<double>(b.device.totalMemory));
    d.Set("freeMemory", static_cast<double>(b.device.freeMemory));
    d.Set("multiprocessors", b.device.multiprocessors);
    o.Set("device", d);
  }
  return o;
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto infos = mp::backendInfos();
    Napi::Array arr = Napi::Array::New(info.Env(), infos.size());
    for (size_t i = 0; i < infos.size(); ++i) arr.Set(static_cast<uint32_t>(i), infoToJs(info.Env(), infos[i]));
    return arr;
  });
}

// alloc(device: string, bytes: number) -> handle
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) mp::fail("E_ARG", "device must be a string");
    Backend* be = mp::getBackend(info[0].As<Napi::String>().Utf8Value());
    size_t bytes = sizeArg(info, 1, "bytes");
    auto* s = new Storage{be, nullptr, bytes};
    try {
      s->ptr = be->alloc(bytes);
    } catch (...) {
      delete s;
      throw;
    }
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), static_cast<int64_t>(bytes));
    LiveCount& live = liveCount(be->name());
    live.bytes += static_cast<int64_t>(bytes);
    live.allocations += 1;
    // A basic finalizer: it touches no JS, so Node runs it inside the GC that collected the handle
    // (not on a later turn of the event loop, which a training loop that never yields would never
    // reach): memory of dropped, undisposed tensors is returned as soon as V8 collects them, and
    // AdjustExternalMemory above makes V8 collect in step with the native memory, not the JS heap.
    auto ext = Napi::External<Storage>::New(info.Env(), s, [](Napi::BasicEnv env, Storage* st) {
      try { releaseStorage(env, st); } catch (...) {}  // a finalizer must not throw
      delete st;
    });
    ext.TypeTag(&kStorageTag);
    return ext;
  });
}

// release(handle): idempotent.
Napi::Value Release(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    releaseStorage(info.Env(), storageArg(info, 0, true));
    return info.Env().Undefined();
  });
}

// upload(handle, values: Float32Array, dtype, offset = 0): converts with RNE on the host, then
// copies in at element `offset`.
Napi::Value Upload(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    auto src = typedArrayArg<Napi::Float32Array>(info, 1, napi_float32_array, "values must be a Float32Array");
    DType t = dtypeArg(info, 2);
    size_t offset = info.Length() > 3 && !info[3].IsUndefined() ? sizeArg(info, 3, "offset") : 0;
    size_t n = src.ElementLength();
    char* dst = elementRange(s, offset, n, t, "upload");
    if (t == DType::F32) {
      s->backend->copyIn(dst, src.Data(), n * 4);
    } else {
      std::vector<uint16_t> tmp(n);
      for (size_t i = 0; i < n; ++i) mp::store_f32(tmp.data(), t, i, src[i]);
      s->backend->copyIn(dst, tmp.data(), n * 2);
    }
    return info.Env().Undefined();
  });
}

// writeBytes(handle, bytes: Uint8Array): raw copy (e.g. FP16 bit patterns, or poison).
Napi::Value WriteBytes(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    auto src = typedArrayArg<Napi::Uint8Array>(info, 1, napi_uint8_array, "bytes must be a Uint8Array");
    if (src.ByteLength() > s->bytes) mp::fail("E_SHAPE", "writeBytes: more bytes than the storage holds");
    s->backend->copyIn(s->ptr, src.Data(), src.ByteLength());
    return info.Env().Undefined();
  });
}

// readBytes(handle, bytes) -> Uint8Array (raw)
Napi::Value ReadBytes(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    size_t bytes = sizeArg(info, 1, "bytes");
    if (bytes > s->bytes) mp::fail("E_SHAPE", "readBytes: more bytes than the storage holds");
    auto out = Napi::Uint8Array::New(info.Env(), bytes);
    s->backend->copyOut(out.Data(), s->ptr, bytes);
    return out;
  });
}

// download(handle, dtype, n, offset = 0) -> Float32Array of elements [offset, offset + n)
Napi::Value Download(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    DType t = dtypeArg(info, 1);
    size_t n = sizeArg(info, 2, "n");
    size_t offset = info.Length() > 3 && !info[3].IsUndefined() ? sizeArg(info, 3, "offset") : 0;
    const char* src = elementRange(s, offset, n, t, "download");
    auto out = Napi::Float32Array::New(info.Env(), n);
    if (t == DType::F32) {
      s->backend->copyOut(out.Data(), src, n * 4);
    } else {
      std::vector<uint16_t> tmp(n);
      s->backend->copyOut(tmp.data(), src, n * 2);
      for (size_t i = 0; i < n; ++i) out[i] = mp::load_f32(tmp.data(), t, i);
    }
    return out;
  });
}

// memoryStats() -> { cpu: { bytes, allocations }, cuda: { ... } }: live tensor storage.
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  for (const char* name : {"cpu", "cuda"}) {
    const LiveCount& c = liveCount(name);
    Napi::Object e = Napi::Object::New(env);
    e.Set("bytes", static_cast<double>(c.bytes.load()));
    e.Set("allocations", static_cast<double>(c.allocations.load()));
    o.Set(name, e);
  }
  return o;
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) mp::fail("E_ARG", "device must be a string");
    mp::getBackend(info[0].As<Napi::String>().Utf8Value())->synchronize();
    return info.Env().Undefined();
  });
}

// Host conversions with the shared RNE definition: f16FromF32 / bf16FromF32 (Float32Array ->
// Uint16Array) and f16ToF32 / bf16ToF32 (Uint16Array -> Float32Array).
template <uint16_t (*Conv)(float)>
Napi::Value FromF32(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto src = typedArrayArg<Napi::Float32Array>(info, 0, napi_float32_array, "expected a Float32Array");
    size_t n = src.ElementLength();
    auto out = Napi::Uint16Array::New(info.Env(), n);
    for (size_t i = 0; i < n; ++i) out[i] = Conv(src[i]);
    return out;
  });
}
template <float (*Conv)(uint16_t)>
Napi::Value ToF32(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto src = typedArrayArg<Napi::Uint16Array>(info, 0, napi_uint16_array, "expected a Uint16Array");
    size_t n = src.ElementLength();
    auto out = Napi::Float32Array::New(info.Env(), n);
    for (size_t i = 0; i < n; ++i) out[i] = Conv(src[i]);
    return out;
  });
}

// setCpuIsa('auto' | level): the level every CPU kernel uses from now on (native/cpu/isa.h).
Napi::Value SetCpuIsa(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) mp::fail("E_ARG", "setCpuIsa: the ISA must be a string");
    mp::cpu::setIsa(info[0].As<Napi::String>().Utf8Value());
    return Napi::String::New(info.Env(), mp::cpu::isaName(mp::cpu::activeIsa()));
  });
}

Napi::Value CpuIsa(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto strings = [&](const std::vector<std::string>& v) {
      Napi::Array a = Napi::Array::New(env, v.size());
      for (size_t i = 0; i < v.size(); ++i) a.Set(i, v[i]);
      return a;
    };
    Napi::Object o = Napi::Object::New(env);
    o.Set("active", mp::cpu::isaName(mp::cpu::activeIsa()));
    o.Set("best", mp::cpu::isaName(mp::cpu::bestIsa()));
    o.Set("available", strings(mp::cpu::availableIsas()));
    o.Set("cpuFeatures", strings(mp::cpu::cpuFeatureNames()));
    o.Set("gemm", mp::cpuFeatures());
    const mp::cpu::CacheSizes& c = mp::cpu::cacheSizes();
    Napi::Object caches = Napi::Object::New(env);
    caches.Set("l1d", (double)c.l1d);
    caches.Set("l2", (double)c.l2);
    caches.Set("l3", (double)c.l3);
    o.Set("cacheBytes", caches);
    return o;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("release", Napi::Function::New(env, Release));
  exports.Set("upload", Napi::Function::New(env, Upload));
  exports.Set("download", Napi::Function::New(env, Download));
  exports.Set("writeBytes", Napi::Function::New(env, WriteBytes));
  exports.Set("readBytes", Napi::Function::New(env, ReadBytes));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("f16FromF32", Napi::Function::New(env, FromF32<mp::f32_to_f16_bits>));
  exports.Set("f16ToF32", Napi::Function::New(env, ToF32<mp::f16_bits_to_f32>));
  exports.Set("bf16FromF32", Napi::Function::New(env, FromF32<mp::f32_to_bf16_bits>));
  exports.Set("bf16ToF32", Napi::Function::New(env, ToF32<mp::bf16_bits_to_f32>));
  exports.Set("setCpuIsa", Napi::Function::New(env, SetCpuIsa));
  exports.Set("cpuIsa", Napi::Function::New(env, CpuIsa));
  registerOps(env, exports);
  registerTesting(env, exports);
  registerDist(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(mixprec, Init)
