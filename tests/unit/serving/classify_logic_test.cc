#include "server/serving/classify_logic.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/serving/model_info.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using vitserve::v1::ClassifyRequest;

ModelSpec TinySpec() {
  ModelSpec spec;
  spec.name = "tiny";
  spec.arch.num_classes = 4;
  spec.pruning.method = Method::kEViT;
  spec.pruning.default_keep_rate = 0.7f;
  spec.pruning.min_keep_rate = 0.5f;
  spec.pruning.max_keep_rate = 1.0f;
  return spec;
}

ClassifyRequest WithImage() {
  ClassifyRequest r;
  r.set_image("not checked here");
  return r;
}

void ExpectInvalid(const ClassifyRequest& r, const std::string& fragment) {
  absl::Status s = ValidateClassifyRequest(r, TinySpec());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(fragment));
}

TEST(ValidateClassifyRequestTest, AcceptsDefaultsAndInRangeValues) {
  EXPECT_TRUE(ValidateClassifyRequest(WithImage(), TinySpec()).ok());
  ClassifyRequest r = WithImage();
  r.set_keep_rate(0.5f);
  r.set_latency_budget_ms(20.0f);
  r.set_top_k(4);
  r.set_min_keep_rate(0.5f);
  EXPECT_TRUE(ValidateClassifyRequest(r, TinySpec()).ok());
  ClassifyRequest t;
  t.mutable_tensor()->add_shape(3);
  EXPECT_TRUE(ValidateClassifyRequest(t, TinySpec()).ok());
}

TEST(ValidateClassifyRequestTest, RefusesMissingOrEmptyInput) {
  ExpectInvalid(ClassifyRequest(), "no input");
  ClassifyRequest r;
  r.set_image("");
  ExpectInvalid(r, "`image` is empty");
}

TEST(ValidateClassifyRequestTest, RefusesKeepRateOutsideUnitIntervalOrModelRange) {
  ClassifyRequest r = WithImage();
  r.set_keep_rate(1.5f);
  ExpectInvalid(r, "keep_rate must be 0 (server chooses) or in (0, 1]; got 1.5");
  r.set_keep_rate(-0.1f);
  ExpectInvalid(r, "got -0.1");
  r.set_keep_rate(std::numeric_limits<float>::quiet_NaN());
  ExpectInvalid(r, "keep_rate must be");
  r.set_keep_rate(0.3f);
  ExpectInvalid(r, "outside model 'tiny''s range [0.5, 1]");
}

TEST(ValidateClassifyRequestTest, RefusesBadBudgetTopKAndMinKeepRate) {
  ClassifyRequest r = WithImage();
  r.set_latency_budget_ms(-1.0f);
  ExpectInvalid(r, "latency_budget_ms");
  r.set_latency_budget_ms(std::numeric_limits<float>::infinity());
  ExpectInvalid(r, "latency_budget_ms");
  r = WithImage();
  r.set_top_k(5);
  ExpectInvalid(r, "top_k must be at most the model's 4 classes");
  r = WithImage();
  r.set_min_keep_rate(2.0f);
  ExpectInvalid(r, "min_keep_rate");
  r = WithImage();
  r.set_min_expected_accuracy(1.5f);
  ExpectInvalid(r, "min_expected_accuracy must be 0 (no bound) or a top-1 fraction in (0, 1]");
  r.set_min_expected_accuracy(-0.1f);
  ExpectInvalid(r, "min_expected_accuracy");
  r.set_min_expected_accuracy(std::numeric_limits<float>::quiet_NaN());
  ExpectInvalid(r, "min_expected_accuracy");
}

TEST(ValidateSchedulingFieldsTest, MinKeepRateWithinTheModelsRangeAndPriorityBelowLevels) {
  ClassifyRequest r = WithImage();
  EXPECT_TRUE(ValidateSchedulingFields(r, TinySpec(), 4).ok());  // 0 = the model's minimum
  r.set_min_keep_rate(0.5f);
  r.set_priority(3);
  EXPECT_TRUE(ValidateSchedulingFields(r, TinySpec(), 4).ok());
  r.set_min_keep_rate(0.4f);  // below the model's 0.5
  absl::Status s = ValidateSchedulingFields(r, TinySpec(), 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("min_keep_rate 0.4 is outside"));
  r.set_min_keep_rate(0.0f);
  r.set_priority(4);
  s = ValidateSchedulingFields(r, TinySpec(), 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("priority must be 0 (most urgent) .. 3"));
}

TEST(ClassifyLogicTest, ResolvesTopK) {
  EXPECT_EQ(ResolveTopK(0, 1000), kDefaultTopK);
  EXPECT_EQ(ResolveTopK(0, 3), 3u);
  EXPECT_EQ(ResolveTopK(2, 3), 2u);
}

TEST(ClassifyLogicTest, TopKIsSoftmaxInDescendingOrderWithLabels) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  auto preds = TopKPredictions(logits, 3, {"a", "b", "c"});
  ASSERT_EQ(preds.size(), 3u);
  // Tie between classes 1 and 3: the lower index first. Class 3 has no label.
  EXPECT_EQ(preds[0].class_index(), 1u);
  EXPECT_EQ(preds[0].label(), "b");
  EXPECT_EQ(preds[1].class_index(), 3u);
  EXPECT_EQ(preds[1].label(), "");
  EXPECT_EQ(preds[2].class_index(), 2u);
  const double z = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(preds[0].score(), std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(preds[2].score(), std::exp(2.0) / z, 1e-6);
  // Large logits do not overflow.
  auto big = TopKPredictions(std::vector<float>{1000.0f, 999.0f}, 10, {});
  ASSERT_EQ(big.size(), 2u);
  EXPECT_NEAR(big[0].score(), 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
}

TEST(ClassifyLogicTest, ExpectedAccuracyInterpolatesTheModelsMethod) {
  std::vector<CalibrationPoint> curve = {
      {"evit", 0.5f, 0.70, 0, 0}, {"evit", 1.0f, 0.80, 0, 0}, {"dense", 0.7f, 0.10, 0, 0}};
  EXPECT_NEAR(ExpectedAccuracy(curve, Method::kEViT, 0.7f), 0.74, 1e-6);
  EXPECT_NEAR(ExpectedAccuracy(curve, Method::kEViT, 1.0f), 0.80, 1e-6);
  EXPECT_EQ(ExpectedAccuracy(curve, Method::kEViT, 0.4f), 0.0);
  EXPECT_EQ(ExpectedAccuracy({}, Method::kEViT, 0.7f), 0.0);
}

// Range [0.5, 1.0]; the curve dips at 0.9 (0.84 < 0.85 at 0.8), as measured curves do.
ModelSpec CalibratedSpec() {
  ModelSpec spec = TinySpec();
  spec.calibration = {{"evit", 0.5f, 0.60, 0, 0}, {"evit", 0.6f, 0.70, 0, 0},
                      {"evit", 0.8f, 0.85, 0, 0}, {"evit", 0.9f, 0.84, 0, 0},
                      {"evit", 1.0f, 0.86, 0, 0}, {"evit", 0.3f, 0.10, 0, 0}};
  return spec;
}

// The floor of a request's raw fields on `spec`'s curve (what the batch policy maps, and
// admission validates, was ResolveMinKeepRate here before the policy owned it).
absl::StatusOr<float> ResolveMinKeepRate(const ClassifyRequest& r, const ModelSpec& spec) {
  return ResolveKeepRateFloor(r.min_keep_rate(), r.min_expected_accuracy(), AccuracyCurveOf(spec));
}

float MinKeepRateFor(float accuracy, float min_keep_rate = 0.0f) {
  ClassifyRequest r = WithImage();
  r.set_min_expected_accuracy(accuracy);
  r.set_min_keep_rate(min_keep_rate);
  absl::StatusOr<float> k = ResolveMinKeepRate(r, CalibratedSpec());
  EXPECT_TRUE(k.ok()) << k.status();
  return k.value_or(-1.0f);
}

TEST(ResolveMinKeepRateTest, WithoutAnAccuracyBoundItIsTheRequestsOrTheModelsMinimum) {
  ClassifyRequest r = WithImage();
  EXPECT_FLOAT_EQ(ResolveMinKeepRate(r, TinySpec()).value(), 0.5f);  // no calibration needed
  r.set_min_keep_rate(0.8f);
  EXPECT_FLOAT_EQ(ResolveMinKeepRate(r, TinySpec()).value(), 0.8f);
}

TEST(ResolveMinKeepRateTest, FloorIsWhereEveryHigherKeepRateReachesTheAccuracy) {
  // Reached everywhere in range (0.3's point lies outside it): the model's minimum.
  EXPECT_FLOAT_EQ(MinKeepRateFor(0.60f), 0.5f);
  // Crossing inside 0.5..0.6: 0.5 + (0.65 - 0.60) / (0.70 - 0.60) * 0.1.
  EXPECT_NEAR(MinKeepRateFor(0.65f), 0.55f, 1e-5);
  // On a breakpoint.
  EXPECT_NEAR(MinKeepRateFor(0.70f), 0.6f, 1e-5);
  // 0.845 is reached at 0.8 but not at 0.9 (0.84): the floor sits above the dip, at
  // 0.9 + (0.845 - 0.84) / (0.86 - 0.84) * 0.1, not at 0.8.
  EXPECT_NEAR(MinKeepRateFor(0.845f), 0.925f, 1e-5);
  // Exactly the best calibrated value (a float on the wire) is reachable: the maximum.
  EXPECT_NEAR(MinKeepRateFor(0.86f), 1.0f, 1e-4);
  // The higher of the two bounds applies.
  EXPECT_NEAR(MinKeepRateFor(0.65f, 0.7f), 0.7f, 1e-6);
  EXPECT_NEAR(MinKeepRateFor(0.845f, 0.7f), 0.925f, 1e-5);
}

TEST(ResolveMinKeepRateTest, UnreachableAccuracyOrNoCalibrationIsInvalid) {
  ClassifyRequest r = WithImage();
  r.set_min_expected_accuracy(0.9f);
  absl::StatusOr<float> k = ResolveMinKeepRate(r, CalibratedSpec());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(k.status().message()),
              HasSubstr("above model 'tiny''s best expected top-1 0.86 (keep-rate 1)"));
  r.set_min_expected_accuracy(0.5f);
  k = ResolveMinKeepRate(r, TinySpec());
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(k.status().message()), HasSubstr("has no calibration"));
}

TEST(ModelInfoTest, GridRunsFromMaxDownToMin) {
  PruningSpec p;
  p.min_keep_rate = 0.5f;
  p.max_keep_rate = 1.0f;
  auto grid = KeepRateGrid(p);
  ASSERT_EQ(grid.size(), 6u);
  EXPECT_FLOAT_EQ(grid.front(), 1.0f);
  EXPECT_FLOAT_EQ(grid.back(), 0.5f);
  p.min_keep_rate = 0.25f;
  p.max_keep_rate = 0.95f;
  grid = KeepRateGrid(p);
  EXPECT_FLOAT_EQ(grid.front(), 0.95f);
  EXPECT_FLOAT_EQ(grid[1], 0.9f);
  EXPECT_FLOAT_EQ(grid.back(), 0.25f);
  EXPECT_FLOAT_EQ(grid[grid.size() - 2], 0.3f);
}

}  // namespace
}  // namespace vitserve
