// A tiny persistent thread pool shared by the CPU kernels.
//
// Workers are created once (on first use) and reused: a GEMM step is often well under a
// millisecond, so spawning threads per call would cost more than the work it splits.
#pragma once
#include <stdint.h>
#include <functional>

namespace mp {

// Threads parallelFor uses, caller included: MIXPREC_NUM_THREADS if set (>= 1), else
// std::thread::hardware_concurrency().
int numThreads();

// Calls fn(begin, end) on contiguous chunks covering [0, n), at most numThreads() chunks, and
// returns when every chunk is done. Chunks are claimed by idle pool threads and by the caller,
// which runs any chunk no worker has started yet: never assume two chunks run at the same time
// (no barriers between chunks); a chunk may share its thread with other chunks. The first
// exception a chunk throws is rethrown here, after all chunks finished. A call made from inside
// a chunk, or while another thread is inside parallelFor, runs serially on the calling thread.
void parallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace mp
