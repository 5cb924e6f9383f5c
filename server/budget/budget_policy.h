// BudgetPolicy: the latency-budget batching policy. For each queue (one per model) it
// picks the next batch, the keep-rate it runs at, which requests to reject at once and
// when to look again, from the tasks' budgets and a LatencyModel's predictions.
//
// Terms
//   bound(t)   the task's deadline (TaskAttributes::deadline; the RPC layer sets it to
//              min(client deadline, arrival + latency budget)). When the deadline is
//              infinite but latency_budget > 0, enqueue_time + latency_budget. A task with
//              an infinite bound has no budget. With a guard reserve ρ > 0 (see Interference
//              below), bound(t) is moved earlier by ρ × (deadline − enqueue_time).
//   G(k, n)    guarded compute time of a batch of n at keep-rate k:
//              predicted(k, n) × (1 + safety_fraction) + safety_margin.
//   fits(k, B, s)  every member m of batch B finishes in time when B starts at s:
//              s + G(k, |B|) <= bound(m).
//   levels     the latency table's keep-rate levels (e.g. 1.0, 0.9, ..., min).
//   floor(t)   t's keep-rate floor: ResolveKeepRateFloor (server/scheduler/keep_rate_floor.h)
//              of its raw min_keep_rate and min_expected_accuracy, with the accuracy curve
//              of the model's served version (AccuracyCurveSource), read once per decision.
//              Without a source, min_keep_rate 0 = no floor and an accuracy bound is refused.
//   lo(t)      the lowest level >= floor(t).
//   best(t, s, n)  the highest level k >= lo(t) with s + G(k, n) <= bound(t), if any.
//
// Rule (Decide), all at the decision time `now`:
//   1. A "server chooses" task whose floor is above the highest level, or whose
//      min_expected_accuracy the curve does not reach (possible only when a reload changed
//      the calibration after admission), is rejected with INVALID_ARGUMENT. So the floor is
//      never violated: rejected, not served below it.
//   1b. Hopeless requests are rejected at once with DEADLINE_EXCEEDED, judged by the
//      backlog scan: the live tasks, in the order of rule 2, run back to back from `now`
//      in greedy batches (a head plus the following tasks that can run at its rate and
//      still fit, up to max_batch_size) at their floor rates (their own keep-rate when
//      fixed, lo(t) for "server chooses" with a budget, the default rate without one).
//      This is the fastest schedule the policy could still pick. A budgeted task that
//      misses its bound even there is rejected; the message gives the predicted time, the
//      guarded time, the predicted compute queued ahead of it and the remaining budget.
//      Under overload requests are thus refused while the client still has time (the
//      least urgent first), instead of expiring in the queue; with an empty queue this is
//      the "alone, started now, at its lowest allowed keep-rate" test.
//   2. The remaining tasks are ordered by (priority, bound, enqueue time, index), most
//      urgent first. Candidate batches are formed greedily: the first task not yet in a
//      candidate is the head; its keep-rate k is
//        * its keep_rate when fixed (honoured as given, never changed);
//        * best(head, now, 1) when "server chooses" with a budget: the highest keep-rate
//          it could get alone (accuracy is the first goal);
//        * max(default_keep_rate, floor(t)) when "server chooses" without a budget.
//      Then the following tasks in order join while the batch has fewer than
//      max_batch_size members, if (a) they are compatible with k: fixed at exactly k; or
//      "server chooses" without a budget whose own rate above equals k; or "server
//      chooses" with a budget, lo(t) <= k, and waiting would not get them more:
//      best(t, finish, 1) <= k (or none), finish = now + G(k, |B| + 1); and (b) the grown
//      batch still fits at k: fits(k, B ∪ {t}, now).
//      Larger batches are thus preferred for throughput exactly when they do not lower
//      the keep-rate below what the tightest member (the head, whose best alone is k)
//      could get alone, and never when a looser member would get a better keep-rate by
//      running after this batch.
//   2b. Rescue under backlog (Options::rescue_batching, on by default): for a "server
//      chooses" head with a budget, if the backlog scan of the tasks outside the batch,
//      started when the batch would finish, loses any of them, the greedy batch is formed
//      again at each lower level down to lo(head), followers joining whenever they fit
//      (the waiting check of rule 2 assumes they would run alone next, which a backlog
//      does not allow): the first level that loses none
//      wins; if none does, the level with the largest (members − tasks lost) wins, ties
//      keeping the higher level. So the head gives up keep-rate only to keep the queue
//      behind it servable in time; with no request at risk (light load) the rule above
//      applies unchanged.
//   2c. Load cap (Options::target_utilization > 0 and QueueSnapshot::arrival_rate > 0):
//      cap = the highest level k with
//        arrival_rate × predicted(k, max_batch_size) / max_batch_size
//          <= target_utilization × parallel_batches,
//      the lowest level when none is. best() never returns a level above
//      max(cap, lo(t)) (rule 2 and 2b). So under sustained load the keep-rate is lowered before a
//      queue builds, to what the device can keep up with at full batches, instead of serving each
//      head at its best alone and refusing the excess later; at light load the cap is the highest
//      level and changes nothing.
//   3. A candidate runs now when the scheduler is draining, it is full (max_batch_size),
//      its oldest member has waited max_queue_delay (the classic size-or-delay rule,
//      counted from the first request), or now has reached its latest safe start
//      LSS = min over members of bound(m) − G(k, |B|). The first candidate (in order)
//      that runs now is returned — unless running it (now + G) would pass the LSS of an
//      earlier candidate that is waiting for company: then the first such earlier
//      candidate runs now instead (it fits: its LSS is not past), and the other one is
//      chosen at the next decision. Otherwise nothing runs and wake_at is the earliest
//      min(oldest enqueue + max_queue_delay, LSS) over the candidates, so a batch that
//      waits for company still starts in time for every member at the same keep-rate;
//      tasks that arrive meanwhile join only if the batch still fits (queue time is
//      accounted because every check uses the start time `now`).
//   Tasks without a budget therefore get default_keep_rate (1.0 unless configured) and the
//   classic size-or-delay batching.
//
// Limitations: the policy sees one queue; it assumes the batch starts when returned (a
// free batch thread) and does not model other queues sharing the device. The safety
// fraction and margin absorb small effects; persistent contention shows up in the
// latency model through Observe().
//
// Batching key: the caller uses one key per model (not per keep-rate); every batch this
// policy returns has members that all run at BatchDecision::keep_rate.
//
// Interference (a LatencyGuard, optional): every prediction above (G and the load cap) is
// multiplied by the guard's safety factor F >= 1, and every budgeted bound moved earlier by
// the guard's reserve ρ of its budget, both read once per decision; F grows when batches run
// longer than predicted or admitted requests miss their budgets, ρ when they miss
// (latency_guard.h). Without a guard F = 1, ρ = 0.
//
// Thread-safety: Decide() is const and thread-safe; it reads one LatencyModel snapshot, one
// guard factor and one accuracy curve per call. Decide(queue, now, table, factor) is a pure
// function of its arguments (deterministic).
#ifndef VITSERVE_SERVER_BUDGET_BUDGET_POLICY_H_
#define VITSERVE_SERVER_BUDGET_BUDGET_POLICY_H_

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/budget/latency_guard.h"
#include "server/budget/latency_model.h"
#include "server/scheduler/batch_policy.h"
#include "server/scheduler/keep_rate_floor.h"

namespace vitserve {

// Rule 2c's cap: the highest level of `table` at which `arrival_rate` (tasks/s) takes at
// most target_utilization × parallel_batches of the device at full batches of
// max_batch_size; the lowest level when none does. The highest level when
// target_utilization or arrival_rate is <= 0 (no cap).
float LoadCapKeepRate(const LatencyTable& table, double arrival_rate, double target_utilization,
                      int max_batch_size, int parallel_batches);

class BudgetPolicy : public BatchPolicy {
 public:
  // BatchingOptions: max_batch_size (set it to the scheduler's), max_queue_delay (the
  // oldest member never waits past the batch's latest safe start), default_keep_rate (for
  // "server chooses" tasks without a budget; 1.0: accuracy is not given away when there is
  // time).
  struct Options : BatchingOptions {
    // Predictions are inflated by this fraction before deadline checks (model error,
    // jitter). >= 0.
    double safety_fraction = 0.1;
    // ... and by this fixed amount (dispatch, pre/post-processing outside the measured
    // compute). >= 0.
    absl::Duration safety_margin = absl::Milliseconds(1);
    // Under backlog, lower a "server chooses" head's keep-rate below its best alone when
    // that serves more requests in time (rule 2b in the file comment). false = the strict
    // accuracy-first rule.
    bool rescue_batching = true;
    // Rule 2c: the fraction of the device's time the offered load may take at the chosen
    // keep-rate (full batches, predicted times). In [0, 1]; 0 = no load cap (strictly the
    // budget of each request).
    double target_utilization = 0.8;
    // Batches that run at once (the scheduler's batch threads); the load cap divides the
    // offered load among them. >= 1.
    int parallel_batches = 1;
  };

  // `latency_model` is shared with whoever calls Observe(); not null. `guard` (may be null
  // = factor 1) is shared with whoever feeds it observations. `accuracy` (may be null = no
  // calibration, see floor(t)) is the model's served version's curve, shared with whoever
  // publishes reloads. INVALID_ARGUMENT for out-of-range options or a null model.
  static absl::StatusOr<std::unique_ptr<BudgetPolicy>> Create(
      const Options& options, std::shared_ptr<const LatencyModel> latency_model,
      std::shared_ptr<const LatencyGuard> guard = nullptr,
      std::shared_ptr<const AccuracyCurveSource> accuracy = nullptr);

  // Decide(queue, now, *latency_model->Snapshot(), guard's F, guard's ρ,
  // accuracy->Snapshot()).
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time now) const override;

  // The rule in the file comment, against a fixed table, every prediction multiplied by
  // `safety_factor` (>= 1; the LatencyGuard's F) in G and in the load cap, and every
  // budgeted task's bound moved `reserve` (in [0, 1); the guard's ρ) of its budget earlier,
  // floors mapped with `accuracy` (null = no calibration, see floor(t)).
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time now, const LatencyTable& table,
                       double safety_factor = 1.0, double reserve = 0.0,
                       const AccuracyCurve* accuracy = nullptr) const;

  // Rule 1b for the new (last) task with the backlog scan starting at free_at: the
  // running batch's predicted end. DEADLINE_EXCEEDED (message as in rule 1b) when the
  // scan loses it; INVALID_ARGUMENT for an unreachable floor (rule 1); OK otherwise.
  absl::Status Admit(const QueueSnapshot& queue, absl::Time now, absl::Time free_at) const override;
  absl::Status Admit(const QueueSnapshot& queue, absl::Time now, absl::Time free_at,
                     const LatencyTable& table, double safety_factor = 1.0, double reserve = 0.0,
                     const AccuracyCurve* accuracy = nullptr) const;

  // G(k, n): the guarded compute time used in every deadline check,
  // predicted × safety_factor × (1 + safety_fraction) + safety_margin.
  absl::Duration GuardedCompute(const LatencyTable& table, float keep_rate, int batch_size,
                                double safety_factor = 1.0) const;

  const Options& options() const { return options_; }

 private:
  // What one decision reads: the table, the guard's F and ρ, the accuracy curve (may be
  // null).
  struct Inputs {
    const LatencyTable& table;
    double safety_factor;
    double reserve;
    const AccuracyCurve* accuracy;
  };
  // Decide() with the backlog scan of rule 1b starting at `scan_start` (>= now); with
  // `rejects_only`, stops after rule 1b (no batch is formed) and reports only the last
  // task's rejection (admission of a newcomer).
  BatchDecision DecideFrom(const QueueSnapshot& queue, absl::Time now, absl::Time scan_start,
                           bool rejects_only, const Inputs& inputs) const;
  // The guard's factor and reserve now (1 and 0 without a guard).
  LatencyGuard::State GuardState() const {
    return guard_ == nullptr ? LatencyGuard::State() : guard_->GetState();
  }

  // The accuracy curve now (null without a source).
  std::shared_ptr<const AccuracyCurve> AccuracyNow() const {
    return accuracy_ == nullptr ? nullptr : accuracy_->Snapshot();
  }

  BudgetPolicy(const Options& options, std::shared_ptr<const LatencyModel> latency_model,
               std::shared_ptr<const LatencyGuard> guard,
               std::shared_ptr<const AccuracyCurveSource> accuracy)
      : options_(options),
        latency_model_(std::move(latency_model)),
        guard_(std::move(guard)),
        accuracy_(std::move(accuracy)) {}

  const Options options_;
  const std::shared_ptr<const LatencyModel> latency_model_;
  const std::shared_ptr<const LatencyGuard> guard_;
  const std::shared_ptr<const AccuracyCurveSource> accuracy_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_BUDGET_BUDGET_POLICY_H_
