#!/usr/bin/env bash
# The whole GPU run of vitserve in one command (bench/gpu/README.md): unpack the carried
# .debs (bench/gpu/fetch_debs.sh) into a prefix, configure against the machine's own
# PyTorch/LibTorch with its C++ ABI and -DVITSERVE_CUDA=ON -DVITSERVE_WITH_OPENCV=OFF, check
# that LibTorch and Debian's protobuf live together in one binary, build only what the run
# needs, then: golden parity (fp32 within 1e-3, bf16 top-1 agreement), in-process img/s
# (DeiT-S 224, dense / DynamicViT / EViT / ToMe at keep 0.9 / 0.7 / 0.5, CUDA graphs on and
# off), PyTorch eager on the same machine, and end to end through gRPC. Results go to $OUT
# (results.md first); the last lines printed are the summary.
#
# Every step runs under its own time limit and a global deadline (DEADLINE_S, default 540 s:
# the run ends inside 9 minutes whatever happens). A failing step is logged and the run goes
# on with the steps that do not need its output.
#
# Usage:
#   bench/gpu/run.sh                  on the GPU machine (OUT defaults to ./gpu-out)
#   bench/gpu/run.sh --dry-run        here: Debian's LibTorch 1.13, --device=cpu, tiny sizes,
#                                     a fresh build of the same targets, OUT in /tmp
#   bench/gpu/run.sh --dry-run --reuse-build=DIR
#                                     (CTest gpu_dry_run) every step, but the benchmarks use
#                                     DIR's binaries; the fresh tree is configured and builds
#                                     only vitserve_preprocess (the OpenCV-free variant)
# Environment: OUT, WORK (scratch; default a new /tmp dir), DEADLINE_S, JOBS (default nproc),
#   CMAKE_EXTRA_ARGS (e.g. -DCMAKE_CXX_COMPILER_LAUNCHER=ccache), VITSERVE_COMMIT.
set -uo pipefail  # no -e: failures are recorded per step

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

step_env() {  # machine facts; writes $WORK/state.sh for the later steps
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  nproc; uname -r; cmake --version | head -1; g++ --version | head -1
  command -v nvcc >/dev/null && nvcc --version | tail -2
  "$PY" - >"$WORK/torch.sh" <<'PYEOF' || return 1
import torch
def q(v): return "'" + str(v).replace("'", "") + "'"
print("TORCH_VERSION=" + q(torch.__version__))
print("TORCH_CMAKE=" + q(torch.utils.cmake_prefix_path))
print("TORCH_ABI=" + q(int(torch._C._GLIBCXX_USE_CXX11_ABI)))
print("TORCH_CUDA=" + q(torch.version.cuda))
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print("GPU_NAME=" + q(gpu))
PYEOF
  cat "$WORK/torch.sh"
}

step_unpack() {  # the .debs into $PREFIX (never over /)
  local debs=${DEBS_DIR:-$ROOT/bench/gpu/debs} n=0
  ls "$debs"/*.deb >/dev/null || { echo "no .debs in $debs: run bench/gpu/fetch_debs.sh"; return 1; }
  mkdir -p "$PREFIX"
  for f in "$debs"/*.deb; do
    if command -v dpkg >/dev/null; then
      dpkg -x "$f" "$PREFIX" || return 1
    else  # no dpkg: a .deb is an ar archive holding data.tar.*
      (cd "$WORK" && rm -f data.tar.* && ar x "$f" && tar -xf data.tar.* -C "$PREFIX") || return 1
    fi
    n=$((n + 1))
  done
  # Absolute symlinks would point into the host's /: point them into the prefix.
  find "$PREFIX" -type l -lname '/*' | while read -r l; do
    ln -sfn "$PREFIX$(readlink "$l")" "$l"
  done
  echo "unpacked $n packages into $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
  LD_LIBRARY_PATH=$PREFIX_LIBS "$PREFIX/usr/bin/protoc" --version
}

step_configure() {
  local prefix_path="$PREFIX/usr/lib/x86_64-linux-gnu/cmake;$PREFIX/usr"
  [[ -d ${TORCH_CMAKE:-} ]] && prefix_path="$TORCH_CMAKE;$prefix_path"
  local args=(-G Ninja -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
    -DVITSERVE_WITH_OPENCV=OFF -DVITSERVE_WERROR=OFF -DVITSERVE_BUILD_TESTS=ON
    "-DCMAKE_PREFIX_PATH=$prefix_path"
    # The prefix's headers first (LibTorch's include dir must not shadow its protobuf);
    # Abseil 20220623 misses <cstdint> includes that GCC >= 13 no longer brings in.
    "-DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=${TORCH_ABI:-1} -isystem $PREFIX/usr/include -include cstdint"
    "-DProtobuf_PROTOC_EXECUTABLE=$PREFIX/usr/bin/protoc")
  if [[ $DEVICE == cuda ]]; then
    local nvcc; nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    args+=(-DVITSERVE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90
      -DTORCH_CUDA_ARCH_LIST=9.0)
  fi
  [[ $DRY_RUN == 1 ]] && command -v ccache >/dev/null &&
    args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # shellcheck disable=SC2086  # CMAKE_EXTRA_ARGS is a list of words
  LD_LIBRARY_PATH=$PREFIX_LIBS cmake "${args[@]}" ${CMAKE_EXTRA_ARGS:-} && return 0
  [[ $DEVICE == cuda ]] || return 1
  # Fallback: without the CUDA executor (no enable_language(CUDA)); --device=cuda then runs
  # the plain LibTorch path (still on the GPU, fused attention, no graphs / worker thread).
  echo "FALLBACK: configure failed with VITSERVE_CUDA=ON; retrying with OFF"
  echo "VITSERVE_CUDA=OFF (fallback: configure failed with ON)" >"$WORK/build_mode"
  rm -rf "$BUILD"
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH=$PREFIX_LIBS cmake "${args[@]/-DVITSERVE_CUDA=ON/-DVITSERVE_CUDA=OFF}" \
    ${CMAKE_EXTRA_ARGS:-}
}

step_proto_check() {  # LibTorch + Debian's protobuf in one binary, first
  if [[ -z $REUSE_BUILD ]]; then
    LD_LIBRARY_PATH=$PREFIX_LIBS ninja -C "$BUILD" -j"$JOBS" gpu_proto_torch_check || return 1
  fi
  LD_LIBRARY_PATH=$PREFIX_LIBS "$BIN/bench/gpu/gpu_proto_torch_check" "--device=$DEVICE"
}

step_build() {
  local targets=(vitserve vitclient vitserve_bench golden_tests)
  # Reusing a build: compile the OpenCV-free preprocessor alone (after protoc), the part of
  # this configuration that no other build here compiles.
  [[ -n $REUSE_BUILD ]] &&
    targets=(server/preprocess/CMakeFiles/vitserve_preprocess.dir/preprocessor.cc.o)
  LD_LIBRARY_PATH=$PREFIX_LIBS ninja -C "$BUILD" -j"$JOBS" "${targets[@]}" && return 0
  [[ $DEVICE == cuda && -z $REUSE_BUILD ]] || return 1
  grep -qx "VITSERVE_CUDA=ON" "$WORK/build_mode" || return 1  # already without it
  # Fallback as in step_configure: only vit_inference_model.cc recompiles.
  echo "FALLBACK: build failed with VITSERVE_CUDA=ON; rebuilding with OFF"
  echo "VITSERVE_CUDA=OFF (fallback: the build failed with ON, see logs/build.log)" \
    >"$WORK/build_mode"
  LD_LIBRARY_PATH=$PREFIX_LIBS cmake -B "$BUILD" -DVITSERVE_CUDA=OFF &&
    LD_LIBRARY_PATH=$PREFIX_LIBS ninja -C "$BUILD" -j"$JOBS" "${targets[@]}" && return 3
  return 1
}

step_cuda_syntax() {  # dry run only: the CUDA-only sources against CUDA + LibTorch headers
  local cuda=${CUDA_HOME:-/usr/local/cuda}/include stub=$WORK/cuda_stub
  [[ -f $cuda/cuda_runtime_api.h ]] || { echo "no CUDA headers under $cuda: skipped"; return 0; }
  mkdir -p "$stub/c10/cuda/impl"  # generated at LibTorch's build time; Debian lacks it
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
    >"$stub/c10/cuda/impl/cuda_cmake_macros.h"
  local f=server/model/cuda_inference_model.cc
  echo "g++ -fsyntax-only -DVITSERVE_CUDA=1 $f"
  g++ -std=c++17 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror -DVITSERVE_CUDA=1 \
    -I"$ROOT" -I"$stub" -I"$cuda" -I/usr/include/torch/csrc/api/include "$ROOT/$f"
}

step_fixtures() {
  local reused=${REUSE_BUILD:+$REUSE_BUILD/tests/golden/fixtures}
  if [[ -n $reused && -f $reused/manifest.txt ]]; then  # CTest: the golden_fixtures fixture's
    ln -sfn "$reused" "$WORK/fixtures" && echo "reusing $reused" && return 0
  fi
  "$PY" "$ROOT/tests/golden/make_golden.py" "$WORK/fixtures"
}

step_repo() {  # the end-to-end step's model; also the dry run's benchmark shape
  local small=()
  [[ $DRY_RUN == 1 ]] && small=(--small)
  "$PY" "$ROOT/bench/gpu/make_repo.py" "$WORK/repo" "${small[@]}"
}

golden() {  # golden DTYPE MAX_ERROR: the golden cases on $DEVICE
  local filter='Cases/*' c
  if [[ $DRY_RUN == 1 ]]; then  # four cases suffice to test the script
    filter=""
    for c in dense dynamicvit_070 evit_070 tome_070; do
      filter+="${filter:+:}Cases/GoldenTest.MatchesReference/$c"
    done
  fi
  VITSERVE_GOLDEN_FIXTURE_DIR=$WORK/fixtures VITSERVE_GOLDEN_DEVICE=$DEVICE \
    VITSERVE_GOLDEN_DTYPE=$1 VITSERVE_GOLDEN_MAX_ERROR=$2 LD_LIBRARY_PATH=$PREFIX_LIBS \
    "$BIN/tests/golden/golden_tests" "--gtest_filter=$filter" --gtest_color=no
}

step_parity_fp32() { golden float32 1e-3 | tee "$WORK/parity_fp32.txt"; }

step_parity_bf16() { golden bfloat16 0 | tee "$WORK/parity_bf16.txt"; }

inprocess() {  # inprocess GRAPHS: vitserve_bench over the whole matrix
  local shape=()  # DeiT-S by default; the dry run's DeiT-Tiny from the e2e repository
  [[ $DRY_RUN == 1 ]] && shape=("--config=$WORK/repo/deit-s-evit/config.pbtxt")
  LD_LIBRARY_PATH=$PREFIX_LIBS "$BIN/bench/vitserve_bench" "${shape[@]}" "--device=$DEVICE" \
    "--dtype=$BENCH_DTYPE" "--cuda_graphs=$1" --methods=dense,dynamicvit,evit,tome \
    --keep_rates=0.9,0.7,0.5 "--batch_sizes=$BATCHES" --max_sub_batch=0 "--threads=$THREADS" \
    "--seconds=$SECONDS_PER" --tome_published_r=0 --trilevel_attn_ratio=0 \
    "--json_out=$OUT/bench.jsonl"
}

step_bench_graphs() { inprocess true; }

step_bench_graphs_off() { inprocess false; }

step_torch_eager() {
  local model=deit_s
  [[ $DRY_RUN == 1 ]] && model=tiny
  "$PY" "$ROOT/bench/eager_bench.py" --model "$model" --device "$DEVICE" --dtype "$BENCH_DTYPE" --sdpa \
    --methods dense,dynamicvit,evit,tome --keep-rates 0.9,0.7,0.5 --batch-sizes "$BATCHES" \
    --seconds "$SECONDS_PER" --threads "$THREADS" --out "$OUT/eager.jsonl"
}

step_e2e() {  # vitserve + vitclient bench (tensor inputs) at saturation, keep 1.0 and 0.7
  local addr="" pid i keep
  [[ -f $WORK/repo/deit-s-evit/config.pbtxt ]] || { echo "no repository (step repo)"; return 1; }
  LD_LIBRARY_PATH=$PREFIX_LIBS "$BIN/server/vitserve" "--model_repository=$WORK/repo" \
    --host=127.0.0.1 --port=0 --metrics_port=-1 "--device=$DEVICE" "--dtype=$BENCH_DTYPE" \
    --scheduler=fixed --shadow_fraction=0 "--max_batch_size=$E2E_BATCH" \
    --max_queue_delay_ms=2 --max_queue_size=4096 "--threads=$THREADS" \
    >"$WORK/server.out" 2>"$WORK/logs/vitserve.log" &
  pid=$!
  for i in $(seq 1 120); do
    addr=$(sed -n 's/^vitserve listening on //p' "$WORK/server.out")
    [[ -n $addr ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [[ -z $addr ]]; then echo "vitserve did not start"; kill "$pid" 2>/dev/null; return 1; fi
  echo "vitserve at $addr"
  local rc=0
  for keep in 1.0 0.7; do
    LD_LIBRARY_PATH=$PREFIX_LIBS "$BIN/client/vitclient" bench "--server=$addr" --random_tensor \
      "--concurrency=$E2E_CONCURRENCY" "--duration_s=$E2E_SECONDS" "--keep_rate=$keep" \
      --timeout_ms=60000 "--json_out=$OUT/e2e_keep$keep.json" || rc=1
  done
  kill "$pid"; wait "$pid" 2>/dev/null
  return $rc
}

step_summarize() {
  "$PY" "$ROOT/bench/gpu/summarize.py" --out "$OUT" --work "$WORK" --device "$DEVICE" \
    --commit "$COMMIT" --command "$COMMAND_LINE" --status "$WORK/status.txt"
}

# ---- driver ------------------------------------------------------------------------------

log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$OUT/run.log"; }

# run_step NAME LIMIT_S: runs step_NAME in a child (so `timeout` can bound it) under
# min(LIMIT_S, time left before the deadline less RESERVE_S); its output goes to
# $WORK/logs/NAME.log and run.log. Returns the step's status.
run_step() {
  local name=$1 limit=$2 left rc start
  left=$((DEADLINE_S - ($(date +%s) - T0) - RESERVE_S))
  if ((left < 5)); then
    log "SKIP  $name: deadline"; echo "$name skipped-deadline 0" >>"$WORK/status.txt"; return 1
  fi
  ((limit > left)) && limit=$left
  log "START $name (limit ${limit}s)"
  start=$(date +%s)
  timeout --kill-after=5 "$limit" bash "$self" --step="$name" >"$WORK/logs/$name.log" 2>&1
  rc=$?
  sed 's/^/    /' "$WORK/logs/$name.log" | tail -n 40 >>"$OUT/run.log"
  local verdict=ok
  ((rc == 124 || rc == 137)) && verdict=TIMEOUT
  ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAILED(rc=$rc)"
  echo "$name $verdict $(($(date +%s) - start))" >>"$WORK/status.txt"
  log "END   $name: $verdict in $(($(date +%s) - start))s"
  return $rc
}

setup() {  # settings shared by the driver and every --step child (exported)
  export DRY_RUN REUSE_BUILD WORK OUT T0
  export PREFIX=$WORK/prefix
  export PREFIX_LIBS=$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/lib/x86_64-linux-gnu
  export BUILD=$WORK/build BIN=${REUSE_BUILD:-$WORK/build}
  export JOBS=${JOBS:-$(nproc)}
  if [[ $DRY_RUN == 1 ]]; then
    export PY=/usr/bin/python3 DEVICE=cpu BENCH_DTYPE=float32 BATCHES=1,2 SECONDS_PER=0.02
    export THREADS=1 E2E_BATCH=2 E2E_CONCURRENCY=4 E2E_SECONDS=2  # 1 thread: a loaded 2-core box
  else
    export PY=${PY:-python3} DEVICE=cuda BENCH_DTYPE=bfloat16 BATCHES=1,8,64,256
    export SECONDS_PER=0.4 THREADS=4 E2E_BATCH=64 E2E_CONCURRENCY=256 E2E_SECONDS=8
  fi
}

main() {
  DRY_RUN=${DRY_RUN:-0} REUSE_BUILD=${REUSE_BUILD:-} STEP=""  # a --step child inherits both
  local arg
  for arg in "$@"; do
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      --reuse-build=*) REUSE_BUILD=$(cd "${arg#*=}" && pwd) ;;
      --step=*) STEP=${arg#*=} ;;
      -h | --help) sed -n '2,30p' "$self"; return 0 ;;
      *) echo "run.sh: unknown argument $arg" >&2; return 2 ;;
    esac
  done
  if [[ -n $STEP ]]; then  # a child: state from the parent's environment and step_env
    [[ -f $WORK/torch.sh ]] && source "$WORK/torch.sh"
    cd "$ROOT" && "step_$STEP"
    return
  fi
  T0=$(date +%s)
  DEADLINE_S=${DEADLINE_S:-540} RESERVE_S=${RESERVE_S:-20}
  WORK=${WORK:-$(mktemp -d /tmp/vitserve-gpu.XXXXXX)}
  if [[ $DRY_RUN == 1 ]]; then OUT=${OUT:-$WORK/out}; else OUT=${OUT:-$ROOT/gpu-out}; fi
  mkdir -p "$OUT" "$WORK/logs"
  : >"$OUT/run.log"; : >"$WORK/status.txt"; rm -f "$OUT/bench.jsonl" "$OUT/eager.jsonl"
  [[ $DRY_RUN == 1 ]] && echo "VITSERVE_CUDA=OFF (dry run)" >"$WORK/build_mode" ||
    echo "VITSERVE_CUDA=ON" >"$WORK/build_mode"
  setup
  COMMIT=${VITSERVE_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null ||
    tr '\n' ' ' <"$ROOT/bench/gpu/debs/COMMIT" 2>/dev/null || echo unknown)}
  COMMAND_LINE="bench/gpu/run.sh $*"
  export COMMIT COMMAND_LINE
  log "vitserve GPU run: dry_run=$DRY_RUN device=$DEVICE commit=$COMMIT work=$WORK out=$OUT"

  run_step env 30
  local built=0
  if run_step unpack 60 && run_step configure 120; then
    run_step proto_check 150  # its verdict is the finding; the build goes on either way
    run_step build 300  # rc 3: built, but by the VITSERVE_CUDA=OFF fallback
  fi
  [[ -x $BIN/bench/vitserve_bench ]] && built=1
  [[ $DRY_RUN == 1 ]] && run_step cuda_syntax 120
  run_step fixtures 90
  run_step repo 60
  if ((built)); then
    run_step parity_fp32 60
    run_step bench_graphs 100
    run_step torch_eager 100
    run_step bench_graphs_off 100
    run_step parity_bf16 60
    run_step e2e 60
  fi
  RESERVE_S=0 run_step summarize 20
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs status.txt torch.sh build_mode 2>/dev/null
  [[ -f $OUT/results.md ]] && sed -n '/^## Summary/,$p' "$OUT/results.md"
  log "done: $OUT ($(ls "$OUT" | tr '\n' ' '))"
  ! grep -qv ' ok ' "$WORK/status.txt"  # exit 0 only when every step passed
}

main "$@"
