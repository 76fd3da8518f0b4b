// Run-time loading of NCCL; see nccl_api.h for why we don't link it.
#include "nccl_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>

#include "../core/error.h"

namespace mp::dist {
namespace {

// Our restatement of nccl.h must have NCCL's layout; these are what a mismatch would break first.
static_assert(sizeof(ncclUniqueId) == 128 && sizeof(ncclResult_t) == sizeof(int) &&
                  sizeof(ncclRedOp_t) == sizeof(int) && sizeof(ncclDataType_t) == sizeof(int),
              "NCCL ABI mismatch");

constexpr int kMinVersion = 21000;  // 2.10.0: the first release with ncclAvg, which we rely on

struct Loaded {
  NcclApi api{};
  bool ok = false;
  std::string why;
};

// "2.18.3" from a NCCL_VERSION_CODE; releases before 2.9 encoded X*1000 + Y*100 + Z.
std::string versionString(int code) {
  const bool old = code < 10000;
  const int major = old ? code / 1000 : code / 10000;
  const int minor = old ? code / 100 % 10 : code / 100 % 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

// Resolves every entry point of `lib` into `a`; returns the first required symbol that is absent,
// or nullptr when all are there.
const char* bind(void* lib, NcclApi& a) {
  const char* missing = nullptr;
  auto sym = [&](const char* name, auto& fn, bool required) {
    // dlsym hands back void*; POSIX guarantees it converts to the function pointer it names.
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && required && !missing) missing = name;
  };
  sym("ncclGetVersion", a.getVersion, true);
  sym("ncclGetUniqueId", a.getUniqueId, true);
  sym("ncclCommInitRank", a.commInitRank, true);
  sym("ncclCommDestroy", a.commDestroy, true);
  sym("ncclCommAbort", a.commAbort, true);
  sym("ncclCommGetAsyncError", a.commGetAsyncError, true);
  sym("ncclGetErrorString", a.getErrorString, true);
  sym("ncclGetLastError", a.getLastError, false);  // NCCL 2.13+; error messages are just terser
  sym("ncclAllReduce", a.allReduce, true);
  sym("ncclBroadcast", a.broadcast, true);
  sym("ncclGroupStart", a.groupStart, true);
  sym("ncclGroupEnd", a.groupEnd, true);
  return missing;
}

void load(Loaded& L) {
  // The user's explicit path first, then the soname NCCL packages install, then the dev symlink.
  std::string candidates[3];
  int n = 0;
  if (const char* env = std::getenv("MIXPREC_NCCL_LIBRARY"); env && *env) candidates[n++] = env;
  candidates[n++] = "libnccl.so.2";
  candidates[n++] = "libnccl.so";

  std::string errors;
  for (int i = 0; i < n; ++i) {
    const std::string& path = candidates[i];
    // RTLD_LOCAL: NCCL's symbols stay out of the global scope, so they don't interpose on
    // libraries loaded later (e.g. the copy of NCCL PyTorch brings into the same process).
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      errors += (errors.empty() ? "" : "; ") + std::string(e ? e : path + ": cannot be loaded");
      continue;
    }
    // The first library that opens is the one we judge: silently falling back past a path the
    // user chose, or past a broken install, would hide the problem.
    if (const char* missing = bind(lib, L.api)) {
      L.why = path + " is not a usable NCCL: it lacks the symbol " + missing;
    } else if (int v = 0; L.api.getVersion(&v) != ncclSuccess) {
      L.why = "ncclGetVersion failed in " + path;
    } else if (v < kMinVersion) {
      L.why = "NCCL version " + versionString(v) + " (" + path +
              ") is older than 2.10 (ncclAvg needed)";
    } else {
      L.api.version = v;
      L.ok = true;  // never dlclose'd: NCCL keeps threads and state until process exit
      return;
    }
    L.api = NcclApi{};
    dlclose(lib);
    return;
  }
  L.why = "NCCL could not be loaded (" + errors +
          "); install NCCL 2.10+ or set MIXPREC_NCCL_LIBRARY to the path of libnccl.so.2";
}

}  // namespace

const NcclApi* ncclApi(std::string* why) {
  // Leaked on purpose: the table must outlive static destructors of code still using NCCL.
  static Loaded& L = *new Loaded;
  static std::once_flag once;
  std::call_once(once, [] { load(L); });
  if (!L.ok && why) *why = L.why;
  return L.ok ? &L.api : nullptr;
}

void ncclCheck(const NcclApi& api, ncclResult_t r, const char* what, ncclComm_t comm) {
  // We only create blocking communicators, so ncclInProgress here is a failure too.
  if (r == ncclSuccess) return;
  const char* text = api.getErrorString(r);
  std::string msg = std::string(what) + " failed: " + (text ? text : "unknown NCCL error") +
                    " (ncclResult_t " + std::to_string(static_cast<int>(r)) + ")";
  // NCCL's last error is per process and often says which peer or transport failed.
  if (api.getLastError) {
    const char* last = api.getLastError(comm);
    if (last && *last) msg += "; last NCCL error: " + std::string(last);
  }
  fail("E_DIST", msg);
}

}  // namespace mp::dist
