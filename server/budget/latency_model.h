// LatencyModel: predicted compute time of one batch, per (keep-rate, batch size), for one
// model on one device. The latency-budget policy (budget_policy.h) asks it how long a
// batch would take; GetModelInfo and the metrics show its table.
//
// Behaviour
//   * The model is a table over a small fixed grid: keep-rate levels (e.g. 1.0, 0.9, ...,
//     down to the model's minimum; MakeKeepRateLevels) × batch sizes (e.g. 1, 2, 4, 8).
//     It is built from measured points (a warm-up sweep, latency_sweep.h): every cell
//     needs at least one point; several points for a cell are averaged.
//   * Predict(keep_rate, batch) interpolates piecewise-linearly: in batch size between the
//     two surrounding table batch sizes, and in keep-rate between the two surrounding
//     levels (bilinear). Outside the grid: a batch smaller than the smallest table batch
//     size is predicted as the smallest (conservative); a larger batch than the largest
//     is extrapolated along the last segment's slope (per-image time × batch when the
//     table has one batch size); a keep-rate above the highest level is predicted as the
//     highest level, below the lowest level as the lowest level (conservative).
//   * Monotone: predictions never decrease with batch size or with keep-rate. The table
//     published to readers is the monotone closure of the internal estimates: each cell is
//     raised to the largest value of the cells at a smaller-or-equal batch size and
//     keep-rate. Raising (never lowering) keeps the repair on the safe side for deadlines.
//   * Online refinement: Observe(keep_rate, batch, duration) moves the prediction at that
//     point toward the observed time by an exponentially weighted moving average with
//     weight Options::observation_weight (0.1: a step change is ~65% absorbed after 10
//     observations). The observation is first clipped to
//     [prediction / max_observation_ratio, prediction × max_observation_ratio], so one
//     outlier (a page fault, a noisy neighbour) moves the prediction by at most
//     weight × (ratio − 1) of itself, while a lasting shift is still followed
//     geometrically. For a point between grid cells the correction is shared by the
//     (up to four) surrounding cells in proportion to their interpolation weights.
//     Observations outside the grid's hull (batch above the largest / below the smallest
//     table batch size, keep-rate outside [lowest, highest] level) are not applied.
//
// Thread-safety: all methods are thread-safe. Readers (Snapshot, Predict) take a reader
// lock only long enough to copy a shared_ptr to an immutable LatencyTable; Observe builds
// a new table and swaps it in (copy-on-write), so a snapshot never changes under its
// holder and a policy decision sees one consistent table.
//
// Errors: Create returns INVALID_ARGUMENT for a bad grid, a point off the grid, a missing
// cell or a non-positive duration. Observe returns INVALID_ARGUMENT for a non-positive
// duration / keep-rate outside (0, 1] / batch < 1, and OUT_OF_RANGE (not applied) outside
// the grid's hull; callers on the hot path may ignore both.
#ifndef VITSERVE_SERVER_BUDGET_LATENCY_MODEL_H_
#define VITSERVE_SERVER_BUDGET_LATENCY_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace vitserve {

// One measured (or extrapolated) batch time.
struct LatencyPoint {
  float keep_rate = 1.0f;
  int batch_size = 1;
  absl::Duration duration;  // compute time of the whole batch
};

// The keep-rate grid: max_keep_rate, max_keep_rate − step, ... while above min_keep_rate,
// then min_keep_rate itself (so the whole allowed range is usable), highest first. Values
// are rounded to 6 decimals (0.7, not 0.70000005). min == max gives one level (dense
// models: {1.0}). INVALID_ARGUMENT unless 0 < min <= max <= 1 and step > 0.
absl::StatusOr<std::vector<float>> MakeKeepRateLevels(float min_keep_rate, float max_keep_rate,
                                                      float step);

// INVALID_ARGUMENT unless `levels` is non-empty and every level is in (0, 1].
absl::Status ValidateKeepRateLevels(absl::Span<const float> levels);

// An immutable prediction table (one snapshot of a LatencyModel). Cheap to share.
class LatencyTable {
 public:
  // Keep-rate levels, highest first.
  const std::vector<float>& keep_rate_levels() const { return levels_; }
  // Table batch sizes, smallest first.
  const std::vector<int>& batch_sizes() const { return batch_sizes_; }

  // Predicted compute time of a batch of `batch_size` images at `keep_rate` (see the file
  // comment for interpolation and extrapolation). batch_size < 1 is treated as 1.
  absl::Duration Predict(float keep_rate, int batch_size) const;

  // Predicted seconds per batch at every table batch size, at `keep_rate` (any value; it
  // is interpolated like Predict). The shape of KeepRatePoint.latency_seconds_by_batch.
  std::map<uint32_t, double> SecondsByBatch(float keep_rate) const;

 private:
  friend class LatencyModel;
  LatencyTable(std::vector<float> levels, std::vector<int> batch_sizes, std::vector<double> seconds)
      : levels_(std::move(levels)),
        batch_sizes_(std::move(batch_sizes)),
        seconds_(std::move(seconds)) {}

  std::vector<float> levels_;     // highest first
  std::vector<int> batch_sizes_;  // smallest first
  std::vector<double> seconds_;   // levels_.size() × batch_sizes_.size()
};

class LatencyModel {
 public:
  struct Options {
    // The keep-rate grid, each in (0, 1], distinct (any order; stored highest first).
    // Required: no default.
    std::vector<float> keep_rate_levels;
    // Table batch sizes, each >= 1, distinct (any order; stored smallest first). Use the
    // scheduler's max_batch_size as the largest so no prediction is extrapolated.
    std::vector<int> batch_sizes = {1, 2, 4, 8};
    // EWMA weight of one observation, in (0, 1].
    double observation_weight = 0.1;
    // Observations are clipped to within this factor of the current prediction; > 1.
    double max_observation_ratio = 2.0;
  };

  // Builds the model from `points` (each on the grid; every cell covered). See the file
  // comment for errors.
  static absl::StatusOr<std::unique_ptr<LatencyModel>> Create(
      const Options& options, absl::Span<const LatencyPoint> points);

  LatencyModel(const LatencyModel&) = delete;
  LatencyModel& operator=(const LatencyModel&) = delete;

  // The current table; never null. Hold it for one decision so all predictions agree.
  std::shared_ptr<const LatencyTable> Snapshot() const;

  // Shorthand for Snapshot()->Predict(keep_rate, batch_size).
  absl::Duration Predict(float keep_rate, int batch_size) const;

  // Refines the prediction at (keep_rate, batch_size) toward `duration`, the measured
  // compute time of one batch. See the file comment.
  absl::Status Observe(float keep_rate, int batch_size, absl::Duration duration);

  const Options& options() const { return options_; }

 private:
  LatencyModel(const Options& options, std::vector<double> raw);
  // The monotone closure of `raw` as a table.
  std::shared_ptr<const LatencyTable> Publish(const std::vector<double>& raw) const;

  const Options options_;  // levels highest first, batch sizes smallest first

  absl::Mutex observe_mu_;  // serialises Observe (read-modify-write of raw_)
  std::vector<double> raw_ ABSL_GUARDED_BY(observe_mu_);  // un-repaired EWMA estimates

  mutable absl::Mutex snapshot_mu_;
  std::shared_ptr<const LatencyTable> snapshot_ ABSL_GUARDED_BY(snapshot_mu_);
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_BUDGET_LATENCY_MODEL_H_
