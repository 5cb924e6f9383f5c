// Runs the batches the scheduler hands out and answers every task: one version snapshot per
// batch, the forward at the policy's keep-rate, the latency model and guard fed with the
// compute time, metrics, the ClassifyResponse of each member, then the optional shadow
// comparison (ServingOptions::shadow_fraction). Also answers the tasks the scheduler
// refuses. No gRPC, no LibTorch.
//
// Thread-safety: Run() and Reject() are called concurrently from batch threads; the runner
// keeps no mutable state of its own (counters live in ModelState, atomically).
#ifndef VITSERVE_SERVER_SERVING_BATCH_RUNNER_H_
#define VITSERVE_SERVER_SERVING_BATCH_RUNNER_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/metrics/server_metrics.h"
#include "server/serving/inference_task.h"
#include "server/serving/model_registry.h"
#include "server/serving/serving_options.h"
#include "server/util/clock.h"

namespace vitserve {

// Metrics reason for a status that refused a request before compute ("" = none);
// DEADLINE_EXCEEDED before `deadline` is the budget policy's early refusal.
const char* RefusalReason(const absl::Status& status, absl::Time now, absl::Time deadline);

class BatchRunner {
 public:
  // The offered load of a model's queue, per second (for the load-cap metrics).
  using ArrivalRateFn = std::function<double(const ModelState&)>;

  // `clock` and `metrics` are not owned; `metrics` (may be null) counts requests in
  // flight; per-model series are recorded through each ModelState's handle.
  BatchRunner(const ServingOptions& options, const Clock* clock, ServerMetrics* metrics,
              ArrivalRateFn arrival_rate)
      : options_(options),
        clock_(clock),
        metrics_(metrics),
        arrival_rate_(std::move(arrival_rate)) {}

  // Runs `batch` (non-empty, one model) at `keep_rate` and answers every member.
  void Run(float keep_rate, std::vector<std::unique_ptr<InferenceTask>> batch);
  // Answers a task the scheduler will not run (`status` not OK).
  void Reject(std::unique_ptr<InferenceTask> task, absl::Status status);

 private:
  struct Outcome;  // one batch's forward, timed

  Outcome Forward(ModelState& model, float keep_rate,
                  const std::vector<const ImageTensor*>& images) const;
  void RecordBatch(ModelState& model, float keep_rate, int batch_size, const Outcome& outcome);
  void AnswerAll(ModelState& model, float keep_rate,
                 std::vector<std::unique_ptr<InferenceTask>>& batch, const Outcome& outcome);
  // Shadow comparison of one answered batch.
  void MaybeShadow(ModelState& model, InferenceModel& version, float keep_rate,
                   const std::vector<const ImageTensor*>& images,
                   const std::vector<ImageResult>& results);
  // kBudget with a guard: whether an admitted, budgeted request met its budget.
  void ObserveBudget(const InferenceTask& task,
                     const absl::StatusOr<vitserve::v1::ClassifyResponse>& result);
  // Records metrics for a finished request and calls its `done`.
  void Answer(std::unique_ptr<InferenceTask> task,
              absl::StatusOr<vitserve::v1::ClassifyResponse> result);

  const ServingOptions& options_;
  const Clock* const clock_;
  ServerMetrics* const metrics_;
  const ArrivalRateFn arrival_rate_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_BATCH_RUNNER_H_
