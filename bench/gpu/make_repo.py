#!/usr/bin/env python3
"""Writes a one-model repository for the end-to-end step of bench/gpu/run.sh: an EViT
DeiT-S (or, with --small, DeiT-Tiny-sized) with random weights, so that vitclient bench
--keep_rate=1.0 measures the dense schedule and --keep_rate=0.7 the pruned one.

Usage: python3 bench/gpu/make_repo.py OUT_DIR [--small] [--name deit-s-evit]
"""

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "..", "tests", "golden"))
import make_golden  # noqa: E402
import reference  # noqa: E402

CONFIG = """name: "{name}"
version: "1"
architecture {{
  image_size: 224
  patch_size: 16
  in_chans: 3
  embed_dim: {dim}
  depth: 12
  num_heads: {heads}
  mlp_ratio: 4
  num_classes: 1000
}}
preprocessing {{
  resize: 256
  interpolation: "bicubic"
  mean: [0.485, 0.456, 0.406]
  std: [0.229, 0.224, 0.225]
}}
pruning {{
  method: "evit"
  locations: [3, 6, 9]
  default_keep_rate: 1
  min_keep_rate: 0.5
  max_keep_rate: 1
}}
weights: "model.safetensors"
labels: "labels.txt"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--small", action="store_true", help="C=192, 3 heads (dry runs)")
    ap.add_argument("--name", default="deit-s-evit")
    args = ap.parse_args()
    dim, heads = (192, 3) if args.small else (384, 6)
    cfg = reference.ViTConfig(embed_dim=dim, depth=12, num_heads=heads, num_classes=1000)
    model_dir = os.path.join(args.out, args.name)
    os.makedirs(model_dir, exist_ok=True)
    make_golden.write_safetensors(
        os.path.join(model_dir, "model.safetensors"), make_golden.make_backbone(cfg, 0)
    )
    with open(os.path.join(model_dir, "config.pbtxt"), "w") as f:
        f.write(CONFIG.format(name=args.name, dim=dim, heads=heads))
    with open(os.path.join(model_dir, "labels.txt"), "w") as f:
        f.write("".join(f"class_{i}\n" for i in range(1000)))
    print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
