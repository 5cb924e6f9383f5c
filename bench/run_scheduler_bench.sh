#!/usr/bin/env bash
# Scheduler benchmark (not a test): the real vitserve + `vitclient bench` on one model, the
# same Poisson arrival trace (same --seed) and the same latency budget for every mode.
#
#   1. `--scheduler=fixed`, requests at keep-rate 1.0: a short sweep of rates finds the
#      highest rate R at which dense meets the budget for >= SUSTAIN_FRACTION of requests.
#   2. At 2 x R, three modes:
#        fixed-dense   --scheduler=fixed,  requests --keep_rate=1.0
#        fixed-0.7     --scheduler=fixed,  requests --keep_rate=0.7
#        adaptive      --scheduler=budget, requests --keep_rate=0 (server chooses)
#      every request with --budget_ms=BUDGET_MS.
# Prints a markdown table (and writes every client report as JSON under OUT_DIR).
#
# Usage: bench/run_scheduler_bench.sh [BUILD_DIR]      (default: build-serving)
# Environment: BUDGET_MS (50), DURATION_S per run (20), SEED (7), RATES ("5 10 20 40 80"),
#   THREADS intra-op threads (1), SUSTAIN_FRACTION (0.95), MODEL_REPO (default: a random-
#   weights model written by bench/make_scheduler_bench_model.py), OUT_DIR (a temp dir),
#   SERVER_FLAGS (extra vitserve flags for every server, e.g. "--max_batch_size=16").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-serving}
VITSERVE=$BUILD/server/vitserve
VITCLIENT=$BUILD/client/vitclient
BUDGET_MS=${BUDGET_MS:-50}
DURATION_S=${DURATION_S:-20}
SEED=${SEED:-7}
RATES=${RATES:-"5 10 20 40 80"}
THREADS=${THREADS:-1}
read -r -a EXTRA_SERVER_FLAGS <<<"${SERVER_FLAGS:-}"
SUSTAIN_FRACTION=${SUSTAIN_FRACTION:-0.95}
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/scheduler_bench.XXXXXX)}
PY=/usr/bin/python3


# shellcheck source=bench/scheduler_bench_lib.sh
source "$ROOT/bench/scheduler_bench_lib.sh"
trap stop_server EXIT
prepare "$VITSERVE" "$VITCLIENT"

echo "# model repo: $MODEL_REPO   budget: $BUDGET_MS ms   duration: $DURATION_S s   seed: $SEED   server flags: ${SERVER_FLAGS:-none}"
echo "# outputs: $OUT_DIR"

# 1. What dense sustains within the budget.
start_server fixed --scheduler=fixed
echo "## dense (fixed, keep-rate 1.0) rate sweep"
echo "$HEADER"
SUSTAINED=0
for rate in $RATES; do
  run_client "sweep-dense-$rate" "$rate" 1.0
  row "fixed-dense" "$OUT_DIR/sweep-dense-$rate.json"
  att=$(field "$OUT_DIR/sweep-dense-$rate.json" "['slo_attainment_all']")
  if "$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" \
    "$att" "$SUSTAIN_FRACTION"; then
    SUSTAINED=$rate
  else
    break
  fi
done
if [[ $SUSTAINED == 0 ]]; then
  SUSTAINED=$(echo "$RATES" | awk '{print $1}')
  echo "# dense met the budget for < $SUSTAIN_FRACTION even at $SUSTAINED req/s; using it"
fi
LOAD=$("$PY" -c "import sys; print(f'{2 * float(sys.argv[1]):g}')" "$SUSTAINED")
echo
echo "## at 2 x $SUSTAINED = $LOAD req/s"
echo "$HEADER"
run_client "fixed-dense" "$LOAD" 1.0
row "fixed-dense" "$OUT_DIR/fixed-dense.json"
run_client "fixed-0.7" "$LOAD" 0.7
row "fixed-0.7" "$OUT_DIR/fixed-0.7.json"
stop_server

# 2. Adaptive.
start_server budget --scheduler=budget
run_client "adaptive" "$LOAD" 0
row "adaptive (budget)" "$OUT_DIR/adaptive.json"
stop_server
echo
echo "# sweep summary (budget server):"
grep "latency sweep" "$OUT_DIR/budget.stderr" | sed 's/^/#   /'
