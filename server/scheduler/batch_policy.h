// Batching policies: the pure decision half of the scheduler.
//
// A policy looks at one queue (a snapshot of the waiting tasks' scheduling attributes,
// in arrival order), the current time and whether the scheduler is draining, and says
// what to do next: run a batch (which tasks, at which keep-rate), reject some tasks
// (with a status), and/or when to look again. It owns no threads, no queues and no
// tasks, and it never reads a clock: the same inputs always give the same decision, so
// policies are unit-tested without threads or time.
//
// The plumbing (server/scheduler/batch_scheduler.h) removes expired and cancelled tasks
// before it asks the policy, so a policy sees only live tasks.
//
// SizeOrDelayPolicy is the classic rule (TF Serving / Triton): a batch runs when
// `max_batch_size` tasks wait or when the FIRST task of the batch has waited
// `max_queue_delay`. A latency-budget policy (keep-rate chosen per batch from a latency
// model, hopeless requests rejected early) implements the same interface and uses the
// budget / floor / priority fields the tasks already carry.
//
// Thread-safety: Decide() is const and must be safe to call from several threads at
// once (the scheduler's batch threads call it concurrently for different queues).
#ifndef VITSERVE_SERVER_SCHEDULER_BATCH_POLICY_H_
#define VITSERVE_SERVER_SCHEDULER_BATCH_POLICY_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace vitserve {

// What the scheduler and its policy know about a task. Set by the caller before
// Schedule(); never changed afterwards.
struct TaskAttributes {
  // Past this instant the task is answered DEADLINE_EXCEEDED without running. The RPC
  // layer sets it to min(client deadline, arrival + latency budget).
  absl::Time deadline = absl::InfiniteFuture();
  // Requested keep-rate in (0, 1]; 0 = the policy chooses.
  float keep_rate = 0.0f;
  // The request's raw floor fields, unresolved: a policy that honours a floor maps them to
  // a keep-rate with ResolveKeepRateFloor (keep_rate_floor.h) when it decides.
  // min_keep_rate: lowest keep-rate the policy may choose (0 = the model's minimum);
  // min_expected_accuracy: a top-1 the chosen keep-rate must be calibrated to reach (0 =
  // no bound).
  float min_keep_rate = 0.0f;
  float min_expected_accuracy = 0.0f;
  // Latency budget from arrival; ZeroDuration() = none.
  absl::Duration latency_budget = absl::ZeroDuration();
  // 0 = highest priority.
  int priority = 0;
};

// One waiting task as a policy sees it.
struct QueuedTask {
  TaskAttributes attributes;
  absl::Time enqueue_time;  // when Schedule() accepted it
};

// One queue (the serving core keeps one per model), oldest first.
struct QueueSnapshot {
  absl::string_view key;  // the queue's name (BatchScheduler::AddQueue)
  absl::Span<const QueuedTask> tasks;
  // True once the scheduler is shutting down: every remaining task should run as soon
  // as possible (no waiting for more tasks to arrive).
  bool draining = false;
  // Recent rate of tasks offered to this queue, per second (admitted or not; the
  // scheduler's ArrivalRateEstimator). 0 = unknown.
  double arrival_rate = 0.0;
};

// What to do with one queue now.
struct BatchDecision {
  // Indices into QueueSnapshot::tasks to run now as one batch (empty = none). At most the
  // scheduler's max_batch_size; no index twice.
  std::vector<size_t> batch;
  // Keep-rate to run `batch` at, in (0, 1]. Ignored when `batch` is empty.
  float keep_rate = 1.0f;
  // Tasks to answer without running (index, non-OK status); disjoint from `batch`.
  std::vector<std::pair<size_t, absl::Status>> reject;
  // The policy's prediction of how long `batch` takes (ZeroDuration() = none). The
  // scheduler uses it to tell Admit() when a batch thread will be free.
  absl::Duration predicted_compute = absl::ZeroDuration();
  // When nothing runs now: the time at which the policy wants to be asked again even if
  // no new task arrives (InfiniteFuture() = only on arrivals). Must be later than `now`
  // when `batch` is empty and tasks remain; otherwise ignored.
  absl::Time wake_at = absl::InfiniteFuture();
};

// What every batching policy (and the scheduler's default policy) is configured with.
struct BatchingOptions {
  // Largest batch; a full batch runs at once. >= 1.
  int max_batch_size = 8;
  // How long the oldest task of a batch may wait for company. >= 0.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  // Keep-rate for tasks that request 0 ("server chooses") and have nothing else to choose
  // by, in (0, 1]: the model's default keep-rate (the serving core sets it per queue).
  float default_keep_rate = 1.0f;
};

// INVALID_ARGUMENT naming the first field of `options` out of range.
absl::Status ValidateBatchingOptions(const BatchingOptions& options);

class BatchPolicy {
 public:
  virtual ~BatchPolicy() = default;
  // Decides for `queue` at `now`. Called with at least one task in the queue.
  virtual BatchDecision Decide(const QueueSnapshot& queue, absl::Time now) const = 0;

  // Admission while the device is busy: called by the scheduler for a task about to be
  // queued when every batch thread is running a batch. `queue` is the task's queue with
  // the new task LAST; `free_at` (>= now) is when a batch thread is predicted to be free.
  // A non-OK status refuses the new task (it is not queued; the caller answers it at
  // once), so a request the device cannot reach in time is told so on arrival instead
  // of expiring in the queue. The default admits everything. Same purity and
  // thread-safety as Decide().
  virtual absl::Status Admit(const QueueSnapshot& queue, absl::Time now, absl::Time free_at) const {
    (void)queue;
    (void)now;
    (void)free_at;
    return absl::OkStatus();
  }
};

// Batches by size or by the delay of the batch's first task; keep-rate as requested.
class SizeOrDelayPolicy : public BatchPolicy {
 public:
  struct Options : BatchingOptions {};

  // INVALID_ARGUMENT when an option is out of range.
  static absl::StatusOr<std::unique_ptr<SizeOrDelayPolicy>> Create(const Options& options);

  // Tasks are grouped by effective keep-rate (the requested one, default_keep_rate for 0),
  // each group in arrival order; a batch is the oldest max_batch_size tasks of one group.
  // The first group (ordered by its oldest task) whose batch is full, whose oldest task
  // has waited max_queue_delay, or any group when draining, runs; otherwise the policy
  // wakes when the oldest task's delay is up. So requests at different keep-rates share
  // a queue (one per model) but never a batch. Priority and the keep-rate floor
  // (min_keep_rate, min_expected_accuracy) are not used by this policy: every keep-rate it
  // runs is the client's own or the model's default.
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time now) const override;

 private:
  explicit SizeOrDelayPolicy(const Options& options) : options_(options) {}
  const Options options_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SCHEDULER_BATCH_POLICY_H_
