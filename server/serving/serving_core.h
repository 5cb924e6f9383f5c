// The serving core: everything between a protocol front end and the models, with no gRPC
// and no LibTorch. Front ends (server/rpc/inference_service.h, server/rpc/oip_core.h)
// translate their requests into vitserve.v1.ClassifyRequest messages and call Admit().
//
// Request path: Admit() (cheap checks on the caller's thread: model, validation,
// scheduling fields, deadline; admission.cc) -> the DecodePool (decode_pool.h: decoding
// and preprocessing on a decode thread) -> the model's batching queue in the
// BatchScheduler, where the model's BatchPolicy chooses each batch and its keep-rate ->
// BatchRunner::Run (batch_runner.h) on a batch thread -> `done`.
//
// Behaviour
//   * Model: the request's `model`, or the default model when empty; unknown ->
//     NOT_FOUND naming the served models.
//   * Scheduler (ServingOptions::scheduler), one batching queue and one policy per model:
//       - kFixed (size-or-delay, SizeOrDelayPolicy): keep_rate 0 runs at the model's
//         default keep-rate; a batch holds requests of one keep-rate.
//       - kBudget (latency-budget, server/budget/budget_policy.h): at Create() each model
//         is timed on a keep-rate x batch-size grid (budget_setup.h; this is why Create
//         can take seconds) and gets a LatencyModel and a BudgetPolicy. keep_rate 0 = the
//         policy chooses per batch from the requests' budgets (a client deadline alone
//         counts as a budget; requests with neither run at the model's default keep-rate);
//         hopeless budgets are answered DEADLINE_EXCEEDED at once with the predicted time.
//         Every batch's compute time refines the latency model (Observe) and is reported
//         with the prediction (ModelMetrics::OnLatencyPrediction); with a LatencyGuard
//         (guard_miss_target > 0) it and every answered budgeted request (met or missed;
//         not the policy's early refusals) feed the guard's safety factor
//         (ModelMetrics::SetLatencyGuard). DescribeModel's grid carries
//         latency_seconds_by_batch from the current latency table.
//   * min_keep_rate (0 = the model's minimum) must lie within the model's
//     [min_keep_rate, max_keep_rate]; priority must be < kNumPriorityLevels (0 = most
//     urgent; only the budget scheduler orders by it). Otherwise INVALID_ARGUMENT.
//   * Deadline: min(client deadline, arrival + latency_budget_ms). A request still queued
//     at its deadline is answered DEADLINE_EXCEEDED without running; a deadline already
//     passed on arrival is DEADLINE_EXCEEDED at once.
//   * Decoding (ServingOptions::decode_threads, max_decode_queue_size): a request that
//     passed the cheap checks waits for a decode thread; decode queue full ->
//     RESOURCE_EXHAUSTED at once (from Admit). On the decode thread a request already
//     cancelled -> CANCELLED, deadline passed -> DEADLINE_EXCEEDED (neither is decoded); a
//     decode error -> INVALID_ARGUMENT with the preprocessor's message; all through `done`.
//     Decode time counts against the budget: arrival is taken before the checks.
//   * Queue full -> RESOURCE_EXHAUSTED; draining -> UNAVAILABLE at once; client cancelled
//     while queued -> CANCELLED (the task leaves the queue without running).
//   * Metrics (optional ServerMetrics, not owned): OnRequestDone for every answered
//     request, OnBatch per batch, OnRejected for refusals before compute, queue depth per
//     model, in-flight count. Per-model series go through each model's handle
//     (ModelState::metrics, taken once at Create), with no lookup by name per call.
//
// Thread-safety: Admit() runs on front-end threads, batches on the scheduler's threads;
// all shared state is immutable after Create() or guarded. WarmUp(), ReloadModel(),
// StartDraining() and Shutdown() may be called from any thread.
//
// Lifetime: Shutdown() (also run by the destructor) answers every queued request; stop the
// front ends first so nothing is still admitting.
#ifndef VITSERVE_SERVER_SERVING_SERVING_CORE_H_
#define VITSERVE_SERVER_SERVING_SERVING_CORE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/budget/latency_model.h"
#include "server/metrics/server_metrics.h"
#include "server/serving/batch_runner.h"
#include "server/serving/decode_pool.h"
#include "server/serving/inference_task.h"
#include "server/serving/model_registry.h"
#include "server/serving/serving_options.h"
#include "server/util/clock.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

class ServingCore {
 public:
  // Takes the models (at least one, unique names, each with a preprocessor), builds the
  // ModelInfo of each, starts the scheduler (each batch thread runs a full zero batch per
  // model at its highest and lowest keep-rate first). `clock` and `metrics` are not owned
  // and must outlive the core; `metrics` may be null. INVALID_ARGUMENT for bad options, no
  // models, duplicate names or an unknown default_model.
  static absl::StatusOr<std::unique_ptr<ServingCore>> Create(std::vector<ServedModel> models,
                                                             const ServingOptions& options,
                                                             const Clock* clock,
                                                             ServerMetrics* metrics);
  ~ServingCore();
  ServingCore(const ServingCore&) = delete;
  ServingCore& operator=(const ServingCore&) = delete;

  // One batch of one zero image per model at its default keep-rate, synchronously,
  // directly on the model (not counted in request metrics), and one PNG and one JPEG
  // decode through each model's preprocessor. The first error is returned.
  absl::Status WarmUp();

  // Hot reload: replaces the served version of the model named next.model->spec().name
  // with `next`, warmed up first (one image, where non-finite logits refuse it; then a
  // full batch at its highest and lowest keep-rate). The switch is atomic: requests
  // admitted before it and batches already running finish on the old version, later
  // batches run the new one; nothing is refused meanwhile. The new version must keep the
  // architecture, pruning settings and preprocessing (FAILED_PRECONDITION otherwise);
  // weights, labels, calibration and version may change. NOT_FOUND for a model not
  // served. On any error the old version keeps serving.
  absl::Status ReloadModel(ServedModel next);

  // From now on new requests get UNAVAILABLE; queued ones run.
  void StartDraining() { draining_ = true; }
  bool draining() const { return draining_; }
  // StartDraining(), then answers every request still waiting to be decoded (UNAVAILABLE)
  // and every queued request, and stops the decode and batch threads. Idempotent.
  void Shutdown();

  // Checks one request and hands it to the decode pool, which preprocesses and schedules
  // it; returns without decoding. On OK, `done` will be called exactly once, from a decode
  // thread (a refusal after the checks: decode error, deadline, cancelled, queue full), a
  // batch thread (the answer) or Shutdown()'s thread; on error it is not called and the
  // error is the answer. `client_deadline` is the transport's deadline in real time
  // (InfiniteFuture = none); `cancelled` (may be null) must stay valid until `done` runs.
  absl::Status Admit(vitserve::v1::ClassifyRequest request, absl::Time client_deadline,
                     const std::atomic<bool>* cancelled, ClassifyDone done);
  // Requests admitted and not yet through the decode pool (waiting or being decoded).
  int decoding() const;
  // Makes the scheduler look at its queues now (a client cancelled).
  void KickScheduler();

  // ListModels: every served model (ready = not draining).
  std::vector<vitserve::v1::ModelSummary> ModelSummaries() const;
  // GetModelInfo of `model` ("" = default; NOT_FOUND lists the served models).
  absl::StatusOr<vitserve::v1::ModelInfo> DescribeModel(const std::string& model) const;

  const std::string& default_model() const { return registry_->default_model(); }
  const ServingOptions& options() const { return options_; }
  // kBudget: the latency model of `model` (null for an unknown model or under kFixed).
  std::shared_ptr<const LatencyModel> latency_model(const std::string& model) const;

 private:
  ServingCore(const ServingOptions& options, const Clock* clock, ServerMetrics* metrics,
              std::unique_ptr<ModelRegistry> registry);

  // Builds every model's batch policy, starts the scheduler, adds one queue per model.
  absl::Status StartScheduler();
  // The model's batch policy: size-or-delay at its default keep-rate (kFixed), or the
  // budget policy after its latency sweep (kBudget; sets state.latency and state.guard).
  absl::StatusOr<std::unique_ptr<BatchPolicy>> MakePolicy(ModelState& state) const;
  // Runs on each batch thread before it takes work: full zero batches of every model.
  void WarmUpBatchThread();
  // Admission steps (admission.cc): CheckRequest on the caller's thread, then
  // FinishAdmission (DecodeAndEnqueue, or the refusal through `done`) on a decode thread.
  struct Admission;  // a request between the checks and its queue
  // What a refusal's metrics need (deadline InfiniteFuture until known).
  struct RefusalKey {
    const ModelState* model = nullptr;  // null: the request names no served model
    std::string requested_model;
    absl::Time arrival;
    absl::Time deadline = absl::InfiniteFuture();
  };
  absl::Status CheckRequest(const vitserve::v1::ClassifyRequest& request,
                            absl::Time client_deadline, Admission& admission) const;
  void FinishAdmission(Admission& admission, absl::Status pool);
  absl::Status DecodeAndEnqueue(Admission& admission);
  absl::Time RequestDeadline(const vitserve::v1::ClassifyRequest& request, absl::Time arrival,
                             absl::Time client_deadline) const;
  // Schedules `task`; on error `task` is left with the caller.
  absl::Status Enqueue(ModelState& model, std::unique_ptr<InferenceTask>& task);
  // RecordRefusal for `key`; returns `status`.
  absl::Status Refuse(const RefusalKey& key, absl::Status status);
  // Metrics for a request refused before it was admitted (`deadline` InfiniteFuture =
  // none known yet; otherwise the refusal is a missed budget): through `model`'s handle,
  // or, when the request names no served model (`model` null), under "_unknown" (looked up
  // by `requested_model`, which ServerMetrics bounds).
  void RecordRefusal(const ModelState* model, const std::string& requested_model,
                     const absl::Status& status, double seconds, absl::Time deadline);

  const ServingOptions options_;
  const Clock* const clock_;
  ServerMetrics* const metrics_;
  const std::unique_ptr<ModelRegistry> registry_;
  BatchRunner runner_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<TaskScheduler> scheduler_;
  std::unique_ptr<DecodePool> decode_pool_;  // in front of scheduler_; shut down first
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_SERVING_CORE_H_
