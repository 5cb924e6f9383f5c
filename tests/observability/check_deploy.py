#!/usr/bin/python3
"""Static checks of deploy/, docker-compose.yml and docs/monitoring.md (no Docker engine,
no cluster needed). Each check is one CTest test:

    check_deploy.py REPO_ROOT CHECK [VITSERVE_BINARY]

CHECK is one of: parse, kubernetes, kserve, dashboards, metric_names, dockerfiles,
compose_files, flags. Exits non-zero with the list of problems when a check fails.
"""

import glob
import json
import os
import re
import subprocess
import sys

import yaml

sys.dont_write_bytecode = True  # importing generate_dashboards must not write to the tree

# Which server flags a manifest may use is decided by the real binary (check "flags").
FLAG_RE = re.compile(r"--([a-z][a-z0-9_]*)")
METRIC_RE = re.compile(r"\bvitserve_[a-z0-9_]+")
# Suffixes Prometheus adds to histogram and counter series.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rel(root, path):
    return os.path.relpath(path, root)


def yaml_files(root):
    files = glob.glob(os.path.join(root, "deploy", "**", "*.y*ml"), recursive=True)
    files.append(os.path.join(root, "docker-compose.yml"))
    return sorted(files)


def json_files(root):
    return sorted(glob.glob(os.path.join(root, "deploy", "**", "*.json"), recursive=True))


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_parse(root):
    """Every YAML and JSON file under deploy/ (and docker-compose.yml) parses, and YAML
    embedded in ConfigMaps parses too."""
    problems = []
    count = 0
    for path in yaml_files(root):
        try:
            docs = load_yaml_docs(path)
            count += 1
        except yaml.YAMLError as e:
            problems.append(f"{rel(root, path)}: {e}")
            continue
        if not docs:
            problems.append(f"{rel(root, path)}: empty")
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        try:
                            yaml.safe_load(text)
                        except yaml.YAMLError as e:
                            problems.append(f"{rel(root, path)}: data.{key}: {e}")
    for path in json_files(root):
        try:
            with open(path) as f:
                json.load(f)
            count += 1
        except ValueError as e:
            problems.append(f"{rel(root, path)}: {e}")
    if count < 10:
        problems.append(f"only {count} files found: is REPO_ROOT right?")
    return problems


def k8s_docs(root):
    for path in sorted(glob.glob(os.path.join(root, "deploy", "kubernetes", "*.yaml"))):
        for doc in load_yaml_docs(path):
            yield path, doc


def containers(doc):
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return spec.get("containers") or []


def check_kubernetes(root):
    """Every manifest has apiVersion, kind and metadata.name; server Deployments use native
    gRPC probes with a startup probe; the HPA targets a Deployment that exists and metrics the
    adapter config defines; the kustomization lists files that exist."""
    problems = []
    deployments, adapter_metrics, hpa_metrics = set(), set(), []
    server_deployments = 0
    for path, doc in k8s_docs(root):
        where = f"{rel(root, path)} ({doc.get('kind')} {(doc.get('metadata') or {}).get('name')})"
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{where}: no {field}")
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(f"{where}: no metadata.name")
        kind = doc.get("kind")
        if kind == "Deployment":
            deployments.add(doc["metadata"]["name"])
            for c in containers(doc):
                if not str(c.get("image", "")).startswith("vitserve:"):
                    continue
                server_deployments += 1
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "grpc" not in (c.get(probe) or {}):
                        problems.append(f"{where}: {probe} is not a native grpc probe")
                resources = c.get("resources") or {}
                if not resources.get("requests") or not resources.get("limits"):
                    problems.append(f"{where}: container {c.get('name')} lacks requests/limits")
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            hpa_metrics += [(m["pods"]["metric"]["name"], target["name"])
                            for m in doc["spec"]["metrics"] if m.get("type") == "Pods"]
            if not hpa_metrics:
                problems.append(f"{where}: no Pods metrics")
        if kind == "ConfigMap" and "config.yaml" in (doc.get("data") or {}):
            rules = yaml.safe_load(doc["data"]["config.yaml"]).get("rules") or []
            adapter_metrics |= {r["name"]["as"] for r in rules}
        if kind == "Kustomization":
            for res in doc.get("resources") or []:
                if not os.path.exists(os.path.join(os.path.dirname(path), res)):
                    problems.append(f"{where}: resource {res} does not exist")
        if kind == "Service" and (doc.get("spec") or {}).get("clusterIP") == "None":
            ports = {p.get("name") for p in doc["spec"].get("ports") or []}
            if not {"grpc", "metrics"} <= ports:
                problems.append(f"{where}: headless Service must expose grpc and metrics")
    for metric, target in hpa_metrics:
        if metric not in adapter_metrics:
            problems.append(f"HPA metric {metric} is not defined by the prometheus-adapter rules")
        if target not in deployments:
            problems.append(f"HPA targets Deployment {target}, which no manifest defines")
    if server_deployments < 2:
        problems.append(f"expected a CPU and a GPU server Deployment, found {server_deployments}")
    return problems


def kserve_docs(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "deploy", "kserve", "*.yaml"))):
        for doc in load_yaml_docs(path):
            out.setdefault(doc.get("kind"), []).append((path, doc))
    return out


def arg_value(args, flag):
    for a in args:
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
    return None


def check_kserve(root):
    """deploy/kserve: a ClusterServingRuntime for vitserve (model format, protocolVersions v2
    and grpc-v2, ports that match the server's flags, Prometheus annotations on the metrics
    port, /v2/health probes), an InferenceService that selects it, and an HPA on the
    predictor Deployment with metrics the prometheus-adapter rules define."""
    problems = []
    docs = kserve_docs(root)
    runtimes = docs.get("ClusterServingRuntime", [])
    services = docs.get("InferenceService", [])
    if len(runtimes) != 1 or not services:
        return [f"expected one ClusterServingRuntime and an InferenceService in deploy/kserve, "
                f"found {len(runtimes)} and {len(services)}"]
    path, rt = runtimes[0]
    where = f"{rel(root, path)} (ClusterServingRuntime)"
    spec = rt.get("spec") or {}
    if rt.get("apiVersion") != "serving.kserve.io/v1alpha1":
        problems.append(f"{where}: apiVersion must be serving.kserve.io/v1alpha1")
    formats = {f.get("name") for f in spec.get("supportedModelFormats") or []}
    if not formats:
        problems.append(f"{where}: no supportedModelFormats")
    if not {"v2", "grpc-v2"} <= set(spec.get("protocolVersions") or []):
        problems.append(f"{where}: protocolVersions must list v2 and grpc-v2")
    c = (spec.get("containers") or [{}])[0]
    args = c.get("args") or []
    if not str(c.get("image", "")).startswith("vitserve:"):
        problems.append(f"{where}: container image is not vitserve")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    wanted = {"http1": arg_value(args, "http_port"), "h2c": arg_value(args, "port"),
              "metrics": arg_value(args, "metrics_port")}
    for name, flag in wanted.items():
        if flag is None or str(ports.get(name)) != flag:
            problems.append(f"{where}: port {name} ({ports.get(name)}) does not match the "
                            f"server flag ({flag})")
    annotations = spec.get("annotations") or {}
    if str(annotations.get("prometheus.kserve.io/port")) != str(wanted["metrics"]):
        problems.append(f"{where}: prometheus.kserve.io/port must be the --metrics_port")
    if annotations.get("prometheus.kserve.io/path") != "/metrics":
        problems.append(f"{where}: prometheus.kserve.io/path must be /metrics")
    for probe, path_ in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        got = ((c.get(probe) or {}).get("httpGet") or {})
        if got.get("path") != path_ or str(got.get("port")) != str(wanted["http1"]):
            problems.append(f"{where}: {probe} must GET {path_} on the HTTP port")
    predictors = set()
    for path, isvc in services:
        w = f"{rel(root, path)} (InferenceService {isvc['metadata'].get('name')})"
        model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
        if (model.get("modelFormat") or {}).get("name") not in formats:
            problems.append(f"{w}: modelFormat is not one the runtime supports")
        if model.get("runtime") != rt["metadata"]["name"]:
            problems.append(f"{w}: runtime is not {rt['metadata']['name']}")
        if model.get("protocolVersion", "v1") not in (spec.get("protocolVersions") or []):
            problems.append(f"{w}: protocolVersion is not one the runtime speaks")
        mode = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        if mode != "RawDeployment":
            problems.append(f"{w}: needs RawDeployment (two ports, external HPA)")
        predictors.add(f"{isvc['metadata']['name']}-predictor")
    adapter = set()
    for _, doc in k8s_docs(root):
        if doc.get("kind") == "ConfigMap" and "config.yaml" in (doc.get("data") or {}):
            rules = yaml.safe_load(doc["data"]["config.yaml"]).get("rules") or []
            adapter |= {r["name"]["as"] for r in rules}
    hpas = docs.get("HorizontalPodAutoscaler", [])
    if not hpas:
        problems.append("deploy/kserve: no HorizontalPodAutoscaler for the predictor")
    for path, hpa in hpas:
        w = f"{rel(root, path)} (HorizontalPodAutoscaler)"
        if hpa["spec"]["scaleTargetRef"]["name"] not in predictors:
            problems.append(f"{w}: does not target an InferenceService predictor {predictors}")
        names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m.get("type") == "Pods"]
        if not names:
            problems.append(f"{w}: no Pods metrics")
        for n in names:
            if n not in adapter:
                problems.append(f"{w}: metric {n} is not defined by the prometheus-adapter rules")
    return problems


def dashboard_targets(root):
    for path in sorted(glob.glob(os.path.join(root, "deploy", "grafana", "dashboards", "*.json"))):
        with open(path) as f:
            dash = json.load(f)
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                yield path, dash, panel, t


def check_dashboards(root):
    """The committed dashboards are what generate_dashboards.py writes; every panel has a
    query on the provisioned datasource; only $model and $__rate_interval are used; the
    provisioning files point where docker-compose.yml mounts the dashboards."""
    problems = []
    sys.path.insert(0, os.path.join(root, "deploy", "grafana"))
    import generate_dashboards  # noqa: E402
    for name, build in generate_dashboards.DASHBOARDS.items():
        path = os.path.join(root, "deploy", "grafana", "dashboards", name)
        with open(path) as f:
            if f.read() != generate_dashboards.render(build):
                problems.append(f"{rel(root, path)} differs from generate_dashboards.py output; "
                                "run /usr/bin/python3 deploy/grafana/generate_dashboards.py")
    with open(os.path.join(root, "deploy", "grafana", "provisioning", "datasources",
                           "prometheus.yaml")) as f:
        uids = {d["uid"] for d in yaml.safe_load(f)["datasources"]}
    titles = set()
    for path, dash, panel, t in dashboard_targets(root):
        where = f"{rel(root, path)}: panel '{panel['title']}'"
        titles.add((path, panel["title"]))
        if t["datasource"]["uid"] not in uids:
            problems.append(f"{where}: datasource uid {t['datasource']['uid']} not provisioned")
        for var in re.findall(r"\$\{?(\w+)", t["expr"]):
            if var not in ("model", "__rate_interval"):
                problems.append(f"{where}: unexpected variable ${var}")
    for path in glob.glob(os.path.join(root, "deploy", "grafana", "dashboards", "*.json")):
        with open(path) as f:
            dash = json.load(f)
        for panel in dash["panels"]:
            if not panel.get("targets"):
                problems.append(f"{rel(root, path)}: panel '{panel['title']}' has no query")
        if len({p["id"] for p in dash["panels"]}) != len(dash["panels"]):
            problems.append(f"{rel(root, path)}: duplicate panel ids")
    with open(os.path.join(root, "deploy", "grafana", "provisioning", "dashboards",
                           "vitserve.yaml")) as f:
        provider = yaml.safe_load(f)["providers"][0]
    compose = load_yaml_docs(os.path.join(root, "docker-compose.yml"))[0]
    mounts = compose["services"]["grafana"]["volumes"]
    if f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" not in mounts:
        problems.append(f"grafana: provider path {provider['options']['path']} is not where "
                        "docker-compose.yml mounts deploy/grafana/dashboards")
    if len(titles) < 20:
        problems.append(f"only {len(titles)} panels found")
    return problems


def base_metric(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_metric_names(root):
    """Every vitserve_* series that the dashboards, rules, rule tests and the HPA adapter
    query is defined in server/metrics/*.cc (the families in metric_families.cc, the
    resident-memory collector in server_metrics.cc), and every metric defined there is
    documented in docs/monitoring.md."""
    problems = []
    source = ""
    for path in sorted(glob.glob(os.path.join(root, "server", "metrics", "*.cc"))):
        with open(path) as f:
            source += f.read()
    defined = set(re.findall(r'"(vitserve_[a-z0-9_]+)"', source))
    if len(defined) < 25:
        problems.append(f"only {len(defined)} metric names found in server/metrics/*.cc")
    used = {}
    sources = (glob.glob(os.path.join(root, "deploy", "grafana", "dashboards", "*.json")) +
               glob.glob(os.path.join(root, "deploy", "prometheus", "**", "*.yml"),
                         recursive=True) +
               [os.path.join(root, "deploy", "kubernetes", "prometheus-adapter.yaml")])
    for path in sources:
        with open(path) as f:
            text = f.read()
        # Recording-rule names use colons (vitserve:...), so they never match METRIC_RE.
        for name in METRIC_RE.findall(text):
            used.setdefault(base_metric(name), set()).add(rel(root, path))
    for name, paths in sorted(used.items()):
        if name not in defined and name not in (
                # adapter output names, not scraped series
                "vitserve_queue_delay_p95_seconds", "vitserve_latency_budget_missed_per_second"):
            problems.append(f"{name} (used in {', '.join(sorted(paths))}) is not exported")
    with open(os.path.join(root, "docs", "monitoring.md")) as f:
        doc = f.read()
    for name in sorted(defined):
        if f"`{name}" not in doc:
            problems.append(f"{name} is not documented in docs/monitoring.md")
    return problems


def dockerfile_instructions(path):
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def check_dockerfiles(root):
    """Multi-stage, non-root, health-checked with vitclient, the documented ports."""
    problems = []
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        path = os.path.join(root, "deploy", "docker", name)
        lines = dockerfile_instructions(path)
        froms = [l for l in lines if l.upper().startswith("FROM ")]
        if len(froms) < 2:
            problems.append(f"{name}: not multi-stage")
        users = [l for l in lines if l.upper().startswith("USER ")]
        if not users or users[-1].split()[1].split(":")[0] in ("root", "0"):
            problems.append(f"{name}: final USER is not an unprivileged user")
        health = [l for l in lines if l.upper().startswith("HEALTHCHECK ")]
        if not health or '"vitclient", "health", "--server=127.0.0.1:8500"' not in health[-1]:
            problems.append(f"{name}: HEALTHCHECK must run vitclient health "
                            "--server=127.0.0.1:8500")
        if not any(l.startswith("EXPOSE") and "8500" in l and "8502" in l for l in lines):
            problems.append(f"{name}: EXPOSE 8500 8502 missing")
        for l in lines:
            if l.startswith("COPY ") and "--from" not in l:
                src = l.split()[1]
                if not os.path.exists(os.path.join(root, src)):
                    problems.append(f"{name}: COPY source {src} does not exist")
    if "debian:12" not in " ".join(dockerfile_instructions(
            os.path.join(root, "deploy", "docker", "Dockerfile.cpu"))):
        problems.append("Dockerfile.cpu: not based on Debian 12")
    return problems


def check_compose_files(root):
    """Files and directories docker-compose.yml builds from or mounts exist; Prometheus
    gets the repository's config and rules."""
    problems = []
    compose = load_yaml_docs(os.path.join(root, "docker-compose.yml"))[0]
    services = compose["services"]
    for needed in ("vitserve", "prometheus", "grafana"):
        if needed not in services:
            problems.append(f"service {needed} missing")
    build = services["vitserve"]["build"]
    if not os.path.exists(os.path.join(root, build["context"], build["dockerfile"])):
        problems.append(f"vitserve build file {build['dockerfile']} missing")
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("./") and name != "vitserve":
                if not os.path.exists(os.path.join(root, src)):
                    problems.append(f"{name}: mount source {src} missing")
    if "./models:/models:ro" not in services["vitserve"]["volumes"]:
        problems.append("vitserve must mount the bundled model repository ./models")
    if "--config.file=/etc/prometheus/prometheus.yml" not in services["prometheus"]["command"]:
        problems.append("prometheus does not use deploy/prometheus/prometheus.yml")
    with open(os.path.join(root, "deploy", "prometheus", "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    targets = [t for job in prom["scrape_configs"] if job["job_name"] == "vitserve"
               for sc in job["static_configs"] for t in sc["targets"]]
    metrics_flag = [a for a in services["vitserve"]["command"] if a.startswith("--metrics_port=")]
    if not metrics_flag or targets != [f"vitserve:{metrics_flag[0].split('=')[1]}"]:
        problems.append(f"prometheus scrapes {targets}, vitserve serves metrics on "
                        f"{metrics_flag}")
    return problems


def server_args(root):
    """(where, argument list) of every place that starts vitserve with flags."""
    out = []
    compose = load_yaml_docs(os.path.join(root, "docker-compose.yml"))[0]
    out.append(("docker-compose.yml", compose["services"]["vitserve"]["command"]))
    for path, doc in k8s_docs(root):
        for c in containers(doc):
            if str(c.get("image", "")).startswith("vitserve:"):
                out.append((rel(root, path), c.get("args", [])))
    for path, rt in kserve_docs(root).get("ClusterServingRuntime", []):
        for c in (rt.get("spec") or {}).get("containers") or []:
            out.append((rel(root, path), c.get("args", [])))
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        for l in dockerfile_instructions(os.path.join(root, "deploy", "docker", name)):
            if l.startswith("CMD "):
                out.append((name, json.loads(l[4:])))
    return out


def check_flags(root, binary):
    """Every flag given to vitserve in compose, Kubernetes and the Dockerfiles is one that
    the real `vitserve --help` lists."""
    if not binary or not os.path.exists(binary):
        return [f"vitserve binary {binary!r} not found (build target vitserve first)"]
    def flags(option):
        out = subprocess.run([binary, option], capture_output=True, text=True, timeout=30)
        return set(FLAG_RE.findall(out.stdout + out.stderr)) - {"help", "helpfull"}

    problems = []
    known = flags("--help")
    if "model_repository" not in known:
        # Absl's --help shows only flags defined in a file named after the program
        # (vitserve.cc, vitserve_main.cc, ...) unless main() sets
        # absl::SetFlagsUsageConfig({.contains_help_flags = ...}).
        problems.append(f"`vitserve --help` lists {sorted(known) or 'no flags'}; main.cc must make "
                        "its flags visible to --help (absl::SetFlagsUsageConfig)")
        known = flags("--helpfull")   # still check the arguments against the real flags
    uses = server_args(root)
    if len(uses) < 4:
        problems.append(f"found only {len(uses)} places that start vitserve")
    for where, args in uses:
        for arg in args:
            m = FLAG_RE.match(arg)
            if not m:
                problems.append(f"{where}: argument {arg!r} is not a --flag")
            elif m.group(1) not in known:
                problems.append(f"{where}: --{m.group(1)} is not listed by vitserve --help")
    return problems


CHECKS = {
    "parse": check_parse,
    "kubernetes": check_kubernetes,
    "kserve": check_kserve,
    "dashboards": check_dashboards,
    "metric_names": check_metric_names,
    "dockerfiles": check_dockerfiles,
    "compose_files": check_compose_files,
}


def main(argv):
    if len(argv) < 3 or (argv[2] not in CHECKS and argv[2] != "flags"):
        print(__doc__)
        return 2
    root = os.path.abspath(argv[1])
    if argv[2] == "flags":
        problems = check_flags(root, argv[3] if len(argv) > 3 else "")
    else:
        problems = CHECKS[argv[2]](root)
    for p in problems:
        print("FAIL:", p)
    if not problems:
        print(f"{argv[2]}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
