#include "server/serving/classify_logic.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

using vitserve::v1::ClassifyRequest;

// Keep-rates closer than this count as equal (float wire values vs config values).
constexpr float kKeepRateTolerance = 1e-6f;

}  // namespace

absl::Status ValidateClassifyRequest(const ClassifyRequest& request, const ModelSpec& spec) {
  switch (request.input_case()) {
    case ClassifyRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError(
          "request has no input: set `image` (encoded PNG/JPEG/BMP/WebP/TIFF bytes) or `tensor` "
          "(preprocessed float32 CHW)");
    case ClassifyRequest::kImage:
      if (request.image().empty()) {
        return absl::InvalidArgumentError(
            "`image` is empty: send the encoded bytes of a PNG/JPEG/BMP/WebP/TIFF file");
      }
      break;
    case ClassifyRequest::kTensor:
      break;
  }
  const float keep_rate = request.keep_rate();
  if (!std::isfinite(keep_rate) || keep_rate < 0.0f || keep_rate > 1.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep_rate must be 0 (server chooses) or in (0, 1]; got ", keep_rate));
  }
  if (keep_rate > 0.0f && (keep_rate < spec.pruning.min_keep_rate - kKeepRateTolerance ||
                           keep_rate > spec.pruning.max_keep_rate + kKeepRateTolerance)) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep_rate ", keep_rate, " is outside model '", spec.name, "''s range [",
                     spec.pruning.min_keep_rate, ", ", spec.pruning.max_keep_rate,
                     "] (or 0 for the default ", spec.pruning.default_keep_rate, ")"));
  }
  const float min_keep_rate = request.min_keep_rate();
  if (!std::isfinite(min_keep_rate) || min_keep_rate < 0.0f || min_keep_rate > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_keep_rate must be 0 (the model's minimum) or in (0, 1]; got ", min_keep_rate));
  }
  const float min_accuracy = request.min_expected_accuracy();
  if (!std::isfinite(min_accuracy) || min_accuracy < 0.0f || min_accuracy > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_expected_accuracy must be 0 (no bound) or a top-1 fraction in (0, 1]; got ",
        min_accuracy));
  }
  const float budget = request.latency_budget_ms();
  if (!std::isfinite(budget) || budget < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "latency_budget_ms must be 0 (no budget) or a finite positive number of milliseconds; "
        "got ",
        budget));
  }
  if (request.top_k() > static_cast<uint32_t>(std::max(spec.arch.num_classes, 0))) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be at most the model's ", spec.arch.num_classes,
                     " classes (0 = ", kDefaultTopK, "); got ", request.top_k()));
  }
  return absl::OkStatus();
}

absl::Status ValidateSchedulingFields(const ClassifyRequest& request, const ModelSpec& spec,
                                      uint32_t num_priority_levels) {
  const float min_keep_rate = request.min_keep_rate();
  if (min_keep_rate > 0.0f && (min_keep_rate < spec.pruning.min_keep_rate - kKeepRateTolerance ||
                               min_keep_rate > spec.pruning.max_keep_rate + kKeepRateTolerance)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_keep_rate ", min_keep_rate, " is outside model '", spec.name,
                     "''s range [", spec.pruning.min_keep_rate, ", ", spec.pruning.max_keep_rate,
                     "] (or 0 for the model's minimum)"));
  }
  if (request.priority() >= num_priority_levels) {
    return absl::InvalidArgumentError(absl::StrCat("priority must be 0 (most urgent) .. ",
                                                   num_priority_levels - 1, "; got ",
                                                   request.priority()));
  }
  return absl::OkStatus();
}

uint32_t ResolveTopK(uint32_t requested, int num_classes) {
  if (requested > 0) return requested;
  return std::min<uint32_t>(kDefaultTopK, static_cast<uint32_t>(std::max(num_classes, 0)));
}

std::vector<vitserve::v1::Prediction> TopKPredictions(absl::Span<const float> logits,
                                                      uint32_t top_k,
                                                      const std::vector<std::string>& labels) {
  std::vector<vitserve::v1::Prediction> out;
  if (logits.empty() || top_k == 0) return out;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> probs(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(logits[i]) - max_logit);
    sum += probs[i];
  }
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  const size_t k = std::min<size_t>(top_k, order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](size_t a, size_t b) {
    return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
  });
  out.reserve(k);
  for (size_t i = 0; i < k; ++i) {
    vitserve::v1::Prediction p;
    p.set_class_index(static_cast<uint32_t>(order[i]));
    if (order[i] < labels.size()) p.set_label(labels[order[i]]);
    p.set_score(static_cast<float>(probs[order[i]] / sum));
    out.push_back(std::move(p));
  }
  return out;
}

namespace {

// (keep-rate, top-1) of `method`'s points, or of every point when none names it; sorted.
std::vector<std::pair<float, double>> CurvePoints(const std::vector<CalibrationPoint>& curve,
                                                  Method method) {
  const std::string name(MethodName(method));
  std::vector<std::pair<float, double>> points;
  for (const CalibrationPoint& p : curve) {
    if (p.method == name) points.emplace_back(p.keep_rate, p.top1);
  }
  if (points.empty()) {
    for (const CalibrationPoint& p : curve) points.emplace_back(p.keep_rate, p.top1);
  }
  std::sort(points.begin(), points.end());
  return points;
}

}  // namespace

double ExpectedAccuracy(const std::vector<CalibrationPoint>& curve, Method method,
                        float keep_rate) {
  AccuracyCurve points;
  points.points = CurvePoints(curve, method);
  return points.At(keep_rate);
}

AccuracyCurve AccuracyCurveOf(const ModelSpec& spec) {
  AccuracyCurve curve;
  curve.model = spec.name;
  curve.min_keep_rate = spec.pruning.min_keep_rate;
  curve.max_keep_rate = spec.pruning.max_keep_rate;
  curve.points = CurvePoints(spec.calibration, spec.pruning.method);
  return curve;
}

}  // namespace vitserve
