#include "server/budget/latency_guard.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::unique_ptr<LatencyGuard>> LatencyGuard::Create(const Options& options) {
  if (!(options.target_miss_ratio > 0.0 && options.target_miss_ratio < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_miss_ratio must be in (0, 1), got ", options.target_miss_ratio));
  }
  if (!(options.miss_step > 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("miss_step must be > 0, got ", options.miss_step));
  }
  if (options.gap_window <= absl::ZeroDuration() || options.miss_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gap_window and miss_window must be > 0, got ", absl::FormatDuration(options.gap_window),
        " and ", absl::FormatDuration(options.miss_window)));
  }
  if (!(options.max_observation_ratio >= 1.0) || !(options.max_factor >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_observation_ratio and max_factor must be >= 1, got ",
                     options.max_observation_ratio, " and ", options.max_factor));
  }
  if (!(options.reserve_step > 0.0) || !(options.max_reserve >= 0.0 && options.max_reserve < 1.0) ||
      !(options.reserve_target_ratio > 0.0 && options.reserve_target_ratio < 1.0) ||
      !(options.refusals_per_miss >= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reserve_step must be > 0, max_reserve in [0, 1), reserve_target_ratio in (0, 1) and "
        "refusals_per_miss >= 1, got ",
        options.reserve_step, ", ", options.max_reserve, ", ", options.reserve_target_ratio,
        " and ", options.refusals_per_miss));
  }
  return std::unique_ptr<LatencyGuard>(new LatencyGuard(options));
}

double LatencyGuard::Decay(absl::Time at, absl::Duration window, absl::Time& last) {
  if (last == absl::InfinitePast()) {
    last = at;
    return 1.0;
  }
  if (at <= last) return 1.0;
  const double decay = std::exp(-absl::FDivDuration(at - last, window));
  last = at;
  return decay;
}

void LatencyGuard::ObserveBatch(absl::Time at, absl::Duration predicted, absl::Duration observed) {
  if (predicted <= absl::ZeroDuration() || observed <= absl::ZeroDuration()) return;
  const double p = absl::ToDoubleSeconds(predicted);
  const double o = std::min(absl::ToDoubleSeconds(observed), p * options_.max_observation_ratio);
  absl::MutexLock lock(&mu_);
  const double decay = Decay(at, options_.gap_window, last_batch_);
  observed_sum_ = observed_sum_ * decay + o;
  predicted_sum_ = predicted_sum_ * decay + p;
}

void LatencyGuard::ObserveRequest(absl::Time at, bool met) {
  const double target = options_.target_miss_ratio;
  absl::MutexLock lock(&mu_);
  const double decay = Decay(at, options_.miss_window, last_request_);
  misses_ = misses_ * decay + (met ? 0.0 : 1.0);
  requests_ = requests_ * decay + 1.0;
  log_boost_ += met ? -options_.miss_step * target / (1.0 - target) : options_.miss_step;
  log_boost_ = std::clamp(log_boost_, 0.0, std::log(options_.max_factor));
  const double rt = options_.reserve_target_ratio;
  reserve_ = met ? RelaxedReserve(rt / (1.0 - rt))
                 : std::min(reserve_ + options_.reserve_step, options_.max_reserve);
}

double LatencyGuard::RelaxedReserve(double steps) const {
  return std::max(0.0, reserve_ - options_.reserve_step * steps);
}

void LatencyGuard::ObserveRefusal(absl::Time at) {
  (void)at;  // the boost is counted per request, not per unit of time
  absl::MutexLock lock(&mu_);
  log_boost_ = std::max(0.0, log_boost_ - options_.miss_step);
  reserve_ = RelaxedReserve(1.0 / options_.refusals_per_miss);
}

double LatencyGuard::FactorLocked() const {
  const double gap = predicted_sum_ > 0.0 ? observed_sum_ / predicted_sum_ : 1.0;
  return std::min(options_.max_factor, std::max(1.0, gap) * std::exp(log_boost_));
}

double LatencyGuard::Factor() const {
  absl::MutexLock lock(&mu_);
  return FactorLocked();
}

double LatencyGuard::Reserve() const {
  absl::MutexLock lock(&mu_);
  return reserve_;
}

LatencyGuard::State LatencyGuard::GetState() const {
  absl::MutexLock lock(&mu_);
  State state;
  state.factor = FactorLocked();
  state.gap = predicted_sum_ > 0.0 ? observed_sum_ / predicted_sum_ : 1.0;
  state.boost = std::exp(log_boost_);
  state.reserve = reserve_;
  state.miss_ratio = requests_ > 0.0 ? misses_ / requests_ : 0.0;
  return state;
}

}  // namespace vitserve
