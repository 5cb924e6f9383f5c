// The keep-rate floor of a request: the lowest keep-rate a batch policy may choose for it,
// mapped from the request's raw fields (TaskAttributes::min_keep_rate and
// min_expected_accuracy) with the accuracy calibration of the model version the batch runs
// on. This file is the one place that mapping lives: a batch policy calls
// ResolveKeepRateFloor per task when it decides; admission calls ValidateKeepRateFloor only
// to refuse an impossible request at once (the same status the policy would give).
//
// Versions: a model's AccuracyCurveSource holds the curve of its served version; the
// serving core publishes a new one when a hot reload swaps the version, and a policy reads
// one snapshot per decision. So the floor follows the version that serves the batch; only
// a reload that lands between a decision and the start of its batch runs that one batch at
// a floor mapped with the previous version's curve.
//
// Thread-safety: the free functions and AccuracyCurve are pure; AccuracyCurveSource is
// thread-safe.
#ifndef VITSERVE_SERVER_SCHEDULER_KEEP_RATE_FLOOR_H_
#define VITSERVE_SERVER_SCHEDULER_KEEP_RATE_FLOOR_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace vitserve {

// One model version's calibrated top-1 accuracy by keep-rate, and its allowed keep-rates.
struct AccuracyCurve {
  std::string model;           // named in error messages
  float min_keep_rate = 0.0f;  // the model's range; also the floor of min_keep_rate 0
  float max_keep_rate = 1.0f;
  // (keep-rate, top-1) of the model's pruning method, sorted by keep-rate; empty = not
  // calibrated.
  std::vector<std::pair<float, double>> points;

  // Top-1 expected at `keep_rate`: linear between the nearest points (a point within 1e-6
  // counts as equal); 0 when `points` is empty or `keep_rate` lies outside them.
  double At(float keep_rate) const;
};

// The floor for raw `min_keep_rate` (0 = the curve's min_keep_rate) and
// `min_expected_accuracy` (0 = no bound), both already range-checked at admission: the
// higher of min_keep_rate and, when an accuracy is asked, the lowest keep-rate k in the
// curve's range such that every keep-rate from k up to its maximum is expected (At) to
// reach that accuracy. INVALID_ARGUMENT (naming curve.model) when an accuracy is asked and
// the curve is empty, or when even the maximum keep-rate is expected below it.
absl::StatusOr<float> ResolveKeepRateFloor(float min_keep_rate, float min_expected_accuracy,
                                           const AccuracyCurve& curve);

// ResolveKeepRateFloor's status alone: what admission refuses at once.
absl::Status ValidateKeepRateFloor(float min_keep_rate, float min_expected_accuracy,
                                   const AccuracyCurve& curve);

// The curve of a model's served version, replaced whole on hot reload. Shared by whoever
// publishes (the serving core's model registry) and the model's batch policy.
class AccuracyCurveSource {
 public:
  explicit AccuracyCurveSource(AccuracyCurve curve)
      : curve_(std::make_shared<const AccuracyCurve>(std::move(curve))) {}

  // The current curve; never null.
  std::shared_ptr<const AccuracyCurve> Snapshot() const {
    absl::MutexLock lock(&mu_);
    return curve_;
  }
  void Publish(AccuracyCurve curve) {
    auto next = std::make_shared<const AccuracyCurve>(std::move(curve));
    absl::MutexLock lock(&mu_);
    curve_ = std::move(next);
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const AccuracyCurve> curve_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SCHEDULER_KEEP_RATE_FLOOR_H_
