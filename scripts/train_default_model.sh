#!/usr/bin/env bash
# Reproduces models/fashion-vit/: build vitserve_train, train the dense Fashion-MNIST ViT,
# train the TNT noise allocator and the DynamicViT predictors on its frozen backbone, then
# evaluate every method through the server's inference path (writes calibration.pbtxt,
# eval_test.csv and accuracy_vs_macs.png into the model directory). Prints wall times.
#
#   scripts/train_default_model.sh [OUT_DIR]     (default: models/fashion-vit)
#
# Environment: BUILD_DIR (default build-train), WORK_DIR for intermediate models
# (default $BUILD_DIR/train-work), THREADS (LibTorch threads, default 1: on the shared
# 2-core machine 2 OpenMP threads ran ~10x slower, see docs/training.md), DATA_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-$ROOT/models/fashion-vit}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-train}"
WORK_DIR="${WORK_DIR:-$BUILD_DIR/train-work}"
THREADS="${THREADS:-1}"
DATA_DIR="${DATA_DIR:-/usr/share/datasets/fashion-mnist}"
export OMP_NUM_THREADS="$THREADS"

timed() {  # timed LABEL CMD... : runs CMD and prints its wall time
  local label="$1"; shift
  local start end
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  echo "== ${label}: $((end - start)) s wall" >&2
}

timed "configure + build" bash -c "
  cmake -S '$ROOT' -B '$BUILD_DIR' -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null &&
  ninja -C '$BUILD_DIR' -j2 vitserve_train"
TOOL="$BUILD_DIR/server/train/vitserve_train"
COMMON=(--data_dir="$DATA_DIR" --threads="$THREADS" --val_size=5000 --split_seed=0 --seed=0)

mkdir -p "$WORK_DIR"
# 1. Dense backbone from scratch (--resume continues an interrupted run).
timed "dense" "$TOOL" dense "${COMMON[@]}" --output_dir="$WORK_DIR/dense" \
  --embed_dim=32 --num_heads=2 --depth=8 --patch_size=4 --mlp_ratio=4 \
  --epochs=8 --batch_size=128 --lr=1.5e-3 --warmup_epochs=0.5 --weight_decay=0.05 \
  --label_smoothing=0.1 --pad=2 --hflip --resume
# 2. TNT noise allocator (alpha heads) on the frozen dense backbone.
timed "tnt" "$TOOL" tnt "${COMMON[@]}" --teacher="$WORK_DIR/dense" --output_dir="$WORK_DIR/tnt" \
  --epochs=1 --max_steps_per_epoch=250 --lr=1e-3 --warmup_epochs=0.1 \
  --keep_rate=0.7 --resume
# 3. DynamicViT predictors (trained for keep-rate 0.7) on the same frozen backbone; the TNT
#    heads are carried over, so one checkpoint serves every method.
timed "dynamicvit" "$TOOL" dynamicvit "${COMMON[@]}" --teacher="$WORK_DIR/tnt" \
  --output_dir="$WORK_DIR/fashion-vit" --epochs=2 --max_steps_per_epoch=250 \
  --lr=1e-3 --warmup_epochs=0.1 --keep_rate=0.7 --resume
# 4. The served directory, then the accuracy of every method x keep-rate on the test set.
mkdir -p "$OUT_DIR"
cp "$WORK_DIR/fashion-vit/model.safetensors" "$WORK_DIR/fashion-vit/labels.txt" \
   "$WORK_DIR/fashion-vit/config.pbtxt" "$OUT_DIR/"
timed "eval" "$TOOL" eval --data_dir="$DATA_DIR" --threads="$THREADS" --model_dir="$OUT_DIR" \
  --split=test | tee "$WORK_DIR/eval_table.md"
