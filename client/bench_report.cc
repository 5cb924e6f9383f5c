#include "client/bench_report.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/json_writer.h"

namespace vitserve::client {
namespace {

constexpr int kOk = 0;
constexpr int kDeadlineExceeded = 4;
constexpr int kResourceExhausted = 8;
constexpr int kUnavailable = 14;
constexpr int kMaxGrpcCode = 16;  // UNAUTHENTICATED
constexpr double kMsPerSecond = 1000.0;
constexpr double kMeanScale = 1e6;  // mean keep-rate / accuracy rounded to 1e-6

// The double nearest to the float's shortest decimal form: 0.7f -> 0.7, not
// 0.699999988, so that means of server-reported floats print as users expect.
double FloatAsDecimal(float v) { return std::strtod(JsonFloat(v).c_str(), nullptr); }

bool RejectedAtAdmission(const BenchSample& s) {
  switch (s.code) {
    case kClientDropped:
    case kResourceExhausted:
    case kUnavailable:
      return true;
    case kDeadlineExceeded:
      return s.budget_ms > 0 && s.latency_s * kMsPerSecond < s.budget_ms;
    default:
      return false;
  }
}

}  // namespace

double NearestRankPercentile(const std::vector<double>& sorted, double p) {
  const double n = static_cast<double>(sorted.size());
  const double rank = std::ceil(p * n / 100.0);
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.count = static_cast<int64_t>(samples.size());
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  s.p50 = NearestRankPercentile(samples, 50);
  s.p95 = NearestRankPercentile(samples, 95);
  s.p99 = NearestRankPercentile(samples, 99);
  s.max = samples.back();
  return s;
}

std::string CodeName(int code) {
  if (code == kClientDropped) return "CLIENT_DROPPED";
  if (code < kOk || code > kMaxGrpcCode) return absl::StrCat("CODE_", code);
  // absl::StatusCode values equal gRPC codes.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

BenchReport ComputeBenchReport(const std::vector<BenchSample>& samples, double elapsed_s) {
  BenchReport r;
  r.sent = static_cast<int64_t>(samples.size());
  r.elapsed_s = elapsed_s;
  std::vector<double> ok_latencies;
  std::vector<double> all_latencies;
  double keep_sum = 0;
  double acc_sum = 0;
  int64_t acc_count = 0;
  for (const BenchSample& s : samples) {
    if (s.injected) {
      ++r.injected;
      ++r.injected_by_code[CodeName(s.code)];
      continue;
    }
    if (s.code != kClientDropped) all_latencies.push_back(s.latency_s);
    if (!RejectedAtAdmission(s)) ++r.admitted;
    if (s.code != kOk) {
      ++r.errors_by_code[CodeName(s.code)];
      continue;
    }
    ++r.ok;
    ok_latencies.push_back(s.latency_s);
    keep_sum += FloatAsDecimal(s.keep_rate);
    if (s.expected_accuracy > 0) {
      acc_sum += FloatAsDecimal(s.expected_accuracy);
      ++acc_count;
    }
    if (s.budget_ms <= 0 || s.latency_s * kMsPerSecond <= s.budget_ms) ++r.slo_met;
  }
  if (elapsed_s > 0) {
    r.throughput_rps = r.ok / elapsed_s;
    r.goodput_rps = r.slo_met / elapsed_s;
  }
  if (r.sent > r.injected) {
    r.attainment_all = static_cast<double>(r.slo_met) / static_cast<double>(r.sent - r.injected);
  }
  if (r.admitted > 0) r.attainment_admitted = static_cast<double>(r.slo_met) / r.admitted;
  // Means of float inputs carry no more than float precision; rounding to 1e-6 keeps
  // summation noise (0.6999999999999921) out of the report.
  const auto round6 = [](double v) { return std::round(v * kMeanScale) / kMeanScale; };
  if (r.ok > 0) r.mean_keep_rate = round6(keep_sum / r.ok);
  if (acc_count > 0) r.mean_expected_accuracy = round6(acc_sum / acc_count);
  r.latency_ok = Summarize(std::move(ok_latencies));
  r.latency_all = Summarize(std::move(all_latencies));
  return r;
}

}  // namespace vitserve::client
