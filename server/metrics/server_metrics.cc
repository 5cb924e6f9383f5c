#include "server/metrics/server_metrics.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <exception>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/spec/model_spec.h"

namespace vitserve {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// ---- Bounded label sets ---------------------------------------------------------------

// Label value for requests naming a model that was never announced with OnModelLoaded.
constexpr char kUnknownModel[] = "_unknown";
// Label value for method / reason strings outside the documented set.
constexpr char kOtherLabel[] = "other";

// grpc::StatusCode names, indexed by value (0..16). Out-of-range codes count as UNKNOWN.
constexpr int kNumGrpcCodes = 17;
constexpr int kGrpcUnknownCode = 2;
constexpr std::array<const char*, kNumGrpcCodes> kGrpcCodeNames = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// Token-reduction methods (Method enum order) plus one slot for anything else.
constexpr int kNumMethods = static_cast<int>(Method::kTriLevel) + 1;
constexpr int kOtherMethodIndex = kNumMethods;

// OnRejected reasons, last slot = "other".
constexpr std::array<const char*, 6> kRejectReasons = {kRejectQueueFull,        kRejectDeadline,
                                                       kRejectBudgetUnmeetable, kRejectCancelled,
                                                       kRejectDraining,         kOtherLabel};

constexpr std::array<const char*, 2> kBudgetOutcomes = {"met", "missed"};
constexpr std::array<const char*, 3> kShadowOutcomes = {"agree", "disagree", "skipped"};
constexpr int kShadowAgree = 0;
constexpr int kShadowDisagree = 1;
constexpr int kShadowSkipped = 2;
constexpr std::array<const char*, 2> kPredictionDirections = {"under", "over"};

// vitserve_top1_probability is split by keep-rate rounded to the nearest tenth: 10 levels.
constexpr int kNumKeepRateLevels = 10;

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

int MethodIndex(const std::string& method) {
  absl::StatusOr<Method> m = ParseMethod(method);
  return m.ok() ? static_cast<int>(*m) : kOtherMethodIndex;
}

std::string MethodLabel(int index) {
  return index == kOtherMethodIndex ? std::string(kOtherLabel)
                                    : std::string(MethodName(static_cast<Method>(index)));
}

int ReasonIndex(const std::string& reason) {
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

// vitserve_process_resident_memory_bytes, read from /proc/self/statm at scrape time.
class ResidentMemoryCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::ifstream statm("/proc/self/statm");
    uint64_t size_pages = 0;
    uint64_t resident_pages = 0;
    if (!(statm >> size_pages >> resident_pages)) return {};
    prometheus::MetricFamily family;
    family.name = "vitserve_process_resident_memory_bytes";
    family.help = "Resident set size of the server process (/proc/self/statm), bytes.";
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    metric.gauge.value =
        static_cast<double>(resident_pages) * static_cast<double>(sysconf(_SC_PAGESIZE));
    family.metric.push_back(std::move(metric));
    return {std::move(family)};
  }
};

// ---- The metrics object ---------------------------------------------------------------

// Every series of one model label. Fixed series are added at construction; series with an
// extra bounded label are added on first use through a Lazy slot.
struct ModelMetrics {
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
  // [method index][grpc code]
  std::array<std::array<std::atomic<Counter*>, kNumGrpcCodes>, kNumMethods + 1> requests{};
  std::array<std::atomic<Counter*>, kBudgetOutcomes.size()> budget{};
  std::array<std::atomic<Counter*>, kRejectReasons.size()> rejections{};
  std::array<std::atomic<Counter*>, kShadowOutcomes.size()> shadow{};
  std::array<std::atomic<Counter*>, kPredictionDirections.size()> prediction_direction{};
  std::array<std::atomic<Histogram*>, kNumKeepRateLevels> top1_probability{};
  // vitserve_model_info series; replaced by each OnModelLoaded (guarded by Impl::mu_).
  Gauge* info = nullptr;
};

class ServerMetricsImpl : public ServerMetrics {
 public:
  ServerMetricsImpl()
      : registry_(std::make_shared<prometheus::Registry>()),
        memory_(std::make_shared<ResidentMemoryCollector>()),
        requests_(Build<prometheus::Counter>(
            "vitserve_requests_total",
            "Finished requests by model, token-reduction method and gRPC status code.")),
        request_duration_(Build<prometheus::Histogram>(
            "vitserve_request_duration_seconds",
            "Server-side time from admission to response of successful requests, seconds.")),
        queue_duration_(Build<prometheus::Histogram>(
            "vitserve_queue_duration_seconds",
            "Time successful requests waited before their batch started, seconds.")),
        compute_duration_(Build<prometheus::Histogram>(
            "vitserve_compute_duration_seconds",
            "Compute time of the batch that answered each successful request, seconds.")),
        batch_compute_duration_(
            Build<prometheus::Histogram>("vitserve_batch_compute_duration_seconds",
                                         "Compute time per executed batch, seconds.")),
        images_(Build<prometheus::Counter>("vitserve_images_total",
                                           "Images run through the model (sum of batch sizes).")),
        batches_(Build<prometheus::Counter>("vitserve_batches_total", "Executed batches.")),
        batch_size_(
            Build<prometheus::Histogram>("vitserve_batch_size", "Images per executed batch.")),
        batch_keep_rate_(Build<prometheus::Histogram>(
            "vitserve_batch_keep_rate", "Keep-rate (ratio 0-1) applied per executed batch.")),
        macs_(Build<prometheus::Counter>(
            "vitserve_macs_total",
            "Multiply-adds executed for successful requests (FLOPs = 2 x MACs).")),
        dense_macs_(Build<prometheus::Counter>(
            "vitserve_dense_macs_total",
            "Multiply-adds the dense model would have executed for the same requests.")),
        request_macs_(Build<prometheus::Histogram>(
            "vitserve_request_macs", "Multiply-adds executed per successful request.")),
        keep_rate_(Build<prometheus::Histogram>(
            "vitserve_keep_rate", "Keep-rate (ratio 0-1) applied per successful request.")),
        budget_(Build<prometheus::Counter>(
            "vitserve_latency_budget_total",
            "Requests with a latency budget or deadline, by whether the answer met it.")),
        rejections_(Build<prometheus::Counter>("vitserve_rejections_total",
                                               "Requests refused before or instead of compute.")),
        queue_depth_(Build<prometheus::Gauge>("vitserve_queue_depth",
                                              "Requests waiting for a batch, per model.")),
        arrival_rate_(Build<prometheus::Gauge>(
            "vitserve_arrival_rate",
            "Requests per second offered to the model recently (budget scheduler).")),
        keep_rate_cap_(Build<prometheus::Gauge>(
            "vitserve_keep_rate_cap",
            "Highest keep-rate (ratio 0-1) the budget scheduler serves at the current load.")),
        safety_factor_(Build<prometheus::Gauge>(
            "vitserve_latency_safety_factor",
            "Multiplier (>= 1) the budget scheduler applies to predicted compute times.")),
        reserve_(Build<prometheus::Gauge>(
            "vitserve_budget_reserve_ratio",
            "Fraction (0-1) of each budget the budget scheduler keeps free at its end.")),
        miss_ratio_(Build<prometheus::Gauge>(
            "vitserve_budget_miss_ratio",
            "Recent ratio (0-1) of admitted budgeted requests that missed their budget.")),
        in_flight_(Build<prometheus::Gauge>("vitserve_in_flight_requests",
                                            "Requests admitted and not yet answered.")),
        model_info_(Build<prometheus::Gauge>(
            "vitserve_model_info", "Loaded models: constant 1 with method and version labels.")),
        latency_abs_error_(Build<prometheus::Histogram>(
            "vitserve_latency_model_abs_error_seconds",
            "Absolute error of the latency model, |observed - predicted|, seconds.")),
        latency_rel_error_(Build<prometheus::Histogram>(
            "vitserve_latency_model_relative_error",
            "Relative error of the latency model, |observed - predicted| / predicted.")),
        latency_directions_(Build<prometheus::Counter>(
            "vitserve_latency_model_predictions_total",
            "Latency predictions checked, by direction: under = observed > predicted.")),
        latency_predicted_(Build<prometheus::Counter>(
            "vitserve_latency_model_predicted_seconds_total",
            "Sum of predicted latencies, seconds (divide rates by observed for the bias).")),
        latency_observed_(Build<prometheus::Counter>(
            "vitserve_latency_model_observed_seconds_total",
            "Sum of observed latencies matching the predictions, seconds.")),
        expected_accuracy_(Build<prometheus::Histogram>(
            "vitserve_expected_accuracy",
            "Expected top-1 accuracy (ratio 0-1) of each answer, from the calibration curve.")),
        shadow_(Build<prometheus::Counter>(
            "vitserve_shadow_comparisons_total",
            "Shadow dense comparisons by outcome: top-1 agree, disagree, or skipped.")),
        shadow_kl_(Build<prometheus::Histogram>(
            "vitserve_shadow_kl_divergence",
            "KL divergence (nats) of the pruned from the dense softmax, shadowed requests.")),
        top1_probability_(Build<prometheus::Histogram>(
            "vitserve_top1_probability",
            "Softmax probability of the top class per successful request, by keep-rate level.")),
        in_flight_gauge_(&in_flight_.Add({})) {}

  ~ServerMetricsImpl() override {
    // Stop serving scrapes before the registry and collectors go away.
    exposer_.reset();
  }

  absl::Status StartExposer(const MetricsOptions& options) {
    const size_t colon = options.bind_address.rfind(':');
    int port_number = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(options.bind_address.substr(colon + 1), &port_number) ||
        port_number < 0 || port_number > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics bind address '", options.bind_address,
                       "' is not HOST:PORT (e.g. 127.0.0.1:9090, port 0 = any free port)"));
    }
    if (options.exposer_threads < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics exposer_threads must be >= 1, got ", options.exposer_threads));
    }
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(
          options.bind_address, static_cast<size_t>(options.exposer_threads));
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", options.bind_address, ": ", e.what()));
    }
    exposer_->RegisterCollectable(registry_);
    exposer_->RegisterCollectable(memory_);
    const std::vector<int> ports = exposer_->GetListeningPorts();
    if (ports.empty()) {
      exposer_.reset();
      return absl::UnavailableError(
          absl::StrCat("metrics exposer on ", options.bind_address, " bound no port"));
    }
    port_ = ports.front();
    return absl::OkStatus();
  }

  void OnRequestDone(const RequestRecord& r) override {
    ModelMetrics& m = Model(r.model);
    const int code =
        r.grpc_code >= 0 && r.grpc_code < kNumGrpcCodes ? r.grpc_code : kGrpcUnknownCode;
    const int method = MethodIndex(r.method);
    Lazy(m.requests[method][code], [&]() -> Counter& {
      return requests_.Add(
          {{"model", m.label}, {"method", MethodLabel(method)}, {"code", kGrpcCodeNames[code]}});
    }).Increment();

    if (r.had_budget) {
      const int outcome = r.budget_met ? 0 : 1;
      Lazy(m.budget[outcome], [&]() -> Counter& {
        return budget_.Add({{"model", m.label}, {"outcome", kBudgetOutcomes[outcome]}});
      }).Increment();
    }
    if (r.grpc_code != 0) return;

    ObserveSeconds(*m.request_duration, r.total_seconds);
    ObserveSeconds(*m.queue_duration, r.queue_seconds);
    ObserveSeconds(*m.compute_duration, r.compute_seconds);
    m.macs->Increment(static_cast<double>(r.macs));
    m.dense_macs->Increment(static_cast<double>(r.dense_macs));
    m.request_macs->Observe(static_cast<double>(r.macs));
    if (IsFinite(r.keep_rate)) {
      const double keep_rate = RoundKeepRate(r.keep_rate);
      m.keep_rate->Observe(keep_rate);
      if (IsFinite(r.top1_probability)) {
        const int level = KeepRateLevelIndex(keep_rate);
        Lazy(m.top1_probability[level], [&]() -> Histogram& {
          return top1_probability_.Add(
              {{"model", m.label}, {"keep_rate_level", KeepRateLevelLabel(level)}},
              Buckets(kProbabilityBuckets));
        }).Observe(r.top1_probability);
      }
    }
    if (IsFinite(r.expected_accuracy) && r.expected_accuracy > 0) {
      m.expected_accuracy->Observe(r.expected_accuracy);
    }
  }

  void OnBatch(const std::string& model, int batch_size, float keep_rate,
               double compute_seconds) override {
    ModelMetrics& m = Model(model);
    m.batches->Increment();
    if (batch_size > 0) {
      m.images->Increment(batch_size);
      m.batch_size->Observe(batch_size);
    }
    if (IsFinite(keep_rate)) m.batch_keep_rate->Observe(RoundKeepRate(keep_rate));
    ObserveSeconds(*m.batch_compute_duration, compute_seconds);
  }

  void OnRejected(const std::string& model, const std::string& reason) override {
    ModelMetrics& m = Model(model);
    const int index = ReasonIndex(reason);
    Lazy(m.rejections[index], [&]() -> Counter& {
      return rejections_.Add({{"model", m.label}, {"reason", kRejectReasons[index]}});
    }).Increment();
  }

  void SetQueueDepth(const std::string& model, int64_t depth) override {
    Model(model).queue_depth->Set(static_cast<double>(depth));
  }

  void SetLoad(const std::string& model, double arrival_rate, float keep_rate_cap) override {
    ModelMetrics& m = Model(model);
    ModelGauge(m, m.arrival_rate, arrival_rate_).Set(arrival_rate);
    ModelGauge(m, m.keep_rate_cap, keep_rate_cap_).Set(static_cast<double>(keep_rate_cap));
  }

  void SetLatencyGuard(const std::string& model, double safety_factor, double reserve,
                       double miss_ratio) override {
    ModelMetrics& m = Model(model);
    ModelGauge(m, m.safety_factor, safety_factor_).Set(safety_factor);
    ModelGauge(m, m.reserve, reserve_).Set(reserve);
    ModelGauge(m, m.miss_ratio, miss_ratio_).Set(miss_ratio);
  }

  // The model's gauge of `family`, added on first use.
  static Gauge& ModelGauge(ModelMetrics& m, std::atomic<Gauge*>& slot, Family<Gauge>& family) {
    return Lazy(slot, [&]() -> Gauge& { return family.Add({{"model", m.label}}); });
  }

  void AddInFlight(int64_t delta) override {
    in_flight_gauge_->Increment(static_cast<double>(delta));
  }

  void OnModelLoaded(const std::string& model, const std::string& method,
                     const std::string& version) override {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<ModelMetrics>& slot = models_[model];
    if (slot == nullptr) slot = NewModel(model);
    if (slot->info != nullptr) model_info_.Remove(slot->info);
    slot->info = &model_info_.Add(
        {{"model", model}, {"method", MethodLabel(MethodIndex(method))}, {"version", version}});
    slot->info->Set(1);
  }

  void OnLatencyPrediction(const std::string& model, double predicted_seconds,
                           double observed_seconds) override {
    if (!IsFinite(predicted_seconds) || !IsFinite(observed_seconds) || predicted_seconds < 0 ||
        observed_seconds < 0) {
      return;
    }
    ModelMetrics& m = Model(model);
    const double abs_error = std::abs(observed_seconds - predicted_seconds);
    m.latency_abs_error->Observe(abs_error);
    if (predicted_seconds > 0) m.latency_rel_error->Observe(abs_error / predicted_seconds);
    const int direction = observed_seconds > predicted_seconds ? 0 : 1;
    Lazy(m.prediction_direction[direction], [&]() -> Counter& {
      return latency_directions_.Add(
          {{"model", m.label}, {"direction", kPredictionDirections[direction]}});
    }).Increment();
    m.latency_predicted->Increment(predicted_seconds);
    m.latency_observed->Increment(observed_seconds);
  }

  void OnShadow(const std::string& model, const ShadowRecord& record) override {
    ModelMetrics& m = Model(model);
    const bool skipped = record.outcome == ShadowRecord::Outcome::kSkipped;
    const double kl_divergence = record.kl_divergence;
    const int outcome = skipped                                           ? kShadowSkipped
                        : record.outcome == ShadowRecord::Outcome::kAgree ? kShadowAgree
                                                                          : kShadowDisagree;
    Lazy(m.shadow[outcome], [&]() -> Counter& {
      return shadow_.Add({{"model", m.label}, {"outcome", kShadowOutcomes[outcome]}});
    }).Increment();
    if (!skipped && IsFinite(kl_divergence)) m.shadow_kl->Observe(std::max(0.0, kl_divergence));
  }

  std::string Serialize() const override {
    std::vector<prometheus::MetricFamily> families = registry_->Collect();
    for (prometheus::MetricFamily& f : memory_->Collect()) families.push_back(std::move(f));
    return prometheus::TextSerializer().Serialize(families);
  }

  int port() const override { return port_; }

 private:
  template <typename T>
  Family<T>& Build(const std::string& name, const std::string& help) {
    if constexpr (std::is_same_v<T, Counter>) {
      return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
    } else if constexpr (std::is_same_v<T, Gauge>) {
      return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
    } else {
      return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
    }
  }

  // The series of `model`, or of kUnknownModel when it was never announced.
  ModelMetrics& Model(const std::string& model) {
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = models_.find(model);
      if (it != models_.end()) return *it->second;
      if (unknown_ != nullptr) return *unknown_;
    }
    absl::MutexLock lock(&mu_);
    if (unknown_ == nullptr) unknown_ = NewModel(kUnknownModel);
    return *unknown_;
  }

  std::unique_ptr<ModelMetrics> NewModel(const std::string& label)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto m = std::make_unique<ModelMetrics>();
    m->label = label;
    const prometheus::Labels labels = {{"model", label}};
    m->request_duration = &request_duration_.Add(labels, Buckets(kLatencyBuckets));
    m->queue_duration = &queue_duration_.Add(labels, Buckets(kLatencyBuckets));
    m->compute_duration = &compute_duration_.Add(labels, Buckets(kLatencyBuckets));
    m->batch_compute_duration = &batch_compute_duration_.Add(labels, Buckets(kLatencyBuckets));
    m->batch_size = &batch_size_.Add(labels, Buckets(kBatchSizeBuckets));
    m->batch_keep_rate = &batch_keep_rate_.Add(labels, Buckets(kKeepRateBuckets));
    m->request_macs = &request_macs_.Add(labels, Buckets(kMacsBuckets));
    m->keep_rate = &keep_rate_.Add(labels, Buckets(kKeepRateBuckets));
    m->expected_accuracy = &expected_accuracy_.Add(labels, Buckets(kAccuracyBuckets));
    m->shadow_kl = &shadow_kl_.Add(labels, Buckets(kKlBuckets));
    m->latency_abs_error = &latency_abs_error_.Add(labels, Buckets(kAbsErrorBuckets));
    m->latency_rel_error = &latency_rel_error_.Add(labels, Buckets(kRelErrorBuckets));
    m->images = &images_.Add(labels);
    m->batches = &batches_.Add(labels);
    m->macs = &macs_.Add(labels);
    m->dense_macs = &dense_macs_.Add(labels);
    m->latency_predicted = &latency_predicted_.Add(labels);
    m->latency_observed = &latency_observed_.Add(labels);
    m->queue_depth = &queue_depth_.Add(labels);
    return m;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ResidentMemoryCollector> memory_;
  // Families (owned by registry_).
  Family<Counter>& requests_;
  Family<Histogram>& request_duration_;
  Family<Histogram>& queue_duration_;
  Family<Histogram>& compute_duration_;
  Family<Histogram>& batch_compute_duration_;
  Family<Counter>& images_;
  Family<Counter>& batches_;
  Family<Histogram>& batch_size_;
  Family<Histogram>& batch_keep_rate_;
  Family<Counter>& macs_;
  Family<Counter>& dense_macs_;
  Family<Histogram>& request_macs_;
  Family<Histogram>& keep_rate_;
  Family<Counter>& budget_;
  Family<Counter>& rejections_;
  Family<Gauge>& queue_depth_;
  Family<Gauge>& arrival_rate_;
  Family<Gauge>& keep_rate_cap_;
  Family<Gauge>& safety_factor_;
  Family<Gauge>& reserve_;
  Family<Gauge>& miss_ratio_;
  Family<Gauge>& in_flight_;
  Family<Gauge>& model_info_;
  Family<Histogram>& latency_abs_error_;
  Family<Histogram>& latency_rel_error_;
  Family<Counter>& latency_directions_;
  Family<Counter>& latency_predicted_;
  Family<Counter>& latency_observed_;
  Family<Histogram>& expected_accuracy_;
  Family<Counter>& shadow_;
  Family<Histogram>& shadow_kl_;
  Family<Histogram>& top1_probability_;
  Gauge* const in_flight_gauge_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelMetrics>> models_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ModelMetrics> unknown_ ABSL_GUARDED_BY(mu_);

  int port_ = 0;
  // Last member: destroyed first, so no scrape runs while the rest is torn down.
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(
    const MetricsOptions& options) {
  auto metrics = std::make_unique<ServerMetricsImpl>();
  if (!options.bind_address.empty()) {
    absl::Status status = metrics->StartExposer(options);
    if (!status.ok()) return status;
  }
  return std::unique_ptr<ServerMetrics>(std::move(metrics));
}

}  // namespace vitserve
