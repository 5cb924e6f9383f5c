#include "server/scheduler/arrival_rate.h"

#include <cmath>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(ArrivalRateEstimatorTest, ZeroBeforeTheFirstArrival) {
  ArrivalRateEstimator rate(absl::Seconds(1));
  EXPECT_EQ(rate.RatePerSecond(kT0), 0.0);
}

TEST(ArrivalRateEstimatorTest, SteadyArrivalsConvergeToTheirRate) {
  ArrivalRateEstimator rate(absl::Milliseconds(500));
  absl::Time t = kT0;
  for (int i = 0; i < 1000; ++i) {  // 100 per second for 10 s (20 time constants)
    rate.Record(t);
    t += absl::Milliseconds(10);
  }
  // Between arrivals the estimate moves within one arrival's weight (1 / tau = 2 / s).
  EXPECT_NEAR(rate.RatePerSecond(t - absl::Milliseconds(5)), 100.0, 1.5);
}

TEST(ArrivalRateEstimatorTest, DecaysWithItsTimeConstantAfterArrivalsStop) {
  ArrivalRateEstimator rate(absl::Seconds(1));
  rate.Record(kT0);
  rate.Record(kT0);
  EXPECT_DOUBLE_EQ(rate.RatePerSecond(kT0), 2.0);
  EXPECT_NEAR(rate.RatePerSecond(kT0 + absl::Seconds(1)), 2.0 * std::exp(-1.0), 1e-12);
  EXPECT_NEAR(rate.RatePerSecond(kT0 + absl::Seconds(10)), 2.0 * std::exp(-10.0), 1e-12);
  // Reading does not change the state; a new arrival adds 1 / tau to the decayed value.
  rate.Record(kT0 + absl::Seconds(1));
  EXPECT_NEAR(rate.RatePerSecond(kT0 + absl::Seconds(1)), 2.0 * std::exp(-1.0) + 1.0, 1e-12);
}

TEST(ArrivalRateEstimatorTest, EarlierTimesCountAsTheLastOne) {
  ArrivalRateEstimator rate(absl::Seconds(2));
  rate.Record(kT0);
  rate.Record(kT0 - absl::Seconds(5));  // out of order: as if at kT0, no growth
  EXPECT_DOUBLE_EQ(rate.RatePerSecond(kT0), 1.0);
  EXPECT_DOUBLE_EQ(rate.RatePerSecond(kT0 - absl::Seconds(1)), 1.0);  // no negative decay
}

TEST(ArrivalRateEstimatorTest, NonPositiveTimeConstantMeansOneSecond) {
  ArrivalRateEstimator rate(absl::ZeroDuration());
  rate.Record(kT0);
  EXPECT_DOUBLE_EQ(rate.RatePerSecond(kT0), 1.0);
  EXPECT_NEAR(rate.RatePerSecond(kT0 + absl::Seconds(1)), std::exp(-1.0), 1e-12);
}

}  // namespace
}  // namespace vitserve
