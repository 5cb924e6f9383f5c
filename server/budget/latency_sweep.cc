#include "server/budget/latency_sweep.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"

namespace vitserve {
namespace {

absl::Status ValidateOptions(const LatencySweepOptions& options) {
  if (options.keep_rate_levels.empty()) {
    return absl::InvalidArgumentError("keep_rate_levels must not be empty");
  }
  for (float level : options.keep_rate_levels) {
    if (!(level > 0.0f && level <= 1.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("keep-rate level must be in (0, 1], got ", level));
    }
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
  std::vector<float> levels = options.keep_rate_levels;
  std::sort(levels.begin(), levels.end(), std::greater<float>());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  std::vector<int> sizes = options.batch_sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());

  const Architecture& arch = model.spec().arch;
  if (arch.in_chans < 1 || arch.image_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model input shape must be positive, got ",
                                                   arch.in_chans, "x", arch.image_size, "x",
                                                   arch.image_size));
  }
  // Random inputs, one per slot of the largest batch.
  std::mt19937_64 rng(options.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<ImageTensor> images(static_cast<size_t>(sizes.back()));
  for (ImageTensor& image : images) {
    image.channels = arch.in_chans;
    image.height = arch.image_size;
    image.width = arch.image_size;
    image.data.resize(static_cast<size_t>(arch.in_chans) * arch.image_size * arch.image_size);
    for (float& v : image.data) v = normal(rng);
  }
  std::vector<const ImageTensor*> pointers;
  for (const ImageTensor& image : images) pointers.push_back(&image);

  LatencySweepResult result;
  // seconds[level][batch index], measured or not yet known.
  std::vector<std::vector<std::optional<double>>> seconds(
      levels.size(), std::vector<std::optional<double>>(sizes.size()));
  const absl::Time start = clock.Now();
  for (size_t b = 0; b < sizes.size() && !result.hit_time_cap; ++b) {
    const absl::Span<const ImageTensor* const> batch(pointers.data(),
                                                     static_cast<size_t>(sizes[b]));
    for (size_t l = 0; l < levels.size(); ++l) {
      if (!result.measured.empty() && clock.Now() - start >= options.time_cap) {
        result.hit_time_cap = true;
        break;
      }
      for (int i = 0; i < options.warmup_runs; ++i) {
        absl::StatusOr<std::vector<ImageResult>> out = model.Run(batch, levels[l]);
        if (!out.ok()) {
          return absl::Status(out.status().code(),
                              PointName(levels[l], sizes[b]) + std::string(out.status().message()));
        }
      }
      std::vector<absl::Duration> runs;
      for (int i = 0; i < options.repeats; ++i) {
        const absl::Time t0 = clock.Now();
        absl::StatusOr<std::vector<ImageResult>> out = model.Run(batch, levels[l]);
        const absl::Time t1 = clock.Now();
        if (!out.ok()) {
          return absl::Status(out.status().code(),
                              PointName(levels[l], sizes[b]) + std::string(out.status().message()));
        }
        runs.push_back(t1 - t0);
      }
      std::sort(runs.begin(), runs.end());
      // Median; the upper middle for an even count (the safe side).
      const absl::Duration median = runs[runs.size() / 2];
      // A clock too coarse to see the run must not produce a zero point.
      const absl::Duration positive = std::max(median, absl::Nanoseconds(1));
      result.measured.push_back(LatencyPoint{levels[l], sizes[b], positive});
      seconds[l][b] = absl::ToDoubleSeconds(positive);
    }
  }
  result.elapsed = clock.Now() - start;
  if (!result.hit_time_cap) return result;

  // Extrapolate the rest (see the header).
  std::map<size_t, double> macs;  // by level index, computed on demand
  auto macs_of = [&](size_t level) -> absl::StatusOr<double> {
    auto it = macs.find(level);
    if (it != macs.end()) return it->second;
    double value = levels[level];
    if (options.macs_per_image) {
      absl::StatusOr<uint64_t> m = options.macs_per_image(levels[level]);
      if (!m.ok()) {
        return absl::Status(m.status().code(),
                            absl::StrCat("latency sweep extrapolation, MACs at keep-rate ",
                                         levels[level], ": ", m.status().message()));
      }
      if (*m == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("latency sweep extrapolation: zero MACs at keep-rate ", levels[level]));
      }
      value = static_cast<double>(*m);
    }
    macs[level] = value;
    return value;
  };
  for (size_t b = 0; b < sizes.size(); ++b) {
    std::vector<size_t> measured_levels;
    for (size_t l = 0; l < levels.size(); ++l) {
      if (seconds[l][b].has_value()) measured_levels.push_back(l);
    }
    std::vector<std::pair<size_t, double>> filled;
    for (size_t l = 0; l < levels.size(); ++l) {
      if (seconds[l][b].has_value()) continue;
      double value = 0.0;
      if (!measured_levels.empty()) {
        // Nearest measured level in keep-rate; ties go to the higher (earlier) level.
        size_t from = measured_levels.front();
        for (size_t m : measured_levels) {
          if (std::abs(levels[m] - levels[l]) < std::abs(levels[from] - levels[l])) from = m;
        }
        absl::StatusOr<double> to_macs = macs_of(l);
        if (!to_macs.ok()) return to_macs.status();
        absl::StatusOr<double> from_macs = macs_of(from);
        if (!from_macs.ok()) return from_macs.status();
        value = *seconds[from][b] * (*to_macs / *from_macs);
      } else {
        // b > 0 here: the first point (level 0, batch 0) is always measured.
        value = *seconds[l][b - 1] * static_cast<double>(sizes[b]) / sizes[b - 1];
      }
      filled.emplace_back(l, value);
    }
    for (const auto& [l, value] : filled) {
      seconds[l][b] = value;
      result.extrapolated.push_back(LatencyPoint{levels[l], sizes[b], absl::Seconds(value)});
    }
  }
  return result;
}

}  // namespace vitserve
