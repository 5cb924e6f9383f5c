// BatchScheduler: groups the tasks of one queue into batches and runs each batch on one of
// a fixed set of batch threads, via a callback. Generic over the task type; it knows
// nothing about gRPC, models or metrics.
//
// Behaviour
//   * The caller registers its queues up front (AddQueue, e.g. one per model) and gets a
//     handle for each; Schedule() takes the handle, so nothing is looked up by name per
//     task or per decision. Tasks of different queues are never put in the same batch.
//   * Which tasks of a queue run next, at which keep-rate, and when, is decided by that
//     queue's BatchPolicy (server/scheduler/batch_policy.h), a pure function of (queue
//     snapshot, now); the policy is the one place where a task's keep-rate is chosen.
//     The default policy is SizeOrDelayPolicy built from Options: a batch runs when
//     `max_batch_size` tasks wait or `max_queue_delay` after its FIRST task arrived.
//     Latency bound for a lone task: max_queue_delay + one batch's compute time (when a
//     batch thread is free).
//   * The queues are bounded in total: when `max_enqueued` tasks are waiting, Schedule()
//     fails at once with RESOURCE_EXHAUSTED (it never blocks); the caller may retry.
//   * While every batch thread runs a batch, Schedule() asks the policy's Admit() whether
//     the new task can still make it, given when a thread is predicted to be free (the
//     decision time plus BatchDecision::predicted_compute); a refusal is returned to the
//     caller and the task is not queued. With a free thread there is no such test.
//   * A task whose deadline (TaskAttributes::deadline) has passed, or whose IsCancelled()
//     returns true, leaves its queue without running and is handed to the reject callback
//     with DEADLINE_EXCEEDED / CANCELLED. Queues are checked whenever a batch thread looks
//     at them: on every Schedule(), Kick(), at the policy's wake-up time and at the
//     earliest task deadline.
//   * Shutdown() (also run by the destructor) stops accepting tasks (UNAVAILABLE) and
//     drains: every task already accepted is answered, either by running it (the policy
//     is told `draining`, so it does not wait for more tasks) or by the reject callback.
//     It returns after the last callback has returned and the threads have exited.
//   * Per queue, the recent arrival rate (every Schedule() call that reaches the queue
//     checks, admitted or not; ArrivalRateEstimator with time constant
//     `arrival_rate_window`) is handed to the policy in QueueSnapshot::arrival_rate, so a
//     policy can size its choices to the offered load, not only to what is queued.
//   * Time comes only from the injected Clock, so tests drive it with FakeClock.
//
// Tuning: max_batch_size bounds the batch the model sees; max_queue_delay trades latency
// of lightly loaded queues for batch size; num_batch_threads is how many batches run at
// once (1 on a CPU whose cores are all used by intra-op threads; more on a GPU to overlap
// host work). max_enqueued bounds memory and the worst queueing delay.
//
// Requirements on TaskType (duck-typed):
//   const TaskAttributes& attributes() const;  // constant while the task is queued
//   bool IsCancelled() const;                  // cheap, non-blocking, thread-safe
//
// Ownership: Schedule() takes the task only when it returns OK (then *task is null); on
// error the caller keeps it. Every accepted task is handed back exactly once, to either
// the batch callback or the reject callback, on a batch thread.
//
// Thread-safety: all public methods are thread-safe. Callbacks run on batch threads
// without the scheduler's lock held; they may call Schedule() and Kick() but must not
// call Shutdown() or destroy the scheduler.
//
// Implementation details follow; API users need not read them.
#ifndef VITSERVE_SERVER_SCHEDULER_BATCH_SCHEDULER_H_
#define VITSERVE_SERVER_SCHEDULER_BATCH_SCHEDULER_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/scheduler/arrival_rate.h"
#include "server/scheduler/batch_policy.h"
#include "server/util/clock.h"

namespace vitserve {

template <typename TaskType>
class BatchScheduler {
 public:
  // BatchingOptions: max_batch_size is the largest batch handed to the batch callback
  // (and the default policy's); max_queue_delay and default_keep_rate configure the default
  // policy only.
  struct Options : BatchingOptions {
    // Tasks waiting in all queues together; more are refused with RESOURCE_EXHAUSTED.
    int max_enqueued = 256;
    // Batches that run concurrently.
    int num_batch_threads = 1;
    // Time constant of the per-queue arrival-rate estimate (QueueSnapshot::arrival_rate).
    absl::Duration arrival_rate_window = absl::Milliseconds(250);
  };

  // One queue (AddQueue's handle); owned by the scheduler, valid while it lives.
  struct Queue;

  // Runs one batch of the queue named `queue`. `keep_rate` is the policy's choice;
  // `batch` is non-empty, at most max_batch_size tasks, oldest first.
  using ProcessBatchFn = std::function<void(const std::string& queue, float keep_rate,
                                            std::vector<std::unique_ptr<TaskType>> batch)>;
  // Answers one task that will not run; `status` is not OK.
  using RejectFn = std::function<void(std::unique_ptr<TaskType> task, absl::Status status)>;

  // Optional: runs once on each batch thread when it starts, before it takes any task
  // (e.g. a warm-up forward, so the thread's first real batch does not pay for first-touch
  // work such as OpenMP and allocator state: a fresh server's first request ran 2-4x
  // slower without it).
  using ThreadStartFn = std::function<void()>;

  struct Callbacks {
    ProcessBatchFn process_batch;
    RejectFn reject;
    ThreadStartFn thread_start = nullptr;  // optional
  };

  // Validates `options`, starts the batch threads and waits until each has run
  // `callbacks.thread_start` (if set). `clock` is not owned and must outlive the
  // scheduler. `policy` (the default policy of AddQueue) null = SizeOrDelayPolicy from
  // `options`. INVALID_ARGUMENT for out-of-range options or missing callbacks.
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(
      const Options& options, Callbacks callbacks, const Clock* clock,
      std::unique_ptr<BatchPolicy> policy = nullptr);

  ~BatchScheduler() { Shutdown(); }
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // A new queue named `name` (for the batch callback and QueueSnapshot::key) decided by
  // `policy` (null = the default policy given to Create). INVALID_ARGUMENT for a name
  // already used. Thread-safe; usually called before traffic.
  absl::StatusOr<Queue*> AddQueue(const std::string& name,
                                  std::unique_ptr<BatchPolicy> policy = nullptr);

  // Enqueues *task in `queue` (a handle of this scheduler). Errors (the caller keeps the
  // task): INVALID_ARGUMENT (null task or queue), RESOURCE_EXHAUSTED (max_enqueued tasks waiting),
  // DEADLINE_EXCEEDED (deadline already passed), UNAVAILABLE (shutting down), or the policy's
  // Admit() status when every batch thread is busy (free_at = the earliest predicted end of a
  // running batch, from BatchDecision::predicted_compute).
  absl::Status Schedule(Queue* queue, std::unique_ptr<TaskType>* task);

  // Makes the batch threads look at the queues now (e.g. after a task was cancelled, so
  // it is answered promptly).
  void Kick();

  // Stops accepting tasks, answers every accepted task, joins the threads. Idempotent.
  void Shutdown();

  // Tasks waiting (not yet handed to a callback), all queues together.
  int64_t NumEnqueued() const;

  // The recent arrival rate of `queue` (tasks per second, as its policy sees it), now.
  double ArrivalRate(const Queue* queue) const;

 private:
  struct Entry {
    std::unique_ptr<TaskType> task;
    absl::Time enqueue_time;
  };
  // What a batch thread does after leaving the lock.
  struct Work {
    std::vector<std::pair<std::unique_ptr<TaskType>, absl::Status>> rejects;
    const std::string* queue = nullptr;  // the batch's queue name
    float keep_rate = 1.0f;
    std::vector<std::unique_ptr<TaskType>> batch;
    absl::Duration predicted_compute;             // the policy's, for `batch`
    absl::Time wake_at = absl::InfiniteFuture();  // when nothing to do
    bool empty() const { return rejects.empty() && batch.empty(); }
  };
  struct WaitState {
    const BatchScheduler* self;
    uint64_t seen_generation;
  };

  BatchScheduler(const Options& options, Callbacks callbacks, const Clock* clock,
                 std::unique_ptr<BatchPolicy> policy)
      : options_(options),
        callbacks_(std::move(callbacks)),
        clock_(clock),
        default_policy_(std::move(policy)) {}

  static bool Changed(WaitState* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // Evaluated by absl::Mutex with mu_ held.
    return w->self->generation_ != w->seen_generation;
  }

  void Loop();
  // Sweeps queues and asks the policy, starting after the last queue served; stops at the
  // first queue that yields a batch.
  Work FindWork(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies one queue's sweep and decision; true when a batch was taken.
  bool ServeQueue(Queue& queue, absl::Time now, Work& work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the expired and cancelled tasks of `queue` into work.rejects.
  void SweepQueue(Queue& queue, absl::Time now, Work& work) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const Callbacks callbacks_;
  const Clock* const clock_;
  const std::unique_ptr<BatchPolicy> default_policy_;

  mutable absl::Mutex mu_;
  // Every queue, in AddQueue order (served round robin); never removed.
  std::vector<std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  int64_t num_enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  // Bumped on every change a waiting thread must react to.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  size_t next_queue_ ABSL_GUARDED_BY(mu_) = 0;  // where the round robin starts
  // Batch threads not running a batch, and the predicted ends of the running batches.
  int idle_threads_ ABSL_GUARDED_BY(mu_) = 0;
  int started_threads_ ABSL_GUARDED_BY(mu_) = 0;  // that have run thread_start
  std::multiset<absl::Time> running_ends_ ABSL_GUARDED_BY(mu_);

  absl::Mutex shutdown_mu_;  // serialises Shutdown() callers
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(shutdown_mu_);
};

// ---- Implementation ---------------------------------------------------------------------

template <typename TaskType>
struct BatchScheduler<TaskType>::Queue {
  Queue(std::string queue_name, const BatchPolicy* queue_policy,
        std::unique_ptr<BatchPolicy> owned_policy, absl::Duration window)
      : name(std::move(queue_name)),
        policy(queue_policy),
        owned(std::move(owned_policy)),
        arrivals(window) {}
  const std::string name;
  const BatchPolicy* const policy;  // `owned` or the scheduler's default
  const std::unique_ptr<BatchPolicy> owned;
  // Guarded by the scheduler's mu_.
  std::deque<Entry> entries;
  ArrivalRateEstimator arrivals;  // offered load (every Schedule() that reaches the queue)
};

template <typename TaskType>
absl::StatusOr<std::unique_ptr<BatchScheduler<TaskType>>> BatchScheduler<TaskType>::Create(
    const Options& options, Callbacks callbacks, const Clock* clock,
    std::unique_ptr<BatchPolicy> policy) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be >= 1, got ", options.max_batch_size));
  }
  if (options.max_enqueued < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_enqueued must be >= 1, got ", options.max_enqueued));
  }
  if (options.num_batch_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_batch_threads must be >= 1, got ", options.num_batch_threads));
  }
  if (!callbacks.process_batch || !callbacks.reject) {
    return absl::InvalidArgumentError("both process_batch and reject callbacks are required");
  }
  if (options.arrival_rate_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("arrival_rate_window must be > 0, got ",
                     absl::FormatDuration(options.arrival_rate_window)));
  }
  if (clock == nullptr) return absl::InvalidArgumentError("clock is required");
  if (policy == nullptr) {
    SizeOrDelayPolicy::Options policy_options;
    static_cast<BatchingOptions&>(policy_options) = options;
    absl::StatusOr<std::unique_ptr<SizeOrDelayPolicy>> made =
        SizeOrDelayPolicy::Create(policy_options);
    if (!made.ok()) return made.status();
    policy = std::move(*made);
  }
  std::unique_ptr<BatchScheduler> scheduler(
      new BatchScheduler(options, std::move(callbacks), clock, std::move(policy)));
  {
    absl::MutexLock lock(&scheduler->shutdown_mu_);
    {
      absl::MutexLock queue_lock(&scheduler->mu_);
      scheduler->idle_threads_ = options.num_batch_threads;
    }
    for (int i = 0; i < options.num_batch_threads; ++i) {
      scheduler->threads_.emplace_back([s = scheduler.get()] {
        if (s->callbacks_.thread_start) s->callbacks_.thread_start();
        {
          absl::MutexLock started_lock(&s->mu_);
          ++s->started_threads_;
        }
        s->Loop();
      });
    }
  }
  {
    absl::MutexLock lock(&scheduler->mu_);
    scheduler->mu_.Await(absl::Condition(
        +[](BatchScheduler* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
          return s->started_threads_ == s->options_.num_batch_threads;
        },
        scheduler.get()));
  }
  return scheduler;
}

template <typename TaskType>
absl::StatusOr<typename BatchScheduler<TaskType>::Queue*> BatchScheduler<TaskType>::AddQueue(
    const std::string& name, std::unique_ptr<BatchPolicy> policy) {
  absl::MutexLock lock(&mu_);
  for (const auto& queue : queues_) {
    if (queue->name == name) {
      return absl::InvalidArgumentError(absl::StrCat("a queue named '", name, "' exists"));
    }
  }
  const BatchPolicy* decides = policy != nullptr ? policy.get() : default_policy_.get();
  queues_.push_back(
      std::make_unique<Queue>(name, decides, std::move(policy), options_.arrival_rate_window));
  return queues_.back().get();
}

template <typename TaskType>
absl::Status BatchScheduler<TaskType>::Schedule(Queue* queue, std::unique_ptr<TaskType>* task) {
  if (task == nullptr || *task == nullptr) return absl::InvalidArgumentError("null task");
  if (queue == nullptr) return absl::InvalidArgumentError("null queue");
  const absl::Time now = clock_->Now();
  if ((*task)->attributes().deadline <= now) {
    return absl::DeadlineExceededError("deadline passed before the request was queued");
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server is shutting down; not accepting requests");
  queue->arrivals.Record(now);
  if (num_enqueued_ >= options_.max_enqueued) {
    return absl::ResourceExhaustedError(absl::StrCat("queue full: ", num_enqueued_,
                                                     " requests waiting (max ",
                                                     options_.max_enqueued, "); retry later"));
  }
  if (idle_threads_ == 0 && !running_ends_.empty()) {
    // Every batch thread is busy: ask the policy whether the task can still make it.
    std::vector<QueuedTask> snapshot;
    snapshot.reserve(queue->entries.size() + 1);
    for (const Entry& e : queue->entries) {
      if (e.task->attributes().deadline > now) {
        snapshot.push_back(QueuedTask{e.task->attributes(), e.enqueue_time});
      }
    }
    snapshot.push_back(QueuedTask{(*task)->attributes(), now});
    absl::Status admitted = queue->policy->Admit(
        QueueSnapshot{queue->name, snapshot, false, queue->arrivals.RatePerSecond(now)}, now,
        std::max(now, *running_ends_.begin()));
    if (!admitted.ok()) return admitted;
  }
  queue->entries.push_back(Entry{std::move(*task), now});
  ++num_enqueued_;
  ++generation_;
  return absl::OkStatus();
}

template <typename TaskType>
void BatchScheduler<TaskType>::Kick() {
  absl::MutexLock lock(&mu_);
  ++generation_;
}

template <typename TaskType>
int64_t BatchScheduler<TaskType>::NumEnqueued() const {
  absl::MutexLock lock(&mu_);
  return num_enqueued_;
}

template <typename TaskType>
double BatchScheduler<TaskType>::ArrivalRate(const Queue* queue) const {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  return queue->arrivals.RatePerSecond(now);
}

template <typename TaskType>
void BatchScheduler<TaskType>::Shutdown() {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    ++generation_;
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

template <typename TaskType>
void BatchScheduler<TaskType>::Loop() {
  mu_.Lock();
  while (true) {
    const absl::Time now = clock_->Now();
    Work work = FindWork(now);
    if (!work.empty()) {
      const bool has_batch = !work.batch.empty();
      std::multiset<absl::Time>::iterator running;
      if (has_batch) {
        --idle_threads_;
        running = running_ends_.insert(now + work.predicted_compute);
      }
      mu_.Unlock();
      for (auto& [task, status] : work.rejects) callbacks_.reject(std::move(task), status);
      if (has_batch) callbacks_.process_batch(*work.queue, work.keep_rate, std::move(work.batch));
      mu_.Lock();
      if (has_batch) {
        running_ends_.erase(running);
        ++idle_threads_;
      }
      continue;
    }
    if (stopping_ && num_enqueued_ == 0) break;
    WaitState wait{this, generation_};
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&BatchScheduler::Changed, &wait), work.wake_at);
  }
  mu_.Unlock();
}

template <typename TaskType>
typename BatchScheduler<TaskType>::Work BatchScheduler<TaskType>::FindWork(absl::Time now) {
  Work work;
  // Round robin over the queues: start after the queue served last.
  const size_t n = queues_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (next_queue_ + i) % n;
    if (ServeQueue(*queues_[index], now, work)) {
      next_queue_ = (index + 1) % n;
      break;
    }
  }
  return work;
}

template <typename TaskType>
void BatchScheduler<TaskType>::SweepQueue(Queue& q, absl::Time now, Work& work) {
  std::deque<Entry>& queue = q.entries;
  std::deque<Entry> live;
  for (Entry& e : queue) {
    if (e.task->attributes().deadline <= now) {
      work.rejects.emplace_back(
          std::move(e.task),
          absl::DeadlineExceededError(absl::StrCat("deadline exceeded after ",
                                                   absl::FormatDuration(now - e.enqueue_time),
                                                   " in the queue, before the request could run")));
    } else if (e.task->IsCancelled()) {
      work.rejects.emplace_back(std::move(e.task),
                                absl::CancelledError("request cancelled while queued"));
    } else {
      live.push_back(std::move(e));
    }
  }
  num_enqueued_ -= static_cast<int64_t>(queue.size() - live.size());
  queue.swap(live);
}

template <typename TaskType>
bool BatchScheduler<TaskType>::ServeQueue(Queue& q, absl::Time now, Work& work) {
  // 1. Expired and cancelled tasks leave without running.
  SweepQueue(q, now, work);
  std::deque<Entry>& queue = q.entries;
  if (queue.empty()) return false;

  // 2. Ask the policy.
  std::vector<QueuedTask> snapshot;
  snapshot.reserve(queue.size());
  for (const Entry& e : queue) snapshot.push_back(QueuedTask{e.task->attributes(), e.enqueue_time});
  BatchDecision decision = q.policy->Decide(
      QueueSnapshot{q.name, snapshot, stopping_, q.arrivals.RatePerSecond(now)}, now);

  // 3. Apply it, ignoring out-of-range or repeated indices and oversize batches.
  std::vector<bool> taken(queue.size(), false);
  for (auto& [index, status] : decision.reject) {
    if (index >= queue.size() || taken[index]) continue;
    taken[index] = true;
    work.rejects.emplace_back(std::move(queue[index].task),
                              status.ok() ? absl::InternalError("rejected by policy") : status);
  }
  for (size_t index : decision.batch) {
    if (index >= queue.size() || taken[index]) continue;
    if (static_cast<int>(work.batch.size()) == options_.max_batch_size) break;
    taken[index] = true;
    work.batch.push_back(std::move(queue[index].task));
  }
  const bool has_batch = !work.batch.empty();
  if (has_batch) {
    work.queue = &q.name;
    work.keep_rate = decision.keep_rate;
    work.predicted_compute = decision.predicted_compute;
  } else if (stopping_ && decision.reject.empty()) {
    // A policy that neither runs nor rejects while draining would stall shutdown.
    for (size_t i = 0; i < queue.size(); ++i) {
      if (taken[i]) continue;
      taken[i] = true;
      work.rejects.emplace_back(std::move(queue[i].task),
                                absl::UnavailableError("server shut down before the request ran"));
    }
  }
  std::deque<Entry> remaining;
  for (size_t i = 0; i < queue.size(); ++i) {
    if (!taken[i]) remaining.push_back(std::move(queue[i]));
  }
  num_enqueued_ -= static_cast<int64_t>(queue.size() - remaining.size());
  queue.swap(remaining);

  // 4. When to look again if nothing else happens.
  if (!has_batch && !queue.empty()) {
    absl::Time wake = decision.wake_at > now ? decision.wake_at : absl::InfiniteFuture();
    for (const Entry& e : queue) wake = std::min(wake, e.task->attributes().deadline);
    work.wake_at = std::min(work.wake_at, wake);
  }
  return has_batch;
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SCHEDULER_BATCH_SCHEDULER_H_
