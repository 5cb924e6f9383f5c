// The served models and their versions: lookup by name, the default model, hot reload
// (checks that the new version may replace the old one, warms it up, swaps atomically),
// and the ListModels / GetModelInfo answers. No gRPC, no LibTorch.
//
// Thread-safety: the set of models is fixed at Create(); each model's served version and
// ModelInfo are guarded (ModelState::Current / Swap), so every method is thread-safe.
#ifndef VITSERVE_SERVER_SERVING_MODEL_REGISTRY_H_
#define VITSERVE_SERVER_SERVING_MODEL_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/budget/latency_guard.h"
#include "server/budget/latency_model.h"
#include "server/metrics/server_metrics.h"
#include "server/scheduler/keep_rate_floor.h"
#include "server/serving/classify_logic.h"
#include "server/serving/inference_task.h"
#include "server/serving/serving_options.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

// Per-model serving state: immutable after ServingCore::Create() except the counters and
// the served version.
struct ModelState {
  // The version being served. Hot reload replaces it whole; a request or batch takes one
  // snapshot and uses it throughout, so the old version lives until its last batch is
  // answered.
  std::shared_ptr<ServedModel> Current() const {
    absl::MutexLock lock(&mu);
    return served;
  }
  vitserve::v1::ModelInfo Info() const {
    absl::MutexLock lock(&mu);
    return info;
  }
  // Also publishes the new version's accuracy curve to `accuracy`.
  void Swap(std::shared_ptr<ServedModel> next, vitserve::v1::ModelInfo next_info) {
    AccuracyCurve curve = AccuracyCurveOf(next->model->spec());
    absl::MutexLock lock(&mu);
    served = std::move(next);
    info = std::move(next_info);
    accuracy->Publish(std::move(curve));
  }

  // The first version's spec. What scheduling and validation depend on (architecture,
  // pruning, preprocessing) cannot change on reload, so this stays valid; labels,
  // calibration and version come from Current().
  ModelSpec base_spec;
  std::string name;
  std::string method;
  uint64_t dense_macs = 0;
  std::atomic<int64_t> queued{0};  // admitted, not yet in a running batch
  // The model's batching queue in the scheduler (its policy chooses every keep-rate).
  TaskScheduler::Queue* queue = nullptr;
  // kBudget: the model's latency model (shared with its BudgetPolicy); null under kFixed.
  std::shared_ptr<LatencyModel> latency;
  // kBudget with guard_miss_target > 0: the model's LatencyGuard (shared with its policy).
  std::shared_ptr<LatencyGuard> guard;
  // The served version's accuracy curve (Swap publishes it): admission validates a
  // request's floor with it, the budget policy maps the floor with it per batch.
  const std::shared_ptr<AccuracyCurveSource> accuracy =
      std::make_shared<AccuracyCurveSource>(AccuracyCurve());
  // Pruned images seen, for deterministic shadow sampling.
  std::atomic<uint64_t> shadow_seen{0};
  // The model's metrics handle (ServerMetrics::ForModel, owned by the ServerMetrics): what
  // the hot path records through, with no lookup by name. Null when serving without metrics.
  ModelMetrics* metrics = nullptr;

  const ModelSpec& spec() const { return base_spec; }

  mutable absl::Mutex mu;
  std::shared_ptr<ServedModel> served ABSL_GUARDED_BY(mu);
  vitserve::v1::ModelInfo info ABSL_GUARDED_BY(mu);
};

class ModelRegistry {
 public:
  // Takes the models (at least one, unique names, each with a preprocessor) and builds
  // the ModelInfo of each; `default_model` "" = the first. `metrics` (may be null, not
  // owned) is told about every version loaded, and each ModelState gets its handle.
  // INVALID_ARGUMENT for no models, a missing preprocessor, duplicate names or an unknown default
  // model.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Create(std::vector<ServedModel> models,
                                                               const std::string& default_model,
                                                               ServerMetrics* metrics);

  // `name` ("" = the default model). NOT_FOUND lists the served models.
  absl::StatusOr<ModelState*> Find(const std::string& name) const;
  const std::vector<std::unique_ptr<ModelState>>& models() const { return models_; }
  const std::string& default_model() const { return default_model_; }

  // Hot reload of the model named next.model->spec().name (see ServingCore::ReloadModel):
  // NOT_FOUND for a model not served, FAILED_PRECONDITION when the new version changes
  // what scheduling relies on (SpecChange in spec_compat.h) or its compacted shape, the
  // warm-up's error (full batches of `max_batch_size`) otherwise. On error the old version
  // keeps serving.
  absl::Status Reload(ServedModel next, int max_batch_size);

  // ListModels: every model (ready = `ready`).
  std::vector<vitserve::v1::ModelSummary> Summaries(bool ready) const;
  // GetModelInfo of `name` ("" = default), with the latency table's times under kBudget.
  absl::StatusOr<vitserve::v1::ModelInfo> Describe(const std::string& name) const;

 private:
  explicit ModelRegistry(ServerMetrics* metrics) : metrics_(metrics) {}

  ServerMetrics* const metrics_;
  std::vector<std::unique_ptr<ModelState>> models_;
  std::map<std::string, ModelState*> by_name_;
  std::string default_model_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_MODEL_REGISTRY_H_
