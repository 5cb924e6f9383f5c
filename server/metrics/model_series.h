// The series of one model label and the ModelMetrics handle that records into them.
// Internal to server/metrics/: callers use server_metrics.h.
//
// A ModelSeries holds every prometheus series of one model label: the fixed ones are added
// when it is made; those with a second bounded label (code, reason, outcome, ...) are added
// on first use into an atomic slot, so recording never looks anything up by string and
// never takes a lock (prometheus-cpp's own Family::Add lock is taken once per slot).
// Label values are bounded here: see the label rules in server_metrics.h.
#ifndef VITSERVE_SERVER_METRICS_MODEL_SERIES_H_
#define VITSERVE_SERVER_METRICS_MODEL_SERIES_H_

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "server/metrics/metric_families.h"
#include "server/metrics/server_metrics.h"
#include "server/spec/model_spec.h"

namespace vitserve {
namespace metrics_internal {

// Label value for a model that was never announced with OnModelLoaded.
inline constexpr char kUnknownModel[] = "_unknown";

// Token-reduction methods (Method enum order) plus one slot ("other") for anything else.
inline constexpr int kNumMethods = static_cast<int>(Method::kTriLevel) + 1;
inline constexpr int kNumMethodSlots = kNumMethods + 1;
// The slot of `method` (MethodName() spelling), kNumMethods for anything else.
int MethodIndex(const std::string& method);
// The label value of a slot: MethodName() or "other".
std::string MethodLabel(int index);

inline constexpr int kNumGrpcCodes = 17;  // grpc::StatusCode 0..16
inline constexpr int kNumBudgetOutcomes = 2;
inline constexpr int kNumRejectReasons = 6;  // the kReject* constants and "other"
inline constexpr int kNumShadowOutcomes = 3;
inline constexpr int kNumPredictionDirections = 2;
inline constexpr int kNumKeepRateLevels = 10;  // keep-rate rounded to tenths, 0.1 ... 1.0

template <typename T, size_t N>
using Slots = std::array<std::atomic<T*>, N>;

// Every series of one model label.
struct ModelSeries {
  std::string label;
  Histogram* request_duration = nullptr;
  Histogram* queue_duration = nullptr;
  Histogram* compute_duration = nullptr;
  Histogram* batch_compute_duration = nullptr;
  Histogram* batch_size = nullptr;
  Histogram* batch_keep_rate = nullptr;
  Histogram* request_macs = nullptr;
  Histogram* keep_rate = nullptr;
  Histogram* expected_accuracy = nullptr;
  Histogram* shadow_kl = nullptr;
  Histogram* latency_abs_error = nullptr;
  Histogram* latency_rel_error = nullptr;
  Counter* images = nullptr;
  Counter* batches = nullptr;
  Counter* macs = nullptr;
  Counter* dense_macs = nullptr;
  Counter* latency_predicted = nullptr;
  Counter* latency_observed = nullptr;
  Gauge* queue_depth = nullptr;
  std::atomic<Gauge*> arrival_rate{nullptr};  // budget scheduler only: created on first use
  std::atomic<Gauge*> keep_rate_cap{nullptr};
  std::atomic<Gauge*> safety_factor{nullptr};  // budget scheduler with a guard only
  std::atomic<Gauge*> reserve{nullptr};
  std::atomic<Gauge*> miss_ratio{nullptr};
  // [method slot][grpc code]
  std::array<Slots<Counter, kNumGrpcCodes>, kNumMethodSlots> requests{};
  Slots<Counter, kNumBudgetOutcomes> budget{};
  Slots<Counter, kNumRejectReasons> rejections{};
  Slots<Counter, kNumShadowOutcomes> shadow{};
  Slots<Counter, kNumPredictionDirections> prediction_direction{};
  Slots<Histogram, kNumKeepRateLevels> top1_probability{};
  // Owned by the ServerMetrics and guarded by its lock (not touched when recording):
  // vitserve_model_info, replaced by each OnModelLoaded, and the handles per method slot.
  Gauge* info = nullptr;
  std::array<std::unique_ptr<ModelMetrics>, kNumMethodSlots> handles;
};

// The series of `label`, their fixed series added to `families`.
std::unique_ptr<ModelSeries> NewModelSeries(const MetricFamilies& families,
                                            const std::string& label);

// A handle recording into `series` (requests under `method_index`, see MethodIndex).
// `families` and `series` must outlive it.
std::unique_ptr<ModelMetrics> NewModelMetrics(const MetricFamilies& families, ModelSeries& series,
                                              int method_index);

}  // namespace metrics_internal
}  // namespace vitserve

#endif  // VITSERVE_SERVER_METRICS_MODEL_SERIES_H_
