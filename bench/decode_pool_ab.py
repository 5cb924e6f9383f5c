#!/usr/bin/python3
"""Two vitserve builds, A and B, on the native Classify path with PNG images, interleaved:
throughput at saturation (16 closed-loop clients) and at one client (1 / latency).

    bench/decode_pool_ab.py --a=BASE/build/server/vitserve --b=build/server/vitserve
                            [--rounds=4] [--seconds=6] [--out=bench/results/x.md]

Written for issue #21's decode pool (B decodes on --decode_threads threads instead of the
gRPC reaction). The model is bench/make_scheduler_bench_model.py's 64x64 EViT (a few ms per
image), so decoding is a visible share of each request. Each round starts each build's
server in turn (order alternating per round), measures c=16 then c=1 for --seconds each
(after 2 s unreported), and stops it. The report gives every run and the per-round ratios
B/A with their median and spread; compare only those ratios.
"""

import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import oip_bench  # noqa: E402  (compile_protos, images, closed_loop, cpu_info, emit; its path setup)


def serve(binary, repo):
    cmd = [binary, f"--model_repository={repo}", "--host=127.0.0.1", "--port=0",
           "--metrics_port=-1", "--scheduler=fixed", "--threads=1", "--shadow_fraction=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        m = re.match(r"vitserve listening on \S+:(\d+)", line)
        if m:
            return proc, int(m.group(1)), cmd
    raise RuntimeError(f"{binary} did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import grpc
    import make_scheduler_bench_model  # noqa: F401  (scales model_repo up)
    import model_repo

    rows = []
    with tempfile.TemporaryDirectory(prefix="decode_ab_") as tmp:
        oip_bench.compile_protos(tmp)
        from vitserve.v1 import inference_pb2 as npb, inference_pb2_grpc as npb_grpc
        repo = os.path.join(tmp, "models")
        os.makedirs(repo)
        model_repo.write_model(repo, "bench_evit", "evit", default_keep_rate=0.7,
                               min_keep_rate=0.25, seed=1)
        reqs = [npb.ClassifyRequest(model="bench_evit", image=i)
                for i in oip_bench.images(16, model_repo.IMAGE_SIZE)]
        cmd = None
        for k in range(args.rounds):
            order = ("a", "b") if k % 2 == 0 else ("b", "a")
            got = {}
            for build in order:
                proc, port, cmd = serve(getattr(args, build), repo)
                try:
                    stub = npb_grpc.InferenceServiceStub(
                        grpc.insecure_channel(f"127.0.0.1:{port}"))
                    call = lambda r: stub.Classify(r, timeout=60)  # noqa: E731
                    got[build] = tuple(
                        oip_bench.closed_loop(call, reqs, c, args.seconds + 2, warmup=2.0)
                        for c in (16, 1))
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
            row = (k + 1, "/".join(order), *got["a"], *got["b"],
                   got["b"][0] / got["a"][0], got["b"][1] / got["a"][1])
            rows.append(row)
            print("round %d (%s): A c16 %.1f c1 %.1f, B c16 %.1f c1 %.1f, B/A %.3f %.3f" % row,
                  flush=True)

    model, avx = oip_bench.cpu_info()
    load = open("/proc/loadavg").read().split()[:3]
    lines = [
        "# Decode pool A/B: native Classify with PNG images (CPU)",
        "",
        f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; load average at the end: "
        f"{' '.join(load)}",
        f"- CPU: {model} ({os.cpu_count()} cores visible, shared with other work); ISA: {avx}",
        f"- Command: `bench/decode_pool_ab.py --a={args.a} --b={args.b} --rounds={args.rounds} "
        f"--seconds={args.seconds:g}`",
        f"- Server: `{' '.join(os.path.basename(a) if a.startswith('/') else a for a in cmd)}`",
        f"- Model: bench_evit ({model_repo.IMAGE_SIZE}x{model_repo.IMAGE_SIZE} RGB EViT, "
        "keep-rate 0.7, random weights); 16 PNG images, one per request; Python grpcio "
        "closed-loop clients on the same machine.",
        "",
        "| round | order | A c=16 img/s | A c=1 img/s | B c=16 img/s | B c=1 img/s "
        "| B/A c=16 | B/A c=1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| %d | %s | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f |" % r for r in rows]
    for name, i in (("c=16", 6), ("c=1", 7)):
        ratios = [r[i] for r in rows]
        lines.append(f"\nB/A {name}: median {statistics.median(ratios):.3f} "
                     f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    oip_bench.emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
