// Core-to-core round trip: two threads on CPUs 0 and 1 pass one cache line back and forth
// 200000 times; prints the mean nanoseconds per round trip. The peer benchmark records it
// per round (bench/peers/run.sh): on a VM the host may place the two vCPUs on cores near
// each other (~85 ns on the Zen 5 VM of 2026-12-08) or far apart (~390 ns), and a
// one-image forward split across both threads slows down with it
// (server/model/split_chooser.h). Prints "n/a" with fewer than two CPUs.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

enum { kRounds = 200000 };

static _Alignas(64) atomic_int flag;

static void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void* Echo(void* unused) {
  (void)unused;
  Pin(1);
  for (int i = 0; i < kRounds; ++i) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1) {
    }
    atomic_store_explicit(&flag, 2 * i + 2, memory_order_release);
  }
  return NULL;
}

int main(void) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
    puts("n/a");
    return 0;
  }
  pthread_t echo;
  if (pthread_create(&echo, NULL, Echo, NULL) != 0) {
    puts("n/a");
    return 0;
  }
  Pin(0);
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < kRounds; ++i) {
    atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) {
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  pthread_join(echo, NULL);
  const double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
  printf("%.0f\n", ns / kRounds);
  return 0;
}
