#include "server/serving/serving_core.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/serving/budget_setup.h"
#include "server/serving/warm_up.h"

namespace vitserve {

ServingCore::ServingCore(const ServingOptions& options, const Clock* clock, ServerMetrics* metrics,
                         std::unique_ptr<ModelRegistry> registry)
    : options_(options),
      clock_(clock),
      metrics_(metrics),
      registry_(std::move(registry)),
      runner_(options_, clock, metrics, [this](const ModelState& model) {
        return model.queue != nullptr ? scheduler_->ArrivalRate(model.queue) : 0.0;
      }) {}

ServingCore::~ServingCore() { Shutdown(); }

absl::StatusOr<std::unique_ptr<ServingCore>> ServingCore::Create(std::vector<ServedModel> models,
                                                                 const ServingOptions& options,
                                                                 const Clock* clock,
                                                                 ServerMetrics* metrics) {
  if (clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (models.empty()) return absl::InvalidArgumentError("no models to serve");
  if (options.max_stream_in_flight < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_stream_in_flight must be >= 1, got ", options.max_stream_in_flight));
  }
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
      ModelRegistry::Create(std::move(models), options.default_model, metrics);
  if (!registry.ok()) return registry.status();
  std::unique_ptr<ServingCore> core(new ServingCore(options, clock, metrics, *std::move(registry)));
  if (absl::Status s = core->StartScheduler(); !s.ok()) return s;
  DecodePool::Options decode;
  decode.num_threads = options.decode_threads;
  decode.max_queued = options.max_decode_queue_size;
  absl::StatusOr<std::unique_ptr<DecodePool>> pool = DecodePool::Create(decode);
  if (!pool.ok()) return pool.status();
  core->decode_pool_ = *std::move(pool);
  return core;
}

absl::Status ServingCore::StartScheduler() {
  if (options_.scheduler == SchedulerKind::kBudget) {
    if (absl::Status s = ValidateSweepOptions(options_); !s.ok()) return s;
  }
  // The policies first: the budget sweep times each model before the batch threads start.
  std::vector<std::unique_ptr<BatchPolicy>> policies;
  for (const auto& state : registry_->models()) {
    absl::StatusOr<std::unique_ptr<BatchPolicy>> policy = MakePolicy(*state);
    if (!policy.ok()) return policy.status();
    policies.push_back(*std::move(policy));
  }
  TaskScheduler::Options scheduler_options;
  scheduler_options.max_batch_size = options_.max_batch_size;
  scheduler_options.max_queue_delay = options_.max_queue_delay;
  scheduler_options.max_enqueued = options_.max_queue_size;
  scheduler_options.num_batch_threads = options_.num_batch_threads;
  TaskScheduler::Callbacks callbacks{
      [this](const std::string& /*queue*/, float keep_rate,
             std::vector<std::unique_ptr<InferenceTask>> batch) {
        runner_.Run(keep_rate, std::move(batch));
      },
      [this](std::unique_ptr<InferenceTask> task, absl::Status status) {
        runner_.Reject(std::move(task), std::move(status));
      },
      [this] { WarmUpBatchThread(); }};
  absl::StatusOr<std::unique_ptr<TaskScheduler>> scheduler =
      TaskScheduler::Create(scheduler_options, std::move(callbacks), clock_);
  if (!scheduler.ok()) return scheduler.status();
  scheduler_ = *std::move(scheduler);
  for (size_t i = 0; i < policies.size(); ++i) {
    ModelState& state = *registry_->models()[i];
    absl::StatusOr<TaskScheduler::Queue*> queue =
        scheduler_->AddQueue(state.name, std::move(policies[i]));
    if (!queue.ok()) return queue.status();
    state.queue = *queue;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BatchPolicy>> ServingCore::MakePolicy(ModelState& state) const {
  if (options_.scheduler == SchedulerKind::kFixed) {
    SizeOrDelayPolicy::Options policy;
    policy.max_batch_size = options_.max_batch_size;
    policy.max_queue_delay = options_.max_queue_delay;
    // Requests that leave keep_rate 0 run at the model's documented default.
    policy.default_keep_rate = state.spec().pruning.default_keep_rate;
    absl::StatusOr<std::unique_ptr<SizeOrDelayPolicy>> made = SizeOrDelayPolicy::Create(policy);
    if (!made.ok()) return made.status();
    return std::unique_ptr<BatchPolicy>(*std::move(made));
  }
  absl::StatusOr<BudgetSetup> setup =
      SetUpBudget(*state.Current()->model, options_, *clock_, state.accuracy);
  if (!setup.ok()) return setup.status();
  state.latency = std::move(setup->latency);
  state.guard = std::move(setup->guard);
  return std::unique_ptr<BatchPolicy>(std::move(setup->policy));
}

std::shared_ptr<const LatencyModel> ServingCore::latency_model(const std::string& model) const {
  if (model.empty()) return nullptr;
  absl::StatusOr<ModelState*> found = registry_->Find(model);
  return found.ok() ? (*found)->latency : nullptr;
}

absl::Status ServingCore::WarmUp() {
  for (const auto& state : registry_->models()) {
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

void ServingCore::WarmUpBatchThread() {
  // Failures are reported by WarmUp(), which runs the same forward before the server
  // reports SERVING.
  for (const auto& state : registry_->models()) {
    WarmUpFullBatches(*state->Current()->model, options_.max_batch_size).IgnoreError();
  }
}

absl::Status ServingCore::ReloadModel(ServedModel next) {
  return registry_->Reload(std::move(next), options_.max_batch_size);
}

void ServingCore::Shutdown() {
  StartDraining();
  // First the decode pool: its running jobs still hand their tasks to the scheduler, whose
  // Shutdown then answers them with everything else queued.
  if (decode_pool_ != nullptr) decode_pool_->Shutdown();
  if (scheduler_ != nullptr) scheduler_->Shutdown();
}

void ServingCore::KickScheduler() { scheduler_->Kick(); }

int ServingCore::decoding() const { return decode_pool_ != nullptr ? decode_pool_->pending() : 0; }

std::vector<vitserve::v1::ModelSummary> ServingCore::ModelSummaries() const {
  return registry_->Summaries(/*ready=*/!draining_);
}

absl::StatusOr<vitserve::v1::ModelInfo> ServingCore::DescribeModel(const std::string& model) const {
  return registry_->Describe(model);
}

}  // namespace vitserve
