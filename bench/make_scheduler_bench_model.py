#!/usr/bin/python3
"""Writes the model repository of bench/run_scheduler_bench.sh: one EViT model with random
weights (tests/observability/model_repo.py's writer, scaled up), so that a CPU batch takes
milliseconds rather than microseconds. Accuracy is meaningless (random weights); only the
compute time matters for the scheduler benchmark.

    make_scheduler_bench_model.py OUT_DIR     writes OUT_DIR/bench_evit
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "observability"))
import model_repo  # noqa: E402

# 64x64 RGB, 8x8 patches (64 patches + CLS), width 128, 6 blocks, 4 heads: ~80 M MACs per
# image dense, tens of milliseconds on one loaded CPU core.
model_repo.IMAGE_SIZE = 64
model_repo.PATCH_SIZE = 8
model_repo.EMBED_DIM = 128
model_repo.DEPTH = 6
model_repo.NUM_HEADS = 4

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    os.makedirs(sys.argv[1], exist_ok=True)
    model_repo.write_model(sys.argv[1], "bench_evit", "evit", default_keep_rate=0.7,
                           min_keep_rate=0.3, seed=3)
    print("bench_evit")
