#!/usr/bin/env bash
# ctest peer_cpuid_cap: the AVX2 shim of the peer benchmark (bench/peers/cpuid_avx2.c) hides
# AVX-512 from CPUID, keeps AVX2, and leaves other faults alone (a crash still crashes, a
# program's own SIGSEGV handler still runs). Skipped (77) on machines without AVX-512 or
# without CPUID faulting, where the AVX2 run has nothing to cap or cannot cap.
# Usage: check_cpuid_cap.sh BUILD_DIR
set -uo pipefail
BUILD_DIR="$1"
SHIM="${BUILD_DIR}/bench/libcpuid_avx2.so"
PROBE="${BUILD_DIR}/bench/cpuid_probe"
# tests/unit/pruning/run_avx2_capped.sh decides whether capping can be done here (77 if not).
CAPPED="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/unit/pruning/run_avx2_capped.sh"
"${CAPPED}" "${SHIM}" true || exit $?
capped() { "${CAPPED}" "${SHIM}" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ "$("${PROBE}" features)" == "avx2=1 avx512f=1" ]] || fail "uncapped probe: $("${PROBE}" features)"
got="$(capped "${PROBE}" features)"
[[ "${got}" == "avx2=1 avx512f=0" ]] || fail "capped probe printed '${got}'"
capped "${PROBE}" crash 2> /dev/null
rc=$?
[[ ${rc} -eq 139 ]] || fail "a NULL dereference under the shim exited ${rc}, not 139 (SIGSEGV)"
got="$(capped "${PROBE}" own-handler)"
rc=$?
[[ ${rc} -eq 0 && "${got}" == "own handler ran" ]] || fail "own handler: rc ${rc}, '${got}'"
echo "PASS: CPUID capped to AVX2; a crash still crashes; the program's handler still runs"
