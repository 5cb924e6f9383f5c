#!/usr/bin/python3
"""Writes the checkpoint test fixtures into OUT_DIR (run at test time, never committed).

Usage: /usr/bin/python3 make_fixtures.py OUT_DIR

Each loadable fixture NAME.{pth,safetensors} comes with an independent reference NAME.ref/:
manifest.txt lists "key<TAB>kind<TAB>d0,d1,...<TAB>file" per tensor of the expected state
dict (keys as the C++ loader must return them: 'module.' stripped) and of each extra dict
("extra:<dict>:<key>"); the files hold the values as raw little-endian float32 ("f32"),
int64 ("i64"), int32 ("i32"), uint8 ("u8") or bool bytes ("bool"). The reference is written
with numpy, not through any code path the C++ loader shares.
"""
import argparse
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch


def tiny_vit_state_dict(depth=12, dim=8, seed=0):
    """A timm-shaped ViT state dict from a real nn.Module (so it carries _metadata)."""
    torch.manual_seed(seed)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = torch.nn.LayerNorm(dim)
            self.attn = torch.nn.Module()
            self.attn.qkv = torch.nn.Linear(dim, 3 * dim)
            self.attn.proj = torch.nn.Linear(dim, dim)
            self.norm2 = torch.nn.LayerNorm(dim)
            self.mlp = torch.nn.Module()
            self.mlp.fc1 = torch.nn.Linear(dim, 4 * dim)
            self.mlp.fc2 = torch.nn.Linear(4 * dim, dim)

    class TinyViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = torch.nn.Parameter(torch.randn(1, 1, dim))
            self.pos_embed = torch.nn.Parameter(torch.randn(1, 5, dim))
            self.patch_embed = torch.nn.Module()
            self.patch_embed.proj = torch.nn.Conv2d(3, dim, 2, 2)
            self.blocks = torch.nn.ModuleList([Block() for _ in range(depth)])
            self.norm = torch.nn.LayerNorm(dim)
            # 300 classes: shapes > 255 exercise BININT2; 70000 below exercises BININT.
            self.head = torch.nn.Linear(dim, 300)
            self.register_buffer("big", torch.randn(70000))

    model = TinyViT()
    for p in model.parameters():  # LayerNorm weights are all ones by default: randomise
        torch.nn.init.normal_(p)
    return model, model.state_dict()


def write_ref(path, tensors, extra=None):
    """tensors: {key: torch.Tensor}; extra: {dict_name: {key: tensor}}."""
    os.makedirs(path, exist_ok=True)
    lines = []
    items = [(k, t) for k, t in tensors.items()]
    for name, d in (extra or {}).items():
        items += [("extra:%s:%s" % (name, k), t) for k, t in d.items()]
    for i, (key, t) in enumerate(items):
        t = t.detach()
        if t.is_floating_point():
            kind, arr = "f32", t.to(torch.float32).numpy().astype("<f4")
        elif t.dtype == torch.int64:
            kind, arr = "i64", t.numpy().astype("<i8")
        elif t.dtype == torch.int32:
            kind, arr = "i32", t.numpy().astype("<i4")
        elif t.dtype == torch.uint8:
            kind, arr = "u8", t.numpy().astype("u1")
        elif t.dtype == torch.bool:
            kind, arr = "bool", t.numpy().astype("u1")
        else:
            raise ValueError(t.dtype)
        fname = "%d.bin" % i
        with open(os.path.join(path, fname), "wb") as f:
            f.write(np.ascontiguousarray(arr).tobytes())
        lines.append("%s\t%s\t%s\t%s" % (key, kind, ",".join(str(d) for d in t.shape), fname))
    with open(os.path.join(path, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_safetensors_by_hand(path, tensors, metadata=None):
    """The safetensors format written directly (no safetensors package)."""
    codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
             torch.uint8: "U8", torch.bool: "BOOL"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: take the raw 16-bit words
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[key] = {"dtype": codes[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


class Evil:
    """Its pickle calls os.system: loading it must be refused, the command never run."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvilEval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class _StoragePlaceholder:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _ForgedTensor:
    """Pickles as torch's _rebuild_tensor_v2 call with arbitrary (possibly bad) geometry."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                self.args + (False, collections.OrderedDict()))


class _ForgingPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StoragePlaceholder):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def write_forged_archive(path, tensors, records):
    """A torch.save-layout zip whose data.pkl holds `tensors` ({key: _ForgedTensor}) and
    whose data/<key> records are `records` ({key: bytes})."""
    buf = io.BytesIO()
    _ForgingPickler(buf, protocol=2).dump(collections.OrderedDict(tensors))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, data in records.items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model, sd = tiny_vit_state_dict()

    # 1. A bare state dict (OrderedDict with _metadata), and its hand-written safetensors twin.
    torch.save(sd, os.path.join(out, "bare.pth"))
    write_ref(os.path.join(out, "bare.ref"), sd)
    write_safetensors_by_hand(os.path.join(out, "bare.safetensors"), sd,
                              {"format": "pt", "source": "make_fixtures.py"})

    # 2. A DeiT-style training checkpoint: model + argparse.Namespace + epoch + optimizer.
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.head(torch.randn(2, 8)).sum().backward()
    opt.step()
    wrapped = {"model": sd, "optimizer": opt.state_dict(),
               "args": argparse.Namespace(lr=0.1, model="deit_small", drop_path=None,
                                          input_size=(224, 224), seeds=[0, 1], big=2 ** 70),
               "epoch": 3, "max_accuracy": 79.8}
    torch.save(wrapped, os.path.join(out, "wrapped.pth"))
    write_ref(os.path.join(out, "wrapped.ref"), sd)

    # 3. {'state_dict': ...} with DDP 'module.' prefixes.
    ddp = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    torch.save({"state_dict": ddp, "epoch": 7}, os.path.join(out, "ddp.pth"))
    write_ref(os.path.join(out, "ddp.ref"), sd)

    # 4. SViTE-like: masked weights plus mask dicts at the top level.
    torch.manual_seed(1)
    atten = {"module.blocks.%d.attn.qkv.weight_mask" % i: (torch.rand(24, 8) > 0.5).float()
             for i in range(2)}
    other = {"module.blocks.0.mlp.fc1.weight_mask": (torch.rand(32, 8) > 0.5).float(),
             "module.blocks.0.mlp.fc2.weight_mask": (torch.rand(8, 32) > 0.5).float()}
    torch.save({"model": ddp, "atten_mask": atten, "other_mask": other, "epoch": 5},
               os.path.join(out, "svite.pth"))
    strip = lambda d: {k[len("module."):]: v for k, v in d.items()}
    write_ref(os.path.join(out, "svite.ref"), sd,
              {"atten_mask": strip(atten), "other_mask": strip(other)})

    # 5. Views sharing storages: offsets, transposes, strides, stride 0, scalars, fp16,
    #    bf16, double, integer and bool tensors, an empty tensor.
    torch.manual_seed(2)
    base = torch.randn(40)
    half = torch.randn(20).half()
    views = collections.OrderedDict()
    views["full"] = base
    views["offset"] = base[3:15].view(3, 4)
    views["transposed"] = base[3:15].view(3, 4).t()
    views["strided"] = base[::3]
    views["window"] = base.view(5, 8)[1:4, 2:6]
    views["scalar"] = base[7]
    views["expanded"] = base[:3].expand(4, 3)
    views["half_full"] = half
    views["half_view"] = half[2:10].view(2, 4).t()
    views["bf16"] = torch.randn(6).bfloat16()
    views["double"] = torch.randn(2, 3, dtype=torch.float64)
    views["long"] = torch.tensor([-(2 ** 40), 0, 7])
    views["int"] = torch.tensor([[3, -4]], dtype=torch.int32)
    views["byte"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    views["mask"] = torch.tensor([True, False, True])
    views["empty"] = torch.zeros(0, 3)
    torch.save({"model": views}, os.path.join(out, "views.pth"))
    write_ref(os.path.join(out, "views.ref"), views)

    # 6. A half-precision model, and one saved as nn.Parameters (_rebuild_parameter).
    sd_half = collections.OrderedDict((k, v.half()) for k, v in sd.items())
    torch.save(sd_half, os.path.join(out, "fp16.pth"))
    write_ref(os.path.join(out, "fp16.ref"), sd_half)
    params = collections.OrderedDict(model.named_parameters())
    torch.save(params, os.path.join(out, "params.pth"))
    write_ref(os.path.join(out, "params.ref"), params)

    # 7. Hostile files. The marker must never appear: the pickle's payload creates it.
    marker = os.path.join(out, "pwned_marker")
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"model": sd, "x": Evil("touch " + marker)}, os.path.join(out, "evil_system.pth"))
    torch.save({"model": sd, "x": EvilEval("__import__('os').system('touch %s')" % marker)},
               os.path.join(out, "evil_eval.pth"))
    # A pickled nn.Module: unpickling it imports and instantiates code.
    torch.save(torch.nn.Linear(2, 2), os.path.join(out, "full_module.pth"))

    # 8. Broken files.
    with open(os.path.join(out, "wrapped.pth"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "truncated.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(out, "notzip.pth"), "wb") as f:
        f.write(b"GIF89a this is not a checkpoint" + bytes(range(256)))
    torch.save(sd, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=0.1)},
               os.path.join(out, "no_state_dict.pth"))

    # 9. Archives whose tensors do not fit their storages (forged; torch.save never writes
    #    these). A well-formed forged archive first, to show the forging itself is sound.
    four = np.arange(4, dtype="<f4").tobytes()
    write_forged_archive(os.path.join(out, "forged_ok.pth"),
                         {"w": _ForgedTensor(_StoragePlaceholder("0", 4), 1, (3,), (1,))},
                         {"0": four})
    write_forged_archive(os.path.join(out, "forged_view_out_of_range.pth"),
                         {"w": _ForgedTensor(_StoragePlaceholder("0", 4), 0, (2, 3), (3, 1))},
                         {"0": four})
    write_forged_archive(os.path.join(out, "forged_record_size.pth"),
                         {"w": _ForgedTensor(_StoragePlaceholder("0", 8), 0, (8,), (1,))},
                         {"0": four})
    write_forged_archive(os.path.join(out, "forged_missing_record.pth"),
                         {"w": _ForgedTensor(_StoragePlaceholder("9", 4), 0, (4,), (1,))},
                         {"0": four})
    write_forged_archive(os.path.join(out, "forged_negative_stride.pth"),
                         {"w": _ForgedTensor(_StoragePlaceholder("0", 4), 3, (4,), (-1,))},
                         {"0": four})

    with open(os.path.join(out, "DONE"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main()
