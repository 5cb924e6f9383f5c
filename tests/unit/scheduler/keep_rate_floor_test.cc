#include "server/scheduler/keep_rate_floor.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// Range [0.5, 1.0]; top-1 0.60 / 0.70 / 0.86 at 0.5 / 0.6 / 1.0.
AccuracyCurve Curve() {
  AccuracyCurve curve;
  curve.model = "tiny";
  curve.min_keep_rate = 0.5f;
  curve.max_keep_rate = 1.0f;
  curve.points = {{0.5f, 0.60}, {0.6f, 0.70}, {1.0f, 0.86}};
  return curve;
}

TEST(AccuracyCurveTest, InterpolatesBetweenPointsAndIsZeroOutsideThem) {
  const AccuracyCurve curve = Curve();
  EXPECT_DOUBLE_EQ(curve.At(0.6f), 0.70);
  EXPECT_NEAR(curve.At(0.8f), 0.78, 1e-6);
  EXPECT_EQ(curve.At(0.4f), 0.0);
  EXPECT_EQ(AccuracyCurve().At(0.7f), 0.0);
}

TEST(KeepRateFloorTest, RawFieldsMapToAFloorOnTheCurve) {
  const AccuracyCurve curve = Curve();
  EXPECT_FLOAT_EQ(ResolveKeepRateFloor(0.0f, 0.0f, curve).value(), 0.5f);  // the minimum
  EXPECT_FLOAT_EQ(ResolveKeepRateFloor(0.7f, 0.0f, curve).value(), 0.7f);
  // 0.78 is first reached at 0.8 (0.6 + (0.78 - 0.70) / (0.86 - 0.70) * 0.4).
  EXPECT_NEAR(ResolveKeepRateFloor(0.0f, 0.78f, curve).value(), 0.8f, 1e-5);
  EXPECT_NEAR(ResolveKeepRateFloor(0.9f, 0.78f, curve).value(), 0.9f, 1e-6);
}

TEST(KeepRateFloorTest, ValidationGivesTheMappingsErrors) {
  absl::Status s = ValidateKeepRateFloor(0.0f, 0.9f, Curve());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("above model 'tiny''s best expected top-1 0.86 (keep-rate 1)"));
  AccuracyCurve uncalibrated = Curve();
  uncalibrated.points.clear();
  s = ValidateKeepRateFloor(0.0f, 0.5f, uncalibrated);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model 'tiny' has no calibration"));
  EXPECT_TRUE(ValidateKeepRateFloor(0.7f, 0.0f, uncalibrated).ok());
}

TEST(AccuracyCurveSourceTest, PublishReplacesTheCurveAndKeepsOldSnapshotsValid) {
  AccuracyCurveSource source(Curve());
  const std::shared_ptr<const AccuracyCurve> before = source.Snapshot();
  AccuracyCurve next = Curve();
  next.points.clear();
  source.Publish(next);
  EXPECT_EQ(before->points.size(), 3u);
  EXPECT_TRUE(source.Snapshot()->points.empty());
}

}  // namespace
}  // namespace vitserve
