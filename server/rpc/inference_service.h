// The vitserve.v1.InferenceService implementation (gRPC callback API). Thin: it resolves
// the model, validates the request (classify_logic.h), preprocesses the input on the gRPC
// thread, hands an InferenceTask to the BatchScheduler and answers when the batch that
// ran it finishes. absl::Status becomes grpc::Status once, in status_util.h.
//
// Behaviour
//   * Model: the request's `model`, or the default model when empty; unknown ->
//     NOT_FOUND naming the served models.
//   * Scheduler (InferenceServiceOptions::scheduler):
//       - kFixed (size-or-delay): keep_rate 0 runs at the model's default keep-rate;
//         requests at the same (model, keep-rate) share a batching queue.
//       - kBudget (latency-budget, server/budget/budget_policy.h): at Create() each model
//         is timed on a keep-rate x batch-size grid (RunLatencySweep; this is why Create
//         can take seconds) and gets a LatencyModel and a BudgetPolicy; one batching
//         queue per model. keep_rate 0 = the policy chooses per batch from the requests'
//         budgets (a client deadline alone counts as a budget; requests with neither
//         run at the model's default keep-rate);
//         hopeless budgets are answered DEADLINE_EXCEEDED at once with the predicted time.
//         Every batch's compute time refines the latency model (Observe) and is reported
//         with the prediction (ServerMetrics::OnLatencyPrediction); with a LatencyGuard
//         (guard_miss_target > 0) it and every answered budgeted request (met or missed;
//         not the policy's early refusals) feed the guard's safety factor
//         (ServerMetrics::SetLatencyGuard). GetModelInfo's grid
//         carries latency_seconds_by_batch from the current latency table.
//   * min_keep_rate (0 = the model's minimum) must lie within the model's
//     [min_keep_rate, max_keep_rate]; priority must be < kNumPriorityLevels (0 = most
//     urgent; only the budget scheduler orders by it). Otherwise INVALID_ARGUMENT.
//   * Deadline: min(client deadline, arrival + latency_budget_ms). A request still queued
//     at its deadline is answered DEADLINE_EXCEEDED without running; a deadline already
//     passed on arrival is DEADLINE_EXCEEDED at once.
//   * Queue full -> RESOURCE_EXHAUSTED at once; draining -> UNAVAILABLE; client cancelled
//     while queued -> CANCELLED (the task leaves the queue without running).
//   * ClassifyStream: requests are admitted as they are read; every request gets exactly
//     one response echoing its request_id, in completion order; a failed request is a
//     response with `error` set and the stream stays open. At most
//     `max_stream_in_flight` requests per stream are unanswered (queued, running or
//     waiting to be written); the reactor stops reading until one is written
//     (back-pressure through HTTP/2 flow control).
//   * Metrics (optional ServerMetrics, not owned): OnRequestDone for every answered
//     request, OnBatch per batch, OnRejected for refusals before compute, queue depth per
//     model, in-flight count.
//
// Thread-safety: RPC handlers run on gRPC threads, batches on the scheduler's threads;
// all shared state is immutable after Create() or guarded. WarmUp(), StartDraining() and
// Shutdown() may be called from any thread.
//
// Lifetime: the service must outlive the grpc::Server it is registered with (shut the
// server down first), and Shutdown() must run before destruction if any request may
// still be queued (the destructor calls it).
#ifndef VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_
#define VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/budget/latency_model.h"
#include "server/executor/inference_model.h"
#include "server/metrics/server_metrics.h"
#include "server/preprocess/preprocessor.h"
#include "server/scheduler/batch_policy.h"
#include "server/scheduler/batch_scheduler.h"
#include "server/util/clock.h"
#include "vitserve/v1/inference.grpc.pb.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

struct ModelState;  // per-model serving state, defined in the .cc

// A model ready to serve: the executor and its input pipeline. Owned by the service.
struct ServedModel {
  std::unique_ptr<InferenceModel> model;
  std::unique_ptr<Preprocessor> preprocessor;
};

// Number of request priority levels: ClassifyRequest.priority is 0 (most urgent) ..
// kNumPriorityLevels - 1.
inline constexpr uint32_t kNumPriorityLevels = 4;

// Which batching policy the service runs (see the file comment).
enum class SchedulerKind { kFixed, kBudget };

struct InferenceServiceOptions {
  // Model used when a request leaves `model` empty; empty = the first model given.
  std::string default_model;
  // Largest batch the model runs at once.
  int max_batch_size = 8;
  // How long the first request of a batch waits for company.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  // Requests waiting in all queues together; more get RESOURCE_EXHAUSTED.
  int max_queue_size = 256;
  // Batches that run concurrently (1 on CPU: LibTorch already uses every core).
  int num_batch_threads = 1;
  // Unanswered requests per ClassifyStream before the server stops reading it.
  int max_stream_in_flight = 32;
  // Batching policy. kFixed = size-or-delay (no start-up sweep); kBudget = latency-budget.
  SchedulerKind scheduler = SchedulerKind::kFixed;
  // kBudget only: the start-up latency sweep (LatencySweepOptions): timed runs per grid
  // point (>= 1), untimed runs per point (>= 0), and the cap on the whole sweep per model
  // (points left are extrapolated).
  int sweep_repeats = 3;
  int sweep_warmup_runs = 1;
  absl::Duration sweep_time_cap = absl::Seconds(20);
  // kBudget only: BudgetPolicy safety terms (see budget_policy.h).
  double safety_fraction = 0.1;
  absl::Duration safety_margin = absl::Milliseconds(1);
  // kBudget only: BudgetPolicy::Options::target_utilization (the load cap, rule 2c);
  // 0 = off.
  double target_utilization = 0.8;
  // kBudget only: the LatencyGuard's target miss ratio (latency_guard.h): per model, the
  // policy's predictions are multiplied by a factor that grows when batches run longer than
  // predicted or admitted requests miss their budgets. In [0, 1); 0 = no guard.
  double guard_miss_target = 0.005;
  // Accuracy proxy: fraction of pruned images (keep-rate < 1) also run dense after their
  // batch was answered, comparing top-1 and KL(dense || pruned). Sampled deterministically
  // (every 1/fraction-th image). Runs only when no request of the model is waiting, so it
  // never delays queued work; a sampled batch that finds a queue is counted as skipped.
  // A request arriving during a shadow run waits at most one dense batch. 0 = off.
  double shadow_fraction = 0.0;
  // Start-up notes (the sweep's summary per model); null = silent.
  std::function<void(const std::string&)> log;
};

// One admitted request, as the scheduler holds it. Internal to the service; public only
// because BatchScheduler is instantiated on it.
struct InferenceTask {
  ModelState* model = nullptr;  // not owned
  TaskAttributes attrs;
  ImageTensor image;
  float keep_rate = 1.0f;
  uint32_t top_k = 0;
  bool return_logits = false;
  std::string request_id;
  absl::Time arrival;
  // Set by the RPC when the client goes away; outlives the task.
  const std::atomic<bool>* cancelled = nullptr;
  // Answers the RPC; called exactly once, on a batch thread.
  std::function<void(absl::StatusOr<vitserve::v1::ClassifyResponse>)> done;

  const TaskAttributes& attributes() const { return attrs; }
  bool IsCancelled() const { return cancelled != nullptr && cancelled->load(); }
};

class InferenceServiceImpl final : public vitserve::v1::InferenceService::CallbackService {
 public:
  // Takes the models (at least one, unique names, each with a preprocessor), builds the
  // ModelInfo of each, starts the scheduler. `clock` and `metrics` are not owned and must
  // outlive the service; `metrics` may be null. INVALID_ARGUMENT for bad options, no
  // models, duplicate names or an unknown default_model.
  static absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> Create(
      std::vector<ServedModel> models, const InferenceServiceOptions& options, const Clock* clock,
      ServerMetrics* metrics);
  ~InferenceServiceImpl() override;

  // Runs one batch of one zero image per model at its default keep-rate, synchronously,
  // directly on the model (not counted in request metrics), and one PNG and one JPEG
  // decode through each model's preprocessor, so that lazy initialisation (allocator
  // pools, kernels, OpenCV's codecs) happens before the first request. The first error is
  // returned. (Each batch thread also runs a full batch at the highest and lowest
  // keep-rate before Create() returns, so its first real batch is warm too.)
  absl::Status WarmUp();

  // Hot reload: replaces the served version of the model named next.model->spec().name
  // with `next`, which is warmed up first (one image, where non-finite logits refuse it;
  // then a full batch at its highest and lowest keep-rate, so the first real batch on
  // the new weights is not the one paying for their first touch). The
  // switch is atomic: requests admitted before it and batches already running finish on
  // the old version, later batches run the new one; nothing is refused meanwhile. The
  // latency model is kept, so the new version must have the same architecture, pruning
  // settings and preprocessing (FAILED_PRECONDITION otherwise: restart to change them);
  // weights, labels, calibration and version may change. NOT_FOUND for a model not
  // served. On any error the old version keeps serving. Thread-safe; may run while
  // traffic flows (main calls it on SIGHUP).
  absl::Status ReloadModel(ServedModel next);

  // From now on new requests (and new stream messages) get UNAVAILABLE; queued ones run.
  void StartDraining();

  // StartDraining(), then answers every queued request and stops the batch threads.
  // Idempotent. Shut the grpc::Server down first so no handler is still admitting.
  void Shutdown();

  const std::string& default_model() const { return default_model_; }

  // kBudget: the latency model of `model` (null for an unknown model or under kFixed).
  std::shared_ptr<const LatencyModel> latency_model(const std::string& model) const;

  // vitserve.v1.InferenceService.
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const vitserve::v1::ClassifyRequest* request,
                                     vitserve::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<vitserve::v1::ClassifyRequest, vitserve::v1::ClassifyResponse>*
  ClassifyStream(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const vitserve::v1::ListModelsRequest* request,
                                       vitserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const vitserve::v1::GetModelInfoRequest* request,
                                         vitserve::v1::ModelInfo* response) override;

  // Validates, preprocesses and schedules one request. On OK, `done` will be called
  // exactly once from a batch thread; on error it is not called and the error is the
  // answer. `client_deadline` is the RPC's deadline in real time (InfiniteFuture = none);
  // `cancelled` (may be null) must stay valid until `done` runs. Also used by the
  // reactors; public for the streaming reactor class in the .cc.
  absl::Status Admit(const vitserve::v1::ClassifyRequest& request, absl::Time client_deadline,
                     const std::atomic<bool>* cancelled,
                     std::function<void(absl::StatusOr<vitserve::v1::ClassifyResponse>)> done);

  // Makes the scheduler look at its queues now (a client cancelled).
  void KickScheduler();

  // For other protocol front ends (server/rpc/oip_service.h), the answers of ListModels
  // and GetModelInfo without a gRPC call: every served model (ready = not draining), and
  // one model's ModelInfo ("" = default; NOT_FOUND lists the served models).
  std::vector<vitserve::v1::ModelSummary> ModelSummaries() const;
  absl::StatusOr<vitserve::v1::ModelInfo> DescribeModel(const std::string& model) const;
  const InferenceServiceOptions& options() const { return options_; }

  int max_stream_in_flight() const { return options_.max_stream_in_flight; }

 private:
  using Scheduler = BatchScheduler<InferenceTask>;

  InferenceServiceImpl(const InferenceServiceOptions& options, const Clock* clock,
                       ServerMetrics* metrics);

  // Resolves `name` ("" = default). NOT_FOUND lists the served models.
  absl::StatusOr<ModelState*> FindModel(const std::string& name) const;
  // Scheduler callbacks.
  void ProcessBatch(float keep_rate, std::vector<std::unique_ptr<InferenceTask>> batch);
  void Reject(std::unique_ptr<InferenceTask> task, absl::Status status);
  // thread_start: a full zero batch per model at its highest and lowest keep-rate on the
  // calling batch thread; errors are left to WarmUp().
  void WarmUpBatchThread();
  // A full zero batch (max_batch_size) of `model` at its highest and lowest keep-rate.
  absl::Status WarmUpFullBatches(InferenceModel& model) const;
  // kBudget with a guard: tells the model's LatencyGuard whether an admitted, budgeted
  // request that ran or expired met its budget.
  void ObserveBudget(const InferenceTask& task,
                     const absl::StatusOr<vitserve::v1::ClassifyResponse>& result);
  // Records metrics for a finished request and calls its `done`.
  void Answer(std::unique_ptr<InferenceTask> task,
              absl::StatusOr<vitserve::v1::ClassifyResponse> result);
  // kBudget: sweeps every model and builds its latency model and policy.
  absl::StatusOr<std::unique_ptr<BatchPolicy>> MakeBudgetPolicies();
  // Shadow comparison of one answered batch (see InferenceServiceOptions::shadow_fraction).
  void MaybeShadow(ModelState* model, InferenceModel& version, float keep_rate,
                   const std::vector<const ImageTensor*>& images,
                   const std::vector<ImageResult>& results);
  // Metrics for a request refused before it was admitted. `deadline` is the request's
  // budget/deadline if known by then (InfiniteFuture() = none): such a refusal is a
  // missed budget.
  void RecordRefusal(const std::string& model, const std::string& method,
                     const absl::Status& status, double seconds, absl::Time deadline);

  const InferenceServiceOptions options_;
  const Clock* const clock_;
  ServerMetrics* const metrics_;
  std::vector<std::unique_ptr<ModelState>> models_;
  std::map<std::string, ModelState*> by_name_;
  std::string default_model_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<Scheduler> scheduler_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_
