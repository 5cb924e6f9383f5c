#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets under tests/fuzz/corpus/<target>/.

Run with the system Python (PIL, torch and protobuf installed), from anywhere:
    /usr/bin/python3 tests/fuzz/make_corpus.py
The files are committed; re-running rewrites them (PIL and torch versions may change a
few bytes). Each seed is small, real and valid, or near-valid on purpose (truncated,
an out-of-range field, a forbidden global) so that the fuzzer starts on both sides of
every check. Total size is kept under ~100 KB.
"""
import argparse
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- images: fuzz_image_probe and fuzz_preprocess -------------------------------------

def pil_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def tiff_big_endian_2x2():
    """A classic big-endian ('MM') 2x2 8-bit gray TIFF, written by hand (PIL writes 'II')."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 3, 1, 2), (257, 3, 1, 2), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, 2), (279, 4, 1, 4)]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    out = b"MM\x00*" + struct.pack(">I", ifd_offset) + struct.pack(">H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_offset
        if typ == 3:
            out += struct.pack(">HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack(">HHII", tag, typ, count, value)
    out += struct.pack(">I", 0) + bytes([0, 85, 170, 255])
    return out


def bmp_core_header_2x2():
    """OS/2 BMP with the 12-byte BITMAPCOREHEADER (16-bit dimensions), 24-bit, 2x2."""
    rows = b"".join(bytes([0, 0, 255, 0, 255, 0]) + b"\x00\x00" for _ in range(2))
    off = 14 + 12
    return (b"BM" + struct.pack("<IHHI", off + len(rows), 0, 0, off) +
            struct.pack("<IHHHH", 12, 2, 2, 1, 24) + rows)


def images():
    from PIL import Image
    examples = os.path.join(ROOT, "docs", "examples")
    seeds = {
        "fashion_ankle_boot.png": open(os.path.join(examples, "test0000_ankle_boot.png"), "rb").read(),
        "fashion_shirt.png": open(os.path.join(examples, "test0004_shirt.png"), "rb").read(),
    }
    rgb = Image.new("RGB", (8, 6))
    for x in range(8):
        for y in range(6):
            rgb.putpixel((x, y), (x * 30, y * 40, 128))
    rgba = rgb.convert("RGBA")
    gray = rgb.convert("L")
    seeds["rgb_8x6.jpg"] = pil_bytes(rgb, "JPEG", quality=50)
    seeds["rgb_8x6_progressive.jpg"] = pil_bytes(rgb, "JPEG", quality=50, progressive=True)
    seeds["gray_8x6.jpg"] = pil_bytes(gray, "JPEG", quality=50)
    seeds["rgba_8x6.png"] = pil_bytes(rgba, "PNG")
    seeds["gray16_4x4.png"] = pil_bytes(Image.new("I;16", (4, 4), 40000), "PNG")
    seeds["palette_8x6.png"] = pil_bytes(rgb.convert("P"), "PNG")
    seeds["rgb_8x6.bmp"] = pil_bytes(rgb, "BMP")
    seeds["core_2x2.bmp"] = bmp_core_header_2x2()
    seeds["lossy_8x6.webp"] = pil_bytes(rgb, "WEBP", quality=50)
    seeds["lossless_8x6.webp"] = pil_bytes(rgb, "WEBP", lossless=True)
    seeds["alpha_8x6.webp"] = pil_bytes(rgba, "WEBP", quality=50)  # VP8X + ALPH
    seeds["le_4x4.tif"] = pil_bytes(gray.resize((4, 4)), "TIFF")
    seeds["be_2x2.tif"] = tiff_big_endian_2x2()
    # Near-valid: a PNG cut after IHDR, a JPEG header without scan data.
    seeds["truncated.png"] = seeds["fashion_ankle_boot.png"][:33]
    jpg = seeds["rgb_8x6.jpg"]
    seeds["header_only.jpg"] = jpg[:jpg.index(b"\xff\xda")]
    for name, data in seeds.items():
        write("fuzz_image_probe", name, data)
        write("fuzz_preprocess", name, data)


# ---- fuzz_safetensors_header -----------------------------------------------------------

def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, raw bytes), written in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    f32 = struct.pack("<6f", *range(6))
    write("fuzz_safetensors_header", "f32_2x3.safetensors",
          safetensors([("weight", "F32", [2, 3], f32)]))
    write("fuzz_safetensors_header", "metadata.safetensors",
          safetensors([("bias", "BF16", [2], b"\x80\x3f\x00\x40"),
                       ("head.weight", "F16", [1, 2], b"\x00\x3c\x00\x40"),
                       ("pos_embed", "I64", [], struct.pack("<q", -1))],
                      metadata={"format": "pt", "note": "caf\u00e9 \\ \"q\""}))
    write("fuzz_safetensors_header", "all_dtypes.safetensors",
          safetensors([("a", "F64", [1], b"\0" * 8), ("b", "I32", [1], b"\0" * 4),
                       ("c", "U8", [3], b"abc"), ("d", "BOOL", [0], b""),
                       ("e", "F32", [1, 1, 1, 1], b"\0" * 4)]))
    write("fuzz_safetensors_header", "empty.safetensors", safetensors([], pad=False))
    # Near-valid: escapes in names, unsorted offsets, a gap, and a truncated data section.
    text = (b'{"w\\u00e9\\ud83d\\ude00":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},'
            b'"\\n":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}')
    write("fuzz_safetensors_header", "escapes_unsorted.safetensors",
          struct.pack("<Q", len(text)) + text + b"wxyz")
    gap = safetensors([("x", "F32", [1], b"\0" * 4)])
    write("fuzz_safetensors_header", "truncated_data.safetensors", gap[:-2])
    write("fuzz_safetensors_header", "model_head.safetensors",
          open(os.path.join(ROOT, "models", "fashion-vit", "model.safetensors"), "rb").read()[:2048])


# ---- fuzz_unpickler --------------------------------------------------------------------

def torch_data_pkl(obj):
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def pickle_seeds():
    import argparse as ap
    import torch
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 3)
    write("fuzz_unpickler", "state_dict.pkl", torch_data_pkl(lin.state_dict()))
    write("fuzz_unpickler", "dtypes.pkl", torch_data_pkl(OrderedDict(
        h=torch.zeros(2, dtype=torch.float16), b=torch.zeros(2, dtype=torch.bfloat16),
        d=torch.zeros(1, dtype=torch.float64), l=torch.arange(3), i=torch.zeros(1, dtype=torch.int32),
        t=torch.ones(2, dtype=torch.bool), u=torch.zeros(2, dtype=torch.uint8))))
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    write("fuzz_unpickler", "checkpoint_args.pkl", torch_data_pkl({
        "model": OrderedDict(w=base, view=base[1:, ::2], p=torch.nn.Parameter(torch.ones(2))),
        "args": ap.Namespace(lr=0.5, name="vit", depth=12, flags=[True, None]),
        "epoch": 3, "big": 2 ** 70, "neg": -(2 ** 40), "t": (1, 2.5, "x", b"y")}))
    write("fuzz_unpickler", "protocol4.pkl", pickle.dumps(
        {"list": [1, -2, 300, 70000, 2.5, "s" * 3, b"b", None, True, False],
         "nested": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)), "shared": [[0]] * 2},
        protocol=4))
    write("fuzz_unpickler", "protocol2.pkl", pickle.dumps(OrderedDict(a=1, b=[2]), protocol=2))
    write("fuzz_unpickler", "forbidden_global.pkl", pickle.dumps(os.system, protocol=2))


# ---- fuzz_model_spec -------------------------------------------------------------------

def model_spec_seeds():
    cfg = open(os.path.join(ROOT, "models", "fashion-vit", "config.pbtxt"), "rb").read()
    write("fuzz_model_spec", "fashion_vit.pbtxt", cfg)
    write("fuzz_model_spec", "minimal.pbtxt", b'weights: "model.safetensors"\n')
    write("fuzz_model_spec", "rgb_tnt.pbtxt", b"""# DeiT-Ti-like, every field spelled out
name: "fashion-vit" version: "2"
architecture { image_size: 32 patch_size: 8 in_chans: 3 embed_dim: 48 depth: 4 num_heads: 3
  mlp_ratio: 2.5 num_classes: 3 distilled: true }
preprocessing { resize: 36 crop_pct: 0.9 interpolation: "Bilinear"
  mean: [0.5, 0.5, 0.5] std: [0.25, 0.25, 0.25] invert: true }
pruning { method: "tnt" locations: [1, 3] default_keep_rate: 0.7 min_keep_rate: 0.5
  max_keep_rate: 0.9 tnt_seed: 7 }
weights: "model.safetensors" labels: "labels3.txt"
""")
    write("fuzz_model_spec", "trilevel.pbtxt", b"""architecture { depth: 12 }
pruning { method: "trilevel" attn_ratio: 0.5 }
weights: "./model.safetensors" calibration: "calibration.pbtxt"
""")
    write("fuzz_model_spec", "bad_traversal.pbtxt",
          b'weights: "../fashion-vit/model.safetensors" labels: "/etc/hostname"\n')
    write("fuzz_model_spec", "bad_divisible.pbtxt",
          b'architecture { embed_dim: 100 num_heads: 3 } weights: "model.safetensors"\n')
    calib = open(os.path.join(ROOT, "models", "fashion-vit", "calibration.pbtxt"), "rb").read()
    write("fuzz_model_spec", "calibration.txt", b"#calibration\n" + calib[:400])


# ---- fuzz_classify_request -------------------------------------------------------------

def classify_seeds():
    tmp = tempfile.mkdtemp()
    try:
        subprocess.check_call(["protoc", "--proto_path=" + os.path.join(ROOT, "proto"),
                               "--python_out=" + tmp, "vitserve/v1/inference.proto"])
        sys.path.insert(0, tmp)
        from vitserve.v1 import inference_pb2 as pb
        png = open(os.path.join(ROOT, "docs", "examples", "test0002_trouser.png"), "rb").read()
        reqs = {
            "image.bin": pb.ClassifyRequest(model="fashion-vit", image=png, top_k=3,
                                            request_id="r1"),
            "image_keep_rate.bin": pb.ClassifyRequest(image=png, keep_rate=0.5,
                                                      return_logits=True),
            "tensor_budget.bin": pb.ClassifyRequest(
                tensor=pb.Tensor(shape=[1, 1, 28, 28], data=[0.25] * 784),
                latency_budget_ms=20.0, min_keep_rate=0.4, priority=1),
            "small_tensor.bin": pb.ClassifyRequest(tensor=pb.Tensor(shape=[1, 2, 2],
                                                                    data=[1, 2, 3, 4])),
            "bad_keep_rate.bin": pb.ClassifyRequest(image=b"x", keep_rate=1.5),
            "bad_budget.bin": pb.ClassifyRequest(image=b"x", latency_budget_ms=float("nan")),
            "bad_priority.bin": pb.ClassifyRequest(image=b"x", priority=7, min_keep_rate=0.2),
            "no_input.bin": pb.ClassifyRequest(top_k=11),
        }
        for name, req in reqs.items():
            write("fuzz_classify_request", name, req.SerializeToString())
    finally:
        shutil.rmtree(tmp)


def hf_config_seeds():
    """First byte even: config.json; odd: preprocessor_config.json."""
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit",
              "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "image_size": 224, "patch_size": 16,
              "num_channels": 3, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
              "qkv_bias": True, "id2label": {"0": "cat", "1": "dog"}}
    write("fuzz_hf_config", "vit_config.json", b"\0" + json.dumps(config).encode())
    config.update(architectures=["DeiTForImageClassificationWithTeacher"], model_type="deit")
    write("fuzz_hf_config", "deit_config.json", b"\0" + json.dumps(config).encode())
    pre = {"do_resize": True, "size": {"height": 256, "width": 256}, "resample": 3,
           "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    write("fuzz_hf_config", "deit_preprocessor.json", b"\1" + json.dumps(pre).encode())
    pre.update(size={"shortest_edge": 256}, crop_size=224)
    write("fuzz_hf_config", "shortest_edge.json", b"\1" + json.dumps(pre).encode())


def main():
    argparse.ArgumentParser(description=__doc__).parse_args()
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    images()
    safetensors_seeds()
    pickle_seeds()
    model_spec_seeds()
    classify_seeds()
    hf_config_seeds()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
    print(f"corpus written to {CORPUS}: {total} bytes")


if __name__ == "__main__":
    main()
