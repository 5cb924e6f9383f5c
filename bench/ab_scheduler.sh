#!/usr/bin/env bash
# Scheduler benchmark, two builds A/B (not a test): the same steps as run_scheduler_bench.sh
# (real vitserve + `vitclient bench`, same Poisson trace, same budget) at one fixed RATE, for
# two builds interleaved run by run, the order alternating per round, so that a change's
# effect can be told from the machine's drift. Each round and build: a --scheduler=fixed
# server answers fixed-dense (keep 1.0) and fixed-0.7 runs, a --scheduler=budget server
# answers an adaptive run (keep 0: the server chooses). The client is build A's vitclient
# for both (the wire protocol is the same). Prints every run and the median (min-max) per
# build and mode.
#
# Usage: bench/ab_scheduler.sh BUILD_A BUILD_B   (build dirs with server/vitserve and
#   client/vitclient; e.g. a worktree of the old commit's build, and build)
# Environment: RATE (1200 req/s), BUDGET_MS (50), DURATION_S (10), ROUNDS (3), SEED (7),
#   THREADS (1), MODES ("fixed-dense fixed-0.7 adaptive"), MODEL_REPO (default: the random-
#   weights model of bench/make_scheduler_bench_model.py), OUT_DIR, SERVER_FLAGS,
#   LABEL_A / LABEL_B (column names; default A / B).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $# == 2 ]] || { sed -n 2,17p "$0" >&2; exit 2; }
BUILD_A=$(cd "$1" && pwd)
BUILD_B=$(cd "$2" && pwd)
RATE=${RATE:-1200}
BUDGET_MS=${BUDGET_MS:-50}
DURATION_S=${DURATION_S:-10}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-7}
THREADS=${THREADS:-1}
MODES=${MODES:-"fixed-dense fixed-0.7 adaptive"}
LABEL_A=${LABEL_A:-A}
LABEL_B=${LABEL_B:-B}
read -r -a EXTRA_SERVER_FLAGS <<<"${SERVER_FLAGS:-}"
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/ab_scheduler.XXXXXX)}
PY=/usr/bin/python3
VITCLIENT=$BUILD_A/client/vitclient
# shellcheck source=bench/scheduler_bench_lib.sh
source "$ROOT/bench/scheduler_bench_lib.sh"
trap stop_server EXIT
prepare "$BUILD_A/server/vitserve" "$BUILD_B/server/vitserve" "$VITCLIENT"

run_build() {  # run_build LABEL BUILD ROUND: every mode of MODES on one build
  local label=$1 round=$3 mode
  VITSERVE=$2/server/vitserve
  for scheduler in fixed budget; do
    local started=""
    for mode in $MODES; do
      case $mode in
        fixed-dense) [[ $scheduler == fixed ]] || continue; keep=1.0 ;;
        fixed-0.7) [[ $scheduler == fixed ]] || continue; keep=0.7 ;;
        adaptive) [[ $scheduler == budget ]] || continue; keep=0 ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
      esac
      [[ -n $started ]] || { start_server "$label-$scheduler-r$round" --scheduler=$scheduler; started=1; }
      run_client "$label.$mode.r$round" "$RATE" "$keep"
      row "$label $mode r$round" "$OUT_DIR/$label.$mode.r$round.json"
    done
    stop_server
  done
}

echo "# rate: $RATE req/s   budget: $BUDGET_MS ms   duration: $DURATION_S s   seed: $SEED   threads: $THREADS   server flags: ${SERVER_FLAGS:-none}"
echo "# A = $LABEL_A ($BUILD_A)   B = $LABEL_B ($BUILD_B)   outputs: $OUT_DIR"
echo "$HEADER"
for ((r = 1; r <= ROUNDS; ++r)); do
  if ((r % 2)); then order=("$LABEL_A $BUILD_A" "$LABEL_B $BUILD_B"); else order=("$LABEL_B $BUILD_B" "$LABEL_A $BUILD_A"); fi
  for entry in "${order[@]}"; do
    read -r label build <<<"$entry"
    run_build "$label" "$build" "$r"
  done
done
echo
"$PY" - "$OUT_DIR" "$LABEL_A" "$LABEL_B" "$MODES" <<'PYEOF'
import glob, json, os, statistics, sys
out, a, b, modes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
def cell(vals, fmt):
    return f"{fmt(statistics.median(vals))} ({fmt(min(vals))}-{fmt(max(vals))})" if vals else "-"
print("| mode | build | within budget, of all sent | of those answered OK, within budget | errors (refused or expired) | mean keep-rate | p99 ms (OK) |")
print("|---|---|---|---|---|---|---|")
for mode in modes:
    for label in (a, b):
        rs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{label}.{mode}.r*.json")))]
        refused = [sum(r["errors_by_code"].values()) / max(r["sent"], 1) for r in rs]
        admitted = [r["sent"] * r["slo_attainment_all"] / max(r["sent"] - sum(r["errors_by_code"].values()), 1) for r in rs]
        pct = lambda v: f"{100 * v:.1f} %"
        print(f"| {mode} | {label} | {cell([r['slo_attainment_all'] for r in rs], pct)} | {cell(admitted, pct)} "
              f"| {cell(refused, pct)} | {cell([r['mean_keep_rate'] for r in rs], lambda v: f'{v:.3f}')} "
              f"| {cell([1e3 * r['latency_ok']['p99_seconds'] for r in rs], lambda v: f'{v:.1f}')} |")
PYEOF
