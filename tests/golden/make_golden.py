#!/usr/bin/python3
"""Writes vitserve's golden fixtures: weights, inputs and expected outputs per case.

Usage: /usr/bin/python3 make_golden.py OUT_DIR [--seed N]

Model: DeiT-Tiny-sized (C=192, 3 heads, depth 12, patch 16, 224x224, 10 classes) with
random weights drawn so that every pruning decision is well separated (no ties):
q/k rows of qkv with std 0.1, fan-in-scaled predictor,
alpha and head layers, LayerNorm weights 1 +- noise, smooth non-constant images.

Every case is computed twice by reference.py -- in float64 (the expected values written)
and in float32 with the keep-rate rounded to float32 (what a float32 server computes) --
and generation fails unless both runs make identical token decisions, their logits agree
to 1e-5 and the smallest decision margin is clearly above float32 noise.

Files written (all tensors little-endian, safetensors written by hand):
  vit_tiny.safetensors            timm keys                      dense, evit, tome, trilevel
  vit_tiny_dynamicvit.safetensors timm keys + score_predictor.*  dynamicvit
  vit_tiny_distilled_tnt.safetensors  distilled DeiT + alpha_heads.*  tnt
  vit_tiny_svite.safetensors      head/MLP-masked weights + gumbel.* selector   svite
  vit_tiny_svite.pth              the same as an SViTE training checkpoint (torch.save zip:
                                  'model', 'atten_mask', 'other_mask' with 'module.' keys,
                                  an argparse.Namespace under 'args')
  inputs.safetensors              images F32 [3, 3, 224, 224]
  image_{0,1,2}.png               8-bit RGB images of other sizes (photo-like: smooth field
                                  plus noise) for the image-input cases
  image_inputs.safetensors        images F32 [3, 3, 224, 224]: those PNGs through the timm
                                  eval transform with PIL (Resize(256, BICUBIC),
                                  CenterCrop(224), ToTensor, Normalize(ImageNet))
  expected_<case>.safetensors     logits F32 [3, 10], tokens_per_stage I64 [3, stages]
  manifest.txt                    one case per line (columns in its header comment)
"""

import argparse
import json
import math
import os
import struct
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (local module next to this script)

CFG = reference.ViTConfig(embed_dim=192, depth=12, num_heads=3, num_classes=10)
CFG_DISTILLED = reference.ViTConfig(
    embed_dim=192, depth=12, num_heads=3, num_classes=10, distilled=True
)
BATCH = 3
#: Decisions closer than this (in score units) are treated as ties.
MIN_MARGIN = 1e-6
#: float64 vs float32 reference: logits must agree to this.
MAX_F32_DEVIATION = 1e-5

_DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}


def write_safetensors(
    path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None
) -> None:
    """Safetensors by hand: u64-LE header length, JSON header, raw little-endian data."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        code, np_dtype = _DTYPES[t.dtype]
        data = t.numpy().astype(np_dtype, copy=False).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """Reader for the files above (used by check_reference.py's round-trip test)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        np_dtype = {"F32": "<f4", "I64": "<i8"}[meta["dtype"]]
        b, e = meta["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=np_dtype).reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------


class _Init:
    """Seeded normal draws."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, shape: Sequence[int], std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * std + mean

    def fan_in(self, out_f: int, in_f: int, gain: float = 1.0) -> torch.Tensor:
        return self.normal((out_f, in_f), gain / math.sqrt(in_f))

    def layer_norm(self, sd: Dict[str, torch.Tensor], name: str, c: int) -> None:
        sd[name + ".weight"] = self.normal((c,), 0.1, 1.0)
        sd[name + ".bias"] = self.normal((c,), 0.05)


def make_backbone(cfg: reference.ViTConfig, seed: int) -> Dict[str, torch.Tensor]:
    """timm ViT weights with well-separated attention (q/k rows std 0.1)."""
    init, c, h = _Init(seed), cfg.embed_dim, cfg.mlp_hidden
    k_in = cfg.in_chans * cfg.patch_size**2
    sd = {
        "patch_embed.proj.weight": init.normal(
            (c, cfg.in_chans, cfg.patch_size, cfg.patch_size), 1 / math.sqrt(k_in)
        ),
        "patch_embed.proj.bias": init.normal((c,), 0.02),
        "cls_token": init.normal((1, 1, c), 0.5),
        "pos_embed": init.normal((1, cfg.num_prefix + cfg.num_patches, c), 0.5),
    }
    if cfg.distilled:
        sd["dist_token"] = init.normal((1, 1, c), 0.5)
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        init.layer_norm(sd, p + "norm1", c)
        qk = init.normal((2 * c, c), 0.1)
        v = init.fan_in(c, c)
        sd[p + "attn.qkv.weight"] = torch.cat([qk, v], dim=0)
        # A visible v-bias: a pruned SViTE head still emits it (compaction trap).
        sd[p + "attn.qkv.bias"] = init.normal((3 * c,), 0.1)
        sd[p + "attn.proj.weight"] = init.fan_in(c, c, 0.5)
        sd[p + "attn.proj.bias"] = init.normal((c,), 0.02)
        init.layer_norm(sd, p + "norm2", c)
        sd[p + "mlp.fc1.weight"] = init.fan_in(h, c)
        sd[p + "mlp.fc1.bias"] = init.normal((h,), 0.02)
        sd[p + "mlp.fc2.weight"] = init.fan_in(c, h, 0.5)
        sd[p + "mlp.fc2.bias"] = init.normal((c,), 0.02)
    init.layer_norm(sd, "norm", c)
    sd["head.weight"] = init.fan_in(cfg.num_classes, c)
    sd["head.bias"] = init.normal((cfg.num_classes,), 0.01)
    if cfg.distilled:
        sd["head_dist.weight"] = init.fan_in(cfg.num_classes, c)
        sd["head_dist.bias"] = init.normal((cfg.num_classes,), 0.01)
    return sd


def add_dynamicvit_predictors(sd, cfg: reference.ViTConfig, seed: int, stages: int = 3) -> None:
    """score_predictor.{p}: LN -> Linear(C,C) -> GELU | Linear(C,C/2), (C/2,C/4), (C/4,2)."""
    init, c = _Init(seed), cfg.embed_dim
    for p in range(stages):
        pre = f"score_predictor.{p}."
        init.layer_norm(sd, pre + "in_conv.0", c)
        for name, o, i, gain in (
            ("in_conv.1", c, c, 1.0),
            ("out_conv.0", c // 2, c, 1.0),
            ("out_conv.2", c // 4, c // 2, 1.0),
            ("out_conv.4", 2, c // 4, 2.0),
        ):
            sd[pre + name + ".weight"] = init.fan_in(o, i, gain)
            sd[pre + name + ".bias"] = init.normal((o,), 0.02)


def add_tnt_alpha_heads(sd, cfg: reference.ViTConfig, seed: int) -> None:
    """alpha_heads.{i} = Linear(C, 1) per block, plus the training-only alpha_norm."""
    init, c = _Init(seed), cfg.embed_dim
    for i in range(cfg.depth):
        # The residual stream is not normalised here: keep the logits O(1).
        sd[f"alpha_heads.{i}.weight"] = init.fan_in(1, c, 0.3)
        sd[f"alpha_heads.{i}.bias"] = init.normal((1,), 0.02)
    init.layer_norm(sd, "alpha_norm", c)


def make_svite(cfg: reference.ViTConfig, seed: int):
    """Structured SViTE: masked weights + gumbel selector; returns (sd, atten, other)."""
    sd = make_backbone(cfg, seed)
    init, c, h, hd = _Init(seed + 7), cfg.embed_dim, cfg.mlp_hidden, cfg.head_dim
    atten_mask, other_mask = {}, {}
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        heads = torch.randperm(cfg.num_heads, generator=init.g)[: cfg.num_heads - 1 - i % 2]
        heads = heads if len(heads) else torch.tensor([i % cfg.num_heads])
        qkv_mask = torch.zeros(3 * c, c)
        for part in range(3):
            for hh in heads.tolist():
                qkv_mask[part * c + hh * hd : part * c + (hh + 1) * hd] = 1.0
        units = torch.randperm(h, generator=init.g)[: h // 2 - 16 * i]
        fc1_mask = torch.zeros(h, c)
        fc1_mask[units] = 1.0
        fc2_mask = torch.zeros(c, h)
        fc2_mask[:, units] = 1.0
        sd[p + "attn.qkv.weight"] = sd[p + "attn.qkv.weight"] * qkv_mask
        sd[p + "mlp.fc1.weight"] = sd[p + "mlp.fc1.weight"] * fc1_mask
        sd[p + "mlp.fc2.weight"] = sd[p + "mlp.fc2.weight"] * fc2_mask
        atten_mask[f"module.{p}attn.qkv.weight_mask"] = qkv_mask
        other_mask[f"module.{p}mlp.fc1.weight_mask"] = fc1_mask
        other_mask[f"module.{p}mlp.fc2.weight_mask"] = fc2_mask
    sd["gumbel.weight"] = init.fan_in(1, c)
    sd["gumbel.bias"] = init.normal((1,), 0.02)
    return sd, atten_mask, other_mask


def make_images(seed: int, batch: int = BATCH, size: int = 224) -> torch.Tensor:
    """Smooth random fields plus fine noise: every patch differs, no image is constant."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, 7, 7, generator=g)
    mid = torch.randn(batch, 3, 28, 28, generator=g) * 0.5
    img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    img = img + F.interpolate(mid, size=(size, size), mode="bilinear", align_corners=False)
    return img + 0.2 * torch.randn(batch, 3, size, size, generator=g)


#: (width, height) of the PNG inputs: landscape, portrait, and larger than 2x the resize.
PNG_SIZES = [(300, 260), (260, 347), (640, 480)]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_png_images(seed: int) -> List[Image.Image]:
    """8-bit RGB images: a smooth random field plus per-pixel noise (texture is where
    non-antialiased resampling differs most from PIL's)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for w, h in PNG_SIZES:
        coarse = torch.rand(1, 3, 6, 6, generator=g)
        img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * 255
        img = img + 30 * torch.randn(1, 3, h, w, generator=g)
        arr = img[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(arr, "RGB"))
    return out


def timm_pil_transform(img: Image.Image, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """timm's eval transform on a PIL image, in numpy: torchvision Resize(int, BICUBIC)
    (long side int(resize * long / short)), CenterCrop (round-half-even offsets),
    ToTensor (float32 v / 255), Normalize (float32)."""
    w, h = img.size
    if min(w, h) != resize:
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(resize * long / short)
        img = img.resize((resize, new_long) if w <= h else (new_long, resize), Image.BICUBIC)
    w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    a = np.asarray(img.crop((left, top, left + crop, top + crop)))
    x = a.astype(np.float32) / np.float32(255)
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------

CASES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.txt")


def load_cases(path: str = CASES_FILE):
    """cases.txt rows -> [(name, method, keep_rate, weights key, locations, attn_ratio)]."""
    cases = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, method, kr, wkey, locs, ar = line.split()
            loc_list = [] if locs == "-" else [int(v) for v in locs.split(",")]
            cases.append((name, method, float(kr), wkey, loc_list, float(ar)))
    return cases


CASES = load_cases()

WEIGHT_FILES = {
    "base": "vit_tiny.safetensors",
    "dynamicvit": "vit_tiny_dynamicvit.safetensors",
    "tnt": "vit_tiny_distilled_tnt.safetensors",
    "svite": "vit_tiny_svite.safetensors",
    "svite_pth": "vit_tiny_svite.pth",
}

MANIFEST_HEADER = (
    "# name method keep_rate weights_file inputs_file expected_file embed_dim depth "
    "num_heads num_classes distilled locations attn_ratio tome_r\n"
    "# Paths are relative to this file. locations: comma-separated block indices, '-' = "
    "none. distilled: 0/1. tome_r: merge count the reference used (ToMe only, else 0).\n"
    "# Expected files: 'logits' F32 [batch, classes], 'tokens_per_stage' I64 "
    "[batch, 1 + reductions] (tokens incl. CLS/dist/fused at the input and after each "
    "reduction point; SViTE: non-zeroed tokens after the selector).\n"
)


def _to(sd, dtype):
    return {k: v.to(dtype) for k, v in sd.items()}


def run_case(sd, cfg, images, method, keep_rate, locs, attn_ratio):
    """float64 run (expected values) and float32 run (parity check of the fixture)."""
    kr32 = float(np.float32(keep_rate))
    out64, info64 = reference.forward(
        _to(sd, torch.float64), cfg, images.double(), method, keep_rate, locs, attn_ratio
    )
    out32, info32 = reference.forward(
        _to(sd, torch.float32), cfg, images.float(), method, kr32, locs, attn_ratio
    )
    if info64.tokens_per_stage != info32.tokens_per_stage or info64.tome_r != info32.tome_r:
        raise AssertionError(f"float32 and float64 schedules differ for {method} {keep_rate}")
    dev = float((out64 - out32.double()).abs().max())
    if dev > MAX_F32_DEVIATION:
        raise AssertionError(f"{method} {keep_rate}: float32 deviates by {dev:.3g}")
    return out64, info64, dev


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=20260)
    args = ap.parse_args(argv)
    t0 = time.time()
    # One thread: on a shared 2-core CI box OpenMP spinning makes 2 threads far slower.
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)

    base = make_backbone(CFG, args.seed)
    dyn = dict(base)
    add_dynamicvit_predictors(dyn, CFG, args.seed + 1)
    tnt = make_backbone(CFG_DISTILLED, args.seed + 2)
    add_tnt_alpha_heads(tnt, CFG_DISTILLED, args.seed + 3)
    svite, atten_mask, other_mask = make_svite(CFG, args.seed + 4)
    weights = {"base": base, "dynamicvit": dyn, "tnt": tnt, "svite": svite, "svite_pth": svite}
    cfgs = {"tnt": CFG_DISTILLED}
    images = make_images(args.seed + 5)

    def out(name):
        return os.path.join(args.out_dir, name)

    meta = {"generator": "tests/golden/make_golden.py", "seed": str(args.seed)}
    for key, fname in WEIGHT_FILES.items():
        if fname.endswith(".safetensors"):
            write_safetensors(out(fname), weights[key], meta)
    torch.save(
        {
            "model": svite,
            "atten_mask": atten_mask,
            "other_mask": other_mask,
            "epoch": 299,
            "args": argparse.Namespace(
                model="deit_tiny_patch16_224_data",
                pruning_type="structure_new",
                token_selection=True,
                token_number=137,
                sparse=0.5,
            ),
        },
        out(WEIGHT_FILES["svite_pth"]),
    )
    write_safetensors(out("inputs.safetensors"), {"images": images}, meta)
    pngs = make_png_images(args.seed + 6)
    for i, png in enumerate(pngs):
        png.save(out(f"image_{i}.png"))
    write_safetensors(
        out("image_inputs.safetensors"),
        {"images": torch.stack([timm_pil_transform(p) for p in pngs])},
        meta,
    )

    lines, margins, worst_dev = [MANIFEST_HEADER], {}, 0.0
    for name, method, kr, wkey, locs, attn_ratio in CASES:
        cfg = cfgs.get(wkey, CFG)
        logits, info, dev = run_case(weights[wkey], cfg, images, method, kr, locs, attn_ratio)
        worst_dev = max(worst_dev, dev)
        for kind, m in info.margins.items():
            margins[kind] = min(margins.get(kind, math.inf), m)
            if m < MIN_MARGIN:
                raise AssertionError(f"{name}: {kind} decision margin {m:.3g} is a near-tie")
        expected = f"expected_{name}.safetensors"
        write_safetensors(
            out(expected),
            {
                "logits": logits.float(),
                "tokens_per_stage": torch.tensor(info.tokens_per_stage, dtype=torch.int64),
            },
            {**meta, "case": name},
        )
        lines.append(
            " ".join(
                [
                    name,
                    method,
                    f"{kr:g}",
                    WEIGHT_FILES[wkey],
                    "inputs.safetensors",
                    expected,
                    str(cfg.embed_dim),
                    str(cfg.depth),
                    str(cfg.num_heads),
                    str(cfg.num_classes),
                    str(int(cfg.distilled)),
                    ",".join(map(str, locs)) if locs else "-",
                    f"{attn_ratio:g}",
                    str(info.tome_r),
                ]
            )
            + "\n"
        )
        print(
            f"{name:22s} tokens[0]={info.tokens_per_stage[0]} "
            f"r={info.tome_r} |f32-f64|={dev:.2e}"
        )
    with open(out("manifest.txt"), "w") as f:
        f.writelines(lines)
    smallest = ", ".join(f"{k}={v:.3g}" for k, v in sorted(margins.items()))
    print(f"smallest decision margins: {smallest}")
    print(f"worst float32-vs-float64 logit deviation: {worst_dev:.3g}")
    total = sum(os.path.getsize(out(f)) for f in os.listdir(args.out_dir))
    took = time.time() - t0
    print(f"{len(CASES)} cases, {total / 2**20:.1f} MiB in {args.out_dir}, {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
