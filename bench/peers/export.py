#!/usr/bin/python3
"""Exports the peer benchmark's models to ONNX (python3-torch 1.13, dynamic batch axis).

  export.py --model deit_s|fashion-vit --methods dense,dynamicvit,evit,tome --keep 0.7
            --out DIR [--check]

Writes DIR/<model>-<method>.onnx and DIR/<model>.json (architecture, per-method locations,
ToMe r). Weights: deit_s = DeiT-S (C=384, 6 heads, depth 12, 224², 1000 classes) with random
weights from tests/golden/make_golden.py at a fixed seed (0); fashion-vit = the bundled
models/fashion-vit/model.safetensors (its config: DynamicViT at blocks 1, 3, 5). Opset 14,
except ToMe: its merge is a scatter_add with repeated indices, which needs ScatterElements
with reduction=add (opset 16; opset 14's export of scatter_add overwrites duplicates).

--check compares PeerViT (the exported module, eager) with tests/golden/reference.py's
forward on a batch of 2 for every method and fails (exit 1) beyond 1e-4, and writes
DIR/<model>-check.json (input, PeerViT logits per method) for ort_bench.js --check and
DIR/<model>-check.txt (the same input as text) for vitserve_logits.
"""

import argparse
import json
import os
import sys

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, "..", "..", "tests", "golden"))
import make_golden  # noqa: E402
import reference  # noqa: E402
from peer_model import PeerViT  # noqa: E402

ROOT = os.path.normpath(os.path.join(_HERE, "..", ".."))
DEIT_S = reference.ViTConfig(embed_dim=384, depth=12, num_heads=6, num_classes=1000)
FASHION = reference.ViTConfig(embed_dim=96, depth=8, num_heads=4, num_classes=10, patch_size=4,
                              image_size=28, in_chans=1)
FASHION_DYNAMICVIT_LOCS = [1, 3, 5]  # models/fashion-vit/config.pbtxt
SEED = 0


def load(model: str):
    """(cfg, state dict, {method: locations or None}) for a model name."""
    if model == "deit_s":
        sd = make_golden.make_backbone(DEIT_S, SEED)
        make_golden.add_dynamicvit_predictors(sd, DEIT_S, SEED + 1)
        return DEIT_S, sd, {}
    if model == "fashion-vit":
        sd = make_golden.read_safetensors(os.path.join(ROOT, "models", "fashion-vit",
                                                       "model.safetensors"))
        return FASHION, sd, {"dynamicvit": FASHION_DYNAMICVIT_LOCS}
    raise ValueError(f"unknown model {model!r}")


def images(cfg: reference.ViTConfig, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + 7)
    return torch.randn(batch, cfg.in_chans, cfg.image_size, cfg.image_size, generator=g)


def export(m: PeerViT, path: str, cfg: reference.ViTConfig) -> None:
    opset = 16 if m.method == "tome" else 14
    torch.onnx.export(m, (images(cfg, 2),), path, input_names=["images"],
                      output_names=["logits"], opset_version=opset,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)


def check(m: PeerViT, sd, cfg, locs, x) -> float:
    ref, _ = reference.forward(sd, cfg, x, m.method, m.keep_rate, locs, track_margins=False,
                               tome_r=getattr(m, "r", None))
    with torch.inference_mode():
        got = m(x)
    return float((got - ref).abs().max())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="deit_s")
    ap.add_argument("--methods", default="dense,dynamicvit,evit,tome")
    ap.add_argument("--keep", type=float, default=0.7)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg, sd, locations = load(args.model)
    meta = {"model": args.model, "keep": args.keep, "image": [cfg.in_chans, cfg.image_size,
                                                               cfg.image_size], "methods": {}}
    checks = {"input": images(cfg, 2).flatten().tolist(), "logits": {}}
    worst = 0.0
    for method in args.methods.split(","):
        keep = 1.0 if method == "dense" else args.keep
        m = PeerViT(sd, cfg, method, keep, locations.get(method)).eval()
        path = os.path.join(args.out, f"{args.model}-{method}.onnx")
        export(m, path, cfg)
        meta["methods"][method] = {"file": os.path.basename(path), "keep": keep,
                                   "locations": m.locs, "tome_r": getattr(m, "r", None)}
        if args.check:
            err = check(m, sd, cfg, locations.get(method), images(cfg, 2))
            worst = max(worst, err)
            print(f"{args.model} {method}: PeerViT vs reference max |diff| {err:.2e}",
                  file=sys.stderr)
            with torch.inference_mode():
                checks["logits"][method] = m(images(cfg, 2)).flatten().tolist()
    with open(os.path.join(args.out, f"{args.model}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if args.check:
        with open(os.path.join(args.out, f"{args.model}-check.json"), "w") as f:
            json.dump(checks, f)
        with open(os.path.join(args.out, f"{args.model}-check.txt"), "w") as f:
            f.write(" ".join(str(v) for v in [2] + meta["image"]) + "\n")
            f.write("\n".join(repr(v) for v in checks["input"]) + "\n")
        if worst > 1e-4:
            print(f"FAIL: PeerViT differs from reference by {worst:.2e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
