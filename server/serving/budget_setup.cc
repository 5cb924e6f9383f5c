#include "server/serving/budget_setup.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/budget/latency_sweep.h"
#include "server/serving/model_info.h"
#include "server/spec/cost_model.h"

namespace vitserve {
namespace {

// Table batch sizes for the latency model: powers of two below max_batch_size, then
// max_batch_size itself (1, 2, 4, 8 for the default 8).
std::vector<int> SweepBatchSizes(int max_batch_size) {
  std::vector<int> sizes;
  for (int b = 1; b < max_batch_size; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch_size);
  return sizes;
}

void LogSweep(const ServingOptions& options, const std::string& name,
              const LatencySweepResult& swept, const LatencyModel& latency,
              const std::vector<float>& levels) {
  if (!options.log) return;
  const std::shared_ptr<const LatencyTable> table = latency.Snapshot();
  options.log(absl::StrCat(
      "model '", name, "': latency sweep in ", absl::FormatDuration(swept.elapsed), ": ",
      swept.measured.size(), " points measured, ", swept.extrapolated.size(), " extrapolated",
      swept.hit_time_cap ? " (hit the time cap)" : "", "; batch of 1: ",
      absl::FormatDuration(table->Predict(levels.front(), 1)), " at keep-rate ", levels.front(),
      ", ", absl::FormatDuration(table->Predict(levels.back(), 1)), " at ", levels.back()));
}

BudgetPolicy::Options PolicyOptions(const ServingOptions& options, const ModelSpec& spec) {
  BudgetPolicy::Options policy;
  policy.max_batch_size = options.max_batch_size;
  policy.max_queue_delay = options.max_queue_delay;
  // Requests without a budget keep the model's documented default keep-rate.
  policy.default_keep_rate = spec.pruning.default_keep_rate;
  policy.safety_fraction = options.safety_fraction;
  policy.safety_margin = options.safety_margin;
  policy.rescue_batching = true;
  policy.target_utilization = options.target_utilization;
  policy.parallel_batches = options.num_batch_threads;
  return policy;
}

absl::StatusOr<std::unique_ptr<LatencyModel>> SweepLatency(InferenceModel& model,
                                                           const ServingOptions& options,
                                                           const Clock& clock) {
  const ModelSpec& spec = model.spec();
  absl::StatusOr<std::vector<float>> levels =
      MakeKeepRateLevels(spec.pruning.min_keep_rate, spec.pruning.max_keep_rate, kKeepRateGridStep);
  if (!levels.ok()) return levels.status();
  const std::vector<BlockShape> blocks = model.block_shapes();
  LatencySweepOptions sweep;
  sweep.keep_rate_levels = *levels;
  sweep.batch_sizes = SweepBatchSizes(options.max_batch_size);
  sweep.repeats = options.sweep_repeats;
  sweep.warmup_runs = options.sweep_warmup_runs;
  sweep.time_cap = options.sweep_time_cap;
  sweep.macs_per_image = [&spec, &blocks](float k) -> absl::StatusOr<uint64_t> {
    absl::StatusOr<CostEstimate> cost = EstimateCost(spec.arch, spec.pruning, k, blocks);
    if (!cost.ok()) return cost.status();
    return cost->macs;
  };
  absl::StatusOr<LatencySweepResult> swept = RunLatencySweep(model, sweep, clock);
  if (!swept.ok()) return swept.status();
  LatencyModel::Options latency_options;
  latency_options.keep_rate_levels = *levels;
  latency_options.batch_sizes = sweep.batch_sizes;
  absl::StatusOr<std::unique_ptr<LatencyModel>> latency =
      LatencyModel::Create(latency_options, swept->AllPoints());
  if (!latency.ok()) return latency.status();
  LogSweep(options, spec.name, *swept, **latency, *levels);
  return latency;
}

}  // namespace

absl::Status ValidateSweepOptions(const ServingOptions& options) {
  if (options.sweep_repeats < 1 || options.sweep_warmup_runs < 0 ||
      options.sweep_time_cap < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sweep options out of range: repeats ", options.sweep_repeats,
                     " (>= 1), warm-up runs ", options.sweep_warmup_runs, " (>= 0), time cap ",
                     absl::FormatDuration(options.sweep_time_cap), " (>= 0)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BudgetSetup> SetUpBudget(InferenceModel& model, const ServingOptions& options,
                                        const Clock& clock,
                                        std::shared_ptr<const AccuracyCurveSource> accuracy) {
  const ModelSpec& spec = model.spec();
  auto in_model = [&](const absl::Status& status) {
    return absl::Status(
        status.code(),
        absl::StrCat("model '", spec.name, "': latency-budget scheduler: ", status.message()));
  };
  BudgetSetup setup;
  absl::StatusOr<std::unique_ptr<LatencyModel>> latency = SweepLatency(model, options, clock);
  if (!latency.ok()) return in_model(latency.status());
  setup.latency = *std::move(latency);
  if (options.guard_miss_target > 0.0) {
    LatencyGuard::Options guard_options;
    guard_options.target_miss_ratio = options.guard_miss_target;
    absl::StatusOr<std::unique_ptr<LatencyGuard>> guard = LatencyGuard::Create(guard_options);
    if (!guard.ok()) return in_model(guard.status());
    setup.guard = *std::move(guard);
  }
  absl::StatusOr<std::unique_ptr<BudgetPolicy>> policy = BudgetPolicy::Create(
      PolicyOptions(options, spec), setup.latency, setup.guard, std::move(accuracy));
  if (!policy.ok()) return in_model(policy.status());
  setup.policy = *std::move(policy);
  return setup;
}

}  // namespace vitserve
