# Shared steps of the scheduler benchmarks (sourced, not run): check the binaries and make the
# model repository, start a vitserve, run one `vitclient bench`, print a result row. The
# caller sets ROOT, VITSERVE, VITCLIENT, MODEL_REPO (optional), OUT_DIR, THREADS, SEED,
# BUDGET_MS, DURATION_S, PY and the array EXTRA_SERVER_FLAGS, and traps stop_server on EXIT.

# prepare BINARY...: exits unless every BINARY is executable; creates OUT_DIR; when
# MODEL_REPO is unset, writes the random-weights model of make_scheduler_bench_model.py there.
prepare() {
  local b
  for b in "$@"; do
    [[ -x $b ]] || { echo "missing $b (build vitserve and vitclient first)" >&2; exit 1; }
  done
  mkdir -p "$OUT_DIR"
  if [[ -z ${MODEL_REPO:-} ]]; then
    MODEL_REPO=$OUT_DIR/models
    "$PY" "$ROOT/bench/make_scheduler_bench_model.py" "$MODEL_REPO" >/dev/null
  fi
}

SERVER_PID=""
ADDR=""
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

# start_server NAME FLAGS...: starts $VITSERVE, waits for its address (sets ADDR).
start_server() {
  local name=$1
  shift
  "$VITSERVE" --model_repository="$MODEL_REPO" --host=127.0.0.1 --port=0 --metrics_port=-1 \
    --threads="$THREADS" "${EXTRA_SERVER_FLAGS[@]}" "$@" >"$OUT_DIR/$name.stdout" 2>"$OUT_DIR/$name.stderr" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if grep -q "vitserve listening on" "$OUT_DIR/$name.stdout" 2>/dev/null; then
      ADDR=$(sed -n 's/^vitserve listening on //p' "$OUT_DIR/$name.stdout" | head -1)
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT_DIR/$name.stderr" >&2; exit 1; }
    sleep 0.5
  done
  echo "server $name did not start" >&2
  exit 1
}

# run_client NAME RATE KEEP_RATE: one open-loop run of $VITCLIENT against $ADDR.
run_client() {
  "$VITCLIENT" bench --server="$ADDR" --rate="$2" --seed="$SEED" --budget_ms="$BUDGET_MS" \
    --keep_rate="$3" --duration_s="$DURATION_S" --random_tensor --progress=false \
    --json_out="$OUT_DIR/$1.json" >"$OUT_DIR/$1.txt" 2>&1 || true
}

field() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

HEADER="| mode | rate (req/s) | sent | within budget (of all sent) | goodput (req/s) | throughput (req/s) | mean keep-rate | p50 ms (OK) | p99 ms (OK) | errors |
|---|---|---|---|---|---|---|---|---|---|"

row() {  # row LABEL JSON: one table row (HEADER's columns) from a client report
  "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors_by_code"].items())) or "none"
print(f"| {label} | {r['config']['rate']:g} | {r['sent']} | {100 * r['slo_attainment_all']:.1f} % "
      f"| {r['goodput_rps']:.1f} | {r['throughput_rps']:.1f} | {r['mean_keep_rate']:.3f} "
      f"| {1e3 * r['latency_ok']['p50_seconds']:.1f} | {1e3 * r['latency_ok']['p99_seconds']:.1f} "
      f"| {errors} |")
PYEOF
}
