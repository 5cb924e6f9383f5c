#include "client/budget_distribution.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(BudgetDistributionTest, Constant) {
  auto d = BudgetDistribution::Parse("50");
  ASSERT_TRUE(d.ok()) << d.status();
  std::mt19937_64 rng(1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(d->Sample(rng), 50.0);
  EXPECT_EQ(d->ToString(), "50");
  auto none = BudgetDistribution::Parse("0");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->Sample(rng), 0.0);
  auto frac = BudgetDistribution::Parse("12.5");
  ASSERT_TRUE(frac.ok());
  EXPECT_EQ(frac->Sample(rng), 12.5);
}

TEST(BudgetDistributionTest, UniformStaysInRangeAndCoversIt) {
  auto d = BudgetDistribution::Parse("uniform:20:100");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ToString(), "uniform:20:100");
  std::mt19937_64 rng(7);
  double lo = 1e9, hi = -1e9, sum = 0;
  constexpr int kN = 20000;
  for (int i = 0; i < kN; ++i) {
    const double v = d->Sample(rng);
    ASSERT_GE(v, 20.0);
    ASSERT_LE(v, 100.0);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  }
  EXPECT_LT(lo, 21.0);
  EXPECT_GT(hi, 99.0);
  // Mean 60, standard error 80/sqrt(12 * 20000) = 0.16: 1.0 is > 6 sigma.
  EXPECT_NEAR(sum / kN, 60.0, 1.0);
}

TEST(BudgetDistributionTest, ChoicePicksOnlyListedValuesAndAllOfThem) {
  auto d = BudgetDistribution::Parse("choice:30,100,300");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ToString(), "choice:30,100,300");
  std::mt19937_64 rng(3);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 3000; ++i) {
    const double v = d->Sample(rng);
    if (v == 30) {
      ++counts[0];
    } else if (v == 100) {
      ++counts[1];
    } else if (v == 300) {
      ++counts[2];
    } else {
      FAIL() << "unexpected value " << v;
    }
  }
  // Expected 1000 each; binomial sd ~26, so 850 is ~6 sigma.
  for (int c : counts) EXPECT_GT(c, 850);
}

TEST(BudgetDistributionTest, SameSeedSameSequence) {
  auto d = BudgetDistribution::Parse("uniform:1:2");
  ASSERT_TRUE(d.ok());
  std::mt19937_64 a(42), b(42), c(43);
  std::vector<double> sa, sb, sc;
  for (int i = 0; i < 5; ++i) {
    sa.push_back(d->Sample(a));
    sb.push_back(d->Sample(b));
    sc.push_back(d->Sample(c));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(BudgetDistributionTest, RejectsMalformedSpecs) {
  for (const char* bad : {"", "abc", "-5", "nan", "inf", "uniform:", "uniform:5", "uniform:10:5",
                          "uniform:0:5", "uniform:1:2:3", "uniform:a:b", "choice:", "choice:10,,20",
                          "choice:0", "choice:-1,5", "choice:10, 20", "normal:5:1", "5ms"}) {
    auto d = BudgetDistribution::Parse(bad);
    ASSERT_FALSE(d.ok()) << "\"" << bad << "\" was accepted";
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("uniform:LO:HI"), std::string::npos) << d.status();
  }
}

TEST(RandomTest, Uniform01InHalfOpenUnitInterval) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 10000; ++i) {
    const double u = Uniform01(rng);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(RandomTest, ExponentialGapMeanIsOneOverRate) {
  std::mt19937_64 rng(11);
  constexpr int kN = 40000;
  constexpr double kRate = 200.0;
  double sum = 0;
  for (int i = 0; i < kN; ++i) {
    const double g = ExponentialGap(rng, kRate);
    ASSERT_GE(g, 0.0);
    ASSERT_TRUE(std::isfinite(g));
    sum += g;
  }
  // Mean 5 ms, standard error 5 ms / sqrt(40000) = 0.025 ms; 0.15 ms is 6 sigma.
  EXPECT_NEAR(sum / kN, 1.0 / kRate, 0.00015);
}

}  // namespace
}  // namespace vitserve::client
