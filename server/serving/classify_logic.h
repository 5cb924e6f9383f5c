// Pure pieces of the Classify path, kept free of gRPC server types so they are unit-tested
// directly: request validation, turning logits into top-k predictions, and the expected
// accuracy from a calibration curve (also the curve a batch policy maps a keep-rate floor
// with: AccuracyCurveOf).
//
// Thread-safety: free functions without shared state.
#ifndef VITSERVE_SERVER_SERVING_CLASSIFY_LOGIC_H_
#define VITSERVE_SERVER_SERVING_CLASSIFY_LOGIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/scheduler/keep_rate_floor.h"
#include "server/spec/model_spec.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

// top_k used when a request says 0.
inline constexpr uint32_t kDefaultTopK = 5;

// Checks a request against the model that will serve it. INVALID_ARGUMENT, with a message
// saying what was wrong and what is accepted, when:
//   * no input is set (neither `image` nor `tensor`), or `image` is empty;
//   * keep_rate is not 0 and not in (0, 1], or is outside the model's
//     [min_keep_rate, max_keep_rate];
//   * min_keep_rate or min_expected_accuracy is not in [0, 1];
//   * latency_budget_ms is negative or not finite;
//   * top_k exceeds the model's number of classes.
absl::Status ValidateClassifyRequest(const vitserve::v1::ClassifyRequest& request,
                                     const ModelSpec& spec);

// The scheduling fields of a request that passed ValidateClassifyRequest. INVALID_ARGUMENT
// when min_keep_rate is not 0 (= the model's minimum) and lies outside the model's
// [min_keep_rate, max_keep_rate], or when priority >= num_priority_levels.
absl::Status ValidateSchedulingFields(const vitserve::v1::ClassifyRequest& request,
                                      const ModelSpec& spec, uint32_t num_priority_levels);

// The number of predictions to return: top_k, or min(kDefaultTopK, num_classes) for 0.
uint32_t ResolveTopK(uint32_t requested, int num_classes);

// Softmax of `logits` (numerically stable), the `top_k` most probable classes in
// descending order (ties: lower class index first), labelled from `labels` when it has
// an entry for the class.
std::vector<vitserve::v1::Prediction> TopKPredictions(absl::Span<const float> logits,
                                                      uint32_t top_k,
                                                      const std::vector<std::string>& labels);

// Top-1 accuracy expected at `keep_rate` from `curve` (points of `method` only, or of any
// method when none names it), linearly interpolated between the nearest calibrated
// keep-rates; 0 when the curve is empty or `keep_rate` lies outside its range.
double ExpectedAccuracy(const std::vector<CalibrationPoint>& curve, Method method, float keep_rate);

// The accuracy curve of a model version for its batch policy's keep-rate floor
// (server/scheduler/keep_rate_floor.h): its name, keep-rate range and the calibration
// points ExpectedAccuracy uses.
AccuracyCurve AccuracyCurveOf(const ModelSpec& spec);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_CLASSIFY_LOGIC_H_
