#!/usr/bin/env bash
# Runs the in-process benchmarks — vitserve's executor (bench/vitserve_bench, C++) and the
# PyTorch-eager baseline (bench/eager_bench.py) — on the same DeiT-S-shaped model, batch
# sizes, keep-rates and thread count, and writes bench/results/inprocess-cpu.md with the
# machine, commit, commands and date.
#
# Usage: bench/run_inprocess.sh [BUILD_DIR] (default: build)
# Environment: THREADS (2), STREAMS (1: concurrent callers in vitserve_bench, like the
#              server's --num_batch_threads), EAGER_THREADS (THREADS), BATCHES (1,8,32),
#              KEEPS (0.9,0.7,0.5),
#              METHODS (dense,dynamicvit,evit,tome,tnt), SECONDS_PER_CONFIG (3),
#              MAX_SUB_BATCH (8), OUT (bench/results/inprocess-cpu.md)
# Runs the two implementations one after the other (never concurrently), vitserve first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${1:-${ROOT}/build}"
THREADS="${THREADS:-2}"
STREAMS="${STREAMS:-1}"
EAGER_THREADS="${EAGER_THREADS:-${THREADS}}"
BATCHES="${BATCHES:-1,8,32}"
KEEPS="${KEEPS:-0.9,0.7,0.5}"
METHODS="${METHODS:-dense,dynamicvit,evit,tome,tnt}"
SECONDS_PER_CONFIG="${SECONDS_PER_CONFIG:-3}"
MAX_SUB_BATCH="${MAX_SUB_BATCH:-8}"
OUT="${OUT:-${ROOT}/bench/results/inprocess-cpu.md}"
PYTHON=/usr/bin/python3  # the pyenv python3 on PATH has no torch

BENCH="${BUILD_DIR}/bench/vitserve_bench"
if [[ ! -x "${BENCH}" ]]; then
  echo "missing ${BENCH}; build it: ninja -C ${BUILD_DIR} vitserve_bench" >&2
  exit 1
fi
mkdir -p "$(dirname "${OUT}")"
TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

VITSERVE_CMD=("${BENCH}" --threads="${THREADS}" --streams="${STREAMS}" --batch_sizes="${BATCHES}"
  --keep_rates="${KEEPS}" --methods="${METHODS}" --seconds="${SECONDS_PER_CONFIG}"
  --max_sub_batch="${MAX_SUB_BATCH}" --json_out="${TMP}/vitserve.jsonl")
echo "+ ${VITSERVE_CMD[*]}" >&2
"${VITSERVE_CMD[@]}" > "${TMP}/vitserve.md"

EAGER="${ROOT}/bench/eager_bench.py"
EAGER_CMD=("${PYTHON}" "${EAGER}" --threads "${EAGER_THREADS}" --batch-sizes "${BATCHES}"
  --keep-rates "${KEEPS}" --methods "${METHODS}" --seconds "${SECONDS_PER_CONFIG}"
  --out "${TMP}/eager.jsonl")
if [[ -f "${EAGER}" ]]; then
  echo "+ ${EAGER_CMD[*]}" >&2
  "${EAGER_CMD[@]}" >&2
else
  echo "bench/eager_bench.py not found: the table has no eager column" >&2
  : > "${TMP}/eager.jsonl"
fi

MODEL_NAME="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
ISA="$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx[0-9a-z_]*|fma|amx[a-z_]*' | sort -u | tr '\n' ' ')"
CORES="$(nproc)"
COMMIT="$(git -C "${ROOT}" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "${ROOT}" status --porcelain -- server bench 2>/dev/null | head -1)"
DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

"${PYTHON}" - "${TMP}/vitserve.jsonl" "${TMP}/eager.jsonl" > "${TMP}/table.md" <<'PY'
import json, sys


def load(path):
    """{(method, keep or None, batch): row}; keep None = ToMe at the published r."""
    rows = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            kr = 1.0 if r["method"] == "dense" else r.get("keep_rate")
            kr = None if kr is None else round(float(kr), 2)
            rows[(r["method"], kr, int(r["batch"]))] = r
    return rows


vs, eg = load(sys.argv[1]), load(sys.argv[2])
batches = sorted({k[2] for k in vs})
configs = []
for k in vs:
    if k[:2] not in configs:
        configs.append(k[:2])
dense = {b: vs.get(("dense", 1.0, b)) for b in batches}
dense_gmacs = next((d["gmacs"] for d in dense.values() if d), None)
head, rule = "| method | keep | ToMe r | GMACs | MACs ratio |", "|---|---|---|---|---|"
for b in batches:
    head += f" b{b} vitserve img/s | b{b} eager img/s | b{b} vitserve/eager | b{b} speed-up vs dense |"
    rule += "---|---|---|---|"
print(head)
print(rule)
for method, kr in configs:
    first = next(vs[(method, kr, b)] for b in batches if (method, kr, b) in vs)
    r = first.get("tome_r")
    g = first["gmacs"]
    line = f"| {method} | {'-' if kr is None else f'{kr:.2f}'} | {'-' if r is None else r} | {g:.2f} |"
    line += f" {dense_gmacs / g:.2f}x |" if dense_gmacs and g else " - |"
    for b in batches:
        v, e, d = vs.get((method, kr, b)), eg.get((method, kr, b)), dense.get(b)
        vi = v["images_per_s"] if v else None
        ei = e["images_per_s"] if e else None
        line += f" {vi:.2f} |" if vi else " - |"
        line += f" {ei:.2f} |" if ei else " - |"
        line += f" {vi / ei:.2f}x |" if vi and ei else " - |"
        line += f" {vi / d['images_per_s']:.2f}x |" if vi and d else " - |"
    print(line)
PY

{
  echo "# In-process CPU throughput: vitserve executor vs PyTorch eager"
  echo
  echo "- Machine: ${MODEL_NAME}, ${CORES} cores (load average at the end: ${LOAD})"
  echo "- ISA flags: ${ISA}"
  echo "- Commit: ${COMMIT}${DIRTY:+ (working tree had local changes)}"
  echo "- Date: ${DATE}"
  echo "- Model: DeiT-S shape (C=384, 6 heads, depth 12, 224², 1000 classes), random weights, float32"
  if [[ ${STREAMS} == 1 && ${EAGER_THREADS} == "${THREADS}" ]]; then
    echo "- Threads: ${THREADS} (both), batch sizes ${BATCHES}, keep-rates ${KEEPS}, ${SECONDS_PER_CONFIG} s per configuration"
  else
    echo "- vitserve: ${STREAMS} concurrent stream(s) of batches on one loaded model, ${THREADS} intra-op thread(s) each (img/s is the total); eager: ${EAGER_THREADS} thread(s), one stream. Batch sizes ${BATCHES}, keep-rates ${KEEPS}, ${SECONDS_PER_CONFIG} s per configuration"
  fi
  echo "- vitserve: \`${VITSERVE_CMD[*]/${TMP}\/vitserve.jsonl/FILE}\`"
  echo "- eager: \`${EAGER_CMD[*]/${TMP}\/eager.jsonl/FILE}\`"
  echo "- ToMe rows with keep-rates use the r whose MACs match the 3-stage schedule (cost_model.h); the row with keep '-' is the published r."
  echo "- GMACs are the cost model's (multiply-adds, method overheads included). 'speed-up' is"
  echo "  vitserve img/s over vitserve dense at the same batch, to compare with the MACs ratio."
  echo
  cat "${TMP}/table.md"
  echo
  echo "## vitserve_bench output"
  echo
  cat "${TMP}/vitserve.md"
} > "${OUT}"
echo "wrote ${OUT}" >&2
