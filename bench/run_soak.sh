#!/usr/bin/env bash
# Soak benchmark (not a test): the real vitserve on a model repository under open-loop
# load at LOAD_FACTOR x its measured capacity for DURATION_S, with mixed latency budgets,
# deliberately invalid requests and client cancellations mixed in (vitclient bench
# --bad_fraction / --cancel_fraction). Records the server's RSS at start, every minute
# and at the end, then drains it with SIGTERM and checks the exit code. Writes a
# Markdown report with machine, commit and commands.
#
#   1. capacity: closed loop, --concurrency=16, keep-rate 1.0, CAPACITY_S seconds.
#   2. soak: --rate = LOAD_FACTOR x capacity, --budget_ms=BUDGETS, for DURATION_S.
# Checks: exit 0 after SIGTERM; refusals only RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED;
# >= 99% of admitted requests within budget; RSS flat (< 5% growth) from the end of the
# soak's first minute (its warm-up) to the end. Exit 1 when a check fails.
#
# Usage: bench/run_soak.sh [BUILD_DIR]          (default: build)
# Environment: MODEL_REPO (default: the compute-bound random-weights model of
#   bench/make_scheduler_bench_model.py, so the server, not gRPC, is the bottleneck), DURATION_S (600), LOAD_FACTOR (1.5), CAPACITY_S (20),
#   BUDGETS ("uniform:50:200"), BAD_FRACTION (0.02), CANCEL_FRACTION (0.02), THREADS (1),
#   SEED (11), OUT (bench/results/soak-cpu.md)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
VITSERVE=$BUILD/server/vitserve
VITCLIENT=$BUILD/client/vitclient
MODEL_REPO=${MODEL_REPO:-}
DURATION_S=${DURATION_S:-600}
LOAD_FACTOR=${LOAD_FACTOR:-1.5}
CAPACITY_S=${CAPACITY_S:-20}
BUDGETS=${BUDGETS:-uniform:50:200}
BAD_FRACTION=${BAD_FRACTION:-0.02}
CANCEL_FRACTION=${CANCEL_FRACTION:-0.02}
THREADS=${THREADS:-1}
SEED=${SEED:-11}
OUT=${OUT:-$ROOT/bench/results/soak-cpu.md}
PY=/usr/bin/python3
for b in "$VITSERVE" "$VITCLIENT"; do
  [[ -x $b ]] || { echo "missing $b (build vitserve and vitclient first)" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/vitserve_soak.XXXXXX)
SERVER_PID=
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$TMP"' EXIT
if [[ -z $MODEL_REPO ]]; then
  MODEL_REPO=$TMP/models
  "$PY" "$ROOT/bench/make_scheduler_bench_model.py" "$MODEL_REPO" > /dev/null
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

SERVER_CMD=("$VITSERVE" --model_repository="$MODEL_REPO" --host=127.0.0.1 --port=0
  --metrics_port=-1 --threads="$THREADS" --max_queue_size=256)
"${SERVER_CMD[@]}" > "$TMP/server.out" 2> "$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 1 600); do
  grep -q "vitserve listening on" "$TMP/server.out" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.err" >&2; exit 1; }
  sleep 0.5
done
ADDR=$(sed -n 's/^vitserve listening on //p' "$TMP/server.out")
echo "server $ADDR (pid $SERVER_PID)" >&2

"$VITCLIENT" bench --server="$ADDR" --random_tensor --concurrency=16 --keep_rate=1.0 \
  --duration_s="$CAPACITY_S" --json_out="$TMP/capacity.json" --progress=false > /dev/null
CAPACITY=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['throughput_rps'])" "$TMP/capacity.json")
RATE=$("$PY" -c "print(round($CAPACITY * $LOAD_FACTOR, 1))")
echo "capacity ${CAPACITY} req/s -> soak at ${RATE} req/s for ${DURATION_S} s" >&2

RSS_START=$(rss_kb "$SERVER_PID")
echo "0 $RSS_START" > "$TMP/rss.txt"
(
  t=0
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    sleep 60; t=$((t + 60))
    r=$(rss_kb "$SERVER_PID" 2>/dev/null) || break
    echo "$t $r" >> "$TMP/rss.txt"
  done
) &
SAMPLER=$!
SOAK_CMD=("$VITCLIENT" bench --server="$ADDR" --random_tensor --rate="$RATE"
  --duration_s="$DURATION_S" --budget_ms="$BUDGETS" --bad_fraction="$BAD_FRACTION"
  --cancel_fraction="$CANCEL_FRACTION" --seed="$SEED" --max_inflight=4096 --progress=false)
"${SOAK_CMD[@]}" --json_out="$TMP/soak.json" > "$TMP/soak.txt"
RSS_END=$(rss_kb "$SERVER_PID")
kill "$SAMPLER" 2>/dev/null || true
kill -TERM "$SERVER_PID"
set +e
wait "$SERVER_PID"
EXIT_CODE=$?
set -e
SERVER_PID=

{
  echo "# Soak: ${DURATION_S} s at ${LOAD_FACTOR}x capacity with bad requests and cancellations"
  echo
  echo "- Machine: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "- Commit: $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- Server: \`${SERVER_CMD[*]/$TMP/TMP}\`"
  echo "- Capacity (closed loop, 16 in flight, keep 1.0, ${CAPACITY_S} s): ${CAPACITY} req/s"
  echo "- Soak: \`${SOAK_CMD[*]}\`"
  echo "- Server RSS: start ${RSS_START} kB, end ${RSS_END} kB; per minute (s kB): $(tr '\n' ';' < "$TMP/rss.txt")"
  echo "- Server exit code after SIGTERM: ${EXIT_CODE}"
  echo
  echo '```'
  cat "$TMP/soak.txt"
  echo '```'
} > "$OUT"
set +e
"$PY" - "$TMP/soak.json" "$RSS_START" "$RSS_END" "$EXIT_CODE" "$TMP/rss.txt" > "$TMP/checks.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
start, end, code = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# The first minute of the soak warms what the capacity run did not need (a queue of
# hundreds, more gRPC buffers, allocator arenas); "flat" is judged from there on.
samples = dict(tuple(map(int, line.split())) for line in open(sys.argv[5]) if line.strip())
warm = samples.get(60, start)
bad = set(r["errors_by_code"]) - {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CLIENT_DROPPED"}
checks = {
    "no crash, exit 0 after SIGTERM": code == 0,
    "regular requests refused only with RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED": not bad,
    "injected bad requests answered INVALID_ARGUMENT": set(r["injected_by_code"]) <= {"INVALID_ARGUMENT", "CANCELLED", "OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"},
    "RSS flat after the first minute (growth under 5%%: %d -> %d kB)" % (warm, end): end <= warm * 1.05,
    "SLO attainment among admitted >= 99%": r["slo_attainment_admitted"] >= 0.99,
}
for k, v in checks.items():
    print(("PASS " if v else "FAIL ") + k)
sys.exit(0 if all(checks.values()) else 1)
PY
STATUS=$?
set -e
{ echo; echo "Checks:"; echo; sed 's/^/- /' "$TMP/checks.txt"; } >> "$OUT"
cat "$TMP/checks.txt" >&2
echo "wrote $OUT" >&2
exit "$STATUS"
