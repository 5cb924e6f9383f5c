#include "server/scheduler/arrival_rate.h"

#include <cmath>

namespace vitserve {
namespace {

// exp(-(later - earlier) / tau), 1 when later is not after earlier.
double Decay(absl::Time earlier, absl::Time later, double tau_seconds) {
  if (earlier == absl::InfinitePast() || later <= earlier) return 1.0;
  return std::exp(-absl::ToDoubleSeconds(later - earlier) / tau_seconds);
}

}  // namespace

ArrivalRateEstimator::ArrivalRateEstimator(absl::Duration time_constant)
    : tau_seconds_(time_constant > absl::ZeroDuration() ? absl::ToDoubleSeconds(time_constant)
                                                        : 1.0) {}

void ArrivalRateEstimator::Record(absl::Time t) {
  if (last_ != absl::InfinitePast() && t < last_) t = last_;
  value_ = value_ * Decay(last_, t, tau_seconds_) + 1.0 / tau_seconds_;
  last_ = t;
}

double ArrivalRateEstimator::RatePerSecond(absl::Time now) const {
  return value_ * Decay(last_, now, tau_seconds_);
}

}  // namespace vitserve
