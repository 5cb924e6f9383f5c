#!/usr/bin/python3
"""Hugging Face checkpoints served end to end, against the timm model they were made from.

  1. makes tiny timm-layout ViT and distilled DeiT weights (tests/observability/model_repo.py)
     and converts them to Hugging Face layouts by the documented key mapping
     (docs/model-repository.md): hf_vit (ViTForImageClassification, model.safetensors),
     hf_deit (DeiTForImageClassification, model.safetensors) and hf_deit_teacher
     (DeiTForImageClassificationWithTeacher, a torch.save zip pytorch_model.bin), each with
     config.json (layer_norm_eps 1e-6, equal to timm's) and preprocessor_config.json, and
     NO config.pbtxt;
  2. starts `vitserve --model_repository=DIR --host=127.0.0.1 --port=0` (a real server on
     loopback);
  3. sends preprocessed tensors and PNG images (return_logits) and compares the logits with
     the timm model computed by the independent reference (tests/golden/reference.py):
     tensors directly, images after the Python pipeline the preprocessor_config.json
     describes (PIL resize to {height, width}, float64 rescale, normalize, as transformers'
     image processors do). Tolerance 1e-4;
  4. checks GetModelInfo: the labels from id2label and where each setting came from.

Usage: hf_checkpoint_test.py --repo_root=DIR --vitserve=PATH
"""

import argparse
import io
import json
import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "observability"))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import model_repo  # noqa: E402
import prometheus_e2e as e2e  # noqa: E402
import reference  # noqa: E402

TOLERANCE = 1e-4
LABELS = [f"class_{i}" for i in range(model_repo.NUM_CLASSES)]
CLASSES = {
    "hf_vit": "ViTForImageClassification",
    "hf_deit": "DeiTForImageClassification",
    "hf_deit_teacher": "DeiTForImageClassificationWithTeacher",
}
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
RESIZE_HW = (40, 36)   # squash size before the DeiT crop to image_size


def timm_weights(distilled, seed):
    w = model_repo.vit_weights(seed)
    if distilled:
        rng = np.random.default_rng(seed + 100)
        c, n = model_repo.EMBED_DIM, (model_repo.IMAGE_SIZE // model_repo.PATCH_SIZE) ** 2
        w["dist_token"] = rng.normal(0, 0.02, (1, 1, c)).astype(np.float32)
        w["pos_embed"] = rng.normal(0, 0.02, (1, n + 2, c)).astype(np.float32)
        w["head_dist.weight"] = rng.normal(0, 1 / np.sqrt(c), (model_repo.NUM_CLASSES, c))
        w["head_dist.bias"] = rng.normal(0, 0.02, model_repo.NUM_CLASSES)
        w = {k: np.asarray(v, dtype=np.float32) for k, v in w.items()}
    return w


def to_hf(w, hf_class):
    """timm keys -> Hugging Face keys (the inverse of docs/model-repository.md's table)."""
    p = "vit." if hf_class == "ViTForImageClassification" else "deit."
    c = model_repo.EMBED_DIM
    hf = {p + "embeddings.cls_token": w["cls_token"],
          p + "embeddings.position_embeddings": w["pos_embed"],
          p + "embeddings.patch_embeddings.projection.weight": w["patch_embed.proj.weight"],
          p + "embeddings.patch_embeddings.projection.bias": w["patch_embed.proj.bias"],
          p + "layernorm.weight": w["norm.weight"], p + "layernorm.bias": w["norm.bias"]}
    if "dist_token" in w:
        hf[p + "embeddings.distillation_token"] = w["dist_token"]
    for i in range(model_repo.DEPTH):
        t, h = f"blocks.{i}.", f"{p}encoder.layer.{i}."
        for j, part in enumerate(("query", "key", "value")):
            for kind in ("weight", "bias"):
                hf[f"{h}attention.attention.{part}.{kind}"] = \
                    w[f"{t}attn.qkv.{kind}"][j * c:(j + 1) * c]
        pairs = [("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                 ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                 ("mlp.fc2", "output.dense")]
        for src, dst in pairs:
            for kind in ("weight", "bias"):
                hf[f"{h}{dst}.{kind}"] = w[f"{t}{src}.{kind}"]
    heads = {"ViTForImageClassification": [("head", "classifier")],
             "DeiTForImageClassification": [("head", "classifier")],
             "DeiTForImageClassificationWithTeacher": [("head", "cls_classifier"),
                                                       ("head_dist", "distillation_classifier")]}
    for src, dst in heads[hf_class]:
        for kind in ("weight", "bias"):
            hf[f"{dst}.{kind}"] = w[f"{src}.{kind}"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in hf.items()}


def write_hf_dir(repo, name, w):
    hf_class = CLASSES[name]
    d = os.path.join(repo, name)
    os.makedirs(d)
    hf = to_hf(w, hf_class)
    if name == "hf_deit_teacher":   # the zip pickle path through the restricted unpickler
        torch.save({k: torch.from_numpy(v) for k, v in hf.items()},
                   os.path.join(d, "pytorch_model.bin"))
    else:
        model_repo.write_safetensors(os.path.join(d, "model.safetensors"), hf)
    config = {
        "architectures": [hf_class], "model_type": "vit" if "ViT" in hf_class else "deit",
        "hidden_size": model_repo.EMBED_DIM, "num_hidden_layers": model_repo.DEPTH,
        "num_attention_heads": model_repo.NUM_HEADS,
        "intermediate_size": model_repo.EMBED_DIM * model_repo.MLP_RATIO,
        "image_size": model_repo.IMAGE_SIZE, "patch_size": model_repo.PATCH_SIZE,
        "num_channels": model_repo.IN_CHANS, "layer_norm_eps": reference.VIT_LN_EPS,
        "hidden_act": "gelu", "qkv_bias": True, "hidden_dropout_prob": 0.0,
        "id2label": {str(i): l for i, l in enumerate(LABELS)},
        "label2id": {l: i for i, l in enumerate(LABELS)},
    }
    pre = {"do_resize": True, "resample": 2, "do_rescale": True,
           "rescale_factor": 0.00392156862745098, "do_normalize": True,
           "image_mean": MEAN, "image_std": STD}
    if name == "hf_vit":   # ViTImageProcessor: squash, no crop
        pre["size"] = {"height": model_repo.IMAGE_SIZE, "width": model_repo.IMAGE_SIZE}
    else:                  # DeiTImageProcessor: squash larger, then center crop (floor)
        pre.update(size={"height": RESIZE_HW[0], "width": RESIZE_HW[1]}, resample=3,
                   do_center_crop=True, crop_size={"height": model_repo.IMAGE_SIZE,
                                                   "width": model_repo.IMAGE_SIZE})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)


def expected_logits(name, w, images):
    sd = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).double() for k, v in w.items()}
    cfg = reference.ViTConfig(
        embed_dim=model_repo.EMBED_DIM, depth=model_repo.DEPTH, num_heads=model_repo.NUM_HEADS,
        num_classes=model_repo.NUM_CLASSES, patch_size=model_repo.PATCH_SIZE,
        image_size=model_repo.IMAGE_SIZE, in_chans=model_repo.IN_CHANS,
        mlp_ratio=float(model_repo.MLP_RATIO), distilled=name != "hf_vit")
    x = torch.from_numpy(images).double()
    if name == "hf_deit":   # distillation token in the sequence, classifier on CLS only
        tokens = reference._dense(reference.embed(x, sd, cfg), sd, cfg, None)
        normed = reference._ln(tokens, sd, "norm")
        return reference._linear(normed[:, 0], sd, "head").numpy()
    return reference.forward(sd, cfg, x, "dense", track_margins=False)[0].numpy()


def hf_pipeline(img, name):
    """transformers' ViT / DeiT image processor arithmetic, with PIL."""
    s = model_repo.IMAGE_SIZE
    if name == "hf_vit":
        img = img.resize((s, s), Image.BILINEAR)
        a = np.asarray(img)
    else:
        h, w = RESIZE_HW
        a = np.asarray(img.resize((w, h), Image.BICUBIC))
        top, left = (h - s) // 2, (w - s) // 2
        a = a[top:top + s, left:left + s]
    x = (a.astype(np.float64) * 0.00392156862745098).astype(np.float32)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1).copy()


def classify(stub, pb2, name, tensor=None, png=None):
    r = pb2.ClassifyRequest(model=name, keep_rate=1.0, return_logits=True, top_k=1)
    if png is not None:
        r.image = png
    else:
        r.tensor.shape.extend(tensor.shape)
        r.tensor.data.extend(tensor.ravel().tolist())
    return np.array(stub(r, timeout=30).logits, dtype=np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo_root", required=True)
    ap.add_argument("--vitserve", required=True)
    args = ap.parse_args()
    import grpc
    rng = np.random.default_rng(7)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        pb2 = e2e.compile_proto(args.repo_root, os.path.join(tmp, "py"))
        repo = os.path.join(tmp, "repo")
        weights = {"hf_vit": timm_weights(False, 1), "hf_deit": timm_weights(True, 2),
                   "hf_deit_teacher": timm_weights(True, 3)}
        for name, w in weights.items():
            write_hf_dir(repo, name, w)
        procs = e2e.Processes()
        try:
            server = procs.start("vitserve", [args.vitserve, f"--model_repository={repo}",
                                              "--host=127.0.0.1", "--port=0", "--metrics_port=0",
                                              "--threads=1", "--sweep_time_cap_s=2"],
                                 os.path.join(tmp, "vitserve.log"), read_stdout=True)
            port, _ = e2e.read_server_ports(server, e2e.SERVER_START_TIMEOUT_S)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = channel.unary_unary("/vitserve.v1.InferenceService/Classify",
                                       request_serializer=pb2.ClassifyRequest.SerializeToString,
                                       response_deserializer=pb2.ClassifyResponse.FromString)
            info_rpc = channel.unary_unary(
                "/vitserve.v1.InferenceService/GetModelInfo",
                request_serializer=pb2.GetModelInfoRequest.SerializeToString,
                response_deserializer=pb2.ModelInfo.FromString)
            shape = (model_repo.IN_CHANS, model_repo.IMAGE_SIZE, model_repo.IMAGE_SIZE)
            tensors = rng.normal(0, 1, size=(3,) + shape).astype(np.float32)
            pngs, piped = [], []
            for k in range(3):
                h, w = int(rng.integers(33, 90)), int(rng.integers(33, 90))
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                pngs.append((buf.getvalue(), img))
            for name, w in weights.items():
                want = expected_logits(name, w, tensors)
                for k in range(len(tensors)):
                    got = classify(stub, pb2, name, tensor=tensors[k])
                    err = float(np.abs(got - want[k]).max())
                    print(f"{name} tensor {k}: max |logit diff| {err:.2e}")
                    failures += err > TOLERANCE
                piped = np.stack([hf_pipeline(img, name) for _, img in pngs])
                want = expected_logits(name, w, piped)
                for k, (png, _) in enumerate(pngs):
                    got = classify(stub, pb2, name, png=png)
                    err = float(np.abs(got - want[k]).max())
                    print(f"{name} image {k}: max |logit diff| {err:.2e}")
                    failures += err > TOLERANCE
                info = info_rpc(pb2.GetModelInfoRequest(model=name), timeout=30)
                sources = {s.setting: s.source for s in info.sources}
                ok = (list(info.labels) == LABELS
                      and sources.get("architecture.norm_eps") == "config.json layer_norm_eps"
                      and "preprocessor_config.json" in sources.get("preprocessing.interpolation", "")
                      and info.architecture.distilled == (name != "hf_vit"))
                print(f"{name} GetModelInfo labels/sources: {'ok' if ok else 'WRONG'} {sources}")
                failures += not ok
        finally:
            procs.close()
    print("OK" if failures == 0 else f"{failures} failures")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
