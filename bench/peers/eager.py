#!/usr/bin/python3
"""PyTorch-eager side of the peer benchmark: times PeerViT (the module export.py exports)
under torch.inference_mode with torch.set_num_threads(--threads), the same graph ONNX
Runtime runs. One JSON line per (method, batch) on stdout, fields as ort_bench.js.

  eager.py --model deit_s|fashion-vit --threads T --batches 1,8 --seconds S
           [--methods dense,dynamicvit,evit,tome] [--keep 0.7]
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
from peer_model import PeerViT  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="deit_s")
    ap.add_argument("--methods", default="dense,dynamicvit,evit,tome")
    ap.add_argument("--keep", type=float, default=0.7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, sd, locations = export.load(args.model)
    for method in args.methods.split(","):
        keep = 1.0 if method == "dense" else args.keep
        m = PeerViT(sd, cfg, method, keep, locations.get(method)).eval()
        for b in (int(v) for v in args.batches.split(",")):
            x = export.images(cfg, b)
            with torch.inference_mode():
                m(x)
                start, iters, elapsed = time.perf_counter(), 0, 0.0
                while iters < 1 or elapsed < args.seconds:
                    m(x)
                    iters += 1
                    elapsed = time.perf_counter() - start
            print(json.dumps({"impl": "eager", "model": args.model, "method": method,
                              "keep_rate": keep, "tome_r": getattr(m, "r", None), "batch": b,
                              "threads": args.threads, "images_per_s": b * iters / elapsed,
                              "iters": iters, "seconds": elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
