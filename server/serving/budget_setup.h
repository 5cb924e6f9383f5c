// kBudget start-up for one model: the latency sweep over the keep-rate x batch-size grid,
// the LatencyModel built from it, the optional LatencyGuard, and the model's BudgetPolicy.
#ifndef VITSERVE_SERVER_SERVING_BUDGET_SETUP_H_
#define VITSERVE_SERVER_SERVING_BUDGET_SETUP_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/budget/budget_policy.h"
#include "server/budget/latency_guard.h"
#include "server/budget/latency_model.h"
#include "server/executor/inference_model.h"
#include "server/scheduler/keep_rate_floor.h"
#include "server/serving/serving_options.h"
#include "server/util/clock.h"

namespace vitserve {

struct BudgetSetup {
  std::shared_ptr<LatencyModel> latency;
  std::shared_ptr<LatencyGuard> guard;  // null when options.guard_miss_target == 0
  std::unique_ptr<BudgetPolicy> policy;
};

// INVALID_ARGUMENT when the sweep options are out of range.
absl::Status ValidateSweepOptions(const ServingOptions& options);

// Times `model` (this can take seconds, at most options.sweep_time_cap) and builds its
// latency model, guard and policy (its floors mapped with `accuracy`, the model's served
// version's curve). Errors name the model. options.log gets the summary.
absl::StatusOr<BudgetSetup> SetUpBudget(InferenceModel& model, const ServingOptions& options,
                                        const Clock& clock,
                                        std::shared_ptr<const AccuracyCurveSource> accuracy);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_BUDGET_SETUP_H_
