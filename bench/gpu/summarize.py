#!/usr/bin/env python3
"""Writes $OUT/results.md for bench/gpu/run.sh from what its steps left behind.

Inputs: OUT/bench.jsonl (vitserve_bench, CUDA graphs on and off), OUT/eager.jsonl
(bench/eager_bench.py), OUT/e2e_keep*.json (vitclient bench), WORK/parity_*.txt (golden
cases), WORK/torch.sh and WORK/logs/env.log (machine), the status file (one line per step:
name verdict seconds). Missing inputs leave their section saying so.

Figures: realised speed-up = img/s over dense img/s at the same batch, beside the MACs ratio
(dense MACs over the configuration's); fraction of roofline = img/s x 2 x MACs / PEAK_FLOPS
(H100 SXM bf16 dense ~800 TFLOP/s, as measured on the lent machines); targets of issue 25.
"""

import argparse
import datetime
import json
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

PEAK_FLOPS = 800e12
TARGET_LATENCY_RATIO = 0.75  # keep-0.7 batch-1 latency over dense
TARGET_MACS_EFFICIENCY = 0.9  # realised speed-up over MACs ratio at batch >= 64
TARGET_OVER_EAGER = 1.5

Key = Tuple[str, Optional[float]]  # (method, keep_rate)


def read_jsonl(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_text(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


def shell_vars(path: str) -> Dict[str, str]:
    out = {}
    for line in read_text(path).splitlines():
        name, _, value = line.partition("=")
        out[name] = value.strip("'")
    return out


def key_of(rec: dict) -> Key:
    kr = rec.get("keep_rate")
    return rec["method"], None if kr is None else round(float(kr), 2)


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def machine_section(args, tv: Dict[str, str], env_log: str) -> List[str]:
    env_lines = env_log.splitlines()
    smi = [b for a, b in zip(env_lines, env_lines[1:]) if a.startswith("name, driver_version")]
    lines = [
        "# vitserve GPU run" + (" (CPU dry run)" if args.device == "cpu" else ""),
        "",
        f"- date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
        f"- GPU: {tv.get('GPU_NAME', '?')}; nvidia-smi (name, driver, memory, max SM clock): "
        f"{smi[0] if smi else 'n/a'}",
        f"- torch {tv.get('TORCH_VERSION', '?')}, CUDA {tv.get('TORCH_CUDA', '?')}, "
        f"C++ ABI {tv.get('TORCH_ABI', '?')}",
        f"- build: {read_text(os.path.join(args.work, 'build_mode')).strip() or '?'}",
        f"- commit: {args.commit}",
        f"- command: `{args.command}`",
        "- inputs: random weights, random N(0,1) images (speed does not depend on values); "
        "img/s of the timed runs after warm-up (and, with graphs on, after capture)",
        "",
    ]
    return lines


def status_section(path: str) -> List[str]:
    rows = [l.split() for l in read_text(path).splitlines() if l.strip()]
    return ["## Steps", ""] + table(["step", "result", "seconds"], rows) + [""]


def fp32_parity(text: str) -> str:
    passed = re.search(r"\[  PASSED  \] (\d+) test", text)
    failed = sorted(set(re.findall(r"\[  FAILED  \] (Cases/\S+)", text)))
    return (
        f"fp32 logits vs the float64 reference within 1e-3: "
        f"{passed.group(1) if passed else 0} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )


def bf16_parity(text: str) -> str:
    hits = re.findall(r"GOLDEN_TOP1 (\S+) (\d+) (\d+)", text)
    if not hits:
        return ""
    agree = sum(int(a) for _, a, _ in hits)
    total = sum(int(n) for _, _, n in hits)
    low = [f"{name} {a}/{n}" for name, a, n in hits if a != n]
    return (
        f"bf16 top-1 agreement with the reference: {agree}/{total} = "
        f"{100.0 * agree / total:.1f} % (target >= 99 %)"
        + (f"; disagreeing: {', '.join(low)}" if low else "")
    )


def parity_section(work: str) -> Tuple[List[str], List[str]]:
    out, summary = ["## Parity (golden fixtures, tests/golden)", ""], []
    for name, parse in (("fp32", fp32_parity), ("bf16", bf16_parity)):
        text = read_text(os.path.join(work, f"parity_{name}.txt"))
        line = parse(text) if text else ""
        out += [line or f"{name}: no output (step failed or skipped)", ""]
        if line:
            summary.append(line)
    return out, summary


def inprocess_section(bench: List[dict], eager: List[dict]):
    """Table of vitserve img/s (graphs on / off), speed-ups, roofline, eager ratio."""
    on = {(key_of(r), r["batch"]): r for r in bench if r.get("cuda_graphs", True)}
    off = {(key_of(r), r["batch"]): r for r in bench if not r.get("cuda_graphs", True)}
    eag = {(key_of(r), r["batch"]): r for r in eager}
    keys = sorted({k for k, _ in on} | {k for k, _ in off}, key=lambda k: (k[0] != "dense", k))
    batches = sorted({b for _, b in on} | {b for _, b in off})
    dense = ("dense", 1.0)
    rows = []
    for k in keys:
        for b in batches:
            r_on, r_off, r_e = on.get((k, b)), off.get((k, b)), eag.get((k, b))
            d_on = on.get((dense, b))
            ips = r_on["images_per_s"] if r_on else None
            gmacs = (r_on or r_off or {}).get("gmacs")
            d_gmacs = (d_on or {}).get("gmacs")
            rows.append(
                {
                    "key": k, "batch": b, "on": ips,
                    "off": r_off["images_per_s"] if r_off else None,
                    "eager": r_e["images_per_s"] if r_e else None,
                    "speedup": ips / d_on["images_per_s"] if ips and d_on else None,
                    "macs_ratio": d_gmacs / gmacs if gmacs and d_gmacs else None,
                    "roofline": ips * 2 * gmacs * 1e9 / PEAK_FLOPS if ips and gmacs else None,
                }
            )
    return rows


def fmt(v: Optional[float], spec: str = ".1f", suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def inprocess_table(rows) -> List[str]:
    header = ["method", "keep", "batch", "img/s graphs on", "img/s graphs off", "speed-up",
              "MACs ratio", "speed-up / MACs ratio", "% of 800 TFLOP/s", "PyTorch eager img/s",
              "vs eager"]
    body = []
    for r in rows:
        eff = r["speedup"] / r["macs_ratio"] if r["speedup"] and r["macs_ratio"] else None
        vs = r["on"] / r["eager"] if r["on"] and r["eager"] else None
        body.append([
            r["key"][0], fmt(r["key"][1], ".2f"), str(r["batch"]), fmt(r["on"]), fmt(r["off"]),
            fmt(r["speedup"], ".2f", "x"), fmt(r["macs_ratio"], ".2f", "x"), fmt(eff, ".2f"),
            fmt(None if r["roofline"] is None else 100 * r["roofline"], ".1f"), fmt(r["eager"]),
            fmt(vs, ".2f", "x"),
        ])
    return table(header, body)


def targets(rows) -> List[str]:
    """Issue 25's three targets, one line each."""
    out = []
    b1 = [r for r in rows if r["batch"] == 1 and r["key"][1] == 0.7 and r["speedup"]]
    if b1:
        worst = max(1 / r["speedup"] for r in b1)
        out.append(
            f"keep-0.7 batch-1 latency / dense: "
            + ", ".join(f"{r['key'][0]} {1 / r['speedup']:.2f}" for r in b1)
            + f" (target <= {TARGET_LATENCY_RATIO}: {'met' if worst <= TARGET_LATENCY_RATIO else 'NOT met'})"
        )
    big = [r for r in rows if r["batch"] >= 64 and r["key"][0] != "dense" and r["speedup"]
           and r["macs_ratio"]]
    if big:
        effs = [r["speedup"] / r["macs_ratio"] for r in big]
        out.append(
            f"realised speed-up / MACs ratio at batch >= 64: min {min(effs):.2f}, "
            f"median {sorted(effs)[len(effs) // 2]:.2f} (target >= {TARGET_MACS_EFFICIENCY}: "
            f"{'met' if min(effs) >= TARGET_MACS_EFFICIENCY else 'NOT met'})"
        )
    vs = [r["on"] / r["eager"] for r in rows if r["on"] and r["eager"]]
    if vs:
        out.append(
            f"vitserve / PyTorch eager: min {min(vs):.2f}x, max {max(vs):.2f}x over "
            f"{len(vs)} configurations (target >= {TARGET_OVER_EAGER}x at every batch: "
            f"{'met' if min(vs) >= TARGET_OVER_EAGER else 'NOT met'})"
        )
    return out


def e2e_section(out_dir: str, rows) -> List[str]:
    lines = ["## End to end (vitclient bench, tensor inputs, closed loop)", ""]
    found = False
    for keep, key in (("1.0", ("dense", 1.0)), ("0.7", ("evit", 0.7))):
        path = os.path.join(out_dir, f"e2e_keep{keep}.json")
        if not os.path.exists(path):
            continue
        found = True
        rep = json.load(open(path))
        lat = rep.get("latency_ok", {})
        conf = rep.get("config", {})
        batches = sorted(r["batch"] for r in rows if r["key"] == key and r["on"])
        inproc = max((r["on"] for r in rows if r["key"] == key and r["on"]), default=None)
        lines.append(
            f"- keep {keep}: {rep.get('throughput_rps', 0):.1f} img/s end to end "
            f"(concurrency {conf.get('concurrency', '?')}, p50 "
            f"{1000 * lat.get('p50_seconds', 0):.1f} ms, p99 {1000 * lat.get('p99_seconds', 0):.1f} ms,"
            f" errors {rep.get('errors', {})}); best in-process {key[0]} {key[1]} over batches "
            f"{batches}: {fmt(inproc)} img/s"
            + (f" -> {rep.get('throughput_rps', 0) / inproc:.2f} of in-process" if inproc else "")
        )
    if not found:
        lines.append("no output (step failed or skipped)")
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--command", default="bench/gpu/run.sh")
    ap.add_argument("--status", required=True)
    args = ap.parse_args()
    tv = shell_vars(os.path.join(args.work, "torch.sh"))
    env_log = read_text(os.path.join(args.work, "logs", "env.log"))
    lines = machine_section(args, tv, env_log) + status_section(args.status)
    parity, summary = parity_section(args.work)
    lines += parity
    bench = read_jsonl(os.path.join(args.out, "bench.jsonl"))
    rows = inprocess_section(bench, read_jsonl(os.path.join(args.out, "eager.jsonl")))
    shape = "DeiT-Tiny-sized, CPU" if args.device == "cpu" else "DeiT-S 224"
    dtypes = sorted({r.get("dtype") or "default" for r in bench})
    lines += [f"## In-process (vitserve_bench, {shape}, dtype {', '.join(dtypes) or '-'})", ""]
    lines += inprocess_table(rows) if rows else ["no output (step failed or skipped)"]
    lines += [""] + e2e_section(args.out, rows)
    summary += targets(rows)
    lines += ["## Summary", ""] + [f"- {s}" for s in summary] + [""]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
