#!/usr/bin/python3
"""End-to-end observability test: the real vitserve, real gRPC load, the real prometheus
binary with the repository's config and rules, and every query of every Grafana panel.

  1. writes a small model repository (model_repo.py) and starts
     `vitserve --model_repository=DIR --host=127.0.0.1 --port=0 --metrics_port=0`;
  2. starts `prometheus` on 127.0.0.1 with deploy/prometheus/prometheus.yml, changing only
     the scrape target (the server's metrics port), the intervals (1 s) and the rule path;
  3. drives load over gRPC (messages compiled from proto/ with protoc at test time; calls
     through grpcio's generic unary API): several keep-rates below 1.0, generous and
     impossible latency budgets, both models, invalid requests, an unknown model, and a
     burst that overflows the queue;
  4. runs `promtool check metrics` on the server's /metrics (must print nothing);
  5. checks through Prometheus's HTTP API that the target is up, the rules loaded, the
     $model variable lists both models, and that every panel query (with $model = .* and
     $__rate_interval = RATE_INTERVAL) returns series with finite values, at least one of
     them non-zero (except queue-depth / in-flight gauges, which are legitimately 0 when
     the server is idle at the scrape instants).

Every process is started on loopback, in its own session, with PR_SET_PDEATHSIG so it dies
with this script, and is killed in `finally`.
"""

import argparse
import concurrent.futures
import ctypes
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import yaml

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_repo  # noqa: E402

SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "5s"          # what Grafana's $__rate_interval would be at a 1 s scrape
SERVER_START_TIMEOUT_S = 120
PROMETHEUS_START_TIMEOUT_S = 30
HEALTH_TIMEOUT_S = 30
LOAD_SECONDS = 12
LOAD_THREADS = 4
SETTLE_SECONDS = 4            # scrapes after the load so the last rates are recorded
RPC_TIMEOUT_S = 10
KEEP_RATES = [0.3, 0.5, 0.7, 1.0, 0.0]   # 0 = the model's default
GENEROUS_BUDGET_MS = 5000.0
IMPOSSIBLE_BUDGET_MS = 0.001
# A small queue so that a burst overflows it (RESOURCE_EXHAUSTED, reason queue_full), one
# LibTorch thread because CI has 2 cores.
SERVER_FLAGS = ["--max_queue_size=2", "--max_batch_size=8", "--threads=1"]
BURST_REQUESTS = 400          # >> max_queue_size
# Panel queries over pure gauges that may read 0 at every scrape instant.
ZERO_ALLOWED = ("vitserve_queue_depth", "vitserve_in_flight_requests")
CLASSIFY = "/vitserve.v1.InferenceService/Classify"

PR_SET_PDEATHSIG = 1


def die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Started processes, killed (whole session) on close()."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, read_stdout=False):
        log = open(log_path, "w")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if read_stdout else log, stderr=log,
                             text=True, start_new_session=True, preexec_fn=die_with_parent)
        p.name, p.log_path = name, log_path
        self.procs.append((p, log))
        return p

    def close(self):
        for p, _ in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p, log in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
            log.close()


def tail(path, lines=30):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def read_server_ports(proc, timeout_s):
    """Parses 'vitserve listening on HOST:PORT' and 'vitserve metrics on HOST:PORT'."""
    ports = {}
    lines = []
    deadline = time.monotonic() + timeout_s

    def reader():
        for line in proc.stdout:
            lines.append(line)
            m = re.match(r"vitserve (listening|metrics) on (\S+):(\d+)\s*$", line)
            if m:
                ports[m.group(1)] = int(m.group(3))
            if len(ports) == 2:
                break
        # keep draining stdout so the server never blocks on a full pipe
        for line in proc.stdout:
            pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    while len(ports) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if len(ports) < 2:
        raise RuntimeError(f"vitserve did not print both ports within {timeout_s} s "
                           f"(exit {proc.poll()}); stdout: {''.join(lines)!r}\n"
                           f"stderr:\n{tail(proc.log_path)}")
    return ports["listening"], ports["metrics"]


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_until(what, fn, timeout_s, interval=0.25):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what} ({last})")


def compile_proto(repo_root, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(["protoc", f"--proto_path={os.path.join(repo_root, 'proto')}",
                    f"--python_out={out_dir}",
                    os.path.join(repo_root, "proto", "vitserve", "v1", "inference.proto")],
                   check=True, timeout=60)
    sys.path.insert(0, out_dir)
    from vitserve.v1 import inference_pb2  # noqa: E402
    return inference_pb2


def validate_configs(pb2, repo):
    """Fails early, with a clear message, if the generated config is not a ModelConfig."""
    from google.protobuf import text_format
    for path in glob.glob(os.path.join(repo, "*", "config.pbtxt")):
        with open(path) as f:
            text_format.Parse(f.read(), pb2.ModelConfig())
        with open(os.path.join(os.path.dirname(path), "calibration.pbtxt")) as f:
            text_format.Parse(f.read(), pb2.CalibrationCurve())


class Load:
    """Drives the mix of requests the dashboards need, and counts what came back."""

    def __init__(self, pb2, port):
        import grpc
        self.grpc = grpc
        self.pb2 = pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.classify = self.channel.unary_unary(
            CLASSIFY, request_serializer=pb2.ClassifyRequest.SerializeToString,
            response_deserializer=pb2.ClassifyResponse.FromString)
        self.codes = {}
        self.keep_rates = set()
        self.lock = threading.Lock()
        rng = np.random.default_rng(0)
        shape = (model_repo.IN_CHANS, model_repo.IMAGE_SIZE, model_repo.IMAGE_SIZE)
        self.images = [rng.normal(0, 1, size=shape).astype(np.float32) for _ in range(8)]

    def request(self, model, image, keep_rate=0.0, budget_ms=0.0, shape=None):
        r = self.pb2.ClassifyRequest(model=model, keep_rate=keep_rate,
                                     latency_budget_ms=budget_ms, top_k=3)
        r.tensor.shape.extend(shape or image.shape)
        r.tensor.data.extend(image.ravel().tolist())
        return r

    def call(self, request):
        try:
            response = self.classify(request, timeout=RPC_TIMEOUT_S)
            code = "OK"
            with self.lock:
                self.keep_rates.add(round(response.keep_rate, 3))
        except self.grpc.RpcError as e:
            code = e.code().name
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
        return code

    def steady(self, seconds, worker):
        """Budgeted requests at several keep-rates on both models, plus a few failures."""
        deadline = time.monotonic() + seconds
        i = worker
        while time.monotonic() < deadline:
            image = self.images[i % len(self.images)]
            keep = KEEP_RATES[i % len(KEEP_RATES)]
            self.call(self.request("tiny_evit", image, keep, GENEROUS_BUDGET_MS))
            if i % 3 == 0:
                self.call(self.request("tiny_dense", image, 0.0, GENEROUS_BUDGET_MS))
            if i % 7 == 0:   # budget that cannot be met: DEADLINE_EXCEEDED, budget missed
                self.call(self.request("tiny_evit", image, 0.5, IMPOSSIBLE_BUDGET_MS))
            if i % 11 == 0:  # wrong tensor shape: INVALID_ARGUMENT
                self.call(self.request("tiny_evit", image, 0.5, 0.0, shape=[3, 16, 64]))
            if i % 13 == 0:  # unknown model: NOT_FOUND, counted as model="_unknown"
                self.call(self.request("no_such_model", image))
            i += LOAD_THREADS

    def burst(self):
        """More concurrent requests than the queue holds: some RESOURCE_EXHAUSTED."""
        futures = [self.classify.future(self.request("tiny_evit", self.images[k % 8], 1.0),
                                        timeout=RPC_TIMEOUT_S)
                   for k in range(BURST_REQUESTS)]
        for f in futures:
            try:
                f.result()
                code = "OK"
            except self.grpc.RpcError as e:
                code = e.code().name
            with self.lock:
                self.codes[code] = self.codes.get(code, 0) + 1

    def run(self):
        with concurrent.futures.ThreadPoolExecutor(LOAD_THREADS) as pool:
            steady = [pool.submit(self.steady, LOAD_SECONDS, w) for w in range(LOAD_THREADS)]
            time.sleep(LOAD_SECONDS / 2)
            self.burst()
            for f in steady:
                f.result()
        self.channel.close()


def prometheus_config(repo_root, out_dir, metrics_port, prom_port):
    with open(os.path.join(repo_root, "deploy", "prometheus", "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL,
                            scrape_timeout=SCRAPE_INTERVAL)
    config["rule_files"] = [os.path.join(repo_root, "deploy", "prometheus", r)
                            for r in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["vitserve"]["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics_port}"]
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
    path = os.path.join(out_dir, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def panel_queries(repo_root):
    for path in sorted(glob.glob(os.path.join(repo_root, "deploy", "grafana", "dashboards",
                                              "*.json"))):
        with open(path) as f:
            dash = json.load(f)
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", RATE_INTERVAL)
                expr = expr.replace("$model", ".*")
                yield (f"{os.path.basename(path)} / {panel['title']} / {t['refId']}", expr,
                       t.get("instant", False))


def finite_values(result, instant):
    values = []
    for series in result:
        points = [series["value"]] if instant else series["values"]
        values += [float(v) for _, v in points if math.isfinite(float(v))]
    return values


def check_panels(prom, repo_root, start, end):
    problems, checked = [], 0
    for where, expr, instant in panel_queries(repo_root):
        if "$" in expr:
            problems.append(f"{where}: unsubstituted variable in {expr}")
            continue
        if instant:
            url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": end})
        else:
            url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
                {"query": expr, "start": start, "end": end, "step": "1"})
        reply = http_json(url)
        checked += 1
        if reply.get("status") != "success":
            problems.append(f"{where}: query failed: {reply}")
            continue
        values = finite_values(reply["data"]["result"], instant)
        if not reply["data"]["result"]:
            problems.append(f"{where}: no series for {expr}")
        elif not values:
            problems.append(f"{where}: only NaN/Inf values for {expr}")
        elif not any(v != 0 for v in values) and not any(z in expr for z in ZERO_ALLOWED):
            problems.append(f"{where}: every value is 0 for {expr}")
    return problems, checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo_root", required=True)
    ap.add_argument("--vitserve", required=True)
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--vitclient", default="",
                    help="if given, also runs the Docker HEALTHCHECK command against the server")
    ap.add_argument("--server_flag", action="append", default=[],
                    help="extra vitserve flag, e.g. --server_flag=--max_queue_size=16")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    args = ap.parse_args()
    repo_root = os.path.abspath(args.repo_root)

    tmp = tempfile.mkdtemp(prefix="vitserve_obs_")
    procs = Processes()
    try:
        pb2 = compile_proto(repo_root, os.path.join(tmp, "gen"))
        models_dir = os.path.join(tmp, "models")
        models = model_repo.write_repository(models_dir)
        validate_configs(pb2, models_dir)

        server = procs.start("vitserve", [
            args.vitserve, f"--model_repository={models_dir}", "--host=127.0.0.1",
            "--port=0", "--metrics_port=0"] + SERVER_FLAGS + args.server_flag, os.path.join(tmp, "vitserve.log"),
            read_stdout=True)
        grpc_port, metrics_port = read_server_ports(server, SERVER_START_TIMEOUT_S)
        print(f"vitserve: gRPC 127.0.0.1:{grpc_port}, metrics 127.0.0.1:{metrics_port}")
        problems = []
        if args.vitclient:
            # What deploy/docker/Dockerfile.* run as HEALTHCHECK (there on port 8500).
            # Polled like the HEALTHCHECK's start period: SERVING may follow warm-up.
            deadline = time.monotonic() + HEALTH_TIMEOUT_S
            while True:
                health = subprocess.run(
                    [args.vitclient, "health", f"--server=127.0.0.1:{grpc_port}"],
                    capture_output=True, text=True, timeout=30)
                if health.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if health.returncode != 0:
                problems.append(f"vitclient health exited {health.returncode}: "
                                f"{health.stdout} {health.stderr}")

        prom_port = free_port()
        prom = f"http://127.0.0.1:{prom_port}"
        config = prometheus_config(repo_root, tmp, metrics_port, prom_port)
        procs.start("prometheus", [
            args.prometheus, f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            os.path.join(tmp, "prometheus.log"))
        wait_until("prometheus ready",
                   lambda: urllib.request.urlopen(f"{prom}/-/ready", timeout=2).status == 200,
                   PROMETHEUS_START_TIMEOUT_S)
        wait_until("first vitserve scrape", lambda: any(
            t["labels"]["job"] == "vitserve" and t["health"] == "up"
            for t in http_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]),
            PROMETHEUS_START_TIMEOUT_S)

        start = time.time()
        load = Load(pb2, grpc_port)
        load.run()
        print(f"load: codes {load.codes}, keep-rates seen {sorted(load.keep_rates)}")
        time.sleep(SETTLE_SECONDS)
        end = time.time()

        # The load itself must have exercised what the panels show.
        for code in ("OK", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "NOT_FOUND",
                     "RESOURCE_EXHAUSTED"):
            if not load.codes.get(code):
                problems.append(f"load produced no {code} answers: {load.codes}")
        if not any(0 < k < 1 for k in load.keep_rates):
            problems.append(f"no answer ran at a keep-rate below 1.0: {load.keep_rates}")

        targets = http_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
        if not all(t["health"] == "up" for t in targets):
            problems.append(f"targets not all up: {[(t['scrapeUrl'], t['health']) for t in targets]}")
        groups = http_json(f"{prom}/api/v1/rules")["data"]["groups"]
        if {g["name"] for g in groups} != {"vitserve.recording", "vitserve.alerts"}:
            problems.append(f"rule groups loaded: {[g['name'] for g in groups]}")
        bad_rules = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
        if bad_rules:
            problems.append(f"rules failing to evaluate: {bad_rules}")
        # The real server's /metrics after load passes the linter with no output at all.
        exposition = urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
        lint = subprocess.run([args.promtool, "check", "metrics"], input=exposition,
                              capture_output=True, timeout=60)
        if lint.returncode != 0 or lint.stdout or lint.stderr:
            problems.append(f"promtool check metrics on vitserve /metrics: exit "
                            f"{lint.returncode}: {(lint.stdout + lint.stderr).decode()}")
        # SLO accounting: a DEADLINE_EXCEEDED answer is by definition a missed budget or
        # deadline, whether it expired in the queue or was refused at admission; otherwise
        # attainment and the SLO alert overstate how well budgets are kept.
        reply = http_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode(
            {"query": 'sum(vitserve_latency_budget_total{outcome="missed"})', "time": end}))
        missed = sum(float(r["value"][1]) for r in reply["data"]["result"])
        if missed < load.codes.get("DEADLINE_EXCEEDED", 0):
            problems.append(f"vitserve_latency_budget_total{{outcome=\"missed\"}} is {missed:.0f}, "
                            f"but {load.codes['DEADLINE_EXCEEDED']} requests were answered "
                            "DEADLINE_EXCEEDED")
        # The dashboards' $model variable: label_values(vitserve_model_info, model).
        names = http_json(f"{prom}/api/v1/label/model/values?" + urllib.parse.urlencode(
            {"match[]": "vitserve_model_info"}))["data"]
        if sorted(names) != models:
            problems.append(f"$model variable would list {names}, expected {models}")

        panel_problems, checked = check_panels(prom, repo_root, start, end)
        problems += panel_problems
        print(f"checked {checked} panel queries")
        for p in problems:
            print("FAIL:", p)
        if problems:
            print("vitserve stderr (tail):\n" + tail(os.path.join(tmp, "vitserve.log")))
            print("prometheus log (tail):\n" + tail(os.path.join(tmp, "prometheus.log")))
            return 1
        print("all panel queries returned data")
        return 0
    finally:
        procs.close()
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
