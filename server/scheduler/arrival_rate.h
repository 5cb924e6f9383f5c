// ArrivalRateEstimator: the recent arrival rate of one stream of events (requests offered
// to one queue), as an exponentially weighted count.
//
// Each arrival adds 1/tau to a value that decays as exp(-dt / tau); read at `now`, the
// value is an unbiased estimate of a steady Poisson rate (events per second) with
// relative standard deviation 1 / sqrt(2 * rate * tau), and it follows a change of rate
// with time constant tau. It never reads a clock: callers pass the times (the scheduler
// its injected Clock's), so tests are deterministic. Times earlier than the last recorded
// one count as the last one (no negative decay).
//
// Thread-safety: none; the owner serialises access (BatchScheduler holds its lock).
#ifndef VITSERVE_SERVER_SCHEDULER_ARRIVAL_RATE_H_
#define VITSERVE_SERVER_SCHEDULER_ARRIVAL_RATE_H_

#include "absl/time/time.h"

namespace vitserve {

class ArrivalRateEstimator {
 public:
  // `time_constant` > 0; non-positive values are treated as 1 second.
  explicit ArrivalRateEstimator(absl::Duration time_constant);

  // One arrival at `t`.
  void Record(absl::Time t);

  // Events per second at `now` (0 before the first arrival).
  double RatePerSecond(absl::Time now) const;

 private:
  double tau_seconds_;
  double value_ = 0.0;  // events per second at last_
  absl::Time last_ = absl::InfinitePast();
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SCHEDULER_ARRIVAL_RATE_H_
