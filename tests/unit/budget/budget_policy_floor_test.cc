// The budget policy maps a task's raw floor fields (min_keep_rate, min_expected_accuracy)
// to a keep-rate floor itself, with the accuracy curve its AccuracyCurveSource holds when it
// decides (server/scheduler/keep_rate_floor.h).
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/budget/budget_policy.h"
#include "server/scheduler/keep_rate_floor.h"
#include "tests/unit/budget/gpu_latency_model.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing_fixtures::GpuModel;

const absl::Time kT0 = absl::FromUnixSeconds(1000);
constexpr absl::Duration kDelay = absl::Milliseconds(5);

// GpuModel(): 10 / 8 / 6 ms alone at keep-rate 1.0 / 0.8 / 0.6. The curve: range
// [0.6, 1.0]; top-1 0.70 / 0.80 / 0.85 at 0.6 / 0.8 / 1.0: an accuracy of 0.8 needs
// keep-rate 0.8 or more.
AccuracyCurve Curve(double top1_at_06 = 0.70) {
  AccuracyCurve curve;
  curve.model = "m";
  curve.min_keep_rate = 0.6f;
  curve.max_keep_rate = 1.0f;
  curve.points = {{0.6f, top1_at_06}, {0.8f, 0.80}, {1.0f, 0.85}};
  return curve;
}

std::unique_ptr<BudgetPolicy> Policy(std::shared_ptr<const AccuracyCurveSource> accuracy,
                                     float default_keep_rate = 1.0f) {
  BudgetPolicy::Options options;
  options.max_batch_size = 4;
  options.max_queue_delay = kDelay;
  options.safety_fraction = 0.0;
  options.safety_margin = absl::ZeroDuration();
  options.default_keep_rate = default_keep_rate;
  auto policy = BudgetPolicy::Create(options, GpuModel(), nullptr, std::move(accuracy));
  EXPECT_TRUE(policy.ok()) << policy.status();
  return std::move(*policy);
}

// "Server chooses" with the raw floor fields a request carries; budget zero = none.
QueuedTask Task(absl::Duration budget, float min_expected_accuracy, float min_keep_rate = 0.0f) {
  QueuedTask t;
  t.enqueue_time = kT0;
  if (budget > absl::ZeroDuration()) {
    t.attributes.latency_budget = budget;
    t.attributes.deadline = kT0 + budget;
  }
  t.attributes.min_keep_rate = min_keep_rate;
  t.attributes.min_expected_accuracy = min_expected_accuracy;
  return t;
}

BatchDecision Decide(const BudgetPolicy& policy, const std::vector<QueuedTask>& tasks,
                     absl::Time now) {
  return policy.Decide(QueueSnapshot{"m", tasks, false}, now);
}

TEST(BudgetPolicyFloorTest, AnAccuracyBoundRaisesTheFloorOfABudgetedTask) {
  auto source = std::make_shared<AccuracyCurveSource>(Curve());
  std::unique_ptr<BudgetPolicy> policy = Policy(source);
  // 7 ms fit keep-rate 0.6 (6 ms), not 0.8 (8 ms). Without an accuracy bound it runs at 0.6
  // once its latest safe start (1 ms) is reached.
  BatchDecision d =
      Decide(*policy, {Task(absl::Milliseconds(7), 0.0f)}, kT0 + absl::Milliseconds(1));
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.6f);
  // Asking for 0.8 top-1 puts the floor at 0.8, which cannot fit 7 ms: refused at once,
  // never served below the floor.
  d = Decide(*policy, {Task(absl::Milliseconds(7), 0.8f)}, kT0);
  EXPECT_THAT(d.batch, IsEmpty());
  ASSERT_EQ(d.reject.size(), 1u);
  EXPECT_EQ(d.reject[0].second.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(d.reject[0].second.message()),
              HasSubstr("at keep-rate 0.8 (the lowest allowed)"));
  // With 9 ms it runs at 0.8, the only level that fits at or above the floor.
  d = Decide(*policy, {Task(absl::Milliseconds(9), 0.8f)}, kT0 + absl::Milliseconds(1));
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.8f);
}

TEST(BudgetPolicyFloorTest, WithoutABudgetTheDefaultIsRaisedToTheFloor) {
  auto source = std::make_shared<AccuracyCurveSource>(Curve());
  std::unique_ptr<BudgetPolicy> policy = Policy(source, /*default_keep_rate=*/0.6f);
  BatchDecision d = Decide(*policy, {Task(absl::ZeroDuration(), 0.8f)}, kT0 + kDelay);
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
  EXPECT_NEAR(d.keep_rate, 0.8f, 1e-5);
  // min_keep_rate alone, and the higher of the two bounds.
  d = Decide(*policy, {Task(absl::ZeroDuration(), 0.0f, 0.7f)}, kT0 + kDelay);
  EXPECT_FLOAT_EQ(d.keep_rate, 0.7f);
  d = Decide(*policy, {Task(absl::ZeroDuration(), 0.8f, 0.9f)}, kT0 + kDelay);
  EXPECT_FLOAT_EQ(d.keep_rate, 0.9f);
  // min_keep_rate 0 is the curve's minimum; the default is above it.
  d = Decide(*policy, {Task(absl::ZeroDuration(), 0.0f)}, kT0 + kDelay);
  EXPECT_FLOAT_EQ(d.keep_rate, 0.6f);
}

TEST(BudgetPolicyFloorTest, AFixedKeepRateIsHonouredWhateverTheFloor) {
  auto source = std::make_shared<AccuracyCurveSource>(Curve());
  std::unique_ptr<BudgetPolicy> policy = Policy(source);
  QueuedTask fixed = Task(absl::ZeroDuration(), 0.8f);
  fixed.attributes.keep_rate = 0.6f;
  BatchDecision d = Decide(*policy, {fixed}, kT0 + kDelay);
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.6f);
}

TEST(BudgetPolicyFloorTest, TheFloorFollowsTheCurvePublishedAfterAdmission) {
  auto source = std::make_shared<AccuracyCurveSource>(Curve());
  std::unique_ptr<BudgetPolicy> policy = Policy(source);
  const std::vector<QueuedTask> queued = {Task(absl::Milliseconds(7), 0.8f)};
  // Admitted (and validated) against the first version: 0.8 is reachable there.
  ASSERT_TRUE(ValidateKeepRateFloor(0.0f, 0.8f, *source->Snapshot()).ok());
  // A reload whose calibration reaches 0.8 already at keep-rate 0.6: the same queued task
  // now runs at 0.6 within its 7 ms.
  source->Publish(Curve(/*top1_at_06=*/0.80));
  BatchDecision d = Decide(*policy, queued, kT0 + absl::Milliseconds(1));
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.6f);
  // A reload whose best accuracy is below 0.8: refused as invalid, not served below it.
  AccuracyCurve worse = Curve();
  worse.points = {{0.6f, 0.60}, {1.0f, 0.75}};
  source->Publish(worse);
  d = Decide(*policy, queued, kT0);
  EXPECT_THAT(d.batch, IsEmpty());
  ASSERT_EQ(d.reject.size(), 1u);
  EXPECT_EQ(d.reject[0].second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.reject[0].second.message()),
              HasSubstr("min_expected_accuracy 0.8 is above model 'm''s best expected top-1 0.75"));
  // Admit() of a newcomer gives the same answer.
  EXPECT_EQ(policy->Admit(QueueSnapshot{"m", queued, false}, kT0, kT0).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BudgetPolicyFloorTest, WithoutACurveAnAccuracyBoundIsRefused) {
  std::unique_ptr<BudgetPolicy> policy = Policy(nullptr);
  BatchDecision d = Decide(*policy, {Task(absl::ZeroDuration(), 0.8f)}, kT0 + kDelay);
  ASSERT_EQ(d.reject.size(), 1u);
  EXPECT_EQ(d.reject[0].second.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.reject[0].second.message()), HasSubstr("model 'm' has no calibration"));
  // min_keep_rate still applies.
  d = Decide(*policy, {Task(absl::ZeroDuration(), 0.0f, 0.7f)}, kT0 + kDelay);
  EXPECT_THAT(d.batch, testing::ElementsAre(0));
}

}  // namespace
}  // namespace vitserve
