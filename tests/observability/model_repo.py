#!/usr/bin/python3
"""Writes a small vitserve model repository for tests: timm-keyed ViT weights in a
hand-written safetensors file (8-byte little-endian header length, JSON header, raw
float32 data), a config.pbtxt (vitserve.v1.ModelConfig text format), labels.txt and a
calibration curve (vitserve.v1.CalibrationCurve text format).

    model_repo.py OUT_DIR        writes OUT_DIR/tiny_evit and OUT_DIR/tiny_dense
"""

import json
import os
import struct
import sys

import numpy as np

# A tiny ViT: 32x32 RGB, 8x8 patches (16 patches + CLS), width 32, 4 blocks, 2 heads.
IMAGE_SIZE = 32
PATCH_SIZE = 8
IN_CHANS = 3
EMBED_DIM = 32
DEPTH = 4
NUM_HEADS = 2
MLP_RATIO = 4
NUM_CLASSES = 10
INIT_STD = 0.02   # timm's trunc_normal_ std for every weight matrix


def write_safetensors(path, tensors):
    """tensors: name -> float32 ndarray. Offsets are into the data section, in key order."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def vit_weights(seed):
    rng = np.random.default_rng(seed)
    c, hidden, n = EMBED_DIM, EMBED_DIM * MLP_RATIO, (IMAGE_SIZE // PATCH_SIZE) ** 2

    def normal(*shape, std=INIT_STD):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    def layer_norm(prefix, out):
        out[f"{prefix}.weight"] = (1.0 + normal(c, std=0.05)).astype(np.float32)
        out[f"{prefix}.bias"] = normal(c)

    w = {
        "cls_token": normal(1, 1, c),
        "pos_embed": normal(1, n + 1, c),
        "patch_embed.proj.weight": normal(c, IN_CHANS, PATCH_SIZE, PATCH_SIZE, std=0.05),
        "patch_embed.proj.bias": normal(c),
        # Fan-in scaled head so that logits (and top-1 probabilities) are not all equal.
        "head.weight": normal(NUM_CLASSES, c, std=1.0 / np.sqrt(c)),
        "head.bias": normal(NUM_CLASSES),
    }
    layer_norm("norm", w)
    for i in range(DEPTH):
        b = f"blocks.{i}"
        layer_norm(f"{b}.norm1", w)
        layer_norm(f"{b}.norm2", w)
        qkv = normal(3 * c, c)
        qkv[: 2 * c] *= 5.0   # larger q/k rows: attention (and EViT's ranking) not uniform
        w[f"{b}.attn.qkv.weight"] = qkv
        w[f"{b}.attn.qkv.bias"] = normal(3 * c)
        w[f"{b}.attn.proj.weight"] = normal(c, c)
        w[f"{b}.attn.proj.bias"] = normal(c)
        w[f"{b}.mlp.fc1.weight"] = normal(hidden, c)
        w[f"{b}.mlp.fc1.bias"] = normal(hidden)
        w[f"{b}.mlp.fc2.weight"] = normal(c, hidden)
        w[f"{b}.mlp.fc2.bias"] = normal(c)
    return w


CONFIG = """name: "{name}"
version: "1"
architecture {{
  image_size: {image_size}
  patch_size: {patch_size}
  in_chans: {in_chans}
  embed_dim: {embed_dim}
  depth: {depth}
  num_heads: {num_heads}
  mlp_ratio: {mlp_ratio}
  num_classes: {num_classes}
}}
preprocessing {{
  crop_pct: 1.0
  interpolation: "bilinear"
}}
pruning {{
  method: "{method}"
  default_keep_rate: {default_keep_rate}
  min_keep_rate: {min_keep_rate}
  max_keep_rate: 1.0
}}
weights: "model.safetensors"
labels: "labels.txt"
calibration: "calibration.pbtxt"
"""

# Made-up calibration points (accuracy falls with the keep-rate); only the shape matters.
CALIBRATION_POINTS = [(0.25, 0.55), (0.5, 0.68), (0.7, 0.74), (1.0, 0.78)]


def write_model(repo, name, method, default_keep_rate, min_keep_rate, seed):
    d = os.path.join(repo, name)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), vit_weights(seed))
    with open(os.path.join(d, "config.pbtxt"), "w") as f:
        f.write(CONFIG.format(name=name, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                              in_chans=IN_CHANS, embed_dim=EMBED_DIM, depth=DEPTH,
                              num_heads=NUM_HEADS, mlp_ratio=MLP_RATIO,
                              num_classes=NUM_CLASSES, method=method,
                              default_keep_rate=default_keep_rate,
                              min_keep_rate=min_keep_rate))
    with open(os.path.join(d, "labels.txt"), "w") as f:
        f.write("".join(f"class_{i}\n" for i in range(NUM_CLASSES)))
    points = CALIBRATION_POINTS if method != "dense" else CALIBRATION_POINTS[-1:]
    with open(os.path.join(d, "calibration.pbtxt"), "w") as f:
        f.write('dataset: "synthetic"\nnum_examples: 1000\n')
        for keep_rate, top1 in points:
            f.write(f'points {{ method: "{method}" keep_rate: {keep_rate} top1: {top1} '
                    f'agreement: {min(1.0, top1 + 0.2):.2f} }}\n')
    return d


def write_repository(repo):
    """The models the observability test serves: a token-pruned one and a dense one."""
    os.makedirs(repo, exist_ok=True)
    write_model(repo, "tiny_evit", "evit", default_keep_rate=0.7, min_keep_rate=0.25, seed=1)
    write_model(repo, "tiny_dense", "dense", default_keep_rate=1.0, min_keep_rate=1.0, seed=2)
    return ["tiny_dense", "tiny_evit"]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    print(" ".join(write_repository(sys.argv[1])))
