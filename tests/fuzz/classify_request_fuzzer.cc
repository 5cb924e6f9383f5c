// Fuzzes the checks a Classify request passes before it is queued
// (server/serving/classify_logic.h): the input is parsed as a serialized
// vitserve.v1.ClassifyRequest (inputs that are not one are skipped), then validated
// against a small model like models/fashion-vit.
//
// Properties: no crash or undefined behaviour; failures are INVALID_ARGUMENT; a request
// that passes both checks resolves to a keep-rate inside the model's range, a top_k in
// [1, num_classes], a priority below the number of levels, and an expected accuracy in
// [0, 1]; the floor from its raw min_keep_rate / min_expected_accuracy
// (server/scheduler/keep_rate_floor.h) is INVALID_ARGUMENT or a keep-rate in the model's
// range, and admission's validation agrees with the policy's mapping.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "server/scheduler/keep_rate_floor.h"
#include "server/serving/classify_logic.h"
#include "server/spec/model_spec.h"
#include "tests/fuzz/fuzz_check.h"
#include "vitserve/v1/inference.pb.h"

namespace {

constexpr uint32_t kPriorityLevels = 3;

vitserve::ModelSpec MakeSpec() {
  vitserve::ModelSpec spec;
  spec.name = "fashion-vit";
  spec.version = "1";
  spec.arch.image_size = 28;
  spec.arch.patch_size = 4;
  spec.arch.in_chans = 1;
  spec.arch.embed_dim = 32;
  spec.arch.depth = 8;
  spec.arch.num_heads = 2;
  spec.arch.num_classes = 10;
  spec.pruning.method = vitserve::Method::kDynamicViT;
  spec.pruning.locations = {2, 4, 6};
  spec.pruning.default_keep_rate = 1.0f;
  spec.pruning.min_keep_rate = 0.3f;
  spec.pruning.max_keep_rate = 1.0f;
  spec.calibration = {{"dense", 1.0f, 0.82, 1.0, 6220608},
                      {"dynamicvit", 1.0f, 0.82, 1.0, 6220608},
                      {"dynamicvit", 0.5f, 0.61, 0.7, 3000000},
                      {"dynamicvit", 0.3f, 0.40, 0.5, 2000000}};
  return spec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const vitserve::ModelSpec* const spec = new vitserve::ModelSpec(MakeSpec());
  vitserve::v1::ClassifyRequest request;
  if (size > static_cast<size_t>(INT32_MAX) ||
      !request.ParseFromArray(data, static_cast<int>(size))) {
    return 0;  // not a request: the gRPC layer would have refused it already
  }
  const absl::Status valid = vitserve::ValidateClassifyRequest(request, *spec);
  if (!valid.ok()) {
    FUZZ_CHECK(valid.code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  const absl::Status scheduling =
      vitserve::ValidateSchedulingFields(request, *spec, kPriorityLevels);
  if (!scheduling.ok()) {
    FUZZ_CHECK(scheduling.code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  // 0 = the batch policy chooses (SizeOrDelayPolicy: the model's default).
  const float keep_rate =
      request.keep_rate() > 0.0f ? request.keep_rate() : spec->pruning.default_keep_rate;
  // ValidateClassifyRequest allows 1e-6 of float slack at either end of the range.
  FUZZ_CHECK(std::isfinite(keep_rate) && keep_rate > 0.0f && keep_rate <= 1.0f);
  FUZZ_CHECK(keep_rate >= spec->pruning.min_keep_rate - 1e-5f &&
             keep_rate <= spec->pruning.max_keep_rate + 1e-5f);
  FUZZ_CHECK(request.priority() < kPriorityLevels);
  FUZZ_CHECK(std::isfinite(request.latency_budget_ms()) && request.latency_budget_ms() >= 0.0f);
  const uint32_t top_k = vitserve::ResolveTopK(request.top_k(), spec->arch.num_classes);
  FUZZ_CHECK(top_k >= 1 && top_k <= static_cast<uint32_t>(spec->arch.num_classes));
  const double accuracy =
      vitserve::ExpectedAccuracy(spec->calibration, spec->pruning.method, keep_rate);
  FUZZ_CHECK(accuracy >= 0.0 && accuracy <= 1.0);
  static const vitserve::AccuracyCurve* const curve =
      new vitserve::AccuracyCurve(vitserve::AccuracyCurveOf(*spec));
  const absl::StatusOr<float> floor = vitserve::ResolveKeepRateFloor(
      request.min_keep_rate(), request.min_expected_accuracy(), *curve);
  const absl::Status admitted = vitserve::ValidateKeepRateFloor(
      request.min_keep_rate(), request.min_expected_accuracy(), *curve);
  FUZZ_CHECK(admitted.code() == floor.status().code());
  if (!floor.ok()) {
    FUZZ_CHECK(floor.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(std::isfinite(*floor) && *floor >= spec->pruning.min_keep_rate - 1e-5f &&
             *floor <= spec->pruning.max_keep_rate + 1e-5f);
  return 0;
}
