#include "server/budget/latency_model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// Keep-rates closer than this are the same level (floats from the wire vs the grid).
constexpr double kKeepRateTolerance = 1e-5;
// Decimals kept when building the grid (0.7, not 0.70000005).
constexpr double kGridDecimals = 1e6;
// Internal estimates never drop below this (seconds), so ratios stay defined.
constexpr double kMinCellSeconds = 1e-9;

// value = scale * ((1 - t) * v[lo] + t * v[hi]); t may exceed 1 (extrapolation).
struct Bracket {
  size_t lo = 0;
  size_t hi = 0;
  double t = 0.0;
  double scale = 1.0;
};

// Levels are highest first. Clamped to the end levels.
Bracket LevelBracket(const std::vector<float>& levels, float keep_rate) {
  if (keep_rate >= levels.front()) return {0, 0, 0.0, 1.0};
  if (keep_rate <= levels.back()) return {levels.size() - 1, levels.size() - 1, 0.0, 1.0};
  size_t i = 0;
  while (!(levels[i] >= keep_rate && keep_rate > levels[i + 1])) ++i;
  const double t = (static_cast<double>(levels[i]) - keep_rate) /
                   (static_cast<double>(levels[i]) - levels[i + 1]);
  return {i, i + 1, t, 1.0};
}

// Batch sizes are smallest first. Below the first: clamped; above the last: extrapolated.
Bracket BatchBracket(const std::vector<int>& sizes, int batch_size) {
  batch_size = std::max(batch_size, 1);
  if (batch_size <= sizes.front()) return {0, 0, 0.0, 1.0};
  const size_t last = sizes.size() - 1;
  if (batch_size >= sizes.back()) {
    if (last == 0) return {0, 0, 0.0, static_cast<double>(batch_size) / sizes.front()};
    const double t =
        static_cast<double>(batch_size - sizes[last - 1]) / (sizes[last] - sizes[last - 1]);
    return {last - 1, last, t, 1.0};
  }
  size_t j = 0;
  while (!(sizes[j] <= batch_size && batch_size < sizes[j + 1])) ++j;
  const double t = static_cast<double>(batch_size - sizes[j]) / (sizes[j + 1] - sizes[j]);
  return {j, j + 1, t, 1.0};
}

// (cell index, weight) pairs whose weighted sum is the prediction; at most 4, inline (no
// allocation on the hot path).
using Weights = absl::InlinedVector<std::pair<size_t, double>, 4>;

Weights CellWeights(const std::vector<float>& levels, const std::vector<int>& sizes,
                    float keep_rate, int batch_size) {
  const Bracket l = LevelBracket(levels, keep_rate);
  const Bracket b = BatchBracket(sizes, batch_size);
  Weights out;
  const size_t width = sizes.size();
  const double lw[2] = {1.0 - l.t, l.t};
  const size_t li[2] = {l.lo, l.hi};
  const double bw[2] = {(1.0 - b.t) * b.scale, b.t * b.scale};
  const size_t bi[2] = {b.lo, b.hi};
  for (int x = 0; x < 2; ++x) {
    for (int y = 0; y < 2; ++y) {
      const double w = lw[x] * bw[y];
      if (w != 0.0) out.emplace_back(li[x] * width + bi[y], w);
    }
  }
  return out;
}

double Weighted(const Weights& weights, const std::vector<double>& cells) {
  double sum = 0.0;
  for (const auto& [index, w] : weights) sum += w * cells[index];
  return sum;
}

}  // namespace

absl::StatusOr<std::vector<float>> MakeKeepRateLevels(float min_keep_rate, float max_keep_rate,
                                                      float step) {
  if (!(min_keep_rate > 0.0f && min_keep_rate <= max_keep_rate && max_keep_rate <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep-rate range must satisfy 0 < min <= max <= 1, got [", min_keep_rate, ", ",
                     max_keep_rate, "]"));
  }
  if (!(step > 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("keep-rate step must be > 0, got ", step));
  }
  auto round = [](double v) {
    return static_cast<float>(std::round(v * kGridDecimals) / kGridDecimals);
  };
  const double lo = std::round(static_cast<double>(min_keep_rate) * kGridDecimals) / kGridDecimals;
  std::vector<float> levels;
  for (int i = 0;; ++i) {
    const double v = static_cast<double>(max_keep_rate) - i * static_cast<double>(step);
    if (std::round(v * kGridDecimals) / kGridDecimals <= lo + kKeepRateTolerance) break;
    levels.push_back(round(v));
  }
  levels.push_back(round(lo));
  return levels;
}

absl::Duration LatencyTable::Predict(float keep_rate, int batch_size) const {
  return absl::Seconds(
      Weighted(CellWeights(levels_, batch_sizes_, keep_rate, batch_size), seconds_));
}

std::map<uint32_t, double> LatencyTable::SecondsByBatch(float keep_rate) const {
  std::map<uint32_t, double> out;
  for (int b : batch_sizes_) {
    out[static_cast<uint32_t>(b)] = absl::ToDoubleSeconds(Predict(keep_rate, b));
  }
  return out;
}

absl::Status ValidateKeepRateLevels(absl::Span<const float> levels) {
  if (levels.empty()) return absl::InvalidArgumentError("keep_rate_levels must not be empty");
  for (float level : levels) {
    if (!(level > 0.0f && level <= 1.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("keep-rate level must be in (0, 1], got ", level));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LatencyModel>> LatencyModel::Create(
    const Options& options, absl::Span<const LatencyPoint> points) {
  Options sorted = options;
  if (absl::Status valid = ValidateKeepRateLevels(sorted.keep_rate_levels); !valid.ok()) {
    return valid;
  }
  std::sort(sorted.keep_rate_levels.begin(), sorted.keep_rate_levels.end(), std::greater<float>());
  for (size_t i = 1; i < sorted.keep_rate_levels.size(); ++i) {
    if (sorted.keep_rate_levels[i - 1] - sorted.keep_rate_levels[i] <= kKeepRateTolerance) {
      return absl::InvalidArgumentError(
          absl::StrCat("keep-rate level ", sorted.keep_rate_levels[i], " given twice"));
    }
  }
  if (sorted.batch_sizes.empty())
    return absl::InvalidArgumentError("batch_sizes must not be empty");
  std::sort(sorted.batch_sizes.begin(), sorted.batch_sizes.end());
  if (sorted.batch_sizes.front() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch sizes must be >= 1, got ", sorted.batch_sizes.front()));
  }
  for (size_t i = 1; i < sorted.batch_sizes.size(); ++i) {
    if (sorted.batch_sizes[i] == sorted.batch_sizes[i - 1]) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch size ", sorted.batch_sizes[i], " given twice"));
    }
  }
  if (!(sorted.observation_weight > 0.0 && sorted.observation_weight <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("observation_weight must be in (0, 1], got ", sorted.observation_weight));
  }
  if (!(sorted.max_observation_ratio > 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_observation_ratio must be > 1, got ", sorted.max_observation_ratio));
  }

  const size_t width = sorted.batch_sizes.size();
  std::vector<double> sum(sorted.keep_rate_levels.size() * width, 0.0);
  std::vector<int> count(sum.size(), 0);
  for (const LatencyPoint& p : points) {
    auto level =
        std::find_if(sorted.keep_rate_levels.begin(), sorted.keep_rate_levels.end(),
                     [&](float l) { return std::abs(l - p.keep_rate) <= kKeepRateTolerance; });
    auto batch = std::find(sorted.batch_sizes.begin(), sorted.batch_sizes.end(), p.batch_size);
    if (level == sorted.keep_rate_levels.end() || batch == sorted.batch_sizes.end()) {
      return absl::InvalidArgumentError(absl::StrCat("latency point (keep-rate ", p.keep_rate,
                                                     ", batch ", p.batch_size,
                                                     ") is not on the model's grid"));
    }
    if (p.duration <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("latency point (keep-rate ", p.keep_rate, ", batch ", p.batch_size,
                       ") has a non-positive duration ", absl::FormatDuration(p.duration)));
    }
    const size_t cell = static_cast<size_t>(level - sorted.keep_rate_levels.begin()) * width +
                        static_cast<size_t>(batch - sorted.batch_sizes.begin());
    sum[cell] += absl::ToDoubleSeconds(p.duration);
    ++count[cell];
  }
  for (size_t cell = 0; cell < sum.size(); ++cell) {
    if (count[cell] == 0) {
      return absl::InvalidArgumentError(absl::StrCat("no latency point for keep-rate ",
                                                     sorted.keep_rate_levels[cell / width],
                                                     ", batch ", sorted.batch_sizes[cell % width]));
    }
    sum[cell] /= count[cell];
  }
  return std::unique_ptr<LatencyModel>(new LatencyModel(sorted, std::move(sum)));
}

LatencyModel::LatencyModel(const Options& options, std::vector<double> raw) : options_(options) {
  std::shared_ptr<const LatencyTable> table = Publish(raw);
  absl::MutexLock observe_lock(&observe_mu_);
  raw_ = std::move(raw);
  absl::WriterMutexLock snapshot_lock(&snapshot_mu_);
  snapshot_ = std::move(table);
}

std::shared_ptr<const LatencyTable> LatencyModel::Publish(const std::vector<double>& raw) const {
  const size_t levels = options_.keep_rate_levels.size();
  const size_t width = options_.batch_sizes.size();
  std::vector<double> closed(raw.size());
  // Lowest keep-rate (last level) first, smallest batch first: each cell is at least its
  // neighbour at the next smaller batch size and at the next lower keep-rate.
  for (size_t l = levels; l-- > 0;) {
    for (size_t b = 0; b < width; ++b) {
      double v = raw[l * width + b];
      if (b > 0) v = std::max(v, closed[l * width + b - 1]);
      if (l + 1 < levels) v = std::max(v, closed[(l + 1) * width + b]);
      closed[l * width + b] = v;
    }
  }
  return std::shared_ptr<const LatencyTable>(
      new LatencyTable(options_.keep_rate_levels, options_.batch_sizes, std::move(closed)));
}

std::shared_ptr<const LatencyTable> LatencyModel::Snapshot() const {
  absl::ReaderMutexLock lock(&snapshot_mu_);
  return snapshot_;
}

absl::Duration LatencyModel::Predict(float keep_rate, int batch_size) const {
  return Snapshot()->Predict(keep_rate, batch_size);
}

absl::Status LatencyModel::Observe(float keep_rate, int batch_size, absl::Duration duration) {
  if (!(keep_rate > 0.0f && keep_rate <= 1.0f) || batch_size < 1 ||
      duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "observation needs keep-rate in (0, 1], batch >= 1 and a positive duration; got (",
        keep_rate, ", ", batch_size, ", ", absl::FormatDuration(duration), ")"));
  }
  const std::vector<float>& levels = options_.keep_rate_levels;
  const std::vector<int>& sizes = options_.batch_sizes;
  if (keep_rate > levels.front() + kKeepRateTolerance ||
      keep_rate < levels.back() - kKeepRateTolerance || batch_size < sizes.front() ||
      batch_size > sizes.back()) {
    return absl::OutOfRangeError(absl::StrCat("observation (keep-rate ", keep_rate, ", batch ",
                                              batch_size, ") is outside the latency grid"));
  }
  const Weights weights = CellWeights(levels, sizes, keep_rate, batch_size);
  double norm = 0.0;
  for (const auto& [index, w] : weights) norm += w * w;

  absl::MutexLock observe_lock(&observe_mu_);
  const double predicted = Weighted(weights, raw_);
  const double observed =
      std::clamp(absl::ToDoubleSeconds(duration), predicted / options_.max_observation_ratio,
                 predicted * options_.max_observation_ratio);
  // Spread so that the prediction at this point moves by exactly weight × (obs − pred).
  const double delta = options_.observation_weight * (observed - predicted) / norm;
  for (const auto& [index, w] : weights) {
    raw_[index] = std::max(kMinCellSeconds, raw_[index] + w * delta);
  }
  std::shared_ptr<const LatencyTable> table = Publish(raw_);
  absl::WriterMutexLock snapshot_lock(&snapshot_mu_);
  snapshot_ = std::move(table);
  return absl::OkStatus();
}

}  // namespace vitserve
