#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of tests/fuzz (docs/reliability.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30; TARGETs default to all of them (names as below,
# with or without the fuzz_ prefix). Configures ${FUZZ_BUILD_DIR:-build-fuzz} with clang
# and -DVITSERVE_FUZZ=ON, builds only the fuzz targets (ninja -j${FUZZ_JOBS:-1}; no
# LibTorch translation unit), then runs each target for SECONDS_PER_TARGET on a fresh
# copy of its seed corpus tests/fuzz/corpus/<target> with its dictionary. Everything a
# run writes (grown corpus, log, crash/leak/timeout/oom inputs) is under
# ${FUZZ_OUT:-<build dir>/fuzz-out}/<target>/.
#
# Prints executions, exec/s, coverage and findings per target; exits 1 if any target
# crashed, leaked, timed out, ran out of memory or failed to start.
#
# Other knobs: FUZZ_TIMEOUT (seconds per input, default 10), FUZZ_RSS_LIMIT_MB (default
# 2048), FUZZ_NICE (niceness of the runs, default 10), FUZZ_SEED (libFuzzer -seed; default
# random) and FUZZ_RUNS (stop each target after this many inputs, besides the time limit).
# With both set the run is reproducible: the same inputs in the same order on every
# machine, which is what CI uses (a gate must not fail by luck).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(fuzz_image_probe fuzz_safetensors_header fuzz_unpickler fuzz_model_spec
             fuzz_classify_request fuzz_preprocess fuzz_hf_config)
declare -A DICT=(
  [fuzz_image_probe]=image.dict [fuzz_preprocess]=image.dict
  [fuzz_safetensors_header]=safetensors.dict [fuzz_unpickler]=pickle.dict
  [fuzz_model_spec]=pbtxt.dict)

SECONDS_PER_TARGET="${1:-30}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [[ "$SECONDS_PER_TARGET" -eq 0 ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
TARGETS=()
for t in "$@"; do TARGETS+=("fuzz_${t#fuzz_}"); done
if [[ ${#TARGETS[@]} -eq 0 ]]; then TARGETS=("${ALL_TARGETS[@]}"); fi
for t in "${TARGETS[@]}"; do
  if [[ ! -d tests/fuzz/corpus/$t ]]; then
    echo "unknown fuzz target '$t'; known: ${ALL_TARGETS[*]}" >&2
    exit 2
  fi
done

BUILD_DIR="${FUZZ_BUILD_DIR:-build-fuzz}"
OUT="${FUZZ_OUT:-$BUILD_DIR/fuzz-out}"
JOBS="${FUZZ_JOBS:-1}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_LIMIT_MB="${FUZZ_RSS_LIMIT_MB:-2048}"
NICE="${FUZZ_NICE:-10}"
CXX_CLANG="${FUZZ_CXX:-clang++}"

if ! command -v "$CXX_CLANG" >/dev/null; then
  echo "fuzz.sh: $CXX_CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
# The libFuzzer and sanitizer runtimes are a separate Debian package (only recommended by
# clang's): check that a trivial target links.
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe_dir/probe.cc"
if ! "$CXX_CLANG" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cc" \
     -o "$probe_dir/probe" 2>"$probe_dir/err"; then
  cat "$probe_dir/err" >&2
  echo "fuzz.sh: $CXX_CLANG cannot link a libFuzzer target (apt-get install libclang-rt-14-dev)" >&2
  exit 2
fi

if [[ ! -f "$BUILD_DIR/build.ninja" ]] ||
   ! grep -q '^VITSERVE_FUZZ:BOOL=ON' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
  echo "== configure $BUILD_DIR (clang, VITSERVE_FUZZ=ON)"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVITSERVE_BUILD_TESTS=OFF -DVITSERVE_FUZZ=ON >/dev/null
fi
echo "== build ${TARGETS[*]} (ninja -j$JOBS)"
nice -n "$NICE" ninja -C "$BUILD_DIR" -j"$JOBS" "${TARGETS[@]}"

# Sanitizer reports abort the run so that libFuzzer saves the input.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

failed=0
summary=()
for t in "${TARGETS[@]}"; do
  dir="$OUT/$t"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp tests/fuzz/corpus/"$t"/* "$dir/corpus/"
  args=(-max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_LIMIT_MB"
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/")
  if [[ -n "${FUZZ_SEED:-}" ]]; then args+=(-seed="$FUZZ_SEED"); fi
  if [[ -n "${FUZZ_RUNS:-}" ]]; then args+=(-runs="$FUZZ_RUNS"); fi
  if [[ -n "${DICT[$t]:-}" ]]; then args+=(-dict="tests/fuzz/dict/${DICT[$t]}"); fi
  # OpenCV's decoders print a line to stderr for every undecodable input: keep the log
  # readable (libFuzzer and the sanitizers still report through their own descriptor).
  if [[ $t == fuzz_preprocess ]]; then args+=(-close_fd_mask=2); fi
  echo "== $t: ${SECONDS_PER_TARGET}s"
  rc=0
  nice -n "$NICE" "$BUILD_DIR/tests/fuzz/$t" "${args[@]}" "$dir/corpus" >"$dir/log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)
  units=$(find "$dir/corpus" -type f | wc -l)
  findings=$(find "$dir/artifacts" -type f | wc -l)
  status=ok
  if [[ $rc -ne 0 || $findings -ne 0 ]]; then
    status="FAILED (exit $rc)"
    failed=1
    grep -E 'ERROR:|runtime error|FUZZ_CHECK|SUMMARY' "$dir/log" | head -5 || true
    find "$dir/artifacts" -type f | sed 's/^/  input: /'
  fi
  line=$(printf '%-24s %12s execs %8s exec/s  cov %-6s corpus %-5s findings %s  %s' \
         "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$units" "$findings" "$status")
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${SECONDS_PER_TARGET}s per target; logs and inputs under $OUT)"
printf '%s\n' "${summary[@]}"
exit "$failed"
