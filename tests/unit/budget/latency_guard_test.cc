#include "server/budget/latency_guard.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/util/clock.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<LatencyGuard> MakeGuard(const LatencyGuard::Options& options = {}) {
  absl::StatusOr<std::unique_ptr<LatencyGuard>> guard = LatencyGuard::Create(options);
  EXPECT_TRUE(guard.ok()) << guard.status();
  return std::move(*guard);
}

// `count` batches of 5 ms predicted taking `ratio` × that, one every 10 ms from the clock's
// time on (the clock advances).
void RunBatches(LatencyGuard& guard, FakeClock& clock, int count, double ratio) {
  const absl::Duration predicted = absl::Milliseconds(5);
  for (int i = 0; i < count; ++i) {
    clock.Advance(absl::Milliseconds(10));
    guard.ObserveBatch(clock.Now(), predicted, predicted * ratio);
  }
}

// `count` requests, one every `every`; each `miss_every`-th misses (0 = none misses).
void RunRequests(LatencyGuard& guard, FakeClock& clock, int count, absl::Duration every,
                 int miss_every) {
  for (int i = 1; i <= count; ++i) {
    clock.Advance(every);
    guard.ObserveRequest(clock.Now(), /*met=*/miss_every == 0 || i % miss_every != 0);
  }
}

TEST(LatencyGuardTest, CreateValidatesOptions) {
  LatencyGuard::Options bad;
  bad.target_miss_ratio = 0.0;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("target_miss_ratio"));
  bad = {};
  bad.miss_step = 0.0;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("miss_step"));
  bad = {};
  bad.gap_window = absl::ZeroDuration();
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("gap_window"));
  bad = {};
  bad.max_factor = 0.5;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("max_factor"));
  bad = {};
  bad.reserve_step = 0.0;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("reserve_step"));
  bad = {};
  bad.max_reserve = 1.0;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("max_reserve"));
  bad = {};
  bad.refusals_per_miss = 0.5;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("refusals_per_miss"));
  bad = {};
  bad.reserve_target_ratio = 0.0;
  EXPECT_THAT(LatencyGuard::Create(bad).status().message(), HasSubstr("reserve_target_ratio"));
  EXPECT_TRUE(LatencyGuard::Create({}).ok());
}

TEST(LatencyGuardTest, StartsNeutral) {
  auto guard = MakeGuard();
  const LatencyGuard::State s = guard->GetState();
  EXPECT_EQ(s.factor, 1.0);
  EXPECT_EQ(s.gap, 1.0);
  EXPECT_EQ(s.boost, 1.0);
  EXPECT_EQ(s.reserve, 0.0);
  EXPECT_EQ(guard->Reserve(), 0.0);
  EXPECT_EQ(s.miss_ratio, 0.0);
}

TEST(LatencyGuardTest, BatchesSlowerThanPredictedRaiseTheFactorWithinASecond) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunBatches(*guard, clock, 500, 1.0);  // 5 s as predicted
  EXPECT_NEAR(guard->Factor(), 1.0, 1e-9);
  // A neighbour takes a core: batches run 1.5x. After 1 s (one gap window) the factor
  // has absorbed 1 - e^-1 of it; after 3 s, 95 %.
  RunBatches(*guard, clock, 100, 1.5);
  EXPECT_NEAR(guard->Factor(), 1.0 + 0.5 * (1.0 - std::exp(-1.0)), 0.01);
  RunBatches(*guard, clock, 200, 1.5);
  EXPECT_NEAR(guard->Factor(), 1.5, 0.03);
  // The latency model catches up (predictions right again): the gap goes back to 1.
  RunBatches(*guard, clock, 500, 1.0);
  EXPECT_NEAR(guard->Factor(), 1.0, 0.01);
}

TEST(LatencyGuardTest, OverPredictionDoesNotLowerTheFactorBelowOne) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunBatches(*guard, clock, 300, 0.5);
  EXPECT_NEAR(guard->GetState().gap, 0.5, 1e-6);
  EXPECT_EQ(guard->Factor(), 1.0);
}

TEST(LatencyGuardTest, OneOutlierBatchIsClippedToTheObservationRatio) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunBatches(*guard, clock, 300, 1.0);
  clock.Advance(absl::Milliseconds(10));
  // Preempted for 100 ms: counted as 2x (10 ms), one batch among ~100 in the window.
  guard->ObserveBatch(clock.Now(), absl::Milliseconds(5), absl::Milliseconds(105));
  EXPECT_GT(guard->Factor(), 1.0);
  EXPECT_LT(guard->Factor(), 1.02);
}

TEST(LatencyGuardTest, MissesAboveTheTargetRaiseTheBoostWithinSeconds) {
  FakeClock clock;
  auto guard = MakeGuard();
  // 300 requests/s, 5 % missed (the 94-95 % in budget), for one second: 15 misses
  // and 285 met, of which the first 19 find the boost at its floor:
  // log(boost) = 0.05 * (15 - 266 * 0.005 / 0.995).
  RunRequests(*guard, clock, 300, absl::Microseconds(3333), 20);
  const double expected = std::exp(0.05 * (15 - 266 * 0.005 / 0.995));
  EXPECT_NEAR(guard->GetState().boost, expected, 1e-9);
  EXPECT_GT(guard->Factor(), 1.9);
  EXPECT_NEAR(guard->GetState().miss_ratio, 0.05, 0.01);
}

TEST(LatencyGuardTest, RelaxesSlowlyWhenMissesStop) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunRequests(*guard, clock, 300, absl::Microseconds(3333), 20);
  const double raised = guard->Factor();
  // One second without misses takes back 300 * 0.05 * 0.005/0.995 = 0.075 of log(boost).
  RunRequests(*guard, clock, 300, absl::Microseconds(3333), 0);
  EXPECT_NEAR(std::log(guard->Factor()), std::log(raised) - 300 * 0.05 * 0.005 / 0.995, 1e-9);
  EXPECT_GT(guard->Factor(), 1.7);
  // ~10 s later it is back to 1 (and stays there: never below).
  RunRequests(*guard, clock, 3000, absl::Microseconds(3333), 0);
  EXPECT_EQ(guard->Factor(), 1.0);
  EXPECT_LT(guard->GetState().miss_ratio, 1e-3);
}

// A refusal costs the client as much as a miss: the boost rises only while misses
// outnumber refusals, so misses a larger factor cannot prevent do not drive the policy into
// refusing everything.
TEST(LatencyGuardTest, RefusalsOffsetMisses) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunRequests(*guard, clock, 10, absl::Milliseconds(5), 1);  // 10 misses: e^0.5
  EXPECT_NEAR(guard->Factor(), std::exp(0.5), 1e-9);
  for (int i = 0; i < 4; ++i) guard->ObserveRefusal(clock.Now());
  EXPECT_NEAR(guard->Factor(), std::exp(0.3), 1e-9);
  // As many refusals as misses: no net rise (met requests then pull it down).
  for (int i = 0; i < 100; ++i) {
    clock.Advance(absl::Milliseconds(5));
    guard->ObserveRequest(clock.Now(), /*met=*/false);
    guard->ObserveRefusal(clock.Now());
  }
  EXPECT_NEAR(guard->Factor(), std::exp(0.3), 1e-9);
  for (int i = 0; i < 20; ++i) guard->ObserveRefusal(clock.Now());
  EXPECT_EQ(guard->Factor(), 1.0);  // never below 1
}

TEST(LatencyGuardTest, MissesAtTheTargetHoldTheBoostSteady) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunRequests(*guard, clock, 10, absl::Milliseconds(5), 1);  // raise it first
  const double raised = guard->Factor();
  // Exactly the target: one miss in 200 requests, for 20 periods.
  RunRequests(*guard, clock, 4000, absl::Milliseconds(5), 200);
  EXPECT_NEAR(guard->Factor(), raised, 1e-6);
}

TEST(LatencyGuardTest, FactorIsCappedAndCombinesGapAndBoost) {
  FakeClock clock;
  LatencyGuard::Options options;
  options.max_factor = 2.5;
  auto guard = MakeGuard(options);
  RunRequests(*guard, clock, 10, absl::Milliseconds(5), 1);  // 10 misses: boost e^0.5
  EXPECT_NEAR(guard->Factor(), std::exp(0.5), 1e-9);
  RunBatches(*guard, clock, 500, 1.4);  // gap 1.4: 1.4 * 1.65 = 2.31
  EXPECT_NEAR(guard->Factor(), 1.4 * std::exp(0.5), 0.01);
  RunRequests(*guard, clock, 100, absl::Milliseconds(5), 1);  // boost capped at 2.5
  EXPECT_NEAR(guard->GetState().boost, 2.5, 1e-9);
  EXPECT_EQ(guard->Factor(), 2.5);
}

// The reserve: +1 % of the budget per miss, −1 % × 0.002/0.998 per met request.
constexpr double kRelax = 0.01 * 0.002 / 0.998;

TEST(LatencyGuardTest, MissesRaiseTheReserveAndMetRequestsTakeItBack) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunRequests(*guard, clock, 10, absl::Milliseconds(2), 1);  // 10 misses
  EXPECT_NEAR(guard->Reserve(), 0.10, 1e-12);
  // 499 met requests undo one miss.
  RunRequests(*guard, clock, 499, absl::Milliseconds(2), 0);
  EXPECT_NEAR(guard->Reserve(), 0.09, 1e-9);
  // At its target (one miss in 500) it holds.
  RunRequests(*guard, clock, 5000, absl::Milliseconds(2), 500);
  EXPECT_NEAR(guard->Reserve(), 0.09, 1e-6);
  // Without misses, 500 requests/s: 0.09 is gone after 0.09 / (500 × kRelax) = 9 s, and it
  // never goes below 0.
  RunRequests(*guard, clock, 4480, absl::Milliseconds(2), 0);
  EXPECT_GT(guard->Reserve(), 0.0);
  RunRequests(*guard, clock, 40, absl::Milliseconds(2), 0);
  EXPECT_EQ(guard->Reserve(), 0.0);
  EXPECT_EQ(guard->GetState().reserve, 0.0);
}

// A CPU hog: 10 % of 500 requests/s miss. Within the first 100 ms (5 misses) the policy
// keeps ~5 % of every budget free; it stops at max_reserve whatever the misses.
TEST(LatencyGuardTest, ReserveFollowsAMissBurstWithinASecondUpToItsCap) {
  FakeClock clock;
  LatencyGuard::Options options;
  options.max_reserve = 0.25;
  auto guard = MakeGuard(options);
  RunRequests(*guard, clock, 50, absl::Milliseconds(2), 10);
  // 5 misses; the 9 met requests before the first find the reserve at 0, 36 follow misses.
  EXPECT_NEAR(guard->Reserve(), 0.05 - 36 * kRelax, 1e-9);
  RunRequests(*guard, clock, 450, absl::Milliseconds(2), 10);
  EXPECT_EQ(guard->Reserve(), 0.25);
  // The factor's boost is a separate controller on the same misses.
  EXPECT_GT(guard->GetState().boost, 1.0);
}

// A reserve raised by misses (here at start-up) must not lock the policy into refusing
// everything: each refusal takes back 1/50 of a miss step.
TEST(LatencyGuardTest, RefusalsRelaxTheReserve) {
  FakeClock clock;
  auto guard = MakeGuard();
  RunRequests(*guard, clock, 45, absl::Milliseconds(2), 1);  // 45 misses: the cap, 0.3
  EXPECT_NEAR(guard->Reserve(), 0.3, 1e-12);
  for (int i = 0; i < 1000; ++i) guard->ObserveRefusal(clock.Now());
  EXPECT_NEAR(guard->Reserve(), 0.1, 1e-9);
  for (int i = 0; i < 501; ++i) guard->ObserveRefusal(clock.Now());
  EXPECT_EQ(guard->Reserve(), 0.0);
}

TEST(LatencyGuardTest, MissRatioIsAnExponentiallyWeightedWindow) {
  FakeClock clock;
  auto guard = MakeGuard();  // miss_window 2 s
  for (int i = 0; i < 100; ++i) guard->ObserveRequest(clock.Now(), /*met=*/i >= 10);
  EXPECT_NEAR(guard->GetState().miss_ratio, 0.1, 1e-12);
  clock.Advance(absl::Seconds(2));  // one window: old requests weigh e^-1
  guard->ObserveRequest(clock.Now(), /*met=*/true);
  const double w = std::exp(-1.0);
  EXPECT_NEAR(guard->GetState().miss_ratio, 10 * w / (100 * w + 1), 1e-9);
}

TEST(LatencyGuardTest, TimeGoingBackwardsDoesNotInflate) {
  FakeClock clock(absl::FromUnixSeconds(100));
  auto guard = MakeGuard();
  guard->ObserveBatch(clock.Now(), absl::Milliseconds(5), absl::Milliseconds(5));
  guard->ObserveBatch(clock.Now() - absl::Seconds(10), absl::Milliseconds(5),
                      absl::Milliseconds(5));
  EXPECT_NEAR(guard->GetState().gap, 1.0, 1e-12);
  // Ignored: non-positive durations.
  guard->ObserveBatch(clock.Now(), absl::ZeroDuration(), absl::Milliseconds(5));
  guard->ObserveBatch(clock.Now(), absl::Milliseconds(5), absl::ZeroDuration());
  EXPECT_NEAR(guard->GetState().gap, 1.0, 1e-12);
}

}  // namespace
}  // namespace vitserve
