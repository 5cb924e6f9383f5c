// LatencyGuard: notices when the budget scheduler's latency predictions run short on a
// shared machine, and widens the scheduler's safety within seconds; relaxes slowly once
// budgets are met again.
//
// The latency model (latency_model.h) predicts a batch's compute time from what it has
// measured, and the policy inflates it by a fixed safety fraction and margin. Under
// interference (other processes on the cores, a heavy client on the same machine) batches
// take longer than predicted and time outside the measured compute (thread wake-ups,
// decoding on the gRPC threads) grows: admitted requests miss their budgets. The guard
// watches two signals and turns them into a safety factor F >= 1 that multiplies every
// prediction the budget policy uses (its deadline checks and its load cap), and a reserve
// ρ in [0, 1): the share of each budget the policy keeps free at its end:
//
//   gap g    observed / predicted compute over recent batches: the ratio of two sums
//            decayed with time constant gap_window (so a long batch weighs more), each
//            observation first clipped to max_observation_ratio × its prediction. Reacts
//            from the first slow batches, before budgets are missed. Only g > 1 is used:
//            the model's own refinement handles over-prediction.
//   boost b  integral control on the miss ratio of admitted, budgeted requests: every
//            such request moves log(b) by +miss_step when it missed its budget and by
//            −miss_step × target/(1 − target) when it met it. Over N requests with miss
//            ratio r, log(b) changes by miss_step × N × (r − target) / (1 − target): b rises
//            while misses exceed the target (each miss +miss_step, ~5 %) and falls when they
//            are below it; with no misses at all, one miss is undone by (1 − target)/target
//            met requests (199 at 0.5 %), i.e. seconds to tens of seconds. b in [1, max_factor].
//            A request the policy refuses at once moves log(b) by −miss_step: a refusal
//            costs the client as much as a miss, so b rises only while misses outnumber
//            refusals. Without this, misses a larger factor cannot prevent (stalls of the
//            whole machine) drove b to its maximum and the policy refused most requests.
//   F = min(max_factor, max(1, g) × b).
//   reserve ρ  integral control on the same misses, as a fraction of each request's budget
//            that the policy keeps free at the end: it plans every budgeted request to finish
//            by deadline − ρ × budget. Every admitted budgeted request moves ρ by
//            +reserve_step when it missed and by −reserve_step × rt/(1 − rt) when it met its
//            budget, rt = reserve_target_ratio (0.2 %: one miss is undone by 499 met
//            requests); a refusal takes back 1/refusals_per_miss (50) of a miss step, so
//            ρ also relaxes while everything is refused (without that, a reserve raised by
//            misses at start-up could refuse every later request and never learn otherwise;
//            with 500 refusals/s the cap is gone in 3 s), and the reserve buys one miss fewer
//            with at most ~50 refusals. Refusals on arrival while the device is busy count
//            too: exempting them let ρ rise under overload and did worse in every interleaved
//            pair measured (bench/results/interference-cpu.md, third pass). ρ in
//            [0, max_reserve]. F scales the compute predictions (throughput falls with it);
//            ρ is additive time: it covers what happens outside the batch (the response
//            path, the client's receive thread, threads preempted around a batch), which
//            grows under CPU interference whatever the batch size, and costs throughput only
//            where requests would otherwise use their budget's last ρ. Its target is below
//            target_miss_ratio because the server sees only part of the misses: on a 2-core
//            VM with a one-thread CPU hog and the client on the same cores, about half of the
//            client's misses were answered by the server in time and arrived late
//            (docs/scheduler.md). max_reserve bounds the refusals that misses no reserve can
//            prevent may cause.
//
// It also keeps the recent miss ratio for metrics: misses / requests, both sums decayed with
// time constant miss_window.
//
// Time is passed in by the caller (the service's injected Clock), never read here, so the
// guard is deterministic and unit-tested with made-up times and observations. Times earlier
// than the last one count as the last one.
//
// Thread-safety: all methods are thread-safe (one internal mutex; the budget policy reads
// Factor() once per decision).
#ifndef VITSERVE_SERVER_BUDGET_LATENCY_GUARD_H_
#define VITSERVE_SERVER_BUDGET_LATENCY_GUARD_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitserve {

class LatencyGuard {
 public:
  struct Options {
    // The miss ratio the boost steers toward, in (0, 1). Half of the 1 % the product
    // target allows, so noise around it stays inside.
    double target_miss_ratio = 0.005;
    // log(boost) added per missed budget, > 0.
    double miss_step = 0.05;
    // Time constant of the prediction gap, > 0.
    absl::Duration gap_window = absl::Seconds(1);
    // Each batch's observed time is clipped to this multiple of its prediction, >= 1.
    double max_observation_ratio = 2.0;
    // Time constant of the exported miss ratio, > 0.
    absl::Duration miss_window = absl::Seconds(2);
    // Upper bound of the factor (and of the boost alone), >= 1.
    double max_factor = 3.0;
    // Reserve (fraction of a request's budget) added per missed budget, > 0; 0.01 = 1 %.
    double reserve_step = 0.01;
    // The miss ratio (server-seen) the reserve steers toward, in (0, 1).
    double reserve_target_ratio = 0.002;
    // Upper bound of the reserve, in [0, 1).
    double max_reserve = 0.3;
    // A refusal lowers the reserve by reserve_step / refusals_per_miss, >= 1.
    double refusals_per_miss = 50.0;
  };

  struct State {
    double factor = 1.0;      // F
    double gap = 1.0;         // g (1 before any batch)
    double boost = 1.0;       // b
    double reserve = 0.0;     // ρ
    double miss_ratio = 0.0;  // recent misses / admitted budgeted requests (0 before any)
  };

  // INVALID_ARGUMENT for out-of-range options.
  static absl::StatusOr<std::unique_ptr<LatencyGuard>> Create(const Options& options);

  // One executed batch, finished at `at`: its predicted compute (the latency model's,
  // before safety terms) and the measured one. Ignored when either is not positive.
  void ObserveBatch(absl::Time at, absl::Duration predicted, absl::Duration observed);

  // One admitted request with a budget, answered at `at`: met or missed (a request that
  // expired in the queue missed).
  void ObserveRequest(absl::Time at, bool met);

  // One budgeted request the policy refused at once (budget judged unmeetable), at `at`:
  // lowers the boost by one miss step and the reserve by 1/refusals_per_miss of one.
  void ObserveRefusal(absl::Time at);

  // F, the multiplier for predicted compute times.
  double Factor() const;
  // ρ, the fraction of each budget kept free at its end.
  double Reserve() const;
  State GetState() const;

 private:
  explicit LatencyGuard(const Options& options) : options_(options) {}
  // exp(-(at - last) / window), advancing `last` to `at` (never backwards).
  static double Decay(absl::Time at, absl::Duration window, absl::Time& last);
  double FactorLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The reserve lowered by `steps` reserve steps, not below 0.
  double RelaxedReserve(double steps) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  double observed_sum_ ABSL_GUARDED_BY(mu_) = 0.0;   // decayed seconds
  double predicted_sum_ ABSL_GUARDED_BY(mu_) = 0.0;  // decayed seconds
  absl::Time last_batch_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  double log_boost_ ABSL_GUARDED_BY(mu_) = 0.0;
  double reserve_ ABSL_GUARDED_BY(mu_) = 0.0;
  double misses_ ABSL_GUARDED_BY(mu_) = 0.0;    // decayed count
  double requests_ ABSL_GUARDED_BY(mu_) = 0.0;  // decayed count
  absl::Time last_request_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_BUDGET_LATENCY_GUARD_H_
