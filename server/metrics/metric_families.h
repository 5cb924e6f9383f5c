// The Prometheus metric families of ServerMetrics (names, help texts, types), registered
// once on a registry. Internal to server/metrics/: callers use server_metrics.h.
//
// The families are grouped by what they describe; BuildMetricFamilies registers the groups
// in a fixed order, which is the order of the exposition text. The families are owned by
// the registry and live as long as it does.
#ifndef VITSERVE_SERVER_METRICS_METRIC_FAMILIES_H_
#define VITSERVE_SERVER_METRICS_METRIC_FAMILIES_H_

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace vitserve {
namespace metrics_internal {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Finished requests: counts by code, latency split.
struct RequestFamilies {
  Family<Counter>& requests;
  Family<Histogram>& request_duration;
  Family<Histogram>& queue_duration;
  Family<Histogram>& compute_duration;
};

// Executed batches.
struct BatchFamilies {
  Family<Histogram>& batch_compute_duration;
  Family<Counter>& images;
  Family<Counter>& batches;
  Family<Histogram>& batch_size;
  Family<Histogram>& batch_keep_rate;
};

// Work done per successful request, budgets and refusals.
struct CostFamilies {
  Family<Counter>& macs;
  Family<Counter>& dense_macs;
  Family<Histogram>& request_macs;
  Family<Histogram>& keep_rate;
  Family<Counter>& budget;
  Family<Counter>& rejections;
};

// Gauges: queues, the budget scheduler's load and guard, in-flight requests, model info.
struct StateFamilies {
  Family<Gauge>& queue_depth;
  Family<Gauge>& arrival_rate;
  Family<Gauge>& keep_rate_cap;
  Family<Gauge>& safety_factor;
  Family<Gauge>& reserve;
  Family<Gauge>& miss_ratio;
  Family<Gauge>& in_flight;
  Family<Gauge>& model_info;
};

// The scheduler's latency model against what happened.
struct LatencyModelFamilies {
  Family<Histogram>& abs_error;
  Family<Histogram>& rel_error;
  Family<Counter>& directions;
  Family<Counter>& predicted;
  Family<Counter>& observed;
};

// Accuracy proxies: calibrated expected accuracy, shadow comparisons, top-1 confidence.
struct QualityFamilies {
  Family<Histogram>& expected_accuracy;
  Family<Counter>& shadow;
  Family<Histogram>& shadow_kl;
  Family<Histogram>& top1_probability;
};

struct MetricFamilies {
  RequestFamilies request;
  BatchFamilies batch;
  CostFamilies cost;
  StateFamilies state;
  LatencyModelFamilies latency_model;
  QualityFamilies quality;
};

// Registers every family on `registry`. Call once per registry.
MetricFamilies BuildMetricFamilies(prometheus::Registry& registry);

}  // namespace metrics_internal
}  // namespace vitserve

#endif  // VITSERVE_SERVER_METRICS_METRIC_FAMILIES_H_
