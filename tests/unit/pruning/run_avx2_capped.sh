#!/usr/bin/env bash
# Runs a command as an AVX2-only machine would: CPUID without AVX-512
# (bench/peers/cpuid_avx2.c, loaded by LD_AUDIT and LD_PRELOAD), so the kernels' AVX2
# clones, the packed kernel's AVX2 path and oneDNN's AVX2 code run. Exits 77 (ctest: skipped)
# on machines without AVX-512 (their own run already covers AVX2) or without CPUID faulting.
# Usage: run_avx2_capped.sh SHIM COMMAND [ARGS...]
set -uo pipefail
SHIM="$1"
shift
flags="$(grep -m1 '^flags' /proc/cpuinfo)"
grep -qw avx512f <<< "${flags}" || { echo "SKIP: no AVX-512 here"; exit 77; }
grep -qw cpuid_fault <<< "${flags}" || { echo "SKIP: no CPUID faulting here"; exit 77; }
# The shim exits 3 when the kernel refuses CPUID faulting (a sandbox blocking arch_prctl).
env LD_AUDIT="${SHIM}" LD_PRELOAD="${SHIM}" true 2> /dev/null ||
  { echo "SKIP: CPUID faulting refused here"; exit 77; }
exec env LD_AUDIT="${SHIM}" LD_PRELOAD="${SHIM}" "$@"
