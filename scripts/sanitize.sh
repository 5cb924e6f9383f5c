#!/usr/bin/env bash
# Runs the LibTorch-free unit tests under sanitizers, built with clang in their own build
# directory (docs/reliability.md).
#
#   scripts/sanitize.sh asan   # AddressSanitizer + LeakSanitizer + UBSan, build-asan
#   scripts/sanitize.sh tsan   # ThreadSanitizer on the scheduler and budget tests, build-tsan
#
# asan builds and runs: spec_tests checkpoint_format_tests repository_tests preprocess_tests
#   scheduler_tests budget_tests client_tests metrics_tests serving_tests.
# tsan builds and runs: scheduler_tests budget_tests serving_tests (the batching loop, the
#   latency model and the budget scheduler under concurrent callers; the serving core with
#   its decode pool, batch runner and reload, on a fake model), each ${SANITIZE_REPEAT:-20}
#   times (--gtest_repeat; asan runs once by default).
#
# ThreadSanitizer sees synchronisation only in instrumented code, and absl::Mutex is
# implemented in libabsl (Debian's is not instrumented): with it every access guarded by
# an absl::Mutex would be reported as a race. So `tsan` first builds Abseil itself with
# -fsanitize=thread from Debian's source package of the installed version (same patches,
# so the same ABI and inline namespace), once, into <build dir>/absl, and links the tests
# against that. Getting the source needs Debian's deb-src index: a private apt list under
# <build dir>/absl/apt is used, nothing in /etc/apt changes. Set ABSL_SOURCE_DIR to an
# unpacked abseil source tree to skip the download.
#
# Warnings are not errors here (-DVITSERVE_WERROR=OFF): clang warns about things gcc,
# which the main build and CI use, does not, and this build is about sanitizer reports.
# Only the named test targets are built (ninja -j${SANITIZE_JOBS:-1}, nice
# ${SANITIZE_NICE:-10}); no LibTorch translation unit is compiled. Each test binary runs
# directly, its log in <build dir>/sanitize-logs/. Exits 1 on any failed test or any
# sanitizer report (halt_on_error everywhere). Suppressions, each explained, are in
# tests/sanitizers/; the count of suppressed reports is printed per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

MODE="${1:-}"
case "$MODE" in
  asan)
    SANITIZERS="address,undefined"
    TARGETS=(spec_tests checkpoint_format_tests repository_tests preprocess_tests scheduler_tests
             budget_tests client_tests metrics_tests serving_tests)
    REPEAT="${SANITIZE_REPEAT:-1}"
    ;;
  tsan)
    SANITIZERS="thread"
    TARGETS=(scheduler_tests budget_tests serving_tests)
    # Each repetition is another chance for a different thread interleaving.
    REPEAT="${SANITIZE_REPEAT:-20}"
    ;;
  *)
    echo "usage: $0 asan|tsan" >&2
    exit 2
    ;;
esac
BUILD_DIR="${SANITIZE_BUILD_DIR:-build-$MODE}"
JOBS="${SANITIZE_JOBS:-1}"
NICE="${SANITIZE_NICE:-10}"
CXX_CLANG="${SANITIZE_CXX:-clang++}"
if ! command -v "$CXX_CLANG" >/dev/null; then
  echo "sanitize.sh: $CXX_CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
# The sanitizer runtimes are a separate Debian package (only recommended by clang's).
if ! echo 'int main() { return 0; }' |
     "$CXX_CLANG" -x c++ -fsanitize="$SANITIZERS" - -o /dev/null 2>/dev/null; then
  echo "sanitize.sh: $CXX_CLANG cannot link with -fsanitize=$SANITIZERS" \
       "(apt-get install libclang-rt-14-dev)" >&2
  exit 2
fi
if [[ $MODE == tsan && -z ${ABSL_SOURCE_DIR:-} ]] && ! command -v dpkg-source >/dev/null; then
  echo "sanitize.sh: tsan unpacks Debian's abseil source with dpkg-source" \
       "(apt-get install dpkg-dev, or set ABSL_SOURCE_DIR)" >&2
  exit 2
fi
mkdir -p "$BUILD_DIR"
BUILD_ABS="$(cd "$BUILD_DIR" && pwd)"
start=$(date +%s)

# ---- tsan: an instrumented Abseil ------------------------------------------------------
EXTRA_CMAKE_ARGS=()
if [[ $MODE == tsan ]]; then
  ABSL_DIR="$BUILD_ABS/absl"
  ABSL_PREFIX="$ABSL_DIR/install"
  if [[ ! -f $ABSL_PREFIX/lib/cmake/absl/abslConfig.cmake ]]; then
    src="${ABSL_SOURCE_DIR:-}"
    if [[ -z $src ]]; then
      version=$(dpkg-query -W -f='${source:Version}' libabsl-dev)
      echo "== tsan: fetching Debian's abseil $version source (once)"
      apt="$ABSL_DIR/apt"
      mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$ABSL_DIR/src"
      # The deb-src twins of the system's own Debian entries.
      for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && sed 's/^Types: deb$/Types: deb-src/' "$f" >"$apt/parts/$(basename "$f")"
      done
      opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt/parts"
            -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -qq)
      apt-get "${opts[@]}" update
      (cd "$ABSL_DIR/src" && rm -rf abseil-* &&
       apt-get "${opts[@]}" source --download-only "abseil=$version" >/dev/null &&
       dpkg-source -x --no-check ./*.dsc >/dev/null)
      src=$(find "$ABSL_DIR/src" -mindepth 1 -maxdepth 1 -type d -name 'abseil-*' | head -1)
    fi
    echo "== tsan: building Abseil from $src with -fsanitize=thread (once; ninja -j$JOBS)"
    cmake -S "$src" -B "$ABSL_DIR/build" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 -DABSL_PROPAGATE_CXX_STD=ON \
      -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_TESTING=OFF -DABSL_BUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$ABSL_PREFIX" >/dev/null
    nice -n "$NICE" ninja -C "$ABSL_DIR/build" -j"$JOBS" install >/dev/null
  fi
  EXTRA_CMAKE_ARGS+=(-Dabsl_DIR="$ABSL_PREFIX/lib/cmake/absl")
fi

# ---- configure and build the test targets ----------------------------------------------
if [[ ! -f $BUILD_DIR/build.ninja ]] ||
   ! grep -qx "VITSERVE_SANITIZE:STRING=$SANITIZERS" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
  echo "== configure $BUILD_DIR (clang, VITSERVE_SANITIZE=$SANITIZERS)"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVITSERVE_SANITIZE="$SANITIZERS" \
    -DVITSERVE_WERROR=OFF "${EXTRA_CMAKE_ARGS[@]}" >/dev/null
fi
echo "== build ${TARGETS[*]} (ninja -j$JOBS)"
nice -n "$NICE" ninja -C "$BUILD_DIR" -j"$JOBS" "${TARGETS[@]}"

# ---- run ----------------------------------------------------------------------------------
SUPP="$ROOT/tests/sanitizers"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:print_suppressions=1"
TSAN_OPTIONS+=":suppressions=$SUPP/tsan.supp"
logs="$BUILD_DIR/sanitize-logs"
mkdir -p "$logs"
total_passed=0
total_failed=0
total_reports=0
failed=0
for t in "${TARGETS[@]}"; do
  bin=$(find "$BUILD_DIR/tests" -name "$t" -type f -perm -u+x | head -1)
  if [[ -z $bin ]]; then
    echo "$t: binary not found under $BUILD_DIR/tests" >&2
    failed=1
    continue
  fi
  rc=0
  nice -n "$NICE" "$bin" --gtest_repeat="$REPEAT" >"$logs/$t.log" 2>&1 || rc=$?
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$logs/$t.log" | tail -1)
  nfailed=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$logs/$t.log" || true)
  suppressed=$(awk '/^ *[0-9]+ race:/ {n += $1} END {print n + 0}' "$logs/$t.log")
  reports=$(grep -cE 'WARNING: ThreadSanitizer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:' \
            "$logs/$t.log" || true)
  total_passed=$((total_passed + ${passed:-0}))
  total_failed=$((total_failed + nfailed))
  total_reports=$((total_reports + reports))
  status=ok
  if [[ $rc -ne 0 || $nfailed -ne 0 || $reports -ne 0 ]]; then
    status="FAILED (exit $rc, see $logs/$t.log)"
    failed=1
    grep -E -m5 'WARNING: ThreadSanitizer|ERROR: |runtime error:|SUMMARY|^\[  FAILED  \]' \
      "$logs/$t.log" || true
  fi
  printf '%-24s %4s passed %3s failed (x%s runs) %3s sanitizer reports %3s suppressed  %s\n' \
         "$t" "${passed:-0}" "$nfailed" "$REPEAT" "$reports" "${suppressed:-0}" "$status"
done
echo "== sanitize $MODE: $total_passed tests passed, $total_failed failed (each run $REPEAT" \
     "times), $total_reports sanitizer reports in ${#TARGETS[@]} binaries" \
     "($(( $(date +%s) - start )) s)"
exit "$failed"
