// Checks bench/peers/cpuid_avx2.c (ctest peer_cpuid_cap, bench/peers/check_cpuid_cap.sh).
//   cpuid_probe features     prints "avx2=<0|1> avx512f=<0|1>" from CPUID leaf 7
//   cpuid_probe crash        dereferences NULL (must still die of SIGSEGV under the shim)
//   cpuid_probe own-handler  installs its own SIGSEGV handler, then faults; the handler
//                            prints "own handler ran" and exits 0
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void OwnHandler(int sig) {
  (void)sig;
  static const char kMsg[] = "own handler ran\n";
  (void)write(1, kMsg, sizeof(kMsg) - 1);
  _exit(0);
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "features";
  if (strcmp(mode, "features") == 0) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    __cpuid_count(7, 0, a, b, c, d);
    printf("avx2=%u avx512f=%u\n", (b >> 5) & 1u, (b >> 16) & 1u);
    return 0;
  }
  if (strcmp(mode, "own-handler") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OwnHandler;
    sigaction(SIGSEGV, &sa, NULL);
  }
  volatile int* null = NULL;
  return *null;
}
