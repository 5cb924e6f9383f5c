#include "server/budget/latency_sweep.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kImageSize = 32;
constexpr int kChannels = 3;

// A model that computes nothing: each Run advances the fake clock by
// 10 ms · keep_rate · batch (+ `spike` on every `spike_every`-th call, counted from 0).
class FakeModel : public InferenceModel {
 public:
  explicit FakeModel(FakeClock* clock) : clock_(clock) {
    spec_.name = "fake";
    spec_.arch.image_size = kImageSize;
    spec_.arch.patch_size = 16;
    spec_.arch.in_chans = kChannels;
  }

  const ModelSpec& spec() const override { return spec_; }
  std::vector<BlockShape> block_shapes() const override { return {}; }
  std::string device() const override { return "cpu"; }

  absl::StatusOr<std::vector<ImageResult>> Run(absl::Span<const ImageTensor* const> images,
                                               float keep_rate) override {
    const int call = static_cast<int>(calls.size());
    calls.emplace_back(keep_rate, static_cast<int>(images.size()));
    for (const ImageTensor* image : images) {
      if (image->channels != kChannels || image->height != kImageSize ||
          image->width != kImageSize ||
          image->data.size() != static_cast<size_t>(kChannels * kImageSize * kImageSize)) {
        return absl::InvalidArgumentError("bad image shape");
      }
    }
    if (keep_rate == fail_at_keep_rate) return absl::InternalError("device fell over");
    first_image_sum = 0.0;
    for (float v : images[0]->data) first_image_sum += v;
    absl::Duration t = absl::Microseconds(std::lround(10000.0 * keep_rate * images.size()));
    if (spike_every > 0 && call % spike_every == 0) t += spike;
    clock_->Advance(t);
    return std::vector<ImageResult>(images.size());
  }

  std::vector<std::pair<float, int>> calls;
  float fail_at_keep_rate = -1.0f;
  int spike_every = 0;
  absl::Duration spike = absl::Milliseconds(100);
  double first_image_sum = 0.0;

 private:
  FakeClock* const clock_;
  ModelSpec spec_;
};

LatencySweepOptions SmallGrid() {
  LatencySweepOptions options;
  options.keep_rate_levels = {1.0f, 0.5f};
  options.batch_sizes = {1, 2, 4};
  options.repeats = 3;
  options.warmup_runs = 1;
  options.time_cap = absl::Hours(1);
  return options;
}

absl::Duration FakeTime(float k, int b) { return absl::Microseconds(std::lround(10000.0 * k * b)); }

TEST(LatencySweepTest, MeasuresEveryPointAfterWarmUp) {
  FakeClock clock;
  FakeModel model(&clock);
  auto result = RunLatencySweep(model, SmallGrid(), clock);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_FALSE(result->hit_time_cap);
  EXPECT_TRUE(result->extrapolated.empty());
  ASSERT_EQ(result->measured.size(), 6u);
  // Batch size by batch size, highest keep-rate first.
  const std::vector<std::pair<float, int>> order = {{1.0f, 1}, {0.5f, 1}, {1.0f, 2},
                                                    {0.5f, 2}, {1.0f, 4}, {0.5f, 4}};
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(result->measured[i].keep_rate, order[i].first);
    EXPECT_EQ(result->measured[i].batch_size, order[i].second);
    EXPECT_EQ(result->measured[i].duration, FakeTime(order[i].first, order[i].second));
  }
  // 1 warm-up + 3 timed runs per point, all of that point's shape.
  ASSERT_EQ(model.calls.size(), 24u);
  for (size_t i = 0; i < model.calls.size(); ++i) {
    EXPECT_EQ(model.calls[i], order[i / 4]);
  }
  // 4 runs of (1+0.5)·(1+2+4)·10 ms.
  EXPECT_EQ(result->elapsed, absl::Milliseconds(4 * 105));
}

TEST(LatencySweepTest, MedianIgnoresOneSlowRun) {
  FakeClock clock;
  FakeModel model(&clock);
  LatencySweepOptions options = SmallGrid();
  options.warmup_runs = 0;
  model.spike_every = 3;  // the first timed run of every point is 100 ms slower
  auto result = RunLatencySweep(model, options, clock);
  ASSERT_TRUE(result.ok()) << result.status();
  for (const LatencyPoint& p : result->measured) {
    EXPECT_EQ(p.duration, FakeTime(p.keep_rate, p.batch_size));
  }
}

TEST(LatencySweepTest, TimeCapExtrapolatesMissingBatchSizesLinearly) {
  FakeClock clock;
  FakeModel model(&clock);
  LatencySweepOptions options = SmallGrid();
  options.repeats = 1;
  // (1.0, 1) takes 20 ms with its warm-up, (0.5, 1) 10 ms more: the cap (25 ms) is seen
  // after the second point.
  options.time_cap = absl::Milliseconds(25);
  auto result = RunLatencySweep(model, options, clock);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->hit_time_cap);
  ASSERT_EQ(result->measured.size(), 2u);
  ASSERT_EQ(result->extrapolated.size(), 4u);
  // Scaled by batch / previous batch from the row below.
  EXPECT_EQ(result->extrapolated[0].duration, absl::Milliseconds(20));  // (1.0, 2)
  EXPECT_EQ(result->extrapolated[1].duration, absl::Milliseconds(10));  // (0.5, 2)
  EXPECT_EQ(result->extrapolated[2].duration, absl::Milliseconds(40));  // (1.0, 4)
  EXPECT_EQ(result->extrapolated[3].duration, absl::Milliseconds(20));  // (0.5, 4)
  EXPECT_EQ(result->elapsed, absl::Milliseconds(30));
  // The grid is complete.
  LatencyModel::Options model_options;
  model_options.keep_rate_levels = options.keep_rate_levels;
  model_options.batch_sizes = options.batch_sizes;
  auto latency_model = LatencyModel::Create(model_options, result->AllPoints());
  ASSERT_TRUE(latency_model.ok()) << latency_model.status();
  EXPECT_EQ((*latency_model)->Predict(1.0f, 4), absl::Milliseconds(40));
}

TEST(LatencySweepTest, TimeCapExtrapolatesMissingLevelsByTheMacsRatio) {
  FakeClock clock;
  FakeModel model(&clock);
  LatencySweepOptions options = SmallGrid();
  options.repeats = 1;
  options.time_cap = absl::Milliseconds(15);  // only the first point (20 ms) is measured
  std::vector<float> asked;
  options.macs_per_image = [&](float keep_rate) -> absl::StatusOr<uint64_t> {
    asked.push_back(keep_rate);
    // A fixed 200 plus 1000 per unit keep-rate: 1200 at 1.0, 700 at 0.5.
    return static_cast<uint64_t>(200 + std::lround(1000.0 * keep_rate));
  };
  auto result = RunLatencySweep(model, options, clock);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->measured.size(), 1u);
  ASSERT_EQ(result->extrapolated.size(), 5u);
  const absl::Duration at_half = absl::Seconds(0.010 * 700.0 / 1200.0);
  EXPECT_EQ(result->extrapolated[0].keep_rate, 0.5f);
  EXPECT_LE(absl::AbsDuration(result->extrapolated[0].duration - at_half), absl::Nanoseconds(1));
  EXPECT_EQ(result->extrapolated[1].duration, absl::Milliseconds(20));  // (1.0, 2)
  EXPECT_LE(absl::AbsDuration(result->extrapolated[4].duration - 4 * at_half),
            absl::Nanoseconds(4));              // (0.5, 4)
  EXPECT_THAT(asked, ElementsAre(0.5f, 1.0f));  // once per level
}

TEST(LatencySweepTest, WithoutMacsTheKeepRateIsTheProxy) {
  FakeClock clock;
  FakeModel model(&clock);
  LatencySweepOptions options = SmallGrid();
  options.time_cap = absl::ZeroDuration();  // the first point is still measured
  auto result = RunLatencySweep(model, options, clock);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->measured.size(), 1u);
  EXPECT_EQ(result->extrapolated[0].duration, absl::Milliseconds(5));  // 10 ms · 0.5 / 1.0
}

TEST(LatencySweepTest, InputsAreSeededAndHaveTheModelsShape) {
  LatencySweepOptions options = SmallGrid();
  options.batch_sizes = {1};
  FakeClock clock_a;
  FakeModel a(&clock_a);
  ASSERT_TRUE(RunLatencySweep(a, options, clock_a).ok());
  FakeClock clock_b;
  FakeModel b(&clock_b);
  ASSERT_TRUE(RunLatencySweep(b, options, clock_b).ok());
  EXPECT_EQ(a.first_image_sum, b.first_image_sum);
  options.seed += 1;
  FakeClock clock_c;
  FakeModel c(&clock_c);
  ASSERT_TRUE(RunLatencySweep(c, options, clock_c).ok());
  EXPECT_NE(a.first_image_sum, c.first_image_sum);
}

TEST(LatencySweepTest, ModelErrorNamesThePoint) {
  FakeClock clock;
  FakeModel model(&clock);
  model.fail_at_keep_rate = 0.5f;
  auto result = RunLatencySweep(model, SmallGrid(), clock);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(result.status().message(),
              HasSubstr("latency sweep at keep-rate 0.5, batch 1: device fell over"));
}

TEST(LatencySweepTest, RejectsBadOptions) {
  FakeClock clock;
  FakeModel model(&clock);
  LatencySweepOptions options = SmallGrid();
  options.keep_rate_levels.clear();
  EXPECT_EQ(RunLatencySweep(model, options, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = SmallGrid();
  options.batch_sizes = {0};
  EXPECT_EQ(RunLatencySweep(model, options, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = SmallGrid();
  options.repeats = 0;
  EXPECT_EQ(RunLatencySweep(model, options, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = SmallGrid();
  options.keep_rate_levels = {1.5f};
  EXPECT_EQ(RunLatencySweep(model, options, clock).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(model.calls.empty());
}

}  // namespace
}  // namespace vitserve
