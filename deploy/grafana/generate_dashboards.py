#!/usr/bin/python3
"""Writes the vitserve Grafana dashboards (deploy/grafana/dashboards/*.json).

The JSON files are generated so that every panel follows the same conventions (datasource
uid "prometheus" from provisioning, a $model variable, $__rate_interval windows, quantiles
as histogram_quantile over sum by (le)). Edit this file, run it, commit both:

    /usr/bin/python3 deploy/grafana/generate_dashboards.py

tests/observability/check_deploy.py fails when the committed JSON differs from what this
script writes, and tests/observability/prometheus_e2e.py runs every query against a real
Prometheus scraping a real vitserve.
"""

import json
import os
import sys

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SEL = 'model=~"$model"'
RATE = "$__rate_interval"
NOT_OK = SEL + ',code!="OK"'
MET = SEL + ',outcome="met"'
AGREE = SEL + ',outcome="agree"'
COMPARED = SEL + ',outcome=~"agree|disagree"'
UNDER = SEL + ',direction="under"'


def rate(metric, selector=SEL, by="model"):
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def quantile(q, histogram, by=""):
    group = f"{by}, le" if by else "le"
    return (f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({histogram}_bucket{{{SEL}}}[{RATE}])))")


def mean(histogram, by="model"):
    return (f"sum by ({by}) (rate({histogram}_sum{{{SEL}}}[{RATE}])) / "
            f"sum by ({by}) (rate({histogram}_count{{{SEL}}}[{RATE}]))")


def target(expr, legend, ref, fmt=None, instant=False):
    t = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref,
         "range": not instant, "instant": instant}
    if fmt:
        t["format"] = fmt
    return t


class Layout:
    """Places panels left to right on a 24-column grid."""

    def __init__(self):
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)
        return panel


def panel(kind, title, description, targets, unit="short", extra=None):
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(*t) if isinstance(t, tuple) else target(**t) for t in targets],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "heatmap":
        p["options"] = {"calculate": False, "yAxis": {"unit": unit},
                        "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(p.get(k), dict):
                p[k].update(v)
            else:
                p[k] = v
    return p


def ratio_bounds(lo=0, hi=1):
    return {"fieldConfig": {"defaults": {"unit": "percentunit", "min": lo, "max": hi}}}


def dashboard(uid, title, description, panels):
    layout = Layout()
    placed = [layout.place(p, w, h) for p, w, h in panels]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vitserve"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 37,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["vitserve"], "asDropdown": True,
                   "title": "vitserve"}],
        "templating": {"list": [{
            "name": "model",
            "label": "model",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": "label_values(vitserve_model_info, model)", "refId": "models"},
            "definition": "label_values(vitserve_model_info, model)",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }]},
        "annotations": {"list": []},
        "panels": placed,
    }


def overview():
    return dashboard("vitserve-overview", "vitserve / Overview",
                     "Traffic, errors, latency quantiles, SLO attainment and queues.", [
        (panel("timeseries", "Requests/s by model and code",
               "Finished requests per second, split by gRPC status code.",
               [(rate("vitserve_requests_total", by="model, code"), "{{model}} {{code}}", "A")],
               "reqps"), 12, 8),
        (panel("timeseries", "Error rate",
               "Share of finished requests whose code is not OK (client and server errors).",
               [(f'{rate("vitserve_requests_total", NOT_OK)} / '
                 f'{rate("vitserve_requests_total")}', "{{model}}", "A")],
               extra=ratio_bounds()), 12, 8),
        (panel("timeseries", "Request latency p50 / p95 / p99",
               "Server-side time from admission to answer of successful requests; quantiles "
               "of the histogram summed over replicas and the selected models.",
               [(quantile(0.5, "vitserve_request_duration_seconds"), "p50", "A"),
                (quantile(0.95, "vitserve_request_duration_seconds"), "p95", "B"),
                (quantile(0.99, "vitserve_request_duration_seconds"), "p99", "C")],
               "s"), 12, 8),
        (panel("timeseries", "Queue and compute time p95",
               "Where the time goes: waiting for a batch vs running it (successful requests).",
               [(quantile(0.95, "vitserve_queue_duration_seconds"), "queue p95", "A"),
                (quantile(0.95, "vitserve_compute_duration_seconds"), "compute p95", "B")],
               "s"), 12, 8),
        (panel("timeseries", "SLO attainment",
               "Share of requests with a latency budget (or deadline) answered within it.",
               [(f'{rate("vitserve_latency_budget_total", MET)} / '
                 f'{rate("vitserve_latency_budget_total")}', "{{model}}", "A")],
               extra=ratio_bounds()), 8, 8),
        (panel("timeseries", "Goodput and budget misses",
               "Requests/s that met their budget (goodput) and that missed it.",
               [(rate("vitserve_latency_budget_total", SEL, by="model, outcome"),
                 "{{model}} {{outcome}}", "A")], "reqps"), 8, 8),
        (panel("timeseries", "Rejections by reason",
               "Requests refused before or instead of compute (queue_full, deadline, "
               "budget_unmeetable, cancelled, draining).",
               [(rate("vitserve_rejections_total", by="model, reason"), "{{model}} {{reason}}",
                 "A")], "reqps"), 8, 8),
        (panel("timeseries", "Queue depth and in-flight requests",
               "Requests waiting for a batch (per model) and requests admitted but not yet "
               "answered (all models, per replica).",
               [(f"sum by (model) (vitserve_queue_depth{{{SEL}}})", "queue {{model}}", "A"),
                ("sum by (instance) (vitserve_in_flight_requests)", "in flight {{instance}}",
                 "B")]), 12, 8),
        (panel("table", "Loaded models",
               "vitserve_model_info: one row per model, method and version on each replica.",
               [{"expr": f"vitserve_model_info{{{SEL}}}", "legend": "", "ref": "A",
                 "fmt": "table", "instant": True}]), 12, 8),
    ])


def pruning():
    return dashboard("vitserve-pruning", "vitserve / Pruning",
                     "Keep-rates, compute executed vs dense, and accuracy proxies.", [
        (panel("heatmap", "Keep-rate distribution",
               "Requests per second by applied keep-rate bucket (1.0 = dense).",
               [{"expr": f"sum by (le) (rate(vitserve_keep_rate_bucket{{{SEL}}}[{RATE}]))",
                 "legend": "{{le}}", "ref": "A", "fmt": "heatmap"}], "percentunit"), 12, 8),
        (panel("timeseries", "Mean keep-rate and the load cap",
               "Average keep-rate of successful requests, per model, and the highest keep-rate "
               "the budget scheduler serves at the current arrival rate (vitserve_keep_rate_cap, "
               "docs/scheduler.md rule 2c).",
               [(mean("vitserve_keep_rate"), "{{model}}", "A"),
                (f"max by (model) (vitserve_keep_rate_cap{{{SEL}}})", "cap {{model}}", "B")],
               extra=ratio_bounds()), 12, 8),
        (panel("timeseries", "MACs/s executed vs dense",
               "Multiply-adds per second actually executed and what the dense model would "
               "have executed for the same requests (FLOPs = 2 x MACs).",
               [(rate("vitserve_macs_total"), "executed {{model}}", "A"),
                (rate("vitserve_dense_macs_total"), "dense {{model}}", "B")]), 12, 8),
        (panel("timeseries", "Compute saving",
               "1 - executed / dense multiply-adds.",
               [(f'1 - {rate("vitserve_macs_total")} / {rate("vitserve_dense_macs_total")}',
                 "{{model}}", "A")], extra=ratio_bounds()), 12, 8),
        (panel("timeseries", "Accuracy proxies",
               "Side by side: expected top-1 accuracy from the calibration curve (mean per "
               "answer) and measured top-1 agreement with the dense shadow model.",
               [(mean("vitserve_expected_accuracy"), "expected top-1 {{model}}", "A"),
                (f'{rate("vitserve_shadow_comparisons_total", AGREE)} / '
                 f'{rate("vitserve_shadow_comparisons_total", COMPARED)}',
                 "shadow agreement {{model}}", "B")], extra=ratio_bounds()), 12, 8),
        (panel("timeseries", "Shadow KL divergence p50 / p95",
               "KL(dense || pruned) of the softmax on shadowed requests, nats.",
               [(quantile(0.5, "vitserve_shadow_kl_divergence"), "p50", "A"),
                (quantile(0.95, "vitserve_shadow_kl_divergence"), "p95", "B")]), 12, 8),
        (panel("timeseries", "Shadow comparisons",
               "Shadow dense comparisons per second: agree, disagree, skipped (under load).",
               [(rate("vitserve_shadow_comparisons_total", by="model, outcome"),
                 "{{model}} {{outcome}}", "A")], "ops"), 12, 8),
        (panel("timeseries", "Top-1 probability by keep-rate level",
               "Mean softmax probability of the answer, per keep-rate rounded to a tenth.",
               [(mean("vitserve_top1_probability", by="keep_rate_level"),
                 "keep {{keep_rate_level}}", "A")], extra=ratio_bounds()), 12, 8),
        (panel("timeseries", "MACs per request p50",
               "Median multiply-adds executed per successful request.",
               [(quantile(0.5, "vitserve_request_macs", by="model"), "{{model}}", "A")]),
         12, 8),
    ])


def capacity():
    return dashboard("vitserve-capacity", "vitserve / Capacity",
                     "Batching, throughput, latency-model error and memory. No GPU panel: "
                     "vitserve exports no GPU metric.", [
        (panel("heatmap", "Batch size distribution",
               "Executed batches per second by size bucket.",
               [{"expr": f"sum by (le) (rate(vitserve_batch_size_bucket{{{SEL}}}[{RATE}]))",
                 "legend": "{{le}}", "ref": "A", "fmt": "heatmap"}]), 12, 8),
        (panel("timeseries", "Mean batch size and batches/s",
               "Images per batch (mean) and executed batches per second.",
               [(mean("vitserve_batch_size"), "mean size {{model}}", "A"),
                (rate("vitserve_batches_total"), "batches/s {{model}}", "B")]), 12, 8),
        (panel("timeseries", "Images/s",
               "Images run through the model per second (sum of batch sizes).",
               [(rate("vitserve_images_total"), "{{model}}", "A")], "ops"), 8, 8),
        (panel("timeseries", "Batch compute time p50 / p95",
               "Time to run one batch.",
               [(quantile(0.5, "vitserve_batch_compute_duration_seconds"), "p50", "A"),
                (quantile(0.95, "vitserve_batch_compute_duration_seconds"), "p95", "B")],
               "s"), 8, 8),
        (panel("timeseries", "Resident memory",
               "Resident set size of each server process.",
               [("sum by (instance) (vitserve_process_resident_memory_bytes)", "{{instance}}",
                 "A")], "bytes"), 8, 8),
        (panel("timeseries", "Latency-model absolute error p50 / p95",
               "|observed - predicted| batch latency, seconds.",
               [(quantile(0.5, "vitserve_latency_model_abs_error_seconds"), "p50", "A"),
                (quantile(0.95, "vitserve_latency_model_abs_error_seconds"), "p95", "B")],
               "s"), 8, 8),
        (panel("timeseries", "Latency-model relative error p95",
               "|observed - predicted| / predicted, 95th percentile.",
               [(quantile(0.95, "vitserve_latency_model_relative_error", by="model"),
                 "{{model}}", "A")], "percentunit"), 8, 8),
        (panel("timeseries", "Latency-model bias and direction",
               "observed / predicted seconds (> 1: optimistic, budgets at risk) and the "
               "share of predictions that were too low.",
               [(f'{rate("vitserve_latency_model_observed_seconds_total")} / '
                 f'{rate("vitserve_latency_model_predicted_seconds_total")}', "bias {{model}}",
                 "A"),
                (f'{rate("vitserve_latency_model_predictions_total", UNDER)}'
                 f' / {rate("vitserve_latency_model_predictions_total")}',
                 "under-predicted share {{model}}", "B")]), 8, 8),
    ])


DASHBOARDS = {"overview.json": overview, "pruning.json": pruning, "capacity.json": capacity}


def render(build):
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv):
    out_dir = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "dashboards")
    os.makedirs(out_dir, exist_ok=True)
    for name, build in DASHBOARDS.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(render(build))


if __name__ == "__main__":
    main(sys.argv)
