// glibc malloc settings for a process that runs ViT forwards (the server, the benchmark).
//
// Activations of a batch are a few to tens of MB per tensor. With glibc's defaults
// (dynamic mmap threshold, 128 KiB trim threshold) such buffers are mmap'd / returned to
// the OS and page-faulted back in on every forward, which halved throughput: DeiT-S dense,
// 1 thread, batch 8 ran 9.6-11.9 img/s (below batch 1's 17.4) and batch 32 16-18.6. With
// large blocks kept in the heap (mmap threshold 256 MiB) and the heap not trimmed below
// 1 GiB of free top memory, the same runs gave 20.1 (batch 8) and 20.6 (batch 32) img/s
// (bench/results/inprocess-cpu.md). The cost: freed activation memory stays mapped (RSS
// holds its peak instead of oscillating).
//
// Call once at startup, before threads start. Environment variables MALLOC_MMAP_THRESHOLD_
// / MALLOC_TRIM_THRESHOLD_ given by the user win (then nothing is changed).
#ifndef VITSERVE_SERVER_UTIL_MALLOC_TUNING_H_
#define VITSERVE_SERVER_UTIL_MALLOC_TUNING_H_

#include <malloc.h>

#include <cstdlib>

namespace vitserve {

inline constexpr int kMallocMmapThresholdBytes = 256 << 20;
inline constexpr int kMallocTrimThresholdBytes = 1 << 30;

inline void TuneMallocForInference() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) {
    mallopt(M_MMAP_THRESHOLD, kMallocMmapThresholdBytes);
  }
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) {
    mallopt(M_TRIM_THRESHOLD, kMallocTrimThresholdBytes);
  }
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_UTIL_MALLOC_TUNING_H_
