#!/usr/bin/python3
"""Independent open-loop load client for vitserve (Python grpcio; shares no code with vitclient).

Stubs are generated at run time from proto/vitserve/v1/inference.proto with Debian's protoc and
grpc_python_plugin. Three measurements against a running server:

  light     sequential dense requests (keep_rate 1.0, no budget): median client latency
  capacity  closed loop, `--concurrency` dense requests in flight: completed requests per second
  run       open loop: Poisson arrivals at `--rate`, every request "server chooses" (keep_rate 0)
            with latency_budget_ms = --budget_ms AND a gRPC deadline of the same length (so the
            budget is end to end); optionally a one-thread CPU hog (a busy Python process)
            started --hog_at_s into the run and stopped at its end.

Classification of a run's requests (latency is client-measured, from just before the call to its
completion):
  refused   answered RESOURCE_EXHAUSTED, UNAVAILABLE, or DEADLINE_EXCEEDED with the server's
            "cannot be met" message (told at once, before its budget)
  admitted  everything else; "in budget" = OK and latency <= budget (a client-side deadline
            expiry is an admitted request that missed)

Usage:
  client.py light    --server HOST:PORT [--images DIR]
  client.py capacity --server HOST:PORT [--concurrency 8] [--seconds 5]
  client.py run      --server HOST:PORT --rate R --budget_ms B [--duration_s 20] [--hog_at_s 10]
                     [--seed 1] [--json_out FILE]
Every command prints one JSON object on stdout.
"""

import argparse
import glob
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_stubs():
    """Compiles the proto into a temporary directory and imports the generated modules."""
    out = tempfile.mkdtemp(prefix="vitserve_stubs_")
    proto_root = os.path.join(REPO, "proto")
    subprocess.run(["protoc", f"--proto_path={proto_root}", f"--python_out={out}",
                    f"--grpc_python_out={out}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    os.path.join(proto_root, "vitserve", "v1", "inference.proto")], check=True)
    sys.path.insert(0, out)
    from vitserve.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
    return inference_pb2, inference_pb2_grpc


def load_images(directory):
    paths = sorted(glob.glob(os.path.join(directory, "*.png")))
    if not paths:
        sys.exit(f"no PNG images in {directory}")
    return [open(p, "rb").read() for p in paths]


def connect(server):
    channel = grpc.insecure_channel(server)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


def light_latency(stub, pb2, images, count=40, warmup=5):
    """Median client latency of sequential dense requests, seconds."""
    samples = []
    for i in range(warmup + count):
        request = pb2.ClassifyRequest(image=images[i % len(images)], keep_rate=1.0, top_k=1)
        start = time.perf_counter()
        stub.Classify(request, timeout=10)
        if i >= warmup:
            samples.append(time.perf_counter() - start)
    return {"median_seconds": statistics.median(samples), "count": count}


def capacity(stub, pb2, images, concurrency, seconds, warmup_s=1.0):
    """Closed loop: `concurrency` dense requests in flight; completions per second."""
    lock = threading.Lock()
    state = {"done": 0, "errors": 0, "counting": False, "stop": False}
    finished = threading.Semaphore(0)

    def issue(i):
        request = pb2.ClassifyRequest(image=images[i % len(images)], keep_rate=1.0, top_k=1)
        future = stub.Classify.future(request, timeout=30)
        future.add_done_callback(lambda f, i=i: on_done(f, i))

    def on_done(future, i):
        with lock:
            if state["counting"]:
                if future.code() == grpc.StatusCode.OK:
                    state["done"] += 1
                else:
                    state["errors"] += 1
            stop = state["stop"]
        if stop:
            finished.release()
        else:
            issue(i + concurrency)

    for i in range(concurrency):
        issue(i)
    time.sleep(warmup_s)
    with lock:
        state["counting"] = True
    start = time.perf_counter()
    time.sleep(seconds)
    with lock:
        state["counting"] = False
        elapsed = time.perf_counter() - start
        state["stop"] = True
        done, errors = state["done"], state["errors"]
    for _ in range(concurrency):
        finished.acquire(timeout=30)
    return {"requests_per_second": done / elapsed, "completed": done, "errors": errors,
            "seconds": elapsed, "concurrency": concurrency}


class LoadSampler(threading.Thread):
    """Samples /proc/loadavg (1-minute) and the machine's busy CPU fraction every second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.stop = threading.Event()

    @staticmethod
    def cpu_times():
        fields = open("/proc/stat").readline().split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + values[4]
        return sum(values), idle

    def run(self):
        last = self.cpu_times()
        while not self.stop.wait(1.0):
            now = self.cpu_times()
            total, idle = now[0] - last[0], now[1] - last[1]
            last = now
            load1 = float(open("/proc/loadavg").read().split()[0])
            self.samples.append({"loadavg_1m": load1,
                                 "busy_fraction": 1.0 - idle / total if total else 0.0})


def open_loop(stub, pb2, images, rate, budget_ms, duration_s, seed, hog_at_s, deadline):
    """Poisson arrivals; returns per-request samples and the hog's start (seconds into the run)."""
    rng = random.Random(seed)
    budget_s = budget_ms / 1000.0
    samples = []
    lock = threading.Lock()
    pending = threading.Semaphore(0)
    hog = None
    hog_started = None
    sent = 0
    lag = []

    def on_done(future, send_at, start):
        latency = time.perf_counter() - start
        code = future.code()
        sample = {"t": send_at, "sent": start - begin, "latency": latency, "code": code.name}
        if code == grpc.StatusCode.OK:
            response = future.result()
            sample["keep_rate"] = response.keep_rate
            sample["server_total"] = response.timing.total_seconds
            sample["server_queue"] = response.timing.queue_seconds
            sample["server_compute"] = response.timing.compute_seconds
            sample["batch_size"] = response.batch_size
        else:
            sample["details"] = future.details() or ""
        with lock:
            samples.append(sample)
        pending.release()

    begin = time.perf_counter()
    begin_unix = time.time()
    next_at = 0.0
    try:
        while True:
            next_at += rng.expovariate(rate)
            if next_at >= duration_s:
                break
            if hog_at_s is not None and hog is None and next_at >= hog_at_s:
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                hog_started = time.perf_counter() - begin
            delay = begin + next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lag.append(max(0.0, -delay))
            request = pb2.ClassifyRequest(image=images[sent % len(images)], keep_rate=0.0,
                                          latency_budget_ms=budget_ms, top_k=1,
                                          request_id=str(sent))
            start = time.perf_counter()
            future = stub.Classify.future(request, timeout=budget_s if deadline else 30)
            future.add_done_callback(lambda f, t=next_at, s=start: on_done(f, t, s))
            sent += 1
        for _ in range(sent):
            pending.acquire(timeout=60)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    lag.sort()
    return samples, hog_started, {"p50": lag[len(lag) // 2] if lag else 0.0,
                                  "p99": lag[int(len(lag) * 0.99)] if lag else 0.0,
                                  "begin_unix": begin_unix}


def classify_sample(sample, budget_s):
    code = sample["code"]
    if code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        return "refused"
    if code == "DEADLINE_EXCEEDED" and "cannot be met" in sample.get("details", ""):
        return "refused"
    if code == "OK" and sample["latency"] <= budget_s:
        return "in_budget"
    return "missed"


def summarize(samples, budget_ms, since=None):
    budget_s = budget_ms / 1000.0
    chosen = [s for s in samples if since is None or s["t"] >= since]
    kinds = [classify_sample(s, budget_s) for s in chosen]
    refused = kinds.count("refused")
    admitted = len(chosen) - refused
    in_budget = kinds.count("in_budget")
    ok = [s for s in chosen if s["code"] == "OK"]
    latencies = sorted(s["latency"] for s in ok)
    codes = {}
    for s in chosen:
        codes[s["code"]] = codes.get(s["code"], 0) + 1
    return {
        "sent": len(chosen), "admitted": admitted, "refused": refused, "in_budget": in_budget,
        "missed": admitted - in_budget,
        "in_budget_of_admitted": in_budget / admitted if admitted else 0.0,
        "refused_fraction": refused / len(chosen) if chosen else 0.0,
        "mean_keep_rate": statistics.mean(s["keep_rate"] for s in ok) if ok else 0.0,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "codes": codes,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["light", "capacity", "run"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--images", default=os.path.join(REPO, "docs", "examples"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--budget_ms", type=float)
    parser.add_argument("--duration_s", type=float, default=20.0)
    parser.add_argument("--hog_at_s", type=float)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no_deadline", action="store_true",
                        help="send only latency_budget_ms, no gRPC deadline")
    parser.add_argument("--json_out")
    parser.add_argument("--samples_out", help="run: every request's sample as JSON lines")
    args = parser.parse_args()

    pb2, pb2_grpc = load_stubs()
    images = load_images(args.images)
    stub = pb2_grpc.InferenceServiceStub(connect(args.server))
    if args.command == "light":
        result = light_latency(stub, pb2, images)
    elif args.command == "capacity":
        result = capacity(stub, pb2, images, args.concurrency, args.seconds)
    else:
        if args.rate is None or args.budget_ms is None:
            sys.exit("run needs --rate and --budget_ms")
        sampler = LoadSampler()
        sampler.start()
        samples, hog_started, lag = open_loop(stub, pb2, images, args.rate, args.budget_ms,
                                              args.duration_s, args.seed, args.hog_at_s,
                                              deadline=not args.no_deadline)
        sampler.stop.set()
        sampler.join()
        if args.samples_out:
            with open(args.samples_out, "w") as f:
                for sample in sorted(samples, key=lambda x: x["t"]):
                    f.write(json.dumps(sample) + "\n")
        loads = sampler.samples
        result = {
            "rate": args.rate, "budget_ms": args.budget_ms, "duration_s": args.duration_s,
            "seed": args.seed, "deadline": not args.no_deadline, "hog_started_s": hog_started,
            "overall": summarize(samples, args.budget_ms),
            "client_send_lag_s": lag,
            "loadavg_1m_mean": statistics.mean(x["loadavg_1m"] for x in loads) if loads else None,
            "loadavg_1m_max": max(x["loadavg_1m"] for x in loads) if loads else None,
            "cpu_busy_mean": statistics.mean(x["busy_fraction"] for x in loads) if loads else None,
        }
        if hog_started is not None:
            result["after_hog_plus_5s"] = summarize(samples, args.budget_ms, hog_started + 5.0)
    text = json.dumps(result, indent=1)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
