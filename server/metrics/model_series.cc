#include "server/metrics/model_series.h"

#include <algorithm>
#include <cmath>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"

namespace vitserve {
namespace metrics_internal {
namespace {

// ---- Bounded label sets ---------------------------------------------------------------

// Label value for method / reason strings outside the documented set.
constexpr char kOtherLabel[] = "other";

// grpc::StatusCode names, indexed by value (0..16). Out-of-range codes count as UNKNOWN.
constexpr int kGrpcUnknownCode = 2;
constexpr std::array<const char*, kNumGrpcCodes> kGrpcCodeNames = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// OnRejected reasons, last slot = "other".
constexpr std::array<const char*, kNumRejectReasons> kRejectReasons = {
    kRejectQueueFull, kRejectDeadline, kRejectBudgetUnmeetable,
    kRejectCancelled, kRejectDraining, kOtherLabel};

constexpr std::array<const char*, kNumBudgetOutcomes> kBudgetOutcomes = {"met", "missed"};
constexpr std::array<const char*, kNumShadowOutcomes> kShadowOutcomes = {"agree", "disagree",
                                                                         "skipped"};
constexpr int kShadowAgree = 0;
constexpr int kShadowDisagree = 1;
constexpr int kShadowSkipped = 2;
constexpr std::array<const char*, kNumPredictionDirections> kPredictionDirections = {"under",
                                                                                     "over"};

// ---- Bucket boundaries ----------------------------------------------------------------

// Request, queue and compute time: sub-millisecond queueing up to the 10 s budget ceiling,
// dense around typical interactive budgets (5-250 ms).
constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                      0.15,   0.25,  0.5,    0.75,  1.0,  2.5,   5.0,  10.0};
constexpr double kBatchSizeBuckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
// Keep-rates are ratios in (0, 1]; observed values are rounded to 1e-6 first so that a float
// 0.3f lands in the le="0.3" bucket.
constexpr double kKeepRateBuckets[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
constexpr double kKeepRateRounding = 1e6;
// Half-decades from tiny test models (1e5) to DeiT-B (1.76e10) and beyond.
constexpr double kMacsBuckets[] = {1e5, 3e5, 1e6, 3e6,  1e7,  3e7, 1e8,
                                   3e8, 1e9, 3e9, 1e10, 3e10, 1e11};
constexpr double kAccuracyBuckets[] = {0.1, 0.2,  0.3, 0.4,  0.5,   0.6,  0.7, 0.75,
                                       0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0};
constexpr double kProbabilityBuckets[] = {0.01, 0.05, 0.1, 0.2, 0.3,  0.4, 0.5,
                                          0.6,  0.7,  0.8, 0.9, 0.95, 0.99};
// KL divergence in nats between the dense and the pruned softmax.
constexpr double kKlBuckets[] = {1e-4, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5};
// |observed - predicted| latency, seconds.
constexpr double kAbsErrorBuckets[] = {1e-4,  2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01,
                                       0.025, 0.05,   0.1,  0.25, 0.5,    1.0};
// |observed - predicted| / predicted.
constexpr double kRelErrorBuckets[] = {0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0};

template <size_t N>
Histogram::BucketBoundaries Buckets(const double (&b)[N]) {
  return Histogram::BucketBoundaries(b, b + N);
}

// ---- Helpers --------------------------------------------------------------------------

// Returns the metric in `slot`, adding it to the family on first use. Family::Add is
// thread-safe and returns the existing metric for the same labels, so two threads racing
// here store the same pointer.
template <typename T, typename AddFn>
T& Lazy(std::atomic<T*>& slot, AddFn add) {
  T* p = slot.load(std::memory_order_acquire);
  if (p == nullptr) {
    p = &add();
    slot.store(p, std::memory_order_release);
  }
  return *p;
}

bool IsFinite(double v) { return std::isfinite(v); }

// Durations are never negative; a negative one (clock step) counts as 0.
void ObserveSeconds(Histogram& h, double seconds) {
  if (IsFinite(seconds)) h.Observe(std::max(0.0, seconds));
}

double RoundKeepRate(float keep_rate) {
  return std::round(static_cast<double>(keep_rate) * kKeepRateRounding) / kKeepRateRounding;
}

int ReasonIndex(absl::string_view reason) {
  for (size_t i = 0; i + 1 < kRejectReasons.size(); ++i) {
    if (reason == kRejectReasons[i]) return static_cast<int>(i);
  }
  return static_cast<int>(kRejectReasons.size()) - 1;
}

// Nearest tenth, clamped to [0.1, 1.0]; index 0 = "0.1".
int KeepRateLevelIndex(double keep_rate) {
  const long level = std::lround(keep_rate * kNumKeepRateLevels);
  return static_cast<int>(std::clamp(level, 1L, static_cast<long>(kNumKeepRateLevels))) - 1;
}

std::string KeepRateLevelLabel(int index) {
  return absl::StrFormat("%.1f", static_cast<double>(index + 1) / kNumKeepRateLevels);
}

// ---- The handle -----------------------------------------------------------------------

class ModelMetricsImpl : public ModelMetrics {
 public:
  ModelMetricsImpl(const MetricFamilies& families, ModelSeries& series, int method_index)
      : f_(families), m_(series), method_(method_index), method_label_(MethodLabel(method_index)) {}

  void OnRequestDone(const RequestOutcome& r) override {
    const int code =
        r.grpc_code >= 0 && r.grpc_code < kNumGrpcCodes ? r.grpc_code : kGrpcUnknownCode;
    Lazy(m_.requests[method_][code], [&]() -> Counter& {
      return f_.request.requests.Add(
          {{"model", m_.label}, {"method", method_label_}, {"code", kGrpcCodeNames[code]}});
    }).Increment();
    if (r.had_budget) {
      const int outcome = r.budget_met ? 0 : 1;
      Lazy(m_.budget[outcome], [&]() -> Counter& {
        return f_.cost.budget.Add({{"model", m_.label}, {"outcome", kBudgetOutcomes[outcome]}});
      }).Increment();
    }
    if (r.grpc_code != 0) return;

    ObserveSeconds(*m_.request_duration, r.total_seconds);
    ObserveSeconds(*m_.queue_duration, r.queue_seconds);
    ObserveSeconds(*m_.compute_duration, r.compute_seconds);
    m_.macs->Increment(static_cast<double>(r.macs));
    m_.dense_macs->Increment(static_cast<double>(r.dense_macs));
    m_.request_macs->Observe(static_cast<double>(r.macs));
    if (IsFinite(r.keep_rate)) {
      const double keep_rate = RoundKeepRate(r.keep_rate);
      m_.keep_rate->Observe(keep_rate);
      if (IsFinite(r.top1_probability)) {
        const int level = KeepRateLevelIndex(keep_rate);
        Lazy(m_.top1_probability[level], [&]() -> Histogram& {
          return f_.quality.top1_probability.Add(
              {{"model", m_.label}, {"keep_rate_level", KeepRateLevelLabel(level)}},
              Buckets(kProbabilityBuckets));
        }).Observe(r.top1_probability);
      }
    }
    if (IsFinite(r.expected_accuracy) && r.expected_accuracy > 0) {
      m_.expected_accuracy->Observe(r.expected_accuracy);
    }
  }

  void OnBatch(int batch_size, float keep_rate, double compute_seconds) override {
    m_.batches->Increment();
    if (batch_size > 0) {
      m_.images->Increment(batch_size);
      m_.batch_size->Observe(batch_size);
    }
    if (IsFinite(keep_rate)) m_.batch_keep_rate->Observe(RoundKeepRate(keep_rate));
    ObserveSeconds(*m_.batch_compute_duration, compute_seconds);
  }

  void OnRejected(absl::string_view reason) override {
    const int index = ReasonIndex(reason);
    Lazy(m_.rejections[index], [&]() -> Counter& {
      return f_.cost.rejections.Add({{"model", m_.label}, {"reason", kRejectReasons[index]}});
    }).Increment();
  }

  void SetQueueDepth(int64_t depth) override { m_.queue_depth->Set(static_cast<double>(depth)); }

  void SetLoad(double arrival_rate, float keep_rate_cap) override {
    ModelGauge(m_.arrival_rate, f_.state.arrival_rate).Set(arrival_rate);
    ModelGauge(m_.keep_rate_cap, f_.state.keep_rate_cap).Set(static_cast<double>(keep_rate_cap));
  }

  void SetLatencyGuard(double safety_factor, double reserve, double miss_ratio) override {
    ModelGauge(m_.safety_factor, f_.state.safety_factor).Set(safety_factor);
    ModelGauge(m_.reserve, f_.state.reserve).Set(reserve);
    ModelGauge(m_.miss_ratio, f_.state.miss_ratio).Set(miss_ratio);
  }

  void OnLatencyPrediction(double predicted_seconds, double observed_seconds) override {
    if (!IsFinite(predicted_seconds) || !IsFinite(observed_seconds) || predicted_seconds < 0 ||
        observed_seconds < 0) {
      return;
    }
    const double abs_error = std::abs(observed_seconds - predicted_seconds);
    m_.latency_abs_error->Observe(abs_error);
    if (predicted_seconds > 0) m_.latency_rel_error->Observe(abs_error / predicted_seconds);
    const int direction = observed_seconds > predicted_seconds ? 0 : 1;
    Lazy(m_.prediction_direction[direction], [&]() -> Counter& {
      return f_.latency_model.directions.Add(
          {{"model", m_.label}, {"direction", kPredictionDirections[direction]}});
    }).Increment();
    m_.latency_predicted->Increment(predicted_seconds);
    m_.latency_observed->Increment(observed_seconds);
  }

  void OnShadow(const ShadowRecord& record) override {
    const bool skipped = record.outcome == ShadowRecord::Outcome::kSkipped;
    const double kl_divergence = record.kl_divergence;
    const int outcome = skipped                                           ? kShadowSkipped
                        : record.outcome == ShadowRecord::Outcome::kAgree ? kShadowAgree
                                                                          : kShadowDisagree;
    Lazy(m_.shadow[outcome], [&]() -> Counter& {
      return f_.quality.shadow.Add({{"model", m_.label}, {"outcome", kShadowOutcomes[outcome]}});
    }).Increment();
    if (!skipped && IsFinite(kl_divergence)) m_.shadow_kl->Observe(std::max(0.0, kl_divergence));
  }

 private:
  // The model's gauge of `family`, added on first use.
  Gauge& ModelGauge(std::atomic<Gauge*>& slot, Family<Gauge>& family) {
    return Lazy(slot, [&]() -> Gauge& { return family.Add({{"model", m_.label}}); });
  }

  const MetricFamilies& f_;
  ModelSeries& m_;
  const int method_;
  const std::string method_label_;
};

}  // namespace

int MethodIndex(const std::string& method) {
  if (method.empty()) return kNumMethods;  // the string-keyed calls without a method
  absl::StatusOr<Method> m = ParseMethod(method);
  return m.ok() ? static_cast<int>(*m) : kNumMethods;
}

std::string MethodLabel(int index) {
  return index == kNumMethods ? std::string(kOtherLabel)
                              : std::string(MethodName(static_cast<Method>(index)));
}

std::unique_ptr<ModelSeries> NewModelSeries(const MetricFamilies& f, const std::string& label) {
  auto m = std::make_unique<ModelSeries>();
  m->label = label;
  const prometheus::Labels labels = {{"model", label}};
  m->request_duration = &f.request.request_duration.Add(labels, Buckets(kLatencyBuckets));
  m->queue_duration = &f.request.queue_duration.Add(labels, Buckets(kLatencyBuckets));
  m->compute_duration = &f.request.compute_duration.Add(labels, Buckets(kLatencyBuckets));
  m->batch_compute_duration = &f.batch.batch_compute_duration.Add(labels, Buckets(kLatencyBuckets));
  m->batch_size = &f.batch.batch_size.Add(labels, Buckets(kBatchSizeBuckets));
  m->batch_keep_rate = &f.batch.batch_keep_rate.Add(labels, Buckets(kKeepRateBuckets));
  m->request_macs = &f.cost.request_macs.Add(labels, Buckets(kMacsBuckets));
  m->keep_rate = &f.cost.keep_rate.Add(labels, Buckets(kKeepRateBuckets));
  m->expected_accuracy = &f.quality.expected_accuracy.Add(labels, Buckets(kAccuracyBuckets));
  m->shadow_kl = &f.quality.shadow_kl.Add(labels, Buckets(kKlBuckets));
  m->latency_abs_error = &f.latency_model.abs_error.Add(labels, Buckets(kAbsErrorBuckets));
  m->latency_rel_error = &f.latency_model.rel_error.Add(labels, Buckets(kRelErrorBuckets));
  m->images = &f.batch.images.Add(labels);
  m->batches = &f.batch.batches.Add(labels);
  m->macs = &f.cost.macs.Add(labels);
  m->dense_macs = &f.cost.dense_macs.Add(labels);
  m->latency_predicted = &f.latency_model.predicted.Add(labels);
  m->latency_observed = &f.latency_model.observed.Add(labels);
  m->queue_depth = &f.state.queue_depth.Add(labels);
  return m;
}

std::unique_ptr<ModelMetrics> NewModelMetrics(const MetricFamilies& families, ModelSeries& series,
                                              int method_index) {
  return std::make_unique<ModelMetricsImpl>(families, series, method_index);
}

}  // namespace metrics_internal
}  // namespace vitserve
