#include "server/budget/latency_model.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// Keep-rates compared after the float round trip.
// Durations compared after the double round trip of the table.
constexpr absl::Duration kTimeEps = absl::Nanoseconds(10);

// A CPU-like table: t(k, b) = 2 ms + 10 ms · k · b.
absl::Duration CpuTime(float k, int b) { return absl::Microseconds(2000 + 10000 * k * b); }

std::vector<LatencyPoint> CpuPoints(const std::vector<float>& levels,
                                    const std::vector<int>& sizes) {
  std::vector<LatencyPoint> points;
  for (float k : levels) {
    for (int b : sizes) points.push_back(LatencyPoint{k, b, CpuTime(k, b)});
  }
  return points;
}

LatencyModel::Options GridOptions() {
  LatencyModel::Options options;
  options.keep_rate_levels = {1.0f, 0.8f, 0.6f};
  options.batch_sizes = {1, 2, 4, 8};
  return options;
}

std::unique_ptr<LatencyModel> CpuModel() {
  LatencyModel::Options options = GridOptions();
  auto model =
      LatencyModel::Create(options, CpuPoints(options.keep_rate_levels, options.batch_sizes));
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(*model);
}

#define EXPECT_DURATION_NEAR(a, b) \
  EXPECT_LE(absl::AbsDuration((a) - (b)), kTimeEps) << (a) << " vs " << (b)

TEST(MakeKeepRateLevelsTest, StepsDownAndEndsAtTheMinimum) {
  auto levels = MakeKeepRateLevels(0.25f, 1.0f, 0.1f);
  ASSERT_TRUE(levels.ok()) << levels.status();
  EXPECT_THAT(*levels, ElementsAre(1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f, 0.25f));
}

TEST(MakeKeepRateLevelsTest, MinimumOnTheGridIsNotRepeated) {
  auto levels = MakeKeepRateLevels(0.5f, 1.0f, 0.1f);
  ASSERT_TRUE(levels.ok()) << levels.status();
  EXPECT_THAT(*levels, ElementsAre(1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f));
}

TEST(MakeKeepRateLevelsTest, DenseModelHasOneLevel) {
  auto levels = MakeKeepRateLevels(1.0f, 1.0f, 0.1f);
  ASSERT_TRUE(levels.ok()) << levels.status();
  EXPECT_THAT(*levels, ElementsAre(1.0f));
}

TEST(MakeKeepRateLevelsTest, RejectsBadRanges) {
  EXPECT_EQ(MakeKeepRateLevels(0.0f, 1.0f, 0.1f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeKeepRateLevels(0.8f, 0.5f, 0.1f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeKeepRateLevels(0.5f, 1.5f, 0.1f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeKeepRateLevels(0.5f, 1.0f, 0.0f).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LatencyModelTest, PredictsMeasuredPointsOnTheGrid) {
  auto model = CpuModel();
  for (float k : {1.0f, 0.8f, 0.6f}) {
    for (int b : {1, 2, 4, 8}) EXPECT_DURATION_NEAR(model->Predict(k, b), CpuTime(k, b));
  }
}

TEST(LatencyModelTest, LevelsAreStoredHighestFirstAndBatchSizesSmallestFirst) {
  LatencyModel::Options options = GridOptions();
  options.keep_rate_levels = {0.6f, 1.0f, 0.8f};
  options.batch_sizes = {4, 1, 8, 2};
  auto model = LatencyModel::Create(options, CpuPoints({1.0f, 0.8f, 0.6f}, {1, 2, 4, 8}));
  ASSERT_TRUE(model.ok()) << model.status();
  auto table = (*model)->Snapshot();
  EXPECT_THAT(table->keep_rate_levels(), ElementsAre(1.0f, 0.8f, 0.6f));
  EXPECT_THAT(table->batch_sizes(), ElementsAre(1, 2, 4, 8));
}

TEST(LatencyModelTest, InterpolatesLinearlyBetweenBatchSizes) {
  auto model = CpuModel();
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 3), absl::Milliseconds(32));  // (22 + 42) / 2
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 6), absl::Milliseconds(62));  // (42 + 82) / 2
}

TEST(LatencyModelTest, InterpolatesLinearlyBetweenKeepRateLevels) {
  auto model = CpuModel();
  EXPECT_DURATION_NEAR(model->Predict(0.9f, 1), absl::Milliseconds(11));
  EXPECT_DURATION_NEAR(model->Predict(0.7f, 4), absl::Milliseconds(30));  // (34 + 26) / 2
}

TEST(LatencyModelTest, ExtrapolatesBeyondTheLargestBatchAlongTheLastSegment) {
  auto model = CpuModel();
  // Last segment 4 -> 8 costs 10 ms per image at keep-rate 1.0.
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 16), absl::Milliseconds(162));
}

TEST(LatencyModelTest, SingleBatchSizeExtrapolatesPerImage) {
  LatencyModel::Options options = GridOptions();
  options.batch_sizes = {2};
  auto model = LatencyModel::Create(options, CpuPoints(options.keep_rate_levels, {2}));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_DURATION_NEAR((*model)->Predict(1.0f, 4), 2 * CpuTime(1.0f, 2));
  // Below the smallest batch size: the smallest (conservative).
  EXPECT_DURATION_NEAR((*model)->Predict(1.0f, 1), CpuTime(1.0f, 2));
}

TEST(LatencyModelTest, KeepRateOutsideTheGridIsClampedToTheEndLevels) {
  auto model = CpuModel();
  EXPECT_DURATION_NEAR(model->Predict(0.3f, 2), CpuTime(0.6f, 2));
  LatencyModel::Options options = GridOptions();
  options.keep_rate_levels = {0.9f, 0.6f};
  auto capped =
      LatencyModel::Create(options, CpuPoints(options.keep_rate_levels, options.batch_sizes));
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_DURATION_NEAR((*capped)->Predict(1.0f, 2), CpuTime(0.9f, 2));
}

TEST(LatencyModelTest, AveragesRepeatedPointsForOneCell) {
  LatencyModel::Options options = GridOptions();
  std::vector<LatencyPoint> points = CpuPoints(options.keep_rate_levels, options.batch_sizes);
  points.push_back(LatencyPoint{0.6f, 1, CpuTime(0.6f, 1) + absl::Milliseconds(2)});
  auto model = LatencyModel::Create(options, points);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_DURATION_NEAR((*model)->Predict(0.6f, 1), CpuTime(0.6f, 1) + absl::Milliseconds(1));
}

TEST(LatencyModelTest, EnforcesMonotonicityByRaisingCells) {
  LatencyModel::Options options = GridOptions();
  std::vector<LatencyPoint> points = CpuPoints(options.keep_rate_levels, options.batch_sizes);
  for (LatencyPoint& p : points) {
    // Batch 4 faster than batch 2 at keep-rate 1.0 (noise), and keep-rate 0.6 slower than
    // 1.0 at batch 1.
    if (p.keep_rate == 1.0f && p.batch_size == 4) p.duration = absl::Milliseconds(15);
    if (p.keep_rate == 0.6f && p.batch_size == 1) p.duration = absl::Milliseconds(20);
  }
  auto model = LatencyModel::Create(options, points);
  ASSERT_TRUE(model.ok()) << model.status();
  // Raised to the larger of (1.0, 2) = 22 ms and (0.8, 4) = 34 ms.
  EXPECT_DURATION_NEAR((*model)->Predict(1.0f, 4), CpuTime(0.8f, 4));
  EXPECT_DURATION_NEAR((*model)->Predict(1.0f, 1), absl::Milliseconds(20));  // raised to 0.6's
  EXPECT_DURATION_NEAR((*model)->Predict(0.8f, 1), absl::Milliseconds(20));
  EXPECT_DURATION_NEAR((*model)->Predict(0.8f, 2), absl::Milliseconds(20));
  // Monotone everywhere, including between and beyond grid points.
  auto table = (*model)->Snapshot();
  for (int b = 1; b <= 12; ++b) {
    for (float k = 0.5f; k <= 1.0f; k += 0.05f) {
      EXPECT_LE(table->Predict(k, b), table->Predict(k, b + 1)) << k << " " << b;
      EXPECT_LE(table->Predict(k, b), table->Predict(k + 0.05f, b)) << k << " " << b;
    }
  }
}

TEST(LatencyModelTest, CreateRejectsIncompleteOrOffGridPoints) {
  LatencyModel::Options options = GridOptions();
  std::vector<LatencyPoint> points = CpuPoints(options.keep_rate_levels, options.batch_sizes);

  std::vector<LatencyPoint> missing(points.begin(), points.end() - 1);
  auto status = LatencyModel::Create(options, missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no latency point for keep-rate 0.6, batch 8"));

  std::vector<LatencyPoint> off_grid = points;
  off_grid.push_back(LatencyPoint{0.7f, 1, absl::Milliseconds(1)});
  EXPECT_EQ(LatencyModel::Create(options, off_grid).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::vector<LatencyPoint> zero = points;
  zero[0].duration = absl::ZeroDuration();
  EXPECT_EQ(LatencyModel::Create(options, zero).status().code(),
            absl::StatusCode::kInvalidArgument);

  LatencyModel::Options duplicate = options;
  duplicate.keep_rate_levels = {1.0f, 1.0f, 0.6f};
  EXPECT_EQ(LatencyModel::Create(duplicate, points).status().code(),
            absl::StatusCode::kInvalidArgument);

  LatencyModel::Options bad_weight = options;
  bad_weight.observation_weight = 0.0;
  EXPECT_EQ(LatencyModel::Create(bad_weight, points).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LatencyModelTest, ObservationMovesThePredictionByTheEwmaWeight) {
  auto model = CpuModel();  // weight 0.1; prediction at (1.0, 1) is 12 ms
  ASSERT_TRUE(model->Observe(1.0f, 1, absl::Milliseconds(20)).ok());
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 1), absl::Microseconds(12800));
  // Repeated observations converge on the observed time.
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(model->Observe(1.0f, 1, absl::Milliseconds(20)).ok());
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 1), absl::Milliseconds(20));
  // Faster observations pull it back down.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(model->Observe(1.0f, 1, absl::Milliseconds(14)).ok());
  EXPECT_LT(model->Predict(1.0f, 1), absl::Milliseconds(17));
  EXPECT_GT(model->Predict(1.0f, 1), absl::Milliseconds(14));
}

TEST(LatencyModelTest, OutliersAreClippedToTheRatio) {
  auto model = CpuModel();  // ratio 2: 1 s is treated as 24 ms
  ASSERT_TRUE(model->Observe(1.0f, 1, absl::Seconds(1)).ok());
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 1), absl::Microseconds(13200));
  auto fast = CpuModel();  // 1 us is treated as 6 ms
  ASSERT_TRUE(fast->Observe(1.0f, 1, absl::Microseconds(1)).ok());
  EXPECT_DURATION_NEAR(fast->Predict(1.0f, 1), absl::Microseconds(11400));
}

TEST(LatencyModelTest, ObservationBetweenGridPointsMovesThatPrediction) {
  auto model = CpuModel();
  // Between batch 2 and 4 and between levels 0.8 and 1.0: predicted 29 ms.
  const absl::Duration before = model->Predict(0.9f, 3);
  EXPECT_DURATION_NEAR(before, absl::Milliseconds(29));
  ASSERT_TRUE(model->Observe(0.9f, 3, absl::Milliseconds(39)).ok());
  EXPECT_DURATION_NEAR(model->Predict(0.9f, 3), absl::Milliseconds(30));
}

TEST(LatencyModelTest, ObservationOutsideTheGridIsNotApplied) {
  auto model = CpuModel();
  EXPECT_EQ(model->Observe(1.0f, 16, absl::Milliseconds(500)).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(model->Observe(0.3f, 1, absl::Milliseconds(1)).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(model->Observe(0.0f, 1, absl::Milliseconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Observe(1.0f, 0, absl::Milliseconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->Observe(1.0f, 1, absl::ZeroDuration()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 8), CpuTime(1.0f, 8));
  EXPECT_DURATION_NEAR(model->Predict(0.6f, 1), CpuTime(0.6f, 1));
}

TEST(LatencyModelTest, StaysMonotoneAfterObservations) {
  auto model = CpuModel();
  // The largest cell observed much faster than its neighbours.
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(model->Observe(1.0f, 8, absl::Milliseconds(5)).ok());
  EXPECT_GE(model->Predict(1.0f, 8), model->Predict(1.0f, 4));
  EXPECT_GE(model->Predict(1.0f, 8), model->Predict(0.8f, 8));
  EXPECT_DURATION_NEAR(model->Predict(1.0f, 8), CpuTime(0.8f, 8));
}

TEST(LatencyModelTest, SnapshotDoesNotChangeUnderItsHolder) {
  auto model = CpuModel();
  auto before = model->Snapshot();
  ASSERT_TRUE(model->Observe(1.0f, 1, absl::Milliseconds(20)).ok());
  EXPECT_DURATION_NEAR(before->Predict(1.0f, 1), CpuTime(1.0f, 1));
  EXPECT_GT(model->Snapshot()->Predict(1.0f, 1), before->Predict(1.0f, 1));
}

TEST(LatencyModelTest, SecondsByBatchListsEveryTableBatchSize) {
  auto model = CpuModel();
  auto by_batch = model->Snapshot()->SecondsByBatch(0.8f);
  ASSERT_EQ(by_batch.size(), 4u);
  EXPECT_NEAR(by_batch[1], 0.010, 1e-9);
  EXPECT_NEAR(by_batch[2], 0.018, 1e-9);
  EXPECT_NEAR(by_batch[4], 0.034, 1e-9);
  EXPECT_NEAR(by_batch[8], 0.066, 1e-9);
}

TEST(LatencyModelTest, ConcurrentObserveAndPredictSeeConsistentMonotoneTables) {
  auto model = CpuModel();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) {
      (void)model->Observe(i % 2 ? 1.0f : 0.6f, 1 + i % 8, absl::Milliseconds(5 + i % 50));
    }
    done = true;
  });
  int violations = 0;
  while (!done) {
    auto table = model->Snapshot();
    for (int b = 1; b < 8; ++b) {
      if (table->Predict(1.0f, b) > table->Predict(1.0f, b + 1)) ++violations;
      if (table->Predict(0.6f, b) > table->Predict(1.0f, b)) ++violations;
    }
  }
  writer.join();
  EXPECT_EQ(violations, 0);
}

}  // namespace
}  // namespace vitserve
