// NCCL, loaded at run time. The addon must build and load on machines without NCCL (CPU-only
// installs, CI), so we never include nccl.h nor link libnccl: this header restates the small part
// of NCCL 2.x's public C ABI we call (layouts and values copied from nccl.h, src/nccl.h.in), and
// ncclApi() resolves the functions with dlopen/dlsym the first time distributed code needs them.
#pragma once
#include <cstddef>
#include <string>

namespace mp::dist {

// ---- ABI restated from nccl.h. Kept in mp::dist so a translation unit that also sees the real
// nccl.h gets no clashes. Enums have a fixed int underlying type: NCCL passes them as int, and
// newer libraries return values we don't list (ncclTimeout = 8 in recent releases, user-created
// ops from ncclRedOpCreatePreMulSum), which must stay representable.
constexpr int NCCL_UNIQUE_ID_BYTES = 128;
struct ncclUniqueId { char internal[NCCL_UNIQUE_ID_BYTES]; };  // passed by value to CommInitRank
using ncclComm_t = struct ncclComm*;                           // opaque
using cudaStream_t = void*;  // same size/ABI as CUDA's `struct CUstream_st*`; no CUDA headers here

enum ncclResult_t : int {
  ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
  ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7,
};
enum ncclRedOp_t : int { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 };
enum ncclDataType_t : int {
  ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
  ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9,
};

// The resolved entry points; every one is non-null except getLastError (added in NCCL 2.13).
struct NcclApi {
  ncclResult_t (*getVersion)(int* version);
  ncclResult_t (*getUniqueId)(ncclUniqueId* uniqueId);
  ncclResult_t (*commInitRank)(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
  ncclResult_t (*commDestroy)(ncclComm_t comm);
  ncclResult_t (*commAbort)(ncclComm_t comm);
  ncclResult_t (*commGetAsyncError)(ncclComm_t comm, ncclResult_t* asyncError);
  const char* (*getErrorString)(ncclResult_t result);
  const char* (*getLastError)(ncclComm_t comm);  // nullptr when the library predates it
  ncclResult_t (*allReduce)(const void* sendbuff, void* recvbuff, size_t count,
                            ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                            cudaStream_t stream);
  ncclResult_t (*broadcast)(const void* sendbuff, void* recvbuff, size_t count,
                            ncclDataType_t datatype, int root, ncclComm_t comm,
                            cudaStream_t stream);
  ncclResult_t (*groupStart)();
  ncclResult_t (*groupEnd)();
  int version;  // NCCL_VERSION_CODE of the loaded library, e.g. 21803 for 2.18.3
};

// Loads NCCL once per process (thread-safe): $MIXPREC_NCCL_LIBRARY when set, then libnccl.so.2,
// then libnccl.so. Returns nullptr when NCCL is unusable, with *why (if given) set to a sentence
// saying why: the dlopen errors, the missing symbol, or a version older than 2.10 (ncclAvg).
// The answer, either way, is the same for the life of the process.
const NcclApi* ncclApi(std::string* why);

// Throws mp::Error with code E_DIST when r is not ncclSuccess; the message names `what` (the call
// that failed), NCCL's error string, and NCCL's last-error detail when the library has it.
// comm may be null (NCCL's last error is per process, not per communicator).
void ncclCheck(const NcclApi& api, ncclResult_t r, const char* what, ncclComm_t comm);

}  // namespace mp::dist
