#!/usr/bin/env bash
# ctest peer_onnx_export: the peer benchmark's ONNX export of the bundled model
# (models/fashion-vit) runs and agrees with vitserve. For dense, DynamicViT, EViT and ToMe
# at keep 0.7: PeerViT (export.py) vs tests/golden/reference.py, ONNX Runtime vs PeerViT,
# and ONNX Runtime vs vitserve's own logits (vitserve_logits), each within 1e-4 (max
# absolute logit difference). Exit 77 (ctest SKIP) when onnxruntime-node is not installed
# (cd bench/peers && npm install --ignore-scripts).
# Usage: check_export.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="${ROOT}/bench/peers"
BUILD_DIR="$1"
if [[ ! -d "${PEERS}/node_modules/onnxruntime-node" ]] || ! command -v node > /dev/null; then
  echo "SKIP: onnxruntime-node not installed in ${PEERS}/node_modules" >&2
  exit 77
fi
TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT
/usr/bin/python3 "${PEERS}/export.py" --model fashion-vit --out "${TMP}" --check 2>&1 | grep -v Warning >&2
node "${PEERS}/ort_bench.js" --dir "${TMP}" --model fashion-vit --check
for method in dense dynamicvit evit tome; do
  read -r keep r < <(/usr/bin/python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['methods'][sys.argv[2]]; print(m['keep'], -1 if m['tome_r'] is None else m['tome_r'])" "${TMP}/fashion-vit.json" "${method}")
  "${BUILD_DIR}/bench/vitserve_logits" --model_dir="${ROOT}/models/fashion-vit" --method="${method}" \
    --keep_rate="${keep}" --tome_r="${r}" --input="${TMP}/fashion-vit-check.txt" > "${TMP}/vitserve-${method}.txt"
done
/usr/bin/python3 - "${TMP}" <<'PY'
import json, sys
d = sys.argv[1]
ort = json.load(open(f"{d}/fashion-vit-ort.json"))
worst = 0.0
for method, logits in ort.items():
    got = [float(v) for line in open(f"{d}/vitserve-{method}.txt") for v in line.split()]
    assert len(got) == len(logits), (method, len(got), len(logits))
    err = max(abs(a - b) for a, b in zip(got, logits))
    print(f"fashion-vit {method}: vitserve vs ORT max |diff| {err:.2e}", file=sys.stderr)
    worst = max(worst, err)
sys.exit(0 if worst <= 1e-4 else 1)
PY
