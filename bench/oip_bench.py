#!/usr/bin/python3
"""Throughput at saturation through the Open Inference Protocol (inference.GRPCInferenceService
/ModelInfer) versus the native API (vitserve.v1.InferenceService/Classify), on ONE running
vitserve, with the same images and the same closed-loop concurrency, in interleaved rounds.

    bench/oip_bench.py --vitserve=build/server/vitserve [--rounds=5] [--seconds=8]
                       [--concurrency=16] [--out=bench/results/oip-cpu.md]

The model is bench/make_scheduler_bench_model.py's (64x64 RGB EViT, random weights, tens of
ms per image on one core) so that the server, not the Python client, is the bottleneck.
Both protocols send the same 16 PNG images (one image per request), ask for the logits and
run at the model's default keep-rate under --scheduler=fixed. Each round measures both
protocols for --seconds each, alternating which goes first; the report gives every
round's images/s (answers after the first --warmup seconds of each measurement), the
per-round ratio OIP/native, its median and spread (min..max). On a noisy machine use many
short rounds: the median of the per-round ratios is what to compare.
"""

import argparse
import datetime
import io
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "observability"))


def compile_protos(out_dir):
    subprocess.run(["protoc", f"--proto_path={ROOT}/proto", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    "inference/grpc_service.proto", "inference/model_config.proto",
                    "vitserve/v1/inference.proto"], check=True)
    sys.path.insert(0, out_dir)


def images(n, side):
    from PIL import Image
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def closed_loop(call, requests, concurrency, seconds, warmup=0.0):
    """Images/s answered by `concurrency` threads calling `call` back to back, counting the
    answers that arrive after the first `warmup` of `seconds` (the queue fills meanwhile)."""
    start = time.monotonic()
    begin = start + warmup
    stop = start + seconds
    counts = [0] * concurrency
    errors = []

    def worker(i):
        k = i
        while time.monotonic() < stop:
            try:
                call(requests[k % len(requests)])
                if time.monotonic() >= begin:
                    counts[i] += 1
            except Exception as e:  # noqa: BLE001 - any failure invalidates the run
                errors.append(e)
                return
            k += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"requests failed: {errors[0]}")
    return sum(counts) / (time.monotonic() - begin)


def cpu_info():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", out)
    flags = re.search(r"Flags:\s*(.+)", out)
    avx = sorted(f for f in (flags.group(1).split() if flags else []) if f.startswith("avx"))
    return (model.group(1).strip() if model else platform.processor()), " ".join(avx)


def emit(text, out):
    """Prints a report and, when `out` is set, writes it there too."""
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitserve", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds at the start of each measurement not counted")
    ap.add_argument("--out", default="")
    ap.add_argument("--model", choices=["bench_evit", "deit_tiny"], default="deit_tiny",
                    help="bench_evit: make_scheduler_bench_model.py's 64x64 model (~2 ms per "
                         "image here: stresses the protocol layer and the Python client); "
                         "deit_tiny: DeiT-Ti's shape (224x224, 16x16 patches, width 192, 12 "
                         "blocks, 3 heads; ~1.3 GMACs per image), random weights")
    args = ap.parse_args()

    import grpc
    import make_scheduler_bench_model  # noqa: F401  (scales model_repo up)
    import model_repo

    with tempfile.TemporaryDirectory(prefix="oip_bench_") as tmp:
        compile_protos(tmp)
        from inference import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc
        from vitserve.v1 import inference_pb2 as npb, inference_pb2_grpc as npb_grpc

        if args.model == "deit_tiny":
            model_repo.IMAGE_SIZE, model_repo.PATCH_SIZE = 224, 16
            model_repo.EMBED_DIM, model_repo.DEPTH, model_repo.NUM_HEADS = 192, 12, 3
        repo = os.path.join(tmp, "models")
        os.makedirs(repo)
        model_repo.write_model(repo, "bench_evit", "evit", default_keep_rate=0.7,
                               min_keep_rate=0.25, seed=1)
        server_cmd = [args.vitserve, f"--model_repository={repo}", "--host=127.0.0.1",
                      "--port=0", "--metrics_port=-1", "--scheduler=fixed", "--threads=1",
                      "--shadow_fraction=0"]
        proc = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        try:
            port = None
            for line in proc.stdout:
                m = re.match(r"vitserve listening on \S+:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            oip = pb_grpc.GRPCInferenceServiceStub(channel)
            native = npb_grpc.InferenceServiceStub(channel)
            imgs = images(16, model_repo.IMAGE_SIZE)
            native_reqs = [npb.ClassifyRequest(model="bench_evit", image=i, return_logits=True)
                           for i in imgs]
            oip_reqs = []
            for i in imgs:
                r = pb.ModelInferRequest(model_name="bench_evit")
                t = r.inputs.add(name="image", datatype="BYTES", shape=[1])
                t.contents.bytes_contents.append(i)
                oip_reqs.append(r)
            runs = {
                "native": lambda: closed_loop(lambda r: native.Classify(r, timeout=60),
                                              native_reqs, args.concurrency, args.seconds,
                                              args.warmup),
                "oip": lambda: closed_loop(lambda r: oip.ModelInfer(r, timeout=60), oip_reqs,
                                           args.concurrency, args.seconds, args.warmup),
            }
            for name in ("native", "oip"):  # warm-up, not reported
                closed_loop(lambda r: native.Classify(r, timeout=60) if name == "native"
                            else oip.ModelInfer(r, timeout=60),
                            native_reqs if name == "native" else oip_reqs, args.concurrency, 2)
            rows = []
            for k in range(args.rounds):
                order = ("native", "oip") if k % 2 == 0 else ("oip", "native")
                got = {name: runs[name]() for name in order}
                rows.append((k + 1, "/".join(order), got["native"], got["oip"],
                             got["oip"] / got["native"]))
                print(f"round {k + 1} ({'/'.join(order)}): native {got['native']:.1f} img/s, "
                      f"oip {got['oip']:.1f} img/s, ratio {got['oip'] / got['native']:.3f}",
                      flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    ratios = [r[4] for r in rows]
    model, avx = cpu_info()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    lines = [
        "# Open Inference Protocol vs native API: throughput at saturation (CPU)",
        "",
        f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- CPU: {model} ({os.cpu_count()} cores visible, shared with other work); ISA: {avx}",
        f"- Command: `bench/oip_bench.py --vitserve={os.path.relpath(args.vitserve, ROOT)} "
        f"--model={args.model} --rounds={args.rounds} --seconds={args.seconds:g} "
        f"--warmup={args.warmup:g} --concurrency={args.concurrency}`",
        f"- Server: `{' '.join(os.path.basename(a) if a.startswith('/') else a for a in server_cmd)}`",
        f"- Model: {args.model} (EViT at keep-rate 0.7, random weights; "
        f"{model_repo.IMAGE_SIZE}x{model_repo.IMAGE_SIZE} RGB, width {model_repo.EMBED_DIM}, "
        f"{model_repo.DEPTH} blocks); 16 PNG images, one per request, logits returned both ways; "
        f"{args.concurrency} closed-loop client threads (Python grpcio) on the same machine.",
        "",
        "| round | order | native img/s | OIP img/s | OIP / native |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.3f} |" for r in rows]
    lines += ["",
              f"Median OIP/native: **{statistics.median(ratios):.3f}** (spread "
              f"{min(ratios):.3f}..{max(ratios):.3f} over {len(ratios)} rounds); median "
              f"native {statistics.median(r[2] for r in rows):.1f} img/s, OIP "
              f"{statistics.median(r[3] for r in rows):.1f} img/s.", ""]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
