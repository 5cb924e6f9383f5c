#include "server/rpc/inference_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/budget/budget_policy.h"
#include "server/budget/latency_sweep.h"
#include "server/pruning/cost_model.h"
#include "server/rpc/bounded_stream_reactor.h"
#include "server/rpc/classify_logic.h"
#include "server/rpc/grpc_deadline.h"
#include "server/rpc/model_info.h"
#include "server/rpc/status_util.h"

namespace vitserve {

using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

// Per-model serving state: immutable after Create() except the queue counter.
struct ModelState {
  // The version being served. Hot reload (InferenceServiceImpl::ReloadModel) replaces it
  // whole; a request or batch takes one snapshot and uses it throughout, so the old
  // version lives until its last batch is answered.
  std::shared_ptr<ServedModel> Current() const {
    absl::MutexLock lock(&mu);
    return served;
  }
  vitserve::v1::ModelInfo Info() const {
    absl::MutexLock lock(&mu);
    return info;
  }
  void Swap(std::shared_ptr<ServedModel> next, vitserve::v1::ModelInfo next_info) {
    absl::MutexLock lock(&mu);
    served = std::move(next);
    info = std::move(next_info);
  }

  // The first version's spec. What scheduling and validation depend on (architecture,
  // pruning, preprocessing) cannot change on reload, so this stays valid; labels,
  // calibration and version come from Current().
  ModelSpec base_spec;
  std::string name;
  std::string method;
  uint64_t dense_macs = 0;
  std::atomic<int64_t> queued{0};  // admitted, not yet in a running batch
  // kBudget: the model's latency model (shared with its BudgetPolicy); null under kFixed.
  std::shared_ptr<LatencyModel> latency;
  // kBudget with guard_miss_target > 0: the model's LatencyGuard (shared with its policy).
  std::shared_ptr<LatencyGuard> guard;
  // Pruned images seen, for deterministic shadow sampling.
  std::atomic<uint64_t> shadow_seen{0};

  const ModelSpec& spec() const { return base_spec; }

  mutable absl::Mutex mu;
  std::shared_ptr<ServedModel> served ABSL_GUARDED_BY(mu);
  vitserve::v1::ModelInfo info ABSL_GUARDED_BY(mu);
};

namespace {

// Metrics reason for a status that refused a request before compute; empty = none.
const char* RejectReason(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kResourceExhausted:
      return kRejectQueueFull;
    case absl::StatusCode::kDeadlineExceeded:
      return kRejectDeadline;
    case absl::StatusCode::kCancelled:
      return kRejectCancelled;
    case absl::StatusCode::kUnavailable:
      return kRejectDraining;
    default:
      return "";
  }
}

// kBudget: one queue per model (key = model name), each decided by that model's policy.
class PerModelPolicy final : public BatchPolicy {
 public:
  explicit PerModelPolicy(std::map<std::string, std::unique_ptr<BatchPolicy>> policies)
      : policies_(std::move(policies)) {}

  BatchDecision Decide(const QueueSnapshot& queue, absl::Time now) const override {
    auto it = policies_.find(std::string(queue.key));
    if (it != policies_.end()) return it->second->Decide(queue, now);
    BatchDecision decision;  // unreachable: keys are the served models' names
    for (size_t i = 0; i < queue.tasks.size(); ++i) {
      decision.reject.emplace_back(
          i, absl::InternalError(absl::StrCat("no batching policy for queue '", queue.key, "'")));
    }
    return decision;
  }

  absl::Status Admit(const QueueSnapshot& queue, absl::Time now,
                     absl::Time free_at) const override {
    auto it = policies_.find(std::string(queue.key));
    return it == policies_.end() ? absl::OkStatus() : it->second->Admit(queue, now, free_at);
  }

 private:
  const std::map<std::string, std::unique_ptr<BatchPolicy>> policies_;
};

// Table batch sizes for the latency model: powers of two below max_batch_size, then
// max_batch_size itself (1, 2, 4, 8 for the default 8).
std::vector<int> SweepBatchSizes(int max_batch_size) {
  std::vector<int> sizes;
  for (int b = 1; b < max_batch_size; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch_size);
  return sizes;
}

ClassifyResponse ErrorResponse(const std::string& request_id, const absl::Status& status) {
  ClassifyResponse response;
  response.set_request_id(request_id);
  response.mutable_error()->set_code(static_cast<int32_t>(status.code()));
  response.mutable_error()->set_message(std::string(status.message()));
  return response;
}

// Unary Classify: answers once the task is done (or at once on refusal).
class ClassifyReactor final : public grpc::ServerUnaryReactor {
 public:
  ClassifyReactor(InferenceServiceImpl* service, ClassifyResponse* response)
      : service_(service), response_(response) {}

  void Start(const ClassifyRequest& request, absl::Time client_deadline) {
    absl::Status status =
        service_->Admit(request, client_deadline, &cancelled_,
                        [this](absl::StatusOr<ClassifyResponse> result) { Complete(result); });
    if (!status.ok()) Finish(ToGrpcStatus(status));
  }

  void OnCancel() override {
    cancelled_ = true;
    service_->KickScheduler();
  }
  void OnDone() override { delete this; }

 private:
  void Complete(absl::StatusOr<ClassifyResponse>& result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    response_->Swap(&*result);
    Finish(grpc::Status::OK);
  }

  InferenceServiceImpl* const service_;
  ClassifyResponse* const response_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

namespace {

// GetModelInfo's answer for one loaded version, expected accuracies filled in.
absl::StatusOr<vitserve::v1::ModelInfo> ServedModelInfo(const InferenceModel& model) {
  const ModelSpec& spec = model.spec();
  absl::StatusOr<vitserve::v1::ModelInfo> info =
      BuildModelInfo(spec, model.block_shapes(), model.device(), model.weight_zero_fraction());
  if (!info.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", spec.name, "': ", info.status().message()));
  }
  for (const std::string& choice : model.kernel_choices()) info->add_kernel_choices(choice);
  for (vitserve::v1::KeepRatePoint& point : *info->mutable_grid()) {
    if (point.expected_accuracy() == 0.0) {
      point.set_expected_accuracy(
          ExpectedAccuracy(spec.calibration, spec.pruning.method, point.keep_rate()));
    }
  }
  return info;
}

// Runs `batch_size` zero images at `keep_rate` (lazy initialisation before traffic) and
// checks that the logits are finite.
absl::Status WarmUpModel(InferenceModel& model, int batch_size, float keep_rate) {
  const ModelSpec& spec = model.spec();
  ImageTensor zero;
  zero.channels = spec.arch.in_chans;
  zero.height = spec.arch.image_size;
  zero.width = spec.arch.image_size;
  zero.data.assign(static_cast<size_t>(zero.channels) * zero.height * zero.width, 0.0f);
  const std::vector<const ImageTensor*> images(static_cast<size_t>(std::max(1, batch_size)), &zero);
  absl::StatusOr<std::vector<ImageResult>> result = model.Run(images, keep_rate);
  if (!result.ok()) {
    return absl::Status(
        result.status().code(),
        absl::StrCat("warm-up of model '", spec.name, "' failed: ", result.status().message()));
  }
  for (const ImageResult& r : *result) {
    for (float l : r.logits) {
      if (!std::isfinite(l)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "warm-up of model '", spec.name, "' produced non-finite logits (broken weights?)"));
      }
    }
  }
  return absl::OkStatus();
}

// What a reload may not change: everything scheduling, validation and the latency model
// rely on. Empty = compatible, else the first difference.
std::string Incompatibility(const ModelSpec& a, const InferenceModel& next) {
  const ModelSpec& b = next.spec();
  const Architecture& x = a.arch;
  const Architecture& y = b.arch;
  if (x.image_size != y.image_size || x.patch_size != y.patch_size || x.in_chans != y.in_chans ||
      x.embed_dim != y.embed_dim || x.depth != y.depth || x.num_heads != y.num_heads ||
      x.mlp_ratio != y.mlp_ratio || x.num_classes != y.num_classes || x.distilled != y.distilled) {
    return "the architecture";
  }
  const PruningSpec& p = a.pruning;
  const PruningSpec& q = b.pruning;
  if (p.method != q.method || p.locations != q.locations ||
      p.default_keep_rate != q.default_keep_rate || p.min_keep_rate != q.min_keep_rate ||
      p.max_keep_rate != q.max_keep_rate || p.attn_ratio != q.attn_ratio ||
      p.svite_plain_removal != q.svite_plain_removal || p.tnt_seed != q.tnt_seed) {
    return "the pruning settings";
  }
  const PreprocessSpec& r = a.preprocess;
  const PreprocessSpec& s = b.preprocess;
  if (r.resize != s.resize || r.crop_pct != s.crop_pct || r.interpolation != s.interpolation ||
      r.mean != s.mean || r.std != s.std || r.grayscale != s.grayscale || r.invert != s.invert) {
    return "the preprocessing";
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> InferenceServiceImpl::Create(
    std::vector<ServedModel> models, const InferenceServiceOptions& options, const Clock* clock,
    ServerMetrics* metrics) {
  if (clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (models.empty()) return absl::InvalidArgumentError("no models to serve");
  if (options.max_stream_in_flight < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_stream_in_flight must be >= 1, got ", options.max_stream_in_flight));
  }
  std::unique_ptr<InferenceServiceImpl> service(new InferenceServiceImpl(options, clock, metrics));
  for (ServedModel& served : models) {
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
    if (!service->by_name_.emplace(state->name, state.get()).second) {
      return absl::InvalidArgumentError(absl::StrCat("two models named '", state->name, "'"));
    }
    if (metrics != nullptr) metrics->OnModelLoaded(state->name, state->method, spec.version);
    service->models_.push_back(std::move(state));
  }
  service->default_model_ =
      options.default_model.empty() ? service->models_[0]->name : options.default_model;
  if (service->by_name_.count(service->default_model_) == 0) {
    std::vector<std::string> names;
    for (const auto& [name, state] : service->by_name_) names.push_back(name);
    return absl::InvalidArgumentError(
        absl::StrCat("default model '", service->default_model_,
                     "' is not served; served models: ", absl::StrJoin(names, ", ")));
  }

  Scheduler::Options scheduler_options;
  scheduler_options.max_batch_size = options.max_batch_size;
  scheduler_options.max_queue_delay = options.max_queue_delay;
  scheduler_options.max_enqueued = options.max_queue_size;
  scheduler_options.num_batch_threads = options.num_batch_threads;
  InferenceServiceImpl* self = service.get();
  Scheduler::Callbacks callbacks{[self](const std::string& /*key*/, float keep_rate,
                                        std::vector<std::unique_ptr<InferenceTask>> batch) {
                                   self->ProcessBatch(keep_rate, std::move(batch));
                                 },
                                 [self](std::unique_ptr<InferenceTask> task, absl::Status status) {
                                   self->Reject(std::move(task), std::move(status));
                                 },
                                 [self] { self->WarmUpBatchThread(); }};
  std::unique_ptr<BatchPolicy> policy;  // null = size-or-delay from scheduler_options
  if (options.scheduler == SchedulerKind::kBudget) {
    absl::StatusOr<std::unique_ptr<BatchPolicy>> made = service->MakeBudgetPolicies();
    if (!made.ok()) return made.status();
    policy = std::move(*made);
  }
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(scheduler_options, std::move(callbacks), clock, std::move(policy));
  if (!scheduler.ok()) return scheduler.status();
  service->scheduler_ = std::move(*scheduler);
  return service;
}

absl::StatusOr<std::unique_ptr<BatchPolicy>> InferenceServiceImpl::MakeBudgetPolicies() {
  if (options_.sweep_repeats < 1 || options_.sweep_warmup_runs < 0 ||
      options_.sweep_time_cap < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep options out of range: repeats ", options_.sweep_repeats,
                     " (>= 1), warm-up runs ", options_.sweep_warmup_runs, " (>= 0), time cap ",
                     absl::FormatDuration(options_.sweep_time_cap), " (>= 0)"));
  }
  std::map<std::string, std::unique_ptr<BatchPolicy>> policies;
  for (const auto& state : models_) {
    const ModelSpec& spec = state->spec();
    auto in_model = [&](const absl::Status& status) {
      return absl::Status(
          status.code(),
          absl::StrCat("model '", state->name, "': latency-budget scheduler: ", status.message()));
    };
    absl::StatusOr<std::vector<float>> levels = MakeKeepRateLevels(
        spec.pruning.min_keep_rate, spec.pruning.max_keep_rate, kKeepRateGridStep);
    if (!levels.ok()) return in_model(levels.status());
    const std::vector<BlockShape> blocks = state->Current()->model->block_shapes();
    LatencySweepOptions sweep;
    sweep.keep_rate_levels = *levels;
    sweep.batch_sizes = SweepBatchSizes(options_.max_batch_size);
    sweep.repeats = options_.sweep_repeats;
    sweep.warmup_runs = options_.sweep_warmup_runs;
    sweep.time_cap = options_.sweep_time_cap;
    sweep.macs_per_image = [&spec, &blocks](float k) -> absl::StatusOr<uint64_t> {
      absl::StatusOr<CostEstimate> cost = EstimateCost(spec.arch, spec.pruning, k, blocks);
      if (!cost.ok()) return cost.status();
      return cost->macs;
    };
    const std::shared_ptr<ServedModel> served = state->Current();
    absl::StatusOr<LatencySweepResult> swept = RunLatencySweep(*served->model, sweep, *clock_);
    if (!swept.ok()) return in_model(swept.status());
    LatencyModel::Options latency_options;
    latency_options.keep_rate_levels = *levels;
    latency_options.batch_sizes = sweep.batch_sizes;
    absl::StatusOr<std::unique_ptr<LatencyModel>> latency =
        LatencyModel::Create(latency_options, swept->AllPoints());
    if (!latency.ok()) return in_model(latency.status());
    state->latency = std::move(*latency);
    if (options_.log) {
      const std::shared_ptr<const LatencyTable> table = state->latency->Snapshot();
      options_.log(absl::StrCat(
          "model '", state->name, "': latency sweep in ", absl::FormatDuration(swept->elapsed),
          ": ", swept->measured.size(), " points measured, ", swept->extrapolated.size(),
          " extrapolated", swept->hit_time_cap ? " (hit the time cap)" : "",
          "; batch of 1: ", absl::FormatDuration(table->Predict(levels->front(), 1)),
          " at keep-rate ", levels->front(), ", ",
          absl::FormatDuration(table->Predict(levels->back(), 1)), " at ", levels->back()));
    }
    BudgetPolicy::Options policy_options;
    policy_options.max_batch_size = options_.max_batch_size;
    policy_options.max_queue_delay = options_.max_queue_delay;
    // Requests without a budget keep the model's documented default keep-rate.
    policy_options.default_keep_rate = spec.pruning.default_keep_rate;
    policy_options.safety_fraction = options_.safety_fraction;
    policy_options.safety_margin = options_.safety_margin;
    policy_options.rescue_batching = true;
    policy_options.target_utilization = options_.target_utilization;
    policy_options.parallel_batches = options_.num_batch_threads;
    if (options_.guard_miss_target > 0.0) {
      LatencyGuard::Options guard_options;
      guard_options.target_miss_ratio = options_.guard_miss_target;
      absl::StatusOr<std::unique_ptr<LatencyGuard>> guard = LatencyGuard::Create(guard_options);
      if (!guard.ok()) return in_model(guard.status());
      state->guard = std::move(*guard);
    }
    absl::StatusOr<std::unique_ptr<BudgetPolicy>> policy =
        BudgetPolicy::Create(policy_options, state->latency, state->guard);
    if (!policy.ok()) return in_model(policy.status());
    policies.emplace(state->name, std::move(*policy));
  }
  return std::unique_ptr<BatchPolicy>(new PerModelPolicy(std::move(policies)));
}

std::shared_ptr<const LatencyModel> InferenceServiceImpl::latency_model(
    const std::string& model) const {
  auto it = by_name_.find(model);
  return it == by_name_.end() ? nullptr : it->second->latency;
}

InferenceServiceImpl::InferenceServiceImpl(const InferenceServiceOptions& options,
                                           const Clock* clock, ServerMetrics* metrics)
    : options_(options), clock_(clock), metrics_(metrics) {}

InferenceServiceImpl::~InferenceServiceImpl() { Shutdown(); }

absl::Status InferenceServiceImpl::WarmUp() {
  for (const auto& state : models_) {
    const ServedModel& served = *state->Current();
    if (options_.log) {
      for (const std::string& choice : served.model->kernel_choices()) {
        options_.log(absl::StrCat("model '", state->name, "': gemm ", choice));
      }
    }
    if (absl::Status s =
            WarmUpModel(*served.model, 1, served.model->spec().pruning.default_keep_rate);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = served.preprocessor->WarmUp(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("model '", state->name, "': ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status InferenceServiceImpl::WarmUpFullBatches(InferenceModel& model) const {
  const PruningSpec& pruning = model.spec().pruning;
  for (const float keep_rate : {pruning.max_keep_rate, pruning.min_keep_rate}) {
    if (absl::Status s = WarmUpModel(model, options_.max_batch_size, keep_rate); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void InferenceServiceImpl::WarmUpBatchThread() {
  // Failures are reported by WarmUp(), which runs the same forward before the server
  // reports SERVING.
  for (const auto& state : models_) WarmUpFullBatches(*state->Current()->model).IgnoreError();
}

absl::Status InferenceServiceImpl::ReloadModel(ServedModel next) {
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
  if (std::string what = Incompatibility(state->base_spec, *next.model); !what.empty()) {
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
  if (absl::Status s = WarmUpFullBatches(*next.model); !s.ok()) return s;
  absl::StatusOr<vitserve::v1::ModelInfo> info = ServedModelInfo(*next.model);
  if (!info.ok()) return info.status();
  const std::string version = next.model->spec().version;
  state->Swap(std::make_shared<ServedModel>(std::move(next)), *std::move(info));
  if (metrics_ != nullptr) metrics_->OnModelLoaded(state->name, state->method, version);
  return absl::OkStatus();
}

void InferenceServiceImpl::StartDraining() { draining_ = true; }

void InferenceServiceImpl::Shutdown() {
  StartDraining();
  if (scheduler_ != nullptr) scheduler_->Shutdown();
}

void InferenceServiceImpl::KickScheduler() { scheduler_->Kick(); }

absl::StatusOr<ModelState*> InferenceServiceImpl::FindModel(const std::string& name) const {
  const std::string& wanted = name.empty() ? default_model_ : name;
  auto it = by_name_.find(wanted);
  if (it != by_name_.end()) return it->second;
  std::vector<std::string> names;
  for (const auto& [served_name, state] : by_name_) names.push_back(served_name);
  return absl::NotFoundError(
      absl::StrCat("unknown model '", wanted, "'; served models: ", absl::StrJoin(names, ", ")));
}

void InferenceServiceImpl::RecordRefusal(const std::string& model, const std::string& method,
                                         const absl::Status& status, double seconds,
                                         absl::Time deadline) {
  if (metrics_ == nullptr) return;
  const char* reason = RejectReason(status.code());
  // DEADLINE_EXCEEDED before the deadline: the budget policy refused it on arrival.
  if (status.code() == absl::StatusCode::kDeadlineExceeded && clock_->Now() < deadline) {
    reason = kRejectBudgetUnmeetable;
  }
  if (*reason != '\0') metrics_->OnRejected(model, reason);
  RequestRecord record;
  record.model = model;
  record.method = method;
  record.grpc_code = static_cast<int>(status.code());
  record.total_seconds = seconds;
  // A request that carried a budget or deadline and was refused missed it: counting it
  // as "no budget" would make SLO attainment read too high under overload.
  record.had_budget = deadline != absl::InfiniteFuture();
  record.budget_met = false;
  metrics_->OnRequestDone(record);
}

absl::Status InferenceServiceImpl::Admit(
    const ClassifyRequest& request, absl::Time client_deadline, const std::atomic<bool>* cancelled,
    std::function<void(absl::StatusOr<ClassifyResponse>)> done) {
  const absl::Time arrival = clock_->Now();
  absl::StatusOr<ModelState*> found = FindModel(request.model());
  const std::string model_name = found.ok() ? (*found)->name : request.model();
  const std::string method = found.ok() ? (*found)->method : "";
  // Set once the request's budget / client deadline is known; refusals after that point
  // count as missed budgets.
  absl::Time deadline = absl::InfiniteFuture();
  auto refuse = [&](absl::Status status) {
    RecordRefusal(model_name, method, status, absl::ToDoubleSeconds(clock_->Now() - arrival),
                  deadline);
    return status;
  };
  if (draining_) {
    return refuse(absl::UnavailableError(
        "server is draining (shutting down) and accepts no new requests; retry on another "
        "replica"));
  }
  if (!found.ok()) return refuse(found.status());
  ModelState* model = *found;
  const ModelSpec& spec = model->spec();
  const std::shared_ptr<ServedModel> served = model->Current();
  if (absl::Status valid = ValidateClassifyRequest(request, spec); !valid.ok()) {
    return refuse(valid);
  }
  if (absl::Status valid = ValidateSchedulingFields(request, spec, kNumPriorityLevels);
      !valid.ok()) {
    return refuse(valid);
  }
  // The served version's spec: its calibration may have changed on reload.
  absl::StatusOr<float> min_keep_rate = ResolveMinKeepRate(request, served->model->spec());
  if (!min_keep_rate.ok()) return refuse(min_keep_rate.status());
  const bool budget_scheduler = model->latency != nullptr;

  // Deadline on the service's clock: the client's remaining time, capped by the budget.
  if (client_deadline != absl::InfiniteFuture())
    deadline = arrival + (client_deadline - absl::Now());
  if (request.latency_budget_ms() > 0.0f) {
    deadline = std::min(deadline,
                        arrival + absl::Microseconds(static_cast<int64_t>(
                                      static_cast<double>(request.latency_budget_ms()) * 1000.0)));
  }
  if (deadline <= arrival) {
    return refuse(absl::DeadlineExceededError(
        "the request's deadline (client deadline or latency_budget_ms) passed before it could "
        "be queued"));
  }

  absl::StatusOr<ImageTensor> image = request.input_case() == ClassifyRequest::kImage
                                          ? served->preprocessor->FromEncoded(request.image())
                                          : served->preprocessor->FromTensor(request.tensor());
  if (!image.ok()) return refuse(image.status());

  auto task = std::make_unique<InferenceTask>();
  task->model = model;
  task->keep_rate = ResolveKeepRate(request, spec);
  task->attrs.deadline = deadline;
  // Under the budget scheduler 0 stays "the policy chooses"; the batch's rate is applied.
  task->attrs.keep_rate = budget_scheduler ? request.keep_rate() : task->keep_rate;
  task->attrs.min_keep_rate = *min_keep_rate;
  task->attrs.latency_budget =
      deadline == absl::InfiniteFuture() ? absl::ZeroDuration() : deadline - arrival;
  task->attrs.priority = static_cast<int>(request.priority());
  task->image = std::move(*image);
  task->top_k = ResolveTopK(request.top_k(), spec.arch.num_classes);
  task->return_logits = request.return_logits();
  task->request_id = request.request_id();
  task->arrival = arrival;
  task->cancelled = cancelled;
  task->done = std::move(done);

  const std::string key =
      budget_scheduler ? model->name : absl::StrCat(model->name, "@", task->keep_rate);
  // Counted before Schedule: the batch may start (and decrement) before it returns.
  ++model->queued;
  if (metrics_ != nullptr) metrics_->AddInFlight(1);
  absl::Status scheduled = scheduler_->Schedule(key, &task);
  if (!scheduled.ok()) {
    // Refused on arrival by the policy (DEADLINE_EXCEEDED before the deadline).
    if (model->guard != nullptr && scheduled.code() == absl::StatusCode::kDeadlineExceeded &&
        clock_->Now() < deadline) {
      model->guard->ObserveRefusal(clock_->Now());
    }
    --model->queued;
    if (metrics_ != nullptr) metrics_->AddInFlight(-1);
    return refuse(scheduled);
  }
  if (metrics_ != nullptr) metrics_->SetQueueDepth(model->name, model->queued.load());
  return absl::OkStatus();
}

void InferenceServiceImpl::ProcessBatch(float keep_rate,
                                        std::vector<std::unique_ptr<InferenceTask>> batch) {
  ModelState* model = batch[0]->model;
  const int64_t depth = model->queued -= static_cast<int64_t>(batch.size());
  if (metrics_ != nullptr) metrics_->SetQueueDepth(model->name, depth);
  // The images move out of the tasks so they outlive the answers (shadow comparison).
  std::vector<ImageTensor> owned_images;
  owned_images.reserve(batch.size());
  for (auto& task : batch) owned_images.push_back(std::move(task->image));
  std::vector<const ImageTensor*> images;
  images.reserve(batch.size());
  for (const ImageTensor& image : owned_images) images.push_back(&image);

  const int batch_size = static_cast<int>(batch.size());
  const absl::Duration predicted = model->latency != nullptr
                                       ? model->latency->Predict(keep_rate, batch_size)
                                       : absl::ZeroDuration();
  const std::shared_ptr<ServedModel> served = model->Current();  // one version per batch
  const absl::Time start = clock_->Now();
  absl::StatusOr<std::vector<ImageResult>> results = served->model->Run(images, keep_rate);
  const absl::Time end = clock_->Now();
  const double compute_seconds = absl::ToDoubleSeconds(end - start);
  if (model->latency != nullptr && results.ok()) {
    model->latency->Observe(keep_rate, batch_size, end - start).IgnoreError();
    if (model->guard != nullptr) model->guard->ObserveBatch(end, predicted, end - start);
  }
  if (metrics_ != nullptr) {
    metrics_->OnBatch(model->name, batch_size, keep_rate, compute_seconds);
    if (options_.scheduler == SchedulerKind::kBudget && model->latency != nullptr) {
      // What rule 2c saw for this queue (the budget scheduler keys queues by model name).
      const double arrival_rate = scheduler_->ArrivalRate(model->name);
      const double factor = model->guard != nullptr ? model->guard->Factor() : 1.0;
      metrics_->SetLoad(model->name, arrival_rate,
                        LoadCapKeepRate(*model->latency->Snapshot(), arrival_rate * factor,
                                        options_.target_utilization, options_.max_batch_size,
                                        options_.num_batch_threads));
      if (model->guard != nullptr) {
        const LatencyGuard::State guard = model->guard->GetState();
        metrics_->SetLatencyGuard(model->name, guard.factor, guard.reserve, guard.miss_ratio);
      }
    }
    if (model->latency != nullptr && results.ok()) {
      metrics_->OnLatencyPrediction(model->name, absl::ToDoubleSeconds(predicted), compute_seconds);
    }
  }
  if (results.ok() && results->size() != batch.size()) {
    results = absl::InternalError(
        absl::StrCat("model returned ", results->size(), " results for a batch of ", batch.size()));
  }
  const ModelSpec& spec = served->model->spec();  // labels, calibration of this version
  const double expected_accuracy =
      ExpectedAccuracy(spec.calibration, spec.pruning.method, keep_rate);
  for (size_t i = 0; i < batch.size(); ++i) {
    std::unique_ptr<InferenceTask>& task = batch[i];
    if (!results.ok()) {
      Answer(std::move(task), results.status());
      continue;
    }
    const ImageResult& r = (*results)[i];
    ClassifyResponse response;
    for (vitserve::v1::Prediction& p : TopKPredictions(r.logits, task->top_k, spec.labels)) {
      *response.add_predictions() = std::move(p);
    }
    response.set_keep_rate(keep_rate);
    for (int t : r.tokens_per_stage) response.add_tokens_per_stage(static_cast<uint32_t>(t));
    response.set_macs(r.macs);
    response.set_dense_macs(model->dense_macs);
    vitserve::v1::Timing* timing = response.mutable_timing();
    timing->set_queue_seconds(absl::ToDoubleSeconds(start - task->arrival));
    timing->set_compute_seconds(compute_seconds);
    timing->set_total_seconds(absl::ToDoubleSeconds(end - task->arrival));
    response.set_batch_size(static_cast<uint32_t>(batch.size()));
    response.set_model(model->name);
    if (task->return_logits) {
      for (float l : r.logits) response.add_logits(l);
    }
    response.set_request_id(task->request_id);
    response.set_expected_accuracy(static_cast<float>(expected_accuracy));
    Answer(std::move(task), std::move(response));
  }
  if (results.ok()) MaybeShadow(model, *served->model, keep_rate, images, *results);
}

void InferenceServiceImpl::MaybeShadow(ModelState* model, InferenceModel& version, float keep_rate,
                                       const std::vector<const ImageTensor*>& images,
                                       const std::vector<ImageResult>& results) {
  const double fraction = options_.shadow_fraction;
  if (metrics_ == nullptr || fraction <= 0.0 || keep_rate >= 1.0f || images.empty()) return;
  const uint64_t n = images.size();
  const uint64_t before = model->shadow_seen.fetch_add(n);
  // Images [before, before + n) are sampled where floor(i * fraction) steps up.
  const auto picks = [fraction](uint64_t count) {
    return static_cast<uint64_t>(std::floor(static_cast<double>(count) * fraction));
  };
  const uint64_t sampled = std::min<uint64_t>(picks(before + n) - picks(before), n);
  if (sampled == 0) return;
  if (model->queued.load() > 0) {  // work is waiting: never delay it
    for (uint64_t i = 0; i < sampled; ++i) metrics_->OnShadow(model->name, true, false, 0.0);
    return;
  }
  std::vector<const ImageTensor*> chosen(images.begin(), images.begin() + sampled);
  absl::StatusOr<std::vector<ImageResult>> dense = version.Run(chosen, 1.0f);
  if (!dense.ok() || dense->size() != chosen.size()) {
    for (uint64_t i = 0; i < sampled; ++i) metrics_->OnShadow(model->name, true, false, 0.0);
    return;
  }
  for (size_t i = 0; i < chosen.size(); ++i) {
    const std::vector<float>& p = (*dense)[i].logits;
    const std::vector<float>& q = results[i].logits;
    const auto argmax = [](const std::vector<float>& v) {
      return std::max_element(v.begin(), v.end()) - v.begin();
    };
    // KL(dense || pruned) of the two softmaxes, in nats, via log-sum-exp.
    const auto log_normaliser = [](const std::vector<float>& v) {
      const double m = *std::max_element(v.begin(), v.end());
      double sum = 0.0;
      for (float x : v) sum += std::exp(static_cast<double>(x) - m);
      return m + std::log(sum);
    };
    const double lp = log_normaliser(p);
    const double lq = log_normaliser(q);
    double kl = 0.0;
    for (size_t c = 0; c < p.size() && c < q.size(); ++c) {
      const double log_p = p[c] - lp;
      kl += std::exp(log_p) * (log_p - (q[c] - lq));
    }
    metrics_->OnShadow(model->name, false, argmax(p) == argmax(q), std::max(0.0, kl));
  }
}

void InferenceServiceImpl::Reject(std::unique_ptr<InferenceTask> task, absl::Status status) {
  ModelState* model = task->model;
  const int64_t depth = --model->queued;
  if (metrics_ != nullptr) {
    metrics_->SetQueueDepth(model->name, depth);
    const char* reason = RejectReason(status.code());
    // DEADLINE_EXCEEDED before the deadline: the budget policy's early rejection.
    if (status.code() == absl::StatusCode::kDeadlineExceeded &&
        clock_->Now() < task->attrs.deadline) {
      reason = kRejectBudgetUnmeetable;
    }
    if (*reason != '\0') metrics_->OnRejected(model->name, reason);
  }
  Answer(std::move(task), std::move(status));
}

namespace {
// Whether a request that has a deadline was answered within its budget (arrival to answer).
bool WithinBudget(const InferenceTask& task, double total_seconds) {
  return total_seconds <= absl::ToDoubleSeconds(task.attrs.latency_budget);
}
}  // namespace

void InferenceServiceImpl::ObserveBudget(const InferenceTask& task,
                                         const absl::StatusOr<ClassifyResponse>& result) {
  LatencyGuard* guard = task.model->guard.get();
  if (guard == nullptr || task.attrs.deadline == absl::InfiniteFuture()) return;
  const absl::Time now = clock_->Now();
  if (result.ok()) {
    guard->ObserveRequest(now, WithinBudget(task, result->timing().total_seconds()));
  } else if (result.status().code() == absl::StatusCode::kDeadlineExceeded) {
    if (now >= task.attrs.deadline) {
      guard->ObserveRequest(now, /*met=*/false);  // expired in the queue
    } else {
      guard->ObserveRefusal(now);  // the policy refused it at once (rule 1b)
    }
  }
  // Other failures (cancellations, errors) say nothing about the predictions.
}

void InferenceServiceImpl::Answer(std::unique_ptr<InferenceTask> task,
                                  absl::StatusOr<ClassifyResponse> result) {
  ObserveBudget(*task, result);
  if (metrics_ != nullptr) {
    RequestRecord record;
    record.model = task->model->name;
    record.method = task->model->method;
    record.grpc_code = static_cast<int>(result.status().code());
    record.dense_macs = task->model->dense_macs;
    if (result.ok()) {
      record.queue_seconds = result->timing().queue_seconds();
      record.compute_seconds = result->timing().compute_seconds();
      record.total_seconds = result->timing().total_seconds();
      record.keep_rate = result->keep_rate();
      record.macs = result->macs();
      if (result->predictions_size() > 0) record.top1_probability = result->predictions(0).score();
      record.expected_accuracy = result->expected_accuracy();
    } else {
      record.total_seconds = absl::ToDoubleSeconds(clock_->Now() - task->arrival);
    }
    record.had_budget = task->attrs.deadline != absl::InfiniteFuture();
    record.budget_met =
        record.had_budget && result.ok() && WithinBudget(*task, record.total_seconds);
    metrics_->OnRequestDone(record);
    metrics_->AddInFlight(-1);
  }
  task->done(std::move(result));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Classify(grpc::CallbackServerContext* context,
                                                         const ClassifyRequest* request,
                                                         ClassifyResponse* response) {
  auto* reactor = new ClassifyReactor(this, response);
  reactor->Start(*request, ClientDeadline(context));
  return reactor;
}

grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse>* InferenceServiceImpl::ClassifyStream(
    grpc::CallbackServerContext* context) {
  // Requests are admitted as they are read; a refusal is answered at once as an error
  // response (BoundedStreamReactor keeps at most max_stream_in_flight unanswered).
  using Reactor = BoundedStreamReactor<ClassifyRequest, ClassifyResponse>;
  const absl::Time deadline = ClientDeadline(context);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  return new Reactor(
      options_.max_stream_in_flight,
      [this, deadline, cancelled](const ClassifyRequest& request, Reactor::Answer answer) {
        const std::string id = request.request_id();
        absl::Status status =
            Admit(request, deadline, cancelled.get(),
                  [answer, id, cancelled](absl::StatusOr<ClassifyResponse> r) {
                    answer(r.ok() ? *std::move(r) : ErrorResponse(id, r.status()));
                  });
        if (!status.ok()) answer(ErrorResponse(id, status));
      },
      [this, cancelled] {
        *cancelled = true;
        KickScheduler();
      });
}

std::vector<vitserve::v1::ModelSummary> InferenceServiceImpl::ModelSummaries() const {
  std::vector<vitserve::v1::ModelSummary> out;
  for (const auto& state : models_) {
    vitserve::v1::ModelSummary& summary = out.emplace_back();
    summary.set_name(state->name);
    summary.set_method(state->method);
    summary.set_version(state->Current()->model->spec().version);
    summary.set_ready(!draining_);
  }
  return out;
}

absl::StatusOr<vitserve::v1::ModelInfo> InferenceServiceImpl::DescribeModel(
    const std::string& model) const {
  absl::StatusOr<ModelState*> found = FindModel(model);
  if (!found.ok()) return found.status();
  vitserve::v1::ModelInfo info = (*found)->Info();
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

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const vitserve::v1::ListModelsRequest* /*request*/,
    vitserve::v1::ListModelsResponse* response) {
  for (vitserve::v1::ModelSummary& summary : ModelSummaries()) {
    *response->add_models() = std::move(summary);
  }
  response->set_default_model(default_model_);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetModelInfo(
    grpc::CallbackServerContext* context, const vitserve::v1::GetModelInfoRequest* request,
    vitserve::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<vitserve::v1::ModelInfo> info = DescribeModel(request->model());
  if (!info.ok()) {
    reactor->Finish(ToGrpcStatus(info.status()));
    return reactor;
  }
  *response = std::move(*info);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace vitserve
