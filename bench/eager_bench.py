#!/usr/bin/python3
"""PyTorch-eager throughput baseline: what a user running the methods in Python gets today.

Runs tests/golden/reference.py (plain PyTorch, no timm) on a DeiT-S-shaped model (C=384,
6 heads, depth 12, 224x224, 1000 classes, random weights) under torch.inference_mode(),
for dense and for DynamicViT / EViT / ToMe / TNT at each keep-rate, at each batch size.
ToMe's r per keep-rate is the r whose MACs (server/spec/cost_model.h) come closest to the
DynamicViT-style 3-stage schedule at that keep-rate; ToMe r=13 (the published comparison
point) is measured as well.

Each configuration is warmed up, then run for --seconds of wall time (at least
--min-iters iterations); one JSON object per line goes to stdout or --out:
  {"method", "keep_rate", "tome_r", "batch", "images_per_s", "iters", "seconds",
   "threads", "gmacs", "loadavg_1m"}
On a machine shared with other jobs, OpenMP with more threads than idle cores is far slower
than one thread (measured: 2 threads 7x slower at load average 13 on 2 cores): compare runs
only at a similar, low loadavg_1m.

--device cuda --dtype bfloat16 --sdpa runs the same code on a GPU (bench/gpu/run.sh): weights
and images moved once, torch.cuda.synchronize() after every forward, and the plain blocks'
attention through F.scaled_dot_product_attention (what a PyTorch user would write; the
pruning blocks that need attention weights keep the explicit softmax).

Usage: /usr/bin/python3 bench/eager_bench.py [--threads 2] [--batch-sizes 1,8,32]
       [--methods dense,dynamicvit,evit,tome,tnt] [--keep-rates 0.9,0.7,0.5]
       [--seconds 3] [--out FILE] [--device cpu|cuda] [--dtype float32|bfloat16] [--sdpa]
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests", "golden"))
import make_golden  # noqa: E402  (weights with the timm key layout)
import reference  # noqa: E402

DEIT_S = reference.ViTConfig(embed_dim=384, depth=12, num_heads=6, num_classes=1000)
#: --model tiny: DeiT-Tiny's shape (bench/gpu/run.sh --dry-run keeps its CPU steps short).
DEIT_TI = reference.ViTConfig(embed_dim=192, depth=12, num_heads=3, num_classes=1000)
#: ToMe's published operating point (DeiT-S / ViT-S r=13).
TOME_PUBLISHED_R = 13


def build_weights(cfg: reference.ViTConfig, seed: int) -> Dict[str, torch.Tensor]:
    """DeiT-S weights plus DynamicViT predictors and TNT alpha heads (random)."""
    sd = make_golden.make_backbone(cfg, seed)
    make_golden.add_dynamicvit_predictors(sd, cfg, seed + 1)
    make_golden.add_tnt_alpha_heads(sd, cfg, seed + 2)
    sd["gumbel.weight"] = torch.randn(1, cfg.embed_dim) * cfg.embed_dim**-0.5
    sd["gumbel.bias"] = torch.zeros(1)
    return sd


def half_pruned(sd, cfg: reference.ViTConfig):
    """SViTE's structured masks as the official code runs them: half the heads (q, k, v
    rows) and half the MLP units (fc1 rows, fc2 columns) zeroed, shapes unchanged."""
    out = {k: v.clone() for k, v in sd.items()}
    c, d, h, hidden = cfg.embed_dim, cfg.head_dim, cfg.num_heads, cfg.mlp_hidden
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        for part in range(3):
            out[p + "attn.qkv.weight"][part * c + (h // 2) * d : (part + 1) * c] = 0
        out[p + "mlp.fc1.weight"][hidden // 2 :] = 0
        out[p + "mlp.fc2.weight"][:, hidden // 2 :] = 0
    return out


def configs(
    methods: List[str], keep_rates: List[float], cfg: reference.ViTConfig, attn_ratio: float
) -> Iterator[Tuple[str, Optional[float], Optional[int]]]:
    """(method label, keep_rate, tome_r) to measure, dense first. Labels as in
    vitserve_bench: "trilevel+attn0.50" is Tri-Level with its attention level."""
    if "dense" in methods:
        yield "dense", 1.0, None
    for m in methods:
        if m == "dense":
            continue
        if m == "svite":
            yield m, 1.0, None
        for kr in keep_rates:
            r = reference.tome_r_for_keep_rate(cfg, kr) if m == "tome" else None
            yield m, kr, r
        if m == "tome":
            yield m, None, TOME_PUBLISHED_R
        if m == "trilevel" and attn_ratio > 0:
            for kr in keep_rates:
                yield f"trilevel+attn{attn_ratio:.2f}", kr, None


def macs(cfg: reference.ViTConfig, method: str, keep_rate: Optional[float], r: Optional[int]):
    """Backbone MACs of the configuration (server/spec/cost_model.h, without overheads)."""
    if method == "tome":
        return reference.tome_macs(cfg, r or 0)
    if method == "dense" or keep_rate is None:
        return reference.tome_macs(cfg, 0)
    if method == "dynamicvit":
        return reference.dynamicvit_schedule_macs(cfg, keep_rate)
    return None  # EViT / TNT counts differ from the DynamicViT schedule; not modelled here


def sdpa_plain_block(x, sd, i: int, cfg: reference.ViTConfig):
    """reference.plain_block with the attention core fused (same math)."""
    p = f"blocks.{i}."
    q, k, v = reference._qkv(reference._ln(x, sd, p + "norm1"), sd, p, cfg)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    b, _, n, _ = out.shape
    x = x + reference._linear(out.transpose(1, 2).reshape(b, n, -1), sd, p + "attn.proj")
    return x + reference._mlp(x, sd, p)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_config(
    sd, cfg, images, method, keep_rate, tome_r, seconds: float, min_iters: int, device: str = "cpu"
) -> Tuple[int, float]:
    """Warm up, then run for `seconds` (at least min_iters); returns (iters, elapsed)."""

    name, _, attn = method.partition("+attn")

    def run() -> None:
        reference.forward(
            sd, cfg, images, name, 1.0 if keep_rate is None else keep_rate,
            tome_r=tome_r, attn_ratio=float(attn) if attn else 0.0, track_margins=False,
        )
        sync(device)

    with torch.inference_mode():
        run()  # warm-up: allocator, OpenMP pool, first-call dispatch
        iters, start = 0, time.perf_counter()
        while True:
            run()
            iters += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and iters >= min_iters:
                return iters, elapsed


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--methods", default="dense,dynamicvit,evit,tome,tnt")
    ap.add_argument("--keep-rates", default="0.9,0.7,0.5")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed wall time per config")
    ap.add_argument("--min-iters", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trilevel-attn-ratio", type=float, default=0.5,
                    help="extra Tri-Level rows with the attention level (0 = none)")
    ap.add_argument("--out", help="append JSON lines here instead of stdout")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--model", default="deit_s", choices=["deit_s", "tiny"])
    ap.add_argument("--sdpa", action="store_true",
                    help="plain blocks through F.scaled_dot_product_attention")
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    # torch < 2.0 (Debian's 1.13, the dry run of bench/gpu/run.sh) has no SDPA.
    sdpa = args.sdpa and hasattr(torch.nn.functional, "scaled_dot_product_attention")
    if sdpa:
        reference.plain_block = sdpa_plain_block

    torch.set_num_threads(args.threads)
    cfg = DEIT_TI if args.model == "tiny" else DEIT_S
    sd = build_weights(cfg, args.seed)
    svite_sd = half_pruned(sd, cfg) if "svite" in args.methods else None
    sd = {k: v.to(args.device, dtype) for k, v in sd.items()}
    if svite_sd is not None:
        svite_sd = {k: v.to(args.device, dtype) for k, v in svite_sd.items()}
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in ("dense", "dynamicvit", "evit", "tome", "tnt", "svite", "trilevel"):
            ap.error(f"unsupported method {m}")
    keep_rates = [float(v) for v in args.keep_rates.split(",") if v]
    batches = [int(v) for v in args.batch_sizes.split(",") if v]
    out = open(args.out, "a") if args.out else sys.stdout
    gen = torch.Generator().manual_seed(args.seed + 100)
    try:
        for batch in batches:
            images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=gen)
            images = images.to(args.device, dtype)
            for method, kr, r in configs(methods, keep_rates, cfg, args.trilevel_attn_ratio):
                load_1m = os.getloadavg()[0]  # a shared box skews eager numbers badly
                weights = svite_sd if method == "svite" else sd
                iters, elapsed = time_config(
                    weights, cfg, images, method, kr, r, args.seconds, args.min_iters,
                    args.device,
                )
                m = macs(cfg, method, kr, r)
                rec = {
                    "method": method,
                    "keep_rate": kr,
                    "tome_r": r,
                    "batch": batch,
                    "images_per_s": round(iters * batch / elapsed, 3),
                    "iters": iters,
                    "seconds": round(elapsed, 3),
                    "threads": args.threads,
                    "gmacs": None if m is None else round(m / 1e9, 3),
                    "loadavg_1m": round(load_1m, 2),
                    "device": args.device,
                    "dtype": args.dtype,
                    "sdpa": sdpa,
                }
                out.write(json.dumps(rec) + "\n")
                out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
