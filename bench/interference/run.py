#!/usr/bin/python3
"""Interference benchmark driver (not a test): vitserve + the independent Python client (client.py).

Per repeat, on a fresh server each time (so no run inherits another's learned state):
  1. capacity: client.py capacity (closed loop, dense, 8 in flight; the median of three 5-s
     windows) and client.py light (median latency of sequential dense requests);
     budget = 4 x light latency, rate = multiple x capacity
  2. conditions (each on a fresh server, --duration_s seconds, --seed = repeat):
       2x       Python client at 2 x capacity
       2x-hog   the same with a one-thread CPU hog from 10 s into the run
       0.5x     Python client at 0.5 x capacity
       vitclient  `vitclient bench` at 2 x capacity, same budget, the PNG images
     A condition ending in -noguard (e.g. 2x-noguard) runs the server with
     --budget_miss_target=0: no latency guard, the scheduler as before issue #24.
The server's vitserve_latency_budget_total and vitserve_rejections_total are scraped before and
after each run (cross-check of the client's counts). Each run records the 1-minute load average
and the busy CPU fraction: the machine is shared, and that is interference too.

Usage: bench/interference/run.py --build BUILD_DIR [--repeats 3] [--duration_s 20]
         [--conditions 2x,2x-hog,0.5x,vitclient] [--out_dir DIR] [--server_flags "..."]
         [--capacity_rps R --budget_ms B]   (pin the load instead of measuring it)
Prints a markdown table; every run's JSON lands in --out_dir.
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
PY = "/usr/bin/python3"


class Server:
    def __init__(self, vitserve, flags, log_prefix):
        self.stdout = open(log_prefix + ".stdout", "w+")
        self.stderr = open(log_prefix + ".stderr", "w+")
        cmd = [vitserve, f"--model_repository={os.path.join(REPO, 'models')}", "--host=127.0.0.1",
               "--port=0", "--metrics_port=0"] + flags
        self.process = subprocess.Popen(cmd, stdout=self.stdout, stderr=self.stderr)
        self.address = self.metrics = None
        for _ in range(1200):
            self.stdout.seek(0)
            text = self.stdout.read()
            grpc_match = re.search(r"^vitserve listening on (\S+)", text, re.M)
            metrics_match = re.search(r"^vitserve metrics on (\S+)", text, re.M)
            if grpc_match and metrics_match:
                self.address, self.metrics = grpc_match.group(1), metrics_match.group(1)
                return
            if self.process.poll() is not None:
                self.stderr.seek(0)
                sys.exit("vitserve exited:\n" + self.stderr.read())
            time.sleep(0.1)
        sys.exit("vitserve did not start")

    def counters(self):
        """Budget and rejection counters, summed over models."""
        text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r'(vitserve_latency_budget_total|vitserve_rejections_total)\{([^}]*)\} (\S+)',
                         line)
            if m:
                label = re.search(r'(outcome|reason)="([^"]*)"', m.group(2)).group(2)
                key = f"{m.group(1)}:{label}"
                out[key] = out.get(key, 0.0) + float(m.group(3))
        for name in ("vitserve_latency_safety_factor", "vitserve_budget_reserve_ratio",
                     "vitserve_budget_miss_ratio"):
            m = re.search(rf"^{name}\{{[^}}]*\}} (\S+)", text, re.M)
            if m:
                out[name] = float(m.group(1))
        return out

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def client(command, server, *extra):
    result = subprocess.run([PY, os.path.join(HERE, "client.py"), command, f"--server={server}",
                             *extra], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def delta(after, before):
    """Counter increases during the run (gauges left out)."""
    return {k: after[k] - before.get(k, 0.0) for k in after if ":" in k}


def run_vitclient(build, server, rate, budget_ms, duration_s, seed, out_json):
    subprocess.run([os.path.join(build, "client", "vitclient"), "bench", f"--server={server}",
                    f"--rate={rate}", f"--budget_ms={budget_ms}", "--keep_rate=0",
                    f"--duration_s={duration_s}", f"--seed={seed}", "--progress=false",
                    f"--timeout_ms={int(budget_ms)}",
                    f"--input={os.path.join(REPO, 'docs', 'examples')}", f"--json_out={out_json}"],
                   check=False, capture_output=True, text=True)
    report = json.load(open(out_json))
    sent, admitted = report["sent"], report["admitted"]
    return {"overall": {"sent": sent, "admitted": admitted, "refused": sent - admitted,
                        "in_budget": report["slo_met"],
                        "in_budget_of_admitted": report["slo_attainment_admitted"],
                        "refused_fraction": (sent - admitted) / sent if sent else 0.0,
                        "mean_keep_rate": report["mean_keep_rate"],
                        "codes": report["errors_by_code"]}}


def one_run(args, condition, repeat, plan, log_prefix):
    flags = shlex.split(args.server_flags)
    if condition.endswith("-noguard"):  # the same without the latency guard (the "before")
        flags.append("--budget_miss_target=0")
        condition = condition[: -len("-noguard")]
    server = Server(os.path.join(args.build, "server", "vitserve"), flags, log_prefix)
    try:
        if plan is None and args.capacity_rps:  # pinned (A/B comparisons at one load)
            plan = {"capacity_rps": args.capacity_rps, "light_ms": args.budget_ms / 4,
                    "budget_ms": args.budget_ms}
        if plan is None:  # first run of the repeat: measure capacity and light latency here
            # Three 5-s windows, the median: one window swung 400-500 req/s between repeats
            # on the 2-core VM (bench/results/interference-cpu.md), and the offered rate of
            # every condition is a multiple of it.
            caps = [client("capacity", server.address, "--concurrency=8", "--seconds=5")
                    ["requests_per_second"] for _ in range(3)]
            light = client("light", server.address)
            plan = {"capacity_rps": statistics.median(caps), "capacity_windows_rps": caps,
                    "light_ms": 1000 * light["median_seconds"]}
            plan["budget_ms"] = round(4 * plan["light_ms"], 1)
        multiple = 0.5 if condition == "0.5x" else 2.0
        rate = round(multiple * plan["capacity_rps"], 1)
        before = server.counters()
        load_before = open("/proc/loadavg").read().split()[0]
        out_json = f"{log_prefix}.json"
        if condition == "vitclient":
            result = run_vitclient(args.build, server.address, rate, plan["budget_ms"],
                                   args.duration_s, repeat, out_json)
        else:
            extra = [f"--rate={rate}", f"--budget_ms={plan['budget_ms']}",
                     f"--duration_s={args.duration_s}", f"--seed={repeat}", f"--json_out={out_json}"]
            if condition == "2x-hog":
                extra.append(f"--hog_at_s={args.hog_at_s}")
            if args.trace:
                extra.append(f"--samples_out={log_prefix}.samples.jsonl")
            result = client("run", server.address, *extra)
        time.sleep(0.5)
        after = server.counters()
        result["server_counters"] = delta(after, before)
        result["server_guard"] = {k: after.get(k) for k in ("vitserve_latency_safety_factor",
                                                             "vitserve_budget_reserve_ratio",
                                                             "vitserve_budget_miss_ratio")}
        result["loadavg_before"] = float(load_before)
        result["loadavg_after"] = float(open("/proc/loadavg").read().split()[0])
        result.update({"condition": os.path.basename(log_prefix).rsplit("-", 1)[0],
                       "repeat": repeat, "rate": rate, "plan": plan, "server_flags": flags})
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1)
        return result, plan
    finally:
        server.stop()


def row(r):
    o = r["overall"]
    c = r["server_counters"]
    after = r.get("after_hog_plus_5s")
    load = r.get("loadavg_1m_mean")
    guard = r.get("server_guard", {})
    factor, reserve = (guard.get("vitserve_latency_safety_factor"),
                       guard.get("vitserve_budget_reserve_ratio"))
    busy = r.get("cpu_busy_mean")
    return "| {cond} | {rep} | {rate:.0f} | {budget} | {sent} | {adm:.2f} % | {late} | {ref:.2f} % | {keep:.3f} | {srv} | {load} | {busy} | {guard} |".format(
        cond=r["condition"], rep=r["repeat"], rate=r["rate"], budget=r["plan"]["budget_ms"],
        sent=o["sent"], adm=100 * o["in_budget_of_admitted"],
        late=f"{100 * after['in_budget_of_admitted']:.2f} %" if after else "-",
        ref=100 * o["refused_fraction"], keep=o["mean_keep_rate"],
        srv="met {:.0f} / missed {:.0f} / refused {:.0f}".format(
            c.get("vitserve_latency_budget_total:met", 0),
            c.get("vitserve_latency_budget_total:missed", 0),
            c.get("vitserve_rejections_total:budget_unmeetable", 0)),
        load="{:.2f}→{:.2f}{}".format(r["loadavg_before"], r["loadavg_after"],
                                      f" (mean {load:.2f})" if load is not None else ""),
        busy=f"{busy:.2f}" if busy is not None else "-",
        guard=f"{factor:.2f} / {reserve:.2f}" if factor is not None and reserve is not None else "-")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(REPO, "build"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration_s", type=float, default=20.0)
    parser.add_argument("--hog_at_s", type=float, default=10.0)
    parser.add_argument("--conditions", default="2x,2x-hog,0.5x,vitclient")
    parser.add_argument("--server_flags", default="")
    parser.add_argument("--capacity_rps", type=float,
                        help="skip the measurement: use this capacity and --budget_ms")
    parser.add_argument("--budget_ms", type=float)
    parser.add_argument("--trace", action="store_true",
                        help="the Python client writes every request to <out_dir>/<run>.samples.jsonl")
    parser.add_argument("--out_dir", default=tempfile.mkdtemp(prefix="interference_"))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"out_dir {args.out_dir}", file=sys.stderr)
    print("| condition | repeat | rate (req/s) | budget ms | sent | in budget, of admitted | "
          "of admitted, from hog + 5 s | refused | mean keep | server: budget met / missed / "
          "refused unmeetable | load avg 1 m | busy CPU | guard F / ρ at the end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for repeat in range(1, args.repeats + 1):
        plan = None
        for condition in args.conditions.split(","):
            result, plan = one_run(args, condition, repeat, plan,
                                   os.path.join(args.out_dir, f"{condition}-{repeat}"))
            if condition == args.conditions.split(",")[0]:
                windows = "/".join(f"{c:.0f}" for c in plan.get("capacity_windows_rps", []))
                print(f"<!-- repeat {repeat}: capacity {plan['capacity_rps']:.1f} req/s"
                      f"{f' (median of {windows})' if windows else ''}, light "
                      f"{plan['light_ms']:.1f} ms -->", flush=True)
            print(row(result), flush=True)


if __name__ == "__main__":
    main()
