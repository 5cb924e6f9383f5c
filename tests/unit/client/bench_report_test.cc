#include "client/bench_report.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

constexpr int kOk = 0;
constexpr int kInvalidArgument = 3;
constexpr int kDeadlineExceeded = 4;
constexpr int kResourceExhausted = 8;
constexpr int kUnavailable = 14;

TEST(PercentileTest, NearestRankOnOneToHundred) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(NearestRankPercentile(v, 0), 1);
  EXPECT_EQ(NearestRankPercentile(v, 50), 50);
  EXPECT_EQ(NearestRankPercentile(v, 95), 95);
  EXPECT_EQ(NearestRankPercentile(v, 99), 99);
  EXPECT_EQ(NearestRankPercentile(v, 99.5), 100);
  EXPECT_EQ(NearestRankPercentile(v, 100), 100);
}

TEST(PercentileTest, SmallSamples) {
  EXPECT_EQ(NearestRankPercentile({7}, 50), 7);
  EXPECT_EQ(NearestRankPercentile({7}, 99), 7);
  // n = 3: p50 -> rank ceil(1.5) = 2; p95 -> rank ceil(2.85) = 3.
  EXPECT_EQ(NearestRankPercentile({1, 2, 30}, 50), 2);
  EXPECT_EQ(NearestRankPercentile({1, 2, 30}, 95), 30);
  // n = 20: p95 -> rank 19 exactly (not interpolated).
  std::vector<double> v;
  for (int i = 1; i <= 20; ++i) v.push_back(i * 10);
  EXPECT_EQ(NearestRankPercentile(v, 95), 190);
}

TEST(SummarizeTest, SortsAndSummarises) {
  const LatencySummary s = Summarize({0.4, 0.1, 0.3, 0.2});
  EXPECT_EQ(s.count, 4);
  EXPECT_DOUBLE_EQ(s.mean, 0.25);
  EXPECT_EQ(s.p50, 0.2);
  EXPECT_EQ(s.p95, 0.4);
  EXPECT_EQ(s.max, 0.4);
  const LatencySummary empty = Summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.p99, 0);
}

TEST(CodeNameTest, NamesGrpcCodes) {
  EXPECT_EQ(CodeName(kOk), "OK");
  EXPECT_EQ(CodeName(kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_EQ(CodeName(kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(CodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(CodeName(kClientDropped), "CLIENT_DROPPED");
  EXPECT_EQ(CodeName(99), "CODE_99");
}

BenchSample Sample(double latency_ms, int code, double budget_ms, float keep = 0, float acc = 0) {
  BenchSample s;
  s.latency_s = latency_ms / 1000.0;
  s.code = code;
  s.budget_ms = budget_ms;
  s.keep_rate = keep;
  s.expected_accuracy = acc;
  return s;
}

TEST(BenchReportTest, HandComputedScenario) {
  const std::vector<BenchSample> samples = {
      Sample(40, kOk, 50, 0.7f, 0.79f),   // met
      Sample(60, kOk, 50, 0.5f, 0.78f),   // OK but late: admitted, missed
      Sample(10, kOk, 0, 0.9f, 0.0f),     // no budget: met; no accuracy reported
      Sample(1, kResourceExhausted, 50),  // rejected at admission
      Sample(2, kDeadlineExceeded, 50),   // refused early (2 ms < 50 ms): rejected
      Sample(80, kDeadlineExceeded, 50),  // expired after its budget: admitted, missed
      Sample(3, kUnavailable, 0),         // rejected
      Sample(5, kInvalidArgument, 0),     // admitted, failed
      Sample(0, kClientDropped, 50),      // never sent: rejected, no latency
  };
  const BenchReport r = ComputeBenchReport(samples, /*elapsed_s=*/2.0);
  EXPECT_EQ(r.sent, 9);
  EXPECT_EQ(r.ok, 3);
  EXPECT_EQ(r.slo_met, 2);
  EXPECT_EQ(r.admitted, 5);  // 40, 60, 10, 80 (late DEADLINE_EXCEEDED), INVALID_ARGUMENT
  EXPECT_DOUBLE_EQ(r.throughput_rps, 1.5);
  EXPECT_DOUBLE_EQ(r.goodput_rps, 1.0);
  EXPECT_DOUBLE_EQ(r.attainment_all, 2.0 / 9.0);
  EXPECT_DOUBLE_EQ(r.attainment_admitted, 2.0 / 5.0);
  EXPECT_EQ(r.latency_ok.count, 3);
  EXPECT_DOUBLE_EQ(r.latency_ok.p50, 0.040);
  EXPECT_DOUBLE_EQ(r.latency_ok.max, 0.060);
  EXPECT_EQ(r.latency_all.count, 8);  // client drop excluded
  EXPECT_DOUBLE_EQ(r.latency_all.max, 0.080);
  // Floats are averaged as the decimals they print as (0.7f counts as 0.7).
  EXPECT_DOUBLE_EQ(r.mean_keep_rate, (0.7 + 0.5 + 0.9) / 3);
  EXPECT_DOUBLE_EQ(r.mean_expected_accuracy, (0.79 + 0.78) / 2);
  const std::map<std::string, int64_t> want = {{"RESOURCE_EXHAUSTED", 1},
                                               {"DEADLINE_EXCEEDED", 2},
                                               {"UNAVAILABLE", 1},
                                               {"INVALID_ARGUMENT", 1},
                                               {"CLIENT_DROPPED", 1}};
  EXPECT_EQ(r.errors_by_code, want);
}

TEST(BenchReportTest, MeansOfManyEqualFloatsPrintExactly) {
  std::vector<BenchSample> samples(715, Sample(5, kOk, 0, 0.7f, 0.74f));
  const BenchReport r = ComputeBenchReport(samples, 1.0);
  EXPECT_EQ(r.mean_keep_rate, 0.7);
  EXPECT_EQ(r.mean_expected_accuracy, 0.74);
}

TEST(BenchReportTest, BudgetBoundaryCountsAsMet) {
  const BenchReport r = ComputeBenchReport({Sample(50, kOk, 50)}, 1.0);
  EXPECT_EQ(r.slo_met, 1);
}

// Soak mix: injected bad / cancelled requests are counted apart and change no SLO figure.
TEST(BenchReportTest, InjectedRequestsAreCountedApart) {
  std::vector<BenchSample> samples = {Sample(40, kOk, 50), Sample(1, kResourceExhausted, 50)};
  const BenchReport plain = ComputeBenchReport(samples, 1.0);
  BenchSample bad = Sample(2, 3 /* INVALID_ARGUMENT */, 50);
  bad.injected = true;
  BenchSample cancelled = Sample(5, 1 /* CANCELLED */, 50);
  cancelled.injected = true;
  BenchSample finished_first = Sample(9, kOk, 50);
  finished_first.injected = true;
  samples.insert(samples.end(), {bad, cancelled, finished_first});
  const BenchReport r = ComputeBenchReport(samples, 1.0);
  EXPECT_EQ(r.sent, 5);
  EXPECT_EQ(r.injected, 3);
  EXPECT_EQ(r.injected_by_code.at("INVALID_ARGUMENT"), 1);
  EXPECT_EQ(r.injected_by_code.at("CANCELLED"), 1);
  EXPECT_EQ(r.injected_by_code.at("OK"), 1);
  EXPECT_EQ(r.ok, plain.ok);
  EXPECT_EQ(r.admitted, plain.admitted);
  EXPECT_DOUBLE_EQ(r.attainment_all, plain.attainment_all);
  EXPECT_DOUBLE_EQ(r.attainment_admitted, plain.attainment_admitted);
  EXPECT_EQ(r.errors_by_code, plain.errors_by_code);
  EXPECT_EQ(r.latency_all.count, plain.latency_all.count);
}

TEST(BenchReportTest, EmptyRunHasZeroRates) {
  const BenchReport r = ComputeBenchReport({}, 0.0);
  EXPECT_EQ(r.sent, 0);
  EXPECT_EQ(r.throughput_rps, 0);
  EXPECT_EQ(r.attainment_all, 0);
  EXPECT_EQ(r.attainment_admitted, 0);
}

}  // namespace
}  // namespace vitserve::client
