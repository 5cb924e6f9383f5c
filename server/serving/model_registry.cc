#include "server/serving/model_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/serving/classify_logic.h"
#include "server/serving/model_info.h"
#include "server/serving/spec_compat.h"
#include "server/serving/warm_up.h"
#include "server/spec/cost_model.h"

namespace vitserve {
namespace {

// GetModelInfo's answer for one loaded version, expected accuracies filled in; the kernel
// choices are added when asked (Describe), since they change while the model serves.
absl::StatusOr<vitserve::v1::ModelInfo> ServedModelInfo(const InferenceModel& model) {
  const ModelSpec& spec = model.spec();
  absl::StatusOr<vitserve::v1::ModelInfo> info =
      BuildModelInfo(spec, model.block_shapes(), model.device(), model.weight_zero_fraction());
  if (!info.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", spec.name, "': ", info.status().message()));
  }
  for (vitserve::v1::KeepRatePoint& point : *info->mutable_grid()) {
    if (point.expected_accuracy() == 0.0) {
      point.set_expected_accuracy(
          ExpectedAccuracy(spec.calibration, spec.pruning.method, point.keep_rate()));
    }
  }
  return info;
}

// The serving state of one model's first version.
absl::StatusOr<std::unique_ptr<ModelState>> MakeState(ServedModel served) {
  if (served.model == nullptr || served.preprocessor == nullptr) {
    return absl::InvalidArgumentError("a served model needs a model and a preprocessor");
  }
  auto state = std::make_unique<ModelState>();
  state->base_spec = served.model->spec();
  const ModelSpec& spec = state->spec();
  state->name = spec.name;
  state->method = std::string(MethodName(spec.pruning.method));
  state->dense_macs = DenseMacs(spec.arch, served.model->block_shapes());
  absl::StatusOr<vitserve::v1::ModelInfo> info = ServedModelInfo(*served.model);
  if (!info.ok()) return info.status();
  state->Swap(std::make_shared<ServedModel>(std::move(served)), *std::move(info));
  return state;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Create(
    std::vector<ServedModel> models, const std::string& default_model, ServerMetrics* metrics) {
  if (models.empty()) return absl::InvalidArgumentError("no models to serve");
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry(metrics));
  for (ServedModel& served : models) {
    absl::StatusOr<std::unique_ptr<ModelState>> state = MakeState(std::move(served));
    if (!state.ok()) return state.status();
    ModelState* s = state->get();
    if (!registry->by_name_.emplace(s->name, s).second) {
      return absl::InvalidArgumentError(absl::StrCat("two models named '", s->name, "'"));
    }
    if (metrics != nullptr) {
      metrics->OnModelLoaded(s->name, s->method, s->spec().version);
      s->metrics = metrics->ForModel(s->name, s->method);
    }
    registry->models_.push_back(*std::move(state));
  }
  registry->default_model_ = default_model.empty() ? registry->models_[0]->name : default_model;
  if (registry->by_name_.count(registry->default_model_) == 0) {
    std::vector<std::string> names;
    for (const auto& [name, state] : registry->by_name_) names.push_back(name);
    return absl::InvalidArgumentError(
        absl::StrCat("default model '", registry->default_model_,
                     "' is not served; served models: ", absl::StrJoin(names, ", ")));
  }
  return registry;
}

absl::StatusOr<ModelState*> ModelRegistry::Find(const std::string& name) const {
  const std::string& wanted = name.empty() ? default_model_ : name;
  auto it = by_name_.find(wanted);
  if (it != by_name_.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [served_name, state] : by_name_) names.push_back(served_name);
  return absl::NotFoundError(
      absl::StrCat("unknown model '", wanted, "'; served models: ", absl::StrJoin(names, ", ")));
}

absl::Status ModelRegistry::Reload(ServedModel next, int max_batch_size) {
  if (next.model == nullptr || next.preprocessor == nullptr) {
    return absl::InvalidArgumentError("a served model needs a model and a preprocessor");
  }
  const std::string& name = next.model->spec().name;
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' is not served; adding models needs a restart"));
  }
  ModelState* state = it->second;
  if (std::string what = SpecChange(state->base_spec, next.model->spec()); !what.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", name, "': the new version changes ", what,
        "; only weights, labels, calibration and version can change without a restart"));
  }
  if (next.model->block_shapes().size() != state->Current()->model->block_shapes().size() ||
      DenseMacs(state->base_spec.arch, next.model->block_shapes()) != state->dense_macs) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", name, "': the new version's compacted shape differs; restart to change it"));
  }
  // The new weights' first touch and the full-batch shapes are paid here, before the
  // swap, not by the first real batch. (On the reloading thread: the batch threads are
  // busy serving the old version; their own first-use costs were paid at start-up.)
  if (absl::Status s = WarmUpModel(*next.model, 1, next.model->spec().pruning.default_keep_rate);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WarmUpFullBatches(*next.model, max_batch_size); !s.ok()) return s;
  absl::StatusOr<vitserve::v1::ModelInfo> info = ServedModelInfo(*next.model);
  if (!info.ok()) return info.status();
  const std::string version = next.model->spec().version;
  state->Swap(std::make_shared<ServedModel>(std::move(next)), *std::move(info));
  if (metrics_ != nullptr) metrics_->OnModelLoaded(state->name, state->method, version);
  return absl::OkStatus();
}

std::vector<vitserve::v1::ModelSummary> ModelRegistry::Summaries(bool ready) const {
  std::vector<vitserve::v1::ModelSummary> out;
  for (const auto& state : models_) {
    vitserve::v1::ModelSummary& summary = out.emplace_back();
    summary.set_name(state->name);
    summary.set_method(state->method);
    summary.set_version(state->Current()->model->spec().version);
    summary.set_ready(ready);
  }
  return out;
}

absl::StatusOr<vitserve::v1::ModelInfo> ModelRegistry::Describe(const std::string& name) const {
  absl::StatusOr<ModelState*> found = Find(name);
  if (!found.ok()) return found.status();
  vitserve::v1::ModelInfo info = (*found)->Info();
  // Kernel choices as of now, not as at load: the last line (how one-image forwards run,
  // server/model/split_chooser.h) follows the forwards served. A reload between the two
  // reads gives the other version's lines, as a call a moment later would.
  const std::shared_ptr<ServedModel> served = (*found)->Current();
  if (served != nullptr && served->model != nullptr) {
    info.clear_kernel_choices();
    for (const std::string& choice : served->model->kernel_choices()) {
      info.add_kernel_choices(choice);
    }
  }
  if ((*found)->latency != nullptr) {
    const std::shared_ptr<const LatencyTable> table = (*found)->latency->Snapshot();
    for (vitserve::v1::KeepRatePoint& point : *info.mutable_grid()) {
      for (const auto& [batch, seconds] : table->SecondsByBatch(point.keep_rate())) {
        (*point.mutable_latency_seconds_by_batch())[batch] = seconds;
      }
    }
  }
  return info;
}

}  // namespace vitserve
