// The warm-up latency sweep: measures one model's batch compute time on its device over a
// grid of keep-rate levels × batch sizes, for LatencyModel::Create (latency_model.h). Run
// once per model at start-up, before the health service reports SERVING.
//
// Behaviour
//   * Inputs are random images of the model's input shape (standard normal values from a
//     seeded generator, so two sweeps run the same inputs); batch b uses the first b.
//   * Points are measured batch size by batch size (smallest first) and, within one,
//     keep-rate level by level (highest first). For each point: `warmup_runs` untimed
//     runs of that exact shape (token counts differ per keep-rate), then `repeats` timed
//     runs; the point is their median (robust to one slow run). Timing reads the injected
//     Clock around InferenceModel::Run.
//   * Time cap: before each point the sweep checks the clock; once `time_cap` has passed
//     since the start it stops measuring. The first point is always measured, so the sweep
//     can overrun the cap by at most one point ((warmup_runs + repeats) runs). The points
//     not measured are extrapolated, in grid order:
//       - a batch size with some measured levels: from the measured level nearest in
//         keep-rate (ties: the higher), scaled by the cost model's MACs ratio
//         macs(level) / macs(measured level);
//       - a batch size with no measured level: from the previous (smaller) batch size's
//         value at the same level, scaled by batch / previous batch (linear in batch size,
//         which over-estimates: per-image cost falls with batch size — the safe side).
//     MACs come from Options::macs_per_image (production: EstimateCost(...).macs); when it
//     is not set the keep-rate itself is the proxy (MACs of pruned ViTs are close to
//     linear in the keep-rate). The MACs ratio ignores fixed per-batch overheads, so for a
//     lower level it may under-estimate; LatencyModel's online refinement corrects it.
//
// Errors: INVALID_ARGUMENT for bad options or a model input shape that is not positive;
// a failing Run() or macs_per_image is returned with the point it failed at prefixed.
//
// Thread-safety: RunLatencySweep runs on the calling thread and calls model.Run (which is
// thread-safe, see inference_model.h); the sweep keeps no state between calls.
#ifndef VITSERVE_SERVER_BUDGET_LATENCY_SWEEP_H_
#define VITSERVE_SERVER_BUDGET_LATENCY_SWEEP_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/budget/latency_model.h"
#include "server/executor/inference_model.h"
#include "server/util/clock.h"

namespace vitserve {

struct LatencySweepOptions {
  // Keep-rate levels to measure, each in (0, 1] (MakeKeepRateLevels). Required.
  std::vector<float> keep_rate_levels;
  // Batch sizes to measure, each >= 1.
  std::vector<int> batch_sizes = {1, 2, 4, 8};
  // Timed runs per point (the median is kept). >= 1.
  int repeats = 3;
  // Untimed runs per point before timing (allocator, caches, lazy init). >= 0.
  int warmup_runs = 1;
  // Wall-clock cap for the whole sweep; points not measured by then are extrapolated.
  // >= 0 (0 measures only the first point).
  absl::Duration time_cap = absl::Seconds(60);
  // Seed of the random input images.
  uint64_t seed = 42;
  // Multiply-adds of one image at a keep-rate, for extrapolation (see the file comment).
  // Null = the keep-rate is the proxy.
  std::function<absl::StatusOr<uint64_t>(float keep_rate)> macs_per_image;
};

struct LatencySweepResult {
  std::vector<LatencyPoint> measured;      // in measurement order
  std::vector<LatencyPoint> extrapolated;  // the rest of the grid, after the cap
  bool hit_time_cap = false;
  absl::Duration elapsed;  // clock time of the whole sweep

  // measured then extrapolated: every grid point once, ready for LatencyModel::Create.
  std::vector<LatencyPoint> AllPoints() const;
};

// Runs the sweep on `model`, timing with `clock`. See the file comment.
absl::StatusOr<LatencySweepResult> RunLatencySweep(InferenceModel& model,
                                                   const LatencySweepOptions& options,
                                                   const Clock& clock);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_BUDGET_LATENCY_SWEEP_H_
