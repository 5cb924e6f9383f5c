// What the serving core (server/serving/serving_core.h) is configured with: the models it
// serves and its options. No gRPC, no LibTorch.
#ifndef VITSERVE_SERVER_SERVING_SERVING_OPTIONS_H_
#define VITSERVE_SERVER_SERVING_SERVING_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "server/executor/inference_model.h"
#include "server/preprocess/preprocessor.h"

namespace vitserve {

// A model ready to serve: the executor and its input pipeline.
struct ServedModel {
  std::unique_ptr<InferenceModel> model;
  std::unique_ptr<Preprocessor> preprocessor;
};

// Number of request priority levels: ClassifyRequest.priority is 0 (most urgent) ..
// kNumPriorityLevels - 1.
inline constexpr uint32_t kNumPriorityLevels = 4;

// Which batching policy serves every model (see serving_core.h).
enum class SchedulerKind { kFixed, kBudget };

struct ServingOptions {
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
  // Threads that decode and preprocess admitted requests (DecodePool, decode_pool.h), off
  // the front ends' threads.
  int decode_threads = 2;
  // Admitted requests waiting for a decode thread; more get RESOURCE_EXHAUSTED.
  int max_decode_queue_size = 256;
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

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_SERVING_OPTIONS_H_
