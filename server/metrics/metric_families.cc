#include "server/metrics/metric_families.h"

#include <string>
#include <type_traits>

namespace vitserve {
namespace metrics_internal {
namespace {

template <typename T>
Family<T>& Build(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  if constexpr (std::is_same_v<T, Counter>) {
    return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
  } else if constexpr (std::is_same_v<T, Gauge>) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
  } else {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
  }
}

RequestFamilies BuildRequestFamilies(prometheus::Registry& r) {
  return {
      Build<Counter>(r, "vitserve_requests_total",
                     "Finished requests by model, token-reduction method and gRPC status code."),
      Build<Histogram>(
          r, "vitserve_request_duration_seconds",
          "Server-side time from admission to response of successful requests, seconds."),
      Build<Histogram>(r, "vitserve_queue_duration_seconds",
                       "Time successful requests waited before their batch started, seconds."),
      Build<Histogram>(r, "vitserve_compute_duration_seconds",
                       "Compute time of the batch that answered each successful request, seconds."),
  };
}

BatchFamilies BuildBatchFamilies(prometheus::Registry& r) {
  return {
      Build<Histogram>(r, "vitserve_batch_compute_duration_seconds",
                       "Compute time per executed batch, seconds."),
      Build<Counter>(r, "vitserve_images_total",
                     "Images run through the model (sum of batch sizes)."),
      Build<Counter>(r, "vitserve_batches_total", "Executed batches."),
      Build<Histogram>(r, "vitserve_batch_size", "Images per executed batch."),
      Build<Histogram>(r, "vitserve_batch_keep_rate",
                       "Keep-rate (ratio 0-1) applied per executed batch."),
  };
}

CostFamilies BuildCostFamilies(prometheus::Registry& r) {
  return {
      Build<Counter>(r, "vitserve_macs_total",
                     "Multiply-adds executed for successful requests (FLOPs = 2 x MACs)."),
      Build<Counter>(r, "vitserve_dense_macs_total",
                     "Multiply-adds the dense model would have executed for the same requests."),
      Build<Histogram>(r, "vitserve_request_macs",
                       "Multiply-adds executed per successful request."),
      Build<Histogram>(r, "vitserve_keep_rate",
                       "Keep-rate (ratio 0-1) applied per successful request."),
      Build<Counter>(r, "vitserve_latency_budget_total",
                     "Requests with a latency budget or deadline, by whether the answer met it."),
      Build<Counter>(r, "vitserve_rejections_total",
                     "Requests refused before or instead of compute."),
  };
}

StateFamilies BuildStateFamilies(prometheus::Registry& r) {
  return {
      Build<Gauge>(r, "vitserve_queue_depth", "Requests waiting for a batch, per model."),
      Build<Gauge>(r, "vitserve_arrival_rate",
                   "Requests per second offered to the model recently (budget scheduler)."),
      Build<Gauge>(
          r, "vitserve_keep_rate_cap",
          "Highest keep-rate (ratio 0-1) the budget scheduler serves at the current load."),
      Build<Gauge>(r, "vitserve_latency_safety_factor",
                   "Multiplier (>= 1) the budget scheduler applies to predicted compute times."),
      Build<Gauge>(r, "vitserve_budget_reserve_ratio",
                   "Fraction (0-1) of each budget the budget scheduler keeps free at its end."),
      Build<Gauge>(r, "vitserve_budget_miss_ratio",
                   "Recent ratio (0-1) of admitted budgeted requests that missed their budget."),
      Build<Gauge>(r, "vitserve_in_flight_requests", "Requests admitted and not yet answered."),
      Build<Gauge>(r, "vitserve_model_info",
                   "Loaded models: constant 1 with method and version labels."),
  };
}

LatencyModelFamilies BuildLatencyModelFamilies(prometheus::Registry& r) {
  return {
      Build<Histogram>(r, "vitserve_latency_model_abs_error_seconds",
                       "Absolute error of the latency model, |observed - predicted|, seconds."),
      Build<Histogram>(r, "vitserve_latency_model_relative_error",
                       "Relative error of the latency model, |observed - predicted| / predicted."),
      Build<Counter>(r, "vitserve_latency_model_predictions_total",
                     "Latency predictions checked, by direction: under = observed > predicted."),
      Build<Counter>(
          r, "vitserve_latency_model_predicted_seconds_total",
          "Sum of predicted latencies, seconds (divide rates by observed for the bias)."),
      Build<Counter>(r, "vitserve_latency_model_observed_seconds_total",
                     "Sum of observed latencies matching the predictions, seconds."),
  };
}

QualityFamilies BuildQualityFamilies(prometheus::Registry& r) {
  return {
      Build<Histogram>(
          r, "vitserve_expected_accuracy",
          "Expected top-1 accuracy (ratio 0-1) of each answer, from the calibration curve."),
      Build<Counter>(r, "vitserve_shadow_comparisons_total",
                     "Shadow dense comparisons by outcome: top-1 agree, disagree, or skipped."),
      Build<Histogram>(
          r, "vitserve_shadow_kl_divergence",
          "KL divergence (nats) of the pruned from the dense softmax, shadowed requests."),
      Build<Histogram>(
          r, "vitserve_top1_probability",
          "Softmax probability of the top class per successful request, by keep-rate level."),
  };
}

}  // namespace

MetricFamilies BuildMetricFamilies(prometheus::Registry& registry) {
  // Braced initialisers run in order: the families register (and serialize) in this order.
  return {BuildRequestFamilies(registry),      BuildBatchFamilies(registry),
          BuildCostFamilies(registry),         BuildStateFamilies(registry),
          BuildLatencyModelFamilies(registry), BuildQualityFamilies(registry)};
}

}  // namespace metrics_internal
}  // namespace vitserve
