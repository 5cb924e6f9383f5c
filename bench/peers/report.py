#!/usr/bin/python3
"""Turns bench/peers/run.sh's per-run JSON lines into bench/results/peers-cpu.md (stdout).

Input files in --runs: <impl>.<model>.t<threads>.r<round>.jsonl (one line per method and
batch: images_per_s, gmacs for vitserve) and sgemm.t<threads>.r<round>.json. Every cell is
the median over rounds with the min-max range; ratios are ratios of medians. GFLOP/s =
2 x the cost model's GMACs of the configuration (vitserve_bench's, the same algorithm for
all three implementations) x img/s; "% peak" divides by the median sgemm peak at the same
thread count.
"""

import argparse
import collections
import glob
import json
import os
import statistics

IMPLS = ("vitserve", "ort", "eager", "base")


def load(runs: str):
    ips = collections.defaultdict(list)  # (impl, model, method, threads, batch) -> [img/s]
    gmacs, tome_r, peaks = {}, {}, collections.defaultdict(list)
    for path in glob.glob(os.path.join(runs, "*.jsonl")):
        impl, model = os.path.basename(path).split(".")[:2]
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            key = (impl, model, r["method"], int(r["threads"]), int(r["batch"]))
            ips[key].append(float(r["images_per_s"]))
            if impl in ("vitserve", "base"):
                gmacs[(model, r["method"])] = float(r["gmacs"])
            if r.get("tome_r") is not None:
                tome_r[(impl, model)] = r["tome_r"]
    for path in glob.glob(os.path.join(runs, "sgemm.*.json")):
        s = json.load(open(path))
        peaks[s["threads"]].append(s)
    return ips, gmacs, tome_r, peaks


def cell(values) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def med(values):
    return statistics.median(values) if values else None


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    for flag in ("runs", "cpu", "isa", "commit", "command", "label", "ort", "torch", "load",
                 "pingpong"):
        ap.add_argument("--" + flag, default="")
    a = ap.parse_args()
    ips, gmacs, tome_r, peaks = load(a.runs)
    peak = {t: med([s["peak_gflops"] for s in v]) for t, v in peaks.items()}
    rounds = max((len(v) for v in ips.values()), default=0)
    print("# Peer benchmark, CPU: vitserve vs ONNX Runtime vs PyTorch eager\n")
    if a.label:
        print(f"**{a.label}**\n")
    print(f"- CPU: {a.cpu}; ISA flags: {a.isa}")
    print(f"- Commit: {a.commit}; date: {os.popen('date -u +%Y-%m-%dT%H:%M:%SZ').read().strip()};"
          f" load average at the end: {a.load}")
    print(f"- Command: `{a.command}`")
    if a.pingpong:
        print(f"- Core-to-core round trip before each round (bench/peers/core_pingpong.c, ns; "
              f"on a VM it shows whether the host put the vCPUs near or far apart): {a.pingpong}")
    print(f"- ONNX Runtime {a.ort} (onnxruntime-node, CPU EP, intra-op threads = threads, "
          f"sequential, all graph optimisations); PyTorch eager {a.torch} (Debian); "
          "vitserve = bench/vitserve_bench, single stream; base (if present) = BASELINE_BENCH, "
          "the same benchmark built from an earlier commit.")
    print("- deit_s: DeiT-S 224, random weights (fixed seed; vitserve_bench draws its own, speed "
          "does not depend on values). fashion-vit: models/fashion-vit (ORT/eager: its weights; "
          "vitserve_bench --config: its architecture and locations, random weights).")
    print("- Graphs for ORT and eager: bench/peers/peer_model.py, exported by export.py (opset "
          "14; ToMe opset 16 for scatter_add); DynamicViT/EViT fixed per-stage top-k + gather, "
          "ToMe fixed r, keep 0.7.")
    print(f"- {rounds} rounds, implementations interleaved; each cell: median img/s "
          "(min-max over rounds). % peak = 2 x GMACs x img/s / sgemm peak at that thread count.\n")
    print("## sgemm peak (2048³, same run)\n")
    print("| threads | oneDNN GFLOP/s | OpenBLAS GFLOP/s | peak used |")
    print("|---|---|---|---|")
    for t in sorted(peaks):
        one = [s["onednn_gflops"] for s in peaks[t] if s["onednn_gflops"]]
        blas = [s["openblas_gflops"] for s in peaks[t]]
        print(f"| {t} | {cell(one)} | {cell(blas)} | {peak[t]:.1f} |")
    models = sorted({k[1] for k in ips})
    for model in models:
        rs = ", ".join(f"{impl} {r}" for (impl, m), r in sorted(tome_r.items()) if m == model)
        print(f"\n## {model}\n")
        if rs:
            print(f"ToMe r: {rs}\n")
        base = any(k[0] == "base" and k[1] == model for k in ips)
        print("| method | threads | batch | vitserve img/s | ORT img/s | eager img/s | vitserve/ORT |"
              " vitserve/ORT dense | vitserve % peak | ORT % peak | eager % peak |"
              + (" base img/s | base/ORT | vitserve/base |" if base else ""))
        print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if base else ""))
        keys = sorted({k[2:] for k in ips if k[1] == model},
                      key=lambda k: (k[0] != "dense", k[0], k[1], k[2]))
        for method, t, b in keys:
            v = {impl: ips.get((impl, model, method, t, b), []) for impl in IMPLS}
            ort_dense = med(ips.get(("ort", model, "dense", t, b), []))
            g = gmacs.get((model, method))
            pct = []
            for impl in ("vitserve", "ort", "eager"):
                m = med(v[impl])
                pct.append(f"{100 * 2 * g * m / peak[t]:.0f} %" if g and m and peak.get(t) else "-")
            print(f"| {method} | {t} | {b} | {cell(v['vitserve'])} | {cell(v['ort'])} | "
                  f"{cell(v['eager'])} | {ratio(med(v['vitserve']), med(v['ort']))} | "
                  f"{'-' if method == 'dense' else ratio(med(v['vitserve']), ort_dense)} | "
                  + " | ".join(pct) + " |"
                  + (f" {cell(v['base'])} | {ratio(med(v['base']), med(v['ort']))} |"
                     f" {ratio(med(v['vitserve']), med(v['base']))} |" if base else ""))
        threads = sorted({k[3] for k in ips if k[1] == model})
        if len(threads) >= 2:
            lo, hi = threads[0], threads[-1]
            print(f"\n{model}: one batch on {hi} threads / {lo} thread (median img/s ratio)\n")
            print("| method | batch | vitserve | ORT | eager | base |")
            print("|---|---|---|---|---|---|")
            for method, b in sorted({(k[2], k[4]) for k in ips if k[1] == model}):
                row = [ratio(med(ips.get((i, model, method, hi, b), [])),
                             med(ips.get((i, model, method, lo, b), []))) for i in IMPLS]
                print(f"| {method} | {b} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
