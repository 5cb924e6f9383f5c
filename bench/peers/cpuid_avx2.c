// LD_PRELOAD shim that makes a process see an AVX2 machine on an AVX-512 one, for the
// peer benchmark's AVX2 run (bench/peers/run.sh with AVX2=1). Benchmark tooling only: the
// server never loads it.
//
// Why: oneDNN, ATen and OpenBLAS can be capped by environment variables
// (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, OPENBLAS_CORETYPE), but ONNX Runtime's MLAS
// picks its kernels from CPUID alone. Measuring our AVX2 path against MLAS's AVX-512
// kernels understates an AVX2 machine's peer; this makes every process in the run see the
// same AVX2 CPU.
//
// How: Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0), on CPUs that report
// "cpuid_fault") turns every CPUID instruction of the process into SIGSEGV. The handler
// runs the real CPUID with faulting briefly off, clears the AVX-512 (and AMX) feature
// bits of leaf 7, writes the result into the interrupted context and steps over the
// instruction. The setting is inherited by threads and fork, and reset by execve.
// CPUID executed before this library's constructor (glibc's own string-function
// selection) saw the real CPU; that affects memcpy's variant, not GEMM kernels.
// XGETBV still reports the AVX-512 state enabled; software also checks the CPUID bits.
//
// Programs that set their own SIGSEGV disposition (Node.js resets every signal to its
// default at start, then installs a WebAssembly trap handler) go through the sigaction()
// below: the handler here stays installed, and theirs is called for any fault that is not
// CPUID.
//
// If CPUID faulting is unavailable the constructor prints why and exits with status 3,
// so a run never silently measures the uncapped CPU.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*SigactionFn)(int, const struct sigaction*, struct sigaction*);

static SigactionFn real_sigaction;
static struct sigaction app_segv;  // the program's SIGSEGV disposition, called for other faults

static long ArchPrctl(int code, unsigned long arg) { return syscall(SYS_arch_prctl, code, arg); }

// Leaf 7 sub-leaf 0: EBX avx512f(16) dq(17) ifma(21) pf(26) er(27) cd(28) bw(30) vl(31);
// ECX vbmi(1) vbmi2(6) vnni(11) bitalg(12) vpopcntdq(14); EDX 4vnniw(2) 4fmaps(3)
// vp2intersect(8) amx-bf16(22) avx512-fp16(23) amx-tile(24) amx-int8(25).
// Sub-leaf 1: EAX avx512-bf16(5).
static void MaskAvx512(uint32_t leaf, uint32_t subleaf, uint32_t* a, uint32_t* b, uint32_t* c,
                       uint32_t* d) {
  if (leaf != 7) return;
  if (subleaf == 0) {
    *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
            (1u << 30) | (1u << 31));
    *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
    *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
  } else if (subleaf == 1) {
    *a &= ~(1u << 5);
  }
}

static void OnSegv(int sig, siginfo_t* info, void* context) {
  ucontext_t* uc = (ucontext_t*)context;
  greg_t* regs = uc->uc_mcontext.gregs;
  const unsigned char* ip = (const unsigned char*)regs[REG_RIP];
  if (ip[0] != 0x0f || ip[1] != 0xa2) {  // not CPUID: the program's disposition applies
    if ((app_segv.sa_flags & SA_SIGINFO) != 0 && app_segv.sa_sigaction != NULL) {
      app_segv.sa_sigaction(sig, info, context);
    } else if (app_segv.sa_handler != SIG_DFL && app_segv.sa_handler != SIG_IGN) {
      app_segv.sa_handler(sig);
    } else {
      struct sigaction dfl;
      memset(&dfl, 0, sizeof(dfl));
      dfl.sa_handler = SIG_DFL;
      real_sigaction(SIGSEGV, &dfl, NULL);  // the instruction faults again and the process dies
    }
    return;
  }
  const uint32_t leaf = (uint32_t)regs[REG_RAX];
  const uint32_t subleaf = (uint32_t)regs[REG_RCX];
  uint32_t a = 0, b = 0, c = 0, d = 0;
  ArchPrctl(ARCH_SET_CPUID, 1);
  __cpuid_count(leaf, subleaf, a, b, c, d);
  ArchPrctl(ARCH_SET_CPUID, 0);
  MaskAvx512(leaf, subleaf, &a, &b, &c, &d);
  regs[REG_RAX] = a;
  regs[REG_RBX] = b;
  regs[REG_RCX] = c;
  regs[REG_RDX] = d;
  regs[REG_RIP] += 2;
}

// Interposed: SIGSEGV dispositions are recorded, not installed.
int sigaction(int signum, const struct sigaction* act, struct sigaction* oldact) {
  if (real_sigaction == NULL) real_sigaction = (SigactionFn)dlsym(RTLD_NEXT, "sigaction");
  if (signum != SIGSEGV) return real_sigaction(signum, act, oldact);
  if (oldact != NULL) *oldact = app_segv;
  if (act != NULL) app_segv = *act;
  return 0;
}

static void InstallCpuidCap(void) {
  if (real_sigaction == NULL) real_sigaction = (SigactionFn)dlsym(RTLD_NEXT, "sigaction");
  if (real_sigaction == NULL) real_sigaction = (SigactionFn)dlsym(RTLD_DEFAULT, "sigaction");
  static int recorded = 0;
  if (!recorded) {
    memset(&app_segv, 0, sizeof(app_segv));
    app_segv.sa_handler = SIG_DFL;
    recorded = 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (real_sigaction == NULL || real_sigaction(SIGSEGV, &sa, NULL) != 0 ||
      ArchPrctl(ARCH_SET_CPUID, 0) != 0) {
    fprintf(stderr,
            "cpuid_avx2: CPUID faulting is not available here (no cpuid_fault in "
            "/proc/cpuinfo?): refusing to run uncapped\n");
    _exit(3);
  }
}

// Loaded as LD_AUDIT: runs before any library of the program is loaded, so CPUID probes in
// other libraries' constructors (oneDNN's, OpenBLAS's) already see the capped CPU. This
// copy lives in the audit namespace and serves until the LD_PRELOAD copy's constructor
// installs its own handler.
unsigned int la_version(unsigned int version) {
  InstallCpuidCap();
  return version < LAV_CURRENT ? version : LAV_CURRENT;
}

// Loaded as LD_PRELOAD: the handler that also chains to the program's own SIGSEGV handler.
__attribute__((constructor)) static void InstallCpuidCapOnLoad(void) { InstallCpuidCap(); }
