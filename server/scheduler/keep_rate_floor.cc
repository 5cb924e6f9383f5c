#include "server/scheduler/keep_rate_floor.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// Keep-rates closer than this count as equal (float wire values vs config values).
constexpr float kKeepRateTolerance = 1e-6f;

}  // namespace

double AccuracyCurve::At(float keep_rate) const {
  for (size_t i = 0; i < points.size(); ++i) {
    if (std::fabs(points[i].first - keep_rate) <= kKeepRateTolerance) return points[i].second;
    if (i + 1 < points.size() && points[i].first < keep_rate && keep_rate < points[i + 1].first) {
      const double t = (keep_rate - points[i].first) / (points[i + 1].first - points[i].first);
      return points[i].second + t * (points[i + 1].second - points[i].second);
    }
  }
  return 0.0;
}

absl::StatusOr<float> ResolveKeepRateFloor(float min_keep_rate, float min_expected_accuracy,
                                           const AccuracyCurve& curve) {
  const float lo = curve.min_keep_rate;
  const float hi = curve.max_keep_rate;
  const float by_rate = min_keep_rate > 0.0f ? min_keep_rate : lo;
  if (min_expected_accuracy <= 0.0f) return by_rate;
  // A float from the wire against calibrated doubles: asking for exactly a calibrated value
  // (0.86f is 0.8600000143) must count as reaching it.
  const double target = static_cast<double>(min_expected_accuracy) - 1e-6;
  if (curve.points.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_expected_accuracy needs a calibrated model; model '", curve.model,
                     "' has no calibration (use min_keep_rate)"));
  }
  const double at_hi = curve.At(hi);
  if (at_hi < target) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_expected_accuracy ", min_expected_accuracy, " is above model '",
                     curve.model, "''s best expected top-1 ", at_hi, " (keep-rate ", hi, ")"));
  }
  // Walk down from `hi` over the curve's breakpoints (and `lo`): the accuracy is piecewise
  // linear between them, so the floor is a breakpoint or the crossing inside the first
  // segment that falls below the target. Unknown accuracy (outside the curve) stops it.
  std::vector<float> down;
  for (auto it = curve.points.rbegin(); it != curve.points.rend(); ++it) {
    if (it->first < hi - kKeepRateTolerance && it->first > lo + kKeepRateTolerance) {
      down.push_back(it->first);
    }
  }
  down.push_back(lo);
  float floor = hi;
  double at_floor = at_hi;
  for (const float k : down) {
    const double at_k = curve.At(k);
    if (at_k <= 0.0) break;
    if (at_k < target) {
      floor = k + static_cast<float>((target - at_k) / (at_floor - at_k)) * (floor - k);
      break;
    }
    floor = k;
    at_floor = at_k;
  }
  return std::max(by_rate, floor);
}

absl::Status ValidateKeepRateFloor(float min_keep_rate, float min_expected_accuracy,
                                   const AccuracyCurve& curve) {
  return ResolveKeepRateFloor(min_keep_rate, min_expected_accuracy, curve).status();
}

}  // namespace vitserve
