#include "server/metrics/server_metrics.h"

#include <unistd.h>

#include <exception>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/metric_families.h"
#include "server/metrics/model_series.h"

namespace vitserve {
namespace {

using metrics_internal::Gauge;
using metrics_internal::kUnknownModel;
using metrics_internal::MethodIndex;
using metrics_internal::MethodLabel;
using metrics_internal::MetricFamilies;
using metrics_internal::ModelSeries;

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

class ServerMetricsImpl : public ServerMetrics {
 public:
  ServerMetricsImpl()
      : registry_(std::make_shared<prometheus::Registry>()),
        memory_(std::make_shared<ResidentMemoryCollector>()),
        families_(metrics_internal::BuildMetricFamilies(*registry_)),
        in_flight_gauge_(&families_.state.in_flight.Add({})) {}

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

  ModelMetrics* ForModel(const std::string& model, const std::string& method) override {
    const int method_index = MethodIndex(method);
    {
      absl::ReaderMutexLock lock(&mu_);
      ModelSeries* series = FindSeries(model);
      if (series != nullptr && series->handles[method_index] != nullptr) {
        return series->handles[method_index].get();
      }
    }
    absl::MutexLock lock(&mu_);
    ModelSeries* series = FindSeries(model);
    if (series == nullptr) {
      unknown_ = metrics_internal::NewModelSeries(families_, kUnknownModel);
      series = unknown_.get();
    }
    std::unique_ptr<ModelMetrics>& handle = series->handles[method_index];
    if (handle == nullptr) {
      handle = metrics_internal::NewModelMetrics(families_, *series, method_index);
    }
    return handle.get();
  }

  void AddInFlight(int64_t delta) override {
    in_flight_gauge_->Increment(static_cast<double>(delta));
  }

  void OnModelLoaded(const std::string& model, const std::string& method,
                     const std::string& version) override {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<ModelSeries>& slot = models_[model];
    if (slot == nullptr) slot = metrics_internal::NewModelSeries(families_, model);
    if (slot->info != nullptr) families_.state.model_info.Remove(slot->info);
    slot->info = &families_.state.model_info.Add(
        {{"model", model}, {"method", MethodLabel(MethodIndex(method))}, {"version", version}});
    slot->info->Set(1);
  }

  std::string Serialize() const override {
    std::vector<prometheus::MetricFamily> families = registry_->Collect();
    for (prometheus::MetricFamily& f : memory_->Collect()) families.push_back(std::move(f));
    return prometheus::TextSerializer().Serialize(families);
  }

  int port() const override { return port_; }

 private:
  // The series of `model`, of kUnknownModel when it was never announced, or null when
  // neither exists yet.
  ModelSeries* FindSeries(const std::string& model) ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    auto it = models_.find(model);
    return it != models_.end() ? it->second.get() : unknown_.get();
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ResidentMemoryCollector> memory_;
  const MetricFamilies families_;  // owned by registry_
  Gauge* const in_flight_gauge_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelSeries>> models_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ModelSeries> unknown_ ABSL_GUARDED_BY(mu_);

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

void ServerMetrics::OnRequestDone(const RequestRecord& r) {
  ForModel(r.model, r.method)->OnRequestDone(r);
}

void ServerMetrics::OnBatch(const std::string& model, int batch_size, float keep_rate,
                            double compute_seconds) {
  ForModel(model, "")->OnBatch(batch_size, keep_rate, compute_seconds);
}

void ServerMetrics::OnRejected(const std::string& model, const std::string& reason) {
  ForModel(model, "")->OnRejected(reason);
}

void ServerMetrics::SetQueueDepth(const std::string& model, int64_t depth) {
  ForModel(model, "")->SetQueueDepth(depth);
}

void ServerMetrics::SetLoad(const std::string& model, double arrival_rate, float keep_rate_cap) {
  ForModel(model, "")->SetLoad(arrival_rate, keep_rate_cap);
}

void ServerMetrics::SetLatencyGuard(const std::string& model, double safety_factor, double reserve,
                                    double miss_ratio) {
  ForModel(model, "")->SetLatencyGuard(safety_factor, reserve, miss_ratio);
}

void ServerMetrics::OnLatencyPrediction(const std::string& model, double predicted_seconds,
                                        double observed_seconds) {
  ForModel(model, "")->OnLatencyPrediction(predicted_seconds, observed_seconds);
}

void ServerMetrics::OnShadow(const std::string& model, const ShadowRecord& record) {
  ForModel(model, "")->OnShadow(record);
}

}  // namespace vitserve
