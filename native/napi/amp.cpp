// N-API entry for the mixed-precision step: config objects -> structs, handles -> pointers.
// The math is in native/shared/amp.h; the loops in each backend.
#include <string.h>

#include "common.h"

namespace mpnapi {
namespace {

using mp::AmpState;

static_assert(sizeof(AmpState) == 17 * 4, "AmpState layout is mirrored in src/amp/state.ts");

double doubleField(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) mp::fail("E_ARG", std::string(k) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
float floatField(const Napi::Object& o, const char* k) { return static_cast<float>(doubleField(o, k)); }
int32_t intField(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (!v.IsNumber()) mp::fail("E_ARG", std::string(k) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int32_t>(d))) mp::fail("E_ARG", std::string(k) + " must be a 32-bit integer");
  return static_cast<int32_t>(d);
}
Napi::Object objectArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsObject()) mp::fail("E_ARG", std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

mp::ScalerConfig scalerConfig(const Napi::Object& o) {
  mp::ScalerConfig c;
  c.growthFactor = doubleField(o, "growthFactor");
  c.backoffFactor = doubleField(o, "backoffFactor");
  c.minScale = doubleField(o, "minScale");
  c.maxScale = doubleField(o, "maxScale");
  c.growthInterval = intField(o, "growthInterval");
  c.hysteresis = intField(o, "hysteresis");
  c.dynamic = intField(o, "dynamic");
  c.enabled = intField(o, "enabled");
  return c;
}

mp::OptimConfig optimConfig(const Napi::Object& o) {
  mp::OptimConfig c;
  c.kind = intField(o, "kind");
  if (c.kind < 0 || c.kind > 2) mp::fail("E_ARG", "unknown optimizer kind");
  c.lr = floatField(o, "lr");
  c.beta1 = floatField(o, "beta1");
  c.beta2 = floatField(o, "beta2");
  c.eps = floatField(o, "eps");
  c.weightDecay = floatField(o, "weightDecay");
  c.momentum = floatField(o, "momentum");
  c.dampening = floatField(o, "dampening");
  c.nesterov = intField(o, "nesterov");
  c.maxNorm = floatField(o, "maxNorm");
  return c;
}

AmpState* stateArg(const Napi::CallbackInfo& info, size_t i, Backend* be) {
  Storage* s = sameBackend(storageArg(info, i), be, "amp state");
  if (s->bytes < sizeof(AmpState)) mp::fail("E_SHAPE", "amp state storage is too small");
  return static_cast<AmpState*>(s->ptr);
}

// unscaleCheckNorm(grad, gradType, n, state, out32 | null)
Napi::Value UnscaleCheckNorm(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* g = storageArg(info, 0);
    DType t = dtypeArg(info, 1);
    size_t n = sizeArg(info, 2, "n");
    requireBytes(g, n, t, "unscaleCheckNorm grad");
    AmpState* st = stateArg(info, 3, g->backend);
    float* out32 = nullptr;
    if (!info[4].IsNull() && !info[4].IsUndefined()) {
      Storage* o = sameBackend(storageArg(info, 4), g->backend, "unscaled output");
      requireBytes(o, n, DType::F32, "unscaleCheckNorm output");
      out32 = static_cast<float*>(o->ptr);
    }
    g->backend->unscaleCheckNorm(g->ptr, t, n, st, out32);
    return info.Env().Undefined();
  });
}

// ampFinalize(state, scalerConfig, optimConfig, updateScale)
Napi::Value AmpFinalize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = storageArg(info, 0);
    AmpState* st = stateArg(info, 0, s->backend);
    s->backend->ampFinalize(st, scalerConfig(objectArg(info, 1, "scaler config")),
                            optimConfig(objectArg(info, 2, "optimizer config")), info[3].ToBoolean());
    return info.Env().Undefined();
  });
}

// optimizerStep({ n, master, working?, workingType, grad, gradType, m?, v?, state, config })
Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Object o = objectArg(info, 0, "optimizerStep args");
    auto handle = [&](const char* k, bool optional) { return storageField(o, k, "optimizerStep", optional); };
    mp::OptimStepArgs a;
    Napi::Value nv = o.Get("n");
    if (!nv.IsNumber() || nv.As<Napi::Number>().DoubleValue() < 0) mp::fail("E_ARG", "optimizerStep: n must be >= 0");
    a.n = static_cast<size_t>(nv.As<Napi::Number>().DoubleValue());
    Storage* master = handle("master", false);
    Backend* be = master->backend;
    requireBytes(master, a.n, DType::F32, "optimizerStep master");
    a.master = static_cast<float*>(master->ptr);
    if (Storage* w = handle("working", true)) {
      a.workingType = static_cast<DType>(intField(o, "workingType"));
      if ((int)a.workingType < 0 || (int)a.workingType > 2) mp::fail("E_DTYPE", "bad workingType");
      requireBytes(sameBackend(w, be, "working"), a.n, a.workingType, "optimizerStep working");
      a.working = w->ptr;
    }
    Storage* g = sameBackend(handle("grad", false), be, "grad");
    a.gradType = static_cast<DType>(intField(o, "gradType"));
    if ((int)a.gradType < 0 || (int)a.gradType > 2) mp::fail("E_DTYPE", "bad gradType");
    requireBytes(g, a.n, a.gradType, "optimizerStep grad");
    a.grad = g->ptr;
    if (Storage* m = handle("m", true)) {
      requireBytes(sameBackend(m, be, "m"), a.n, DType::F32, "optimizerStep m");
      a.m = static_cast<float*>(m->ptr);
    }
    if (Storage* v = handle("v", true)) {
      requireBytes(sameBackend(v, be, "v"), a.n, DType::F32, "optimizerStep v");
      a.v = static_cast<float*>(v->ptr);
    }
    Storage* st = sameBackend(handle("state", false), be, "state");
    if (st->bytes < sizeof(AmpState)) mp::fail("E_SHAPE", "amp state storage is too small");
    a.state = static_cast<const AmpState*>(st->ptr);
    Napi::Value cfg = o.Get("config");
    if (!cfg.IsObject()) mp::fail("E_ARG", "optimizerStep: config must be an object");
    a.config = optimConfig(cfg.As<Napi::Object>());
    if (a.config.kind != (int32_t)mp::OptimKind::SGD && (!a.m || !a.v))
      mp::fail("E_ARG", "optimizerStep: Adam/AdamW need m and v");
    if (a.config.kind == (int32_t)mp::OptimKind::SGD && a.config.momentum != 0.0f && !a.m)
      mp::fail("E_ARG", "optimizerStep: SGD with momentum needs m");
    be->optimizerStep(a);
    return info.Env().Undefined();
  });
}

// accumulate(grad, gradType, acc, n, overwrite)
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* g = storageArg(info, 0);
    DType t = dtypeArg(info, 1);
    Storage* acc = sameBackend(storageArg(info, 2), g->backend, "accumulator");
    size_t n = sizeArg(info, 3, "n");
    requireBytes(g, n, t, "accumulate grad");
    requireBytes(acc, n, DType::F32, "accumulate accumulator");
    g->backend->accumulate(g->ptr, t, static_cast<float*>(acc->ptr), n, info[4].ToBoolean());
    return info.Env().Undefined();
  });
}

// scalerUpdateHost(stateBytes: Uint8Array, scalerConfig, foundInf): the update rule applied to a
// host-side AmpState (GradScaler.update() outside a fused step). Same function as on the device.
Napi::Value ScalerUpdateHost(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto bytes = typedArrayArg<Napi::Uint8Array>(info, 0, napi_uint8_array, "state must be a Uint8Array");
    if (bytes.ByteLength() < sizeof(AmpState)) mp::fail("E_SHAPE", "state buffer is too small");
    AmpState s;
    memcpy(&s, bytes.Data(), sizeof s);
    s.foundInf = info[2].ToBoolean() ? 1 : 0;
    mp::scaler_update(s, scalerConfig(objectArg(info, 1, "scaler config")));
    memcpy(bytes.Data(), &s, sizeof s);
    return info.Env().Undefined();
  });
}

}  // namespace

void registerAmp(Napi::Env env, Napi::Object exports) {
  exports.Set("unscaleCheckNorm", Napi::Function::New(env, UnscaleCheckNorm));
  exports.Set("ampFinalize", Napi::Function::New(env, AmpFinalize));
  exports.Set("optimizerStep", Napi::Function::New(env, OptimizerStep));
  exports.Set("accumulate", Napi::Function::New(env, Accumulate));
  exports.Set("scalerUpdateHost", Napi::Function::New(env, ScalerUpdateHost));
  exports.Set("ampStateBytes", Napi::Number::New(env, sizeof(AmpState)));
}

}  // namespace mpnapi
