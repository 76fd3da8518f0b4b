// N-API entry for the layers' and losses' ops: one options object per call, read with Fields
// (every handle checked for backend and size). The math is in the backends.
#include "common.h"

namespace mpnapi {
namespace {

mp::Act actField(const Fields& f, const char* k) {
  double a = f.num(k);
  if (a != 0 && a != 1 && a != 2) mp::fail("E_ARG", std::string("bad activation code"));
  return static_cast<mp::Act>(static_cast<int>(a));
}

Napi::Object opts(const Napi::CallbackInfo& info, const char* fn) {
  if (!info[0].IsObject()) mp::fail("E_ARG", std::string(fn) + ": expected an options object");
  return info[0].As<Napi::Object>();
}

// A scalar output inside a storage: { handle, byteOffset } given as k and k + "Offset".
template <typename T>
T* scalarOut(Fields& f, const Napi::Object& o, const char* k, const char* offsetKey) {
  size_t off = f.has(offsetKey) ? static_cast<size_t>(f.dim(offsetKey, 0)) : 0;
  if (off % alignof(T) != 0) mp::fail("E_ARG", std::string(offsetKey) + " must be aligned");
  return reinterpret_cast<T*>(static_cast<char*>(f.bytes(k, off + sizeof(T))) + off);
}

// activationForward({ act, x, xType, y, yType, n })
Napi::Value ActivationForward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "activationForward"), "activationForward");
    size_t n = static_cast<size_t>(f.dim("n", 0));
    DType xt = f.dtype("xType"), yt = f.dtype("yType");
    const void* x = f.data("x", n, xt);
    void* y = f.data("y", n, yt);
    f.backend()->activationForward(actField(f, "act"), x, xt, y, yt, n);
    return info.Env().Undefined();
  });
}

// activationBackward({ act, dy, dyType, z, zType, dx, dxType, n })
Napi::Value ActivationBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "activationBackward"), "activationBackward");
    size_t n = static_cast<size_t>(f.dim("n", 0));
    DType dyt = f.dtype("dyType"), zt = f.dtype("zType"), dxt = f.dtype("dxType");
    const void* dy = f.data("dy", n, dyt);
    const void* z = f.data("z", n, zt);
    void* dx = f.data("dx", n, dxt);
    f.backend()->activationBackward(actField(f, "act"), dy, dyt, z, zt, dx, dxt, n);
    return info.Env().Undefined();
  });
}

// columnSum({ x, xType, M, N, out, outType })
Napi::Value ColumnSum(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "columnSum"), "columnSum");
    int64_t M = f.dim("M", 0), N = f.dim("N", 0);
    DType xt = f.dtype("xType"), ot = f.dtype("outType");
    const void* x = f.data("x", M * N, xt);
    void* out = f.data("out", N, ot);
    f.backend()->columnSum(x, xt, M, N, out, ot);
    return info.Env().Undefined();
  });
}

// softmaxCrossEntropy({ logits, logitsType, labels, B, C, smoothing, lossScale, dlogits?, dType,
//                       metrics, lossOffset, correctOffset? }) — labels: int32 storage, validated in TS.
Napi::Value SoftmaxCrossEntropy(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Object o = opts(info, "softmaxCrossEntropy");
    Fields f(o, "softmaxCrossEntropy");
    mp::CrossEntropyArgs a;
    a.B = f.dim("B");
    a.C = f.dim("C");
    a.logitsType = f.dtype("logitsType");
    a.logits = f.data("logits", a.B * a.C, a.logitsType);
    a.labels = static_cast<const int32_t*>(f.bytes("labels", a.B * 4));
    a.smoothing = static_cast<float>(f.num("smoothing"));
    if (!(a.smoothing >= 0.0f && a.smoothing <= 1.0f)) mp::fail("E_ARG", "smoothing must be in [0, 1]");
    a.lossScale = static_cast<float>(f.num("lossScale"));
    if (f.has("dlogits")) {
      a.dType = f.dtype("dType");
      a.dlogits = f.data("dlogits", a.B * a.C, a.dType);
    }
    a.loss = scalarOut<float>(f, o, "metrics", "lossOffset");
    if (f.has("correctOffset")) a.correct = scalarOut<int32_t>(f, o, "metrics", "correctOffset");
    f.backend()->softmaxCrossEntropy(a);
    return info.Env().Undefined();
  });
}

// mseLoss({ pred, predType, target, targetType, n, lossScale, dpred?, dType, metrics, lossOffset })
Napi::Value MseLoss(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Object o = opts(info, "mseLoss");
    Fields f(o, "mseLoss");
    mp::MseArgs a;
    a.n = static_cast<size_t>(f.dim("n"));
    a.predType = f.dtype("predType");
    a.pred = f.data("pred", a.n, a.predType);
    a.targetType = f.dtype("targetType");
    a.target = f.data("target", a.n, a.targetType);
    a.lossScale = static_cast<float>(f.num("lossScale"));
    if (f.has("dpred")) {
      a.dType = f.dtype("dType");
      a.dpred = f.data("dpred", a.n, a.dType);
    }
    a.loss = scalarOut<float>(f, o, "metrics", "lossOffset");
    f.backend()->mseLoss(a);
    return info.Env().Undefined();
  });
}

// layerNormForward({ x, xType, gamma, beta, gType, M, N, eps, y, yType, mean, rstd })
Napi::Value LayerNormForward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "layerNormForward"), "layerNormForward");
    mp::LayerNormArgs a;
    a.M = f.dim("M");
    a.N = f.dim("N");
    a.xType = f.dtype("xType");
    a.x = f.data("x", a.M * a.N, a.xType);
    a.gType = f.dtype("gType");
    a.gamma = f.data("gamma", a.N, a.gType);
    a.beta = f.data("beta", a.N, a.gType);
    a.eps = static_cast<float>(f.num("eps"));
    if (!(a.eps >= 0.0f)) mp::fail("E_ARG", "eps must be >= 0");
    a.yType = f.dtype("yType");
    a.y = f.data("y", a.M * a.N, a.yType);
    a.mean = static_cast<float*>(f.data("mean", a.M, DType::F32));
    a.rstd = static_cast<float*>(f.data("rstd", a.M, DType::F32));
    f.backend()->layerNormForward(a);
    return info.Env().Undefined();
  });
}

// layerNormBackward({ dy, dyType, x, xType, gamma, gType, mean, rstd, M, N, dx, dxType, dgamma, dbeta, dgType })
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "layerNormBackward"), "layerNormBackward");
    mp::LayerNormBackwardArgs a;
    a.M = f.dim("M");
    a.N = f.dim("N");
    a.dyType = f.dtype("dyType");
    a.dy = f.data("dy", a.M * a.N, a.dyType);
    a.xType = f.dtype("xType");
    a.x = f.data("x", a.M * a.N, a.xType);
    a.gType = f.dtype("gType");
    a.gamma = f.data("gamma", a.N, a.gType);
    a.mean = static_cast<const float*>(f.data("mean", a.M, DType::F32));
    a.rstd = static_cast<const float*>(f.data("rstd", a.M, DType::F32));
    a.dxType = f.dtype("dxType");
    a.dx = f.data("dx", a.M * a.N, a.dxType);
    a.dgType = f.dtype("dgType");
    a.dgamma = f.data("dgamma", a.N, a.dgType);
    a.dbeta = f.data("dbeta", a.N, a.dgType);
    f.backend()->layerNormBackward(a);
    return info.Env().Undefined();
  });
}

// dropout({ x, xType, y, yType, n, p, seedHi, seedLo }) — the seed as two uint32 halves.
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Fields f(opts(info, "dropout"), "dropout");
    size_t n = static_cast<size_t>(f.dim("n", 0));
    DType xt = f.dtype("xType"), yt = f.dtype("yType");
    const void* x = f.data("x", n, xt);
    void* y = f.data("y", n, yt);
    float p = static_cast<float>(f.num("p"));
    if (!(p >= 0.0f && p < 1.0f)) mp::fail("E_ARG", "dropout p must be in [0, 1)");
    const int64_t hi = f.dim("seedHi", 0), lo = f.dim("seedLo", 0);
    if (hi > 0xffffffffLL || lo > 0xffffffffLL) mp::fail("E_ARG", "dropout: seedHi and seedLo must be uint32");
    const uint64_t seed = (static_cast<uint64_t>(hi) << 32) | static_cast<uint64_t>(lo);
    f.backend()->dropout(x, xt, y, yt, n, p, seed);
    return info.Env().Undefined();
  });
}

}  // namespace

void registerNn(Napi::Env env, Napi::Object exports) {
  exports.Set("activationForward", Napi::Function::New(env, ActivationForward));
  exports.Set("activationBackward", Napi::Function::New(env, ActivationBackward));
  exports.Set("columnSum", Napi::Function::New(env, ColumnSum));
  exports.Set("softmaxCrossEntropy", Napi::Function::New(env, SoftmaxCrossEntropy));
  exports.Set("mseLoss", Napi::Function::New(env, MseLoss));
  exports.Set("layerNormForward", Napi::Function::New(env, LayerNormForward));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward));
  exports.Set("dropout", Napi::Function::New(env, Dropout));
}

}  // namespace mpnapi
