#include "server/budget/latency_sweep.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace vitserve {
namespace {

absl::Status ValidateOptions(const LatencySweepOptions& options) {
  if (absl::Status valid = ValidateKeepRateLevels(options.keep_rate_levels); !valid.ok()) {
    return valid;
  }
  if (options.batch_sizes.empty())
    return absl::InvalidArgumentError("batch_sizes must not be empty");
  for (int b : options.batch_sizes) {
    if (b < 1) return absl::InvalidArgumentError(absl::StrCat("batch sizes must be >= 1, got ", b));
  }
  if (options.repeats < 1) {
    return absl::InvalidArgumentError(absl::StrCat("repeats must be >= 1, got ", options.repeats));
  }
  if (options.warmup_runs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("warmup_runs must be >= 0, got ", options.warmup_runs));
  }
  if (options.time_cap < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("time_cap must be >= 0, got ", absl::FormatDuration(options.time_cap)));
  }
  return absl::OkStatus();
}

std::string PointName(float keep_rate, int batch_size) {
  return absl::StrCat("latency sweep at keep-rate ", keep_rate, ", batch ", batch_size, ": ");
}

// The sweep's grid: levels highest first, batch sizes ascending (duplicates removed), and
// seconds[level][batch index], measured, extrapolated or not yet known.
struct Grid {
  std::vector<float> levels;
  std::vector<int> sizes;
  std::vector<std::vector<std::optional<double>>> seconds;
};

Grid MakeGrid(const LatencySweepOptions& options) {
  Grid grid;
  grid.levels = options.keep_rate_levels;
  std::sort(grid.levels.begin(), grid.levels.end(), std::greater<float>());
  grid.levels.erase(std::unique(grid.levels.begin(), grid.levels.end()), grid.levels.end());
  grid.sizes = options.batch_sizes;
  std::sort(grid.sizes.begin(), grid.sizes.end());
  grid.sizes.erase(std::unique(grid.sizes.begin(), grid.sizes.end()), grid.sizes.end());
  grid.seconds.assign(grid.levels.size(), std::vector<std::optional<double>>(grid.sizes.size()));
  return grid;
}

// `count` random inputs of the model's input shape, drawn from `seed`.
absl::StatusOr<std::vector<ImageTensor>> RandomImages(const Architecture& arch, int count,
                                                      uint64_t seed) {
  if (arch.in_chans < 1 || arch.image_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model input shape must be positive, got ",
                                                   arch.in_chans, "x", arch.image_size, "x",
                                                   arch.image_size));
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<ImageTensor> images(static_cast<size_t>(count));
  for (ImageTensor& image : images) {
    image.channels = arch.in_chans;
    image.height = arch.image_size;
    image.width = arch.image_size;
    image.data.resize(static_cast<size_t>(arch.in_chans) * arch.image_size * arch.image_size);
    for (float& v : image.data) v = normal(rng);
  }
  return images;
}

// One grid point: warm-up runs, then the median of the timed repeats (the upper middle for
// an even count: the safe side), at least 1 ns.
absl::StatusOr<absl::Duration> MeasurePoint(InferenceModel& model,
                                            absl::Span<const ImageTensor* const> batch,
                                            float keep_rate, const LatencySweepOptions& options,
                                            const Clock& clock) {
  auto failed = [&](const absl::Status& status) {
    return absl::Status(status.code(), PointName(keep_rate, static_cast<int>(batch.size())) +
                                           std::string(status.message()));
  };
  for (int i = 0; i < options.warmup_runs; ++i) {
    absl::StatusOr<std::vector<ImageResult>> out = model.Run(batch, keep_rate);
    if (!out.ok()) return failed(out.status());
  }
  std::vector<absl::Duration> runs;
  for (int i = 0; i < options.repeats; ++i) {
    const absl::Time t0 = clock.Now();
    absl::StatusOr<std::vector<ImageResult>> out = model.Run(batch, keep_rate);
    const absl::Time t1 = clock.Now();
    if (!out.ok()) return failed(out.status());
    runs.push_back(t1 - t0);
  }
  std::sort(runs.begin(), runs.end());
  const absl::Duration median = runs[runs.size() / 2];
  // A clock too coarse to see the run must not produce a zero point.
  return std::max(median, absl::Nanoseconds(1));
}

// Measures the grid batch size by batch size, every level of each, until the time cap
// (the first point is always measured). Fills result.measured, hit_time_cap, elapsed.
absl::Status MeasureGrid(InferenceModel& model, const std::vector<ImageTensor>& images,
                         const LatencySweepOptions& options, const Clock& clock, Grid& grid,
                         LatencySweepResult& result) {
  std::vector<const ImageTensor*> pointers;
  for (const ImageTensor& image : images) pointers.push_back(&image);
  const absl::Time start = clock.Now();
  for (size_t b = 0; b < grid.sizes.size() && !result.hit_time_cap; ++b) {
    const absl::Span<const ImageTensor* const> batch(pointers.data(),
                                                     static_cast<size_t>(grid.sizes[b]));
    for (size_t l = 0; l < grid.levels.size(); ++l) {
      if (!result.measured.empty() && clock.Now() - start >= options.time_cap) {
        result.hit_time_cap = true;
        break;
      }
      absl::StatusOr<absl::Duration> point =
          MeasurePoint(model, batch, grid.levels[l], options, clock);
      if (!point.ok()) return point.status();
      result.measured.push_back(LatencyPoint{grid.levels[l], grid.sizes[b], *point});
      grid.seconds[l][b] = absl::ToDoubleSeconds(*point);
    }
  }
  result.elapsed = clock.Now() - start;
  return absl::OkStatus();
}

// MACs of one image per level index (options.macs_per_image, or the keep-rate as the
// proxy), computed on demand once each.
class LevelMacs {
 public:
  LevelMacs(const LatencySweepOptions& options, const std::vector<float>& levels)
      : options_(options), levels_(levels) {}

  absl::StatusOr<double> Of(size_t level) {
    auto it = macs_.find(level);
    if (it != macs_.end()) return it->second;
    double value = levels_[level];
    if (options_.macs_per_image) {
      absl::StatusOr<uint64_t> m = options_.macs_per_image(levels_[level]);
      if (!m.ok()) {
        return absl::Status(m.status().code(),
                            absl::StrCat("latency sweep extrapolation, MACs at keep-rate ",
                                         levels_[level], ": ", m.status().message()));
      }
      if (*m == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("latency sweep extrapolation: zero MACs at keep-rate ", levels_[level]));
      }
      value = static_cast<double>(*m);
    }
    macs_[level] = value;
    return value;
  }

 private:
  const LatencySweepOptions& options_;
  const std::vector<float>& levels_;
  std::map<size_t, double> macs_;
};

// The seconds of level l at batch index b, not measured (see the header): scaled by MACs
// from the nearest measured level of the same batch size, or by batch size from the
// previous batch size when none of this size was measured.
absl::StatusOr<double> ExtrapolatePoint(const Grid& grid, size_t l, size_t b,
                                        const std::vector<size_t>& measured_levels,
                                        LevelMacs& macs) {
  const std::vector<float>& levels = grid.levels;
  if (measured_levels.empty()) {
    // b > 0 here: the first point (level 0, batch 0) is always measured.
    return *grid.seconds[l][b - 1] * static_cast<double>(grid.sizes[b]) / grid.sizes[b - 1];
  }
  // Nearest measured level in keep-rate; ties go to the higher (earlier) level.
  size_t from = measured_levels.front();
  for (size_t m : measured_levels) {
    if (std::abs(levels[m] - levels[l]) < std::abs(levels[from] - levels[l])) from = m;
  }
  absl::StatusOr<double> to_macs = macs.Of(l);
  if (!to_macs.ok()) return to_macs.status();
  absl::StatusOr<double> from_macs = macs.Of(from);
  if (!from_macs.ok()) return from_macs.status();
  return *grid.seconds[from][b] * (*to_macs / *from_macs);
}

// Fills the grid points the time cap left unmeasured into result.extrapolated.
absl::Status ExtrapolateGrid(const LatencySweepOptions& options, Grid& grid,
                             LatencySweepResult& result) {
  LevelMacs macs(options, grid.levels);
  for (size_t b = 0; b < grid.sizes.size(); ++b) {
    std::vector<size_t> measured_levels;
    for (size_t l = 0; l < grid.levels.size(); ++l) {
      if (grid.seconds[l][b].has_value()) measured_levels.push_back(l);
    }
    std::vector<std::pair<size_t, double>> filled;
    for (size_t l = 0; l < grid.levels.size(); ++l) {
      if (grid.seconds[l][b].has_value()) continue;
      absl::StatusOr<double> value = ExtrapolatePoint(grid, l, b, measured_levels, macs);
      if (!value.ok()) return value.status();
      filled.emplace_back(l, *value);
    }
    for (const auto& [l, value] : filled) {
      grid.seconds[l][b] = value;
      result.extrapolated.push_back(
          LatencyPoint{grid.levels[l], grid.sizes[b], absl::Seconds(value)});
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<LatencyPoint> LatencySweepResult::AllPoints() const {
  std::vector<LatencyPoint> all = measured;
  all.insert(all.end(), extrapolated.begin(), extrapolated.end());
  return all;
}

absl::StatusOr<LatencySweepResult> RunLatencySweep(InferenceModel& model,
                                                   const LatencySweepOptions& options,
                                                   const Clock& clock) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  Grid grid = MakeGrid(options);
  // Random inputs, one per slot of the largest batch.
  absl::StatusOr<std::vector<ImageTensor>> images =
      RandomImages(model.spec().arch, grid.sizes.back(), options.seed);
  if (!images.ok()) return images.status();
  LatencySweepResult result;
  if (absl::Status s = MeasureGrid(model, *images, options, clock, grid, result); !s.ok()) {
    return s;
  }
  if (!result.hit_time_cap) return result;
  // Extrapolate the rest (see the header).
  if (absl::Status s = ExtrapolateGrid(options, grid, result); !s.ok()) return s;
  return result;
}

}  // namespace vitserve
