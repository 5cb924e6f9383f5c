#!/usr/bin/python3
"""Image input vs the PIL pipeline, through a real server: for every golden case
(tests/golden/cases.txt, fixture from make_golden.py), serve the case's model, send the
three fixture PNGs as `image` and their timm/PIL transform (image_inputs.safetensors) as
`tensor`, and count top-1 disagreements and the largest logit difference.

Run it against two vitserve binaries (e.g. before / after issue #23) to see the effect of
the resampler. bench/results/image-parity.md has the results.

Usage: image_parity.py --repo_root=DIR --fixture=DIR --vitserve=PATH [--vitserve=PATH ...]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "observability"))
import prometheus_e2e as e2e  # noqa: E402

CONFIG = """architecture {{ image_size: 224 patch_size: 16 in_chans: 3 embed_dim: {c}
  depth: {depth} num_heads: {heads} num_classes: {classes} distilled: {distilled} }}
pruning {{ method: "{method}" {locations} default_keep_rate: 1.0 min_keep_rate: 0.1
  max_keep_rate: 1.0 {attn} }}
weights: "{weights}"
"""


def read_safetensors_images(path):
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    h = header["images"]
    a, b = h["data_offsets"]
    return np.frombuffer(data[a:b], dtype="<f4").reshape(h["shape"])


def write_repo(fixture, repo):
    cases = []
    with open(os.path.join(fixture, "manifest.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            (name, method, kr, weights, _inp, _exp, c, depth, heads, classes, distilled,
             locs, attn, _r) = line
            d = os.path.join(repo, name)
            os.makedirs(d)
            os.symlink(os.path.abspath(os.path.join(fixture, weights)), os.path.join(d, weights))
            loc_text = "" if locs == "-" else " ".join(f"locations: {v}" for v in locs.split(","))
            attn_text = f"attn_ratio: {attn}" if float(attn) > 0 else ""
            with open(os.path.join(d, "config.pbtxt"), "w") as out:
                out.write(CONFIG.format(c=c, depth=depth, heads=heads, classes=classes,
                                        distilled="true" if distilled == "1" else "false",
                                        method=method, locations=loc_text, attn=attn_text,
                                        weights=weights))
            cases.append((name, float(kr)))
    return cases


def measure(binary, repo, cases, pngs, tensors, pb2, tmp):
    import grpc
    procs = e2e.Processes()
    rows = []
    try:
        server = procs.start("vitserve", [binary, f"--model_repository={repo}", "--host=127.0.0.1",
                                          "--port=0", "--metrics_port=0", "--threads=1",
                                          "--sweep_time_cap_s=1", "--sweep_repeats=1"],
                             os.path.join(tmp, "vitserve.log"), read_stdout=True)
        port, _ = e2e.read_server_ports(server, 600)
        stub = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
            "/vitserve.v1.InferenceService/Classify",
            request_serializer=pb2.ClassifyRequest.SerializeToString,
            response_deserializer=pb2.ClassifyResponse.FromString)
        for name, kr in cases:
            for k, png in enumerate(pngs):
                r = pb2.ClassifyRequest(model=name, keep_rate=kr, return_logits=True, image=png)
                got = np.array(stub(r, timeout=60).logits)
                r = pb2.ClassifyRequest(model=name, keep_rate=kr, return_logits=True)
                r.tensor.shape.extend(tensors[k].shape)
                r.tensor.data.extend(tensors[k].ravel().tolist())
                want = np.array(stub(r, timeout=60).logits)
                rows.append((name, k, int(got.argmax() != want.argmax()),
                             float(np.abs(got - want).max())))
    finally:
        procs.close()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo_root", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--vitserve", action="append", required=True)
    args = ap.parse_args()
    pngs = []
    for k in range(3):
        with open(os.path.join(args.fixture, f"image_{k}.png"), "rb") as f:
            pngs.append(f.read())
    tensors = read_safetensors_images(os.path.join(args.fixture, "image_inputs.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        pb2 = e2e.compile_proto(args.repo_root, os.path.join(tmp, "py"))
        repo = os.path.join(tmp, "repo")
        cases = write_repo(args.fixture, repo)
        for binary in args.vitserve:
            rows = measure(binary, repo, cases, pngs, tensors, pb2, tmp)
            flips = [r for r in rows if r[2]]
            print(f"{binary}: {len(rows)} (case, image) pairs, top-1 differs on {len(flips)}, "
                  f"max |logit diff| {max(r[3] for r in rows):.3g}, "
                  f"median {np.median([r[3] for r in rows]):.3g}")
            for name, k, _, d in flips:
                print(f"  top-1 differs: {name} image_{k} (max |logit diff| {d:.3g})")


if __name__ == "__main__":
    sys.exit(main())
