#!/usr/bin/env bash
# Peer benchmark: vitserve's executor (bench/vitserve_bench) against ONNX Runtime CPU
# (onnxruntime-node, pinned in bench/peers/package.json) and PyTorch eager (python3-torch)
# on the same graphs, in one run, interleaved, several rounds; writes
# bench/results/peers-cpu.md (median and min-max per cell, GFLOP/s as a fraction of the
# sgemm peak measured in the same run, CPU model, ISA flags, commit, date, command).
#
# Usage: bench/peers/run.sh [BUILD_DIR]   (default: build)
# Environment: ROUNDS (3), SECONDS_PER_CELL (0.5), THREADS (1,2), BATCHES (1,8),
#   METHODS (dense,dynamicvit,evit,tome), KEEP (0.7), MODELS (deit_s,fashion-vit),
#   OUT (bench/results/peers-cpu.md), LABEL (free text put in the results header, e.g.
#   "ONEDNN_MAX_CPU_ISA=AVX2"), BASELINE_BENCH (a second vitserve_bench command, e.g. a binary
#   built from an earlier commit, or this build capped to AVX2:
#   "env ONEDNN_MAX_CPU_ISA=AVX2 build/bench/vitserve_bench --max_packed_isa=avx2"; split on
#   spaces; measured in the same rounds as the column "base").
#   Anything else in the environment (ONEDNN_MAX_CPU_ISA,
#   VITSERVE_*) reaches every process.
#   AVX2=1: the run an AVX2-only machine would see, on an AVX-512 one. Every process of the
#   run (vitserve, base, ORT, eager, the sgemm peak) starts under BUILD_DIR/bench/
#   libcpuid_avx2.so (bench/peers/cpuid_avx2.c: CPUID without AVX-512, through CPUID
#   faulting), so oneDNN, OpenBLAS, ATen, our packed kernel and ONNX Runtime's MLAS all pick
#   their AVX2 code; vitserve and base also get --max_packed_isa=avx2. OUT defaults to
#   bench/results/peers-cpu-avx2.md. Needs a CPU with "cpuid_fault" (ctest peer_cpuid_cap).
# Models: deit_s = DeiT-S 224 with random weights from a fixed seed (vitserve_bench draws its
# own random weights; speed does not depend on the values, token counts are fixed by the
# keep-rate); fashion-vit = models/fashion-vit (ORT and eager run its trained weights,
# vitserve_bench --config runs its architecture and pruning locations with random weights).
# Each round runs, for every model and thread count, the three implementations one after
# another (never concurrently) in an order rotated per round. Not part of ctest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="${ROOT}/bench/peers"
BUILD_DIR="$(cd "${1:-${ROOT}/build}" && pwd)"
ROUNDS="${ROUNDS:-3}"
SECONDS_PER_CELL="${SECONDS_PER_CELL:-0.5}"
THREADS="${THREADS:-1,2}"
BATCHES="${BATCHES:-1,8}"
METHODS="${METHODS:-dense,dynamicvit,evit,tome}"
KEEP="${KEEP:-0.7}"
MODELS="${MODELS:-deit_s,fashion-vit}"
AVX2="${AVX2:-0}"
CAPPED=(env)           # prefix of every measured process
VITSERVE_ISA_FLAGS=()  # extra vitserve_bench flags
if [[ ${AVX2} == 1 ]]; then
  SHIM="${BUILD_DIR}/bench/libcpuid_avx2.so"
  [[ -f ${SHIM} ]] || { echo "missing ${SHIM}: ninja -C ${BUILD_DIR} cpuid_avx2" >&2; exit 1; }
  CAPPED=(env "LD_AUDIT=${SHIM}" "LD_PRELOAD=${SHIM}")
  VITSERVE_ISA_FLAGS=(--max_packed_isa=avx2)
  "${CAPPED[@]}" true || { echo "the AVX2 shim cannot cap CPUID here" >&2; exit 1; }
  avx2_label="AVX2 run: every process (vitserve, base, ORT, eager, sgemm peak) saw CPUID"
  avx2_label+=" without AVX-512 (bench/peers/cpuid_avx2.c), so oneDNN, OpenBLAS, ATen, the"
  avx2_label+=" packed kernel and the MLAS of ORT ran their AVX2 code; vitserve with --max_packed_isa=avx2"
  LABEL="${LABEL:-${avx2_label}}"
fi
out_suffix=""
[[ ${AVX2} == 1 ]] && out_suffix="-avx2"
OUT="${OUT:-${ROOT}/bench/results/peers-cpu${out_suffix}.md}"
PYTHON=/usr/bin/python3  # Debian's python3 with python3-torch

BENCH="${BUILD_DIR}/bench/vitserve_bench"
[[ -x "${BENCH}" ]] || { echo "missing ${BENCH}: ninja -C ${BUILD_DIR} vitserve_bench" >&2; exit 1; }
if [[ ! -d "${PEERS}/node_modules/onnxruntime-node" ]]; then
  # --ignore-scripts: the postinstall fetches CUDA files; the CPU binaries ship in the package.
  (cd "${PEERS}" && npm install --ignore-scripts --no-audit --no-fund)
fi
TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT
IFS=, read -r -a model_list <<< "${MODELS}"
IFS=, read -r -a thread_list <<< "${THREADS}"

for model in "${model_list[@]}"; do
  echo "+ export ${model}" >&2
  "${PYTHON}" "${PEERS}/export.py" --model "${model}" --methods "${METHODS}" --keep "${KEEP}" \
    --out "${TMP}/onnx" 2> "${TMP}/export-${model}.log" || { cat "${TMP}/export-${model}.log" >&2; exit 1; }
done

run_impl() {  # impl model threads round
  local impl=$1 model=$2 t=$3 r=$4 f="${TMP}/runs/$1.$2.t$3.r$4.jsonl"
  case "${impl}" in
    vitserve|base)
      local config=() bin=("${BENCH}")
      [[ ${impl} == base ]] && read -r -a bin <<< "${BASELINE_BENCH}"
      [[ ${model} == deit_s ]] || config=(--config="${ROOT}/models/${model}/config.pbtxt")
      OMP_NUM_THREADS=${t} "${CAPPED[@]}" "${bin[@]}" "${VITSERVE_ISA_FLAGS[@]}" \
        --threads="${t}" --streams=1 --batch_sizes="${BATCHES}" \
        --keep_rates="${KEEP}" --methods="${METHODS}" --seconds="${SECONDS_PER_CELL}" \
        --tome_published_r=0 "${config[@]}" --json_out="${f}" > /dev/null 2>> "${TMP}/stderr.log" ;;
    ort)
      OMP_NUM_THREADS=${t} "${CAPPED[@]}" node "${PEERS}/ort_bench.js" --dir "${TMP}/onnx" --model "${model}" \
        --threads "${t}" --batches "${BATCHES}" --methods "${METHODS}" \
        --seconds "${SECONDS_PER_CELL}" > "${f}" 2>> "${TMP}/stderr.log" ;;
    eager)
      OMP_NUM_THREADS=${t} "${CAPPED[@]}" "${PYTHON}" "${PEERS}/eager.py" --model "${model}" --threads "${t}" \
        --batches "${BATCHES}" --methods "${METHODS}" --keep "${KEEP}" \
        --seconds "${SECONDS_PER_CELL}" > "${f}" 2>> "${TMP}/stderr.log" ;;
  esac
}

mkdir -p "${TMP}/runs"
impls=(vitserve ort eager)
[[ -n "${BASELINE_BENCH:-}" ]] && impls+=(base)
PINGPONG=()  # core-to-core round trip (ns) before each round
for ((r = 0; r < ROUNDS; ++r)); do
  [[ -x "${BUILD_DIR}/bench/core_pingpong" ]] && PINGPONG+=("$("${BUILD_DIR}/bench/core_pingpong")")
  for t in "${thread_list[@]}"; do
    OMP_NUM_THREADS=${t} OPENBLAS_NUM_THREADS=${t} "${CAPPED[@]}" "${PYTHON}" "${PEERS}/sgemm_peak.py" \
      > "${TMP}/runs/sgemm.t${t}.r${r}.json"
  done
  for model in "${model_list[@]}"; do
    for t in "${thread_list[@]}"; do
      for ((i = 0; i < ${#impls[@]}; ++i)); do
        impl=${impls[$(((i + r) % ${#impls[@]}))]}
        echo "+ round ${r} ${model} threads ${t} ${impl}" >&2
        run_impl "${impl}" "${model}" "${t}" "${r}"
      done
    done
  done
done

ISA="$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx[0-9a-z_]*|fma|amx[a-z_]*' | sort -u | tr '\n' ' ')"
COMMIT="$(git -C "${ROOT}" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "${ROOT}" status --porcelain -- server bench 2>/dev/null | head -1)"
mkdir -p "$(dirname "${OUT}")"
"${PYTHON}" "${PEERS}/report.py" --runs "${TMP}/runs" \
  --cpu "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores" \
  --isa "${ISA}" --commit "${COMMIT}${DIRTY:+ (working tree had local changes)}" \
  --command "${AVX2:+AVX2=${AVX2} }ROUNDS=${ROUNDS} SECONDS_PER_CELL=${SECONDS_PER_CELL} THREADS=${THREADS} BATCHES=${BATCHES} METHODS=${METHODS} KEEP=${KEEP} MODELS=${MODELS} ${ONEDNN_MAX_CPU_ISA:+ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA} }${BASELINE_BENCH:+BASELINE_BENCH=\"${BASELINE_BENCH}\" }bench/peers/run.sh" \
  --label "${LABEL:-}" --ort "$(node -p "require('${PEERS}/node_modules/onnxruntime-node/package.json').version")" \
  --torch "$("${PYTHON}" -c 'import torch; print(torch.__version__)')" \
  --load "$(cut -d' ' -f1-3 /proc/loadavg)" --pingpong "${PINGPONG[*]:-}" > "${OUT}"
echo "wrote ${OUT}" >&2
