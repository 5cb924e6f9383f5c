// Load-test arithmetic for `vitclient bench`: percentiles and the report computed from
// the per-request samples. Pure functions, no I/O, no gRPC.
//
// Definitions (docs/client.md repeats them for users):
//  * latency: client-measured, from just before the call to its completion (seconds).
//  * a request meets its SLO when it succeeded (code 0) and, if it had a budget, its
//    latency is <= the budget.
//  * rejected at admission: RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining /
//    not ready), a DEADLINE_EXCEEDED answered before its budget had elapsed (the server
//    refused an unmeetable budget up front), or dropped by the client because
//    --max_inflight requests were already outstanding (code kClientDropped).
//    Everything else was admitted.
//  * throughput = OK responses / elapsed; goodput = SLO-meeting responses / elapsed.
//  * attainment (all) = met / sent; attainment (admitted) = met / admitted.
//  * percentiles use the nearest-rank method on all samples (no histogram buckets).
//  * injected samples (--bad_fraction / --cancel_fraction: deliberately invalid or
//    client-cancelled requests) count in `sent` and in injected_by_code only; every
//    other figure is over the regular requests.
#ifndef VITSERVE_CLIENT_BENCH_REPORT_H_
#define VITSERVE_CLIENT_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vitserve::client {

// Not a gRPC code: a request the load generator never sent because too many were
// outstanding (open loop only).
inline constexpr int kClientDropped = -1;

// Nearest-rank percentile of `sorted` (ascending, non-empty): the smallest sample such
// that at least p% of the samples are <= it. p in [0, 100]; p = 0 gives the minimum.
double NearestRankPercentile(const std::vector<double>& sorted, double p);

struct LatencySummary {
  int64_t count = 0;
  double mean = 0;  // seconds; all fields 0 when count == 0
  double p50 = 0;
  double p95 = 0;
  double p99 = 0;
  double max = 0;
};
LatencySummary Summarize(std::vector<double> samples);

struct BenchSample {
  double latency_s = 0;
  int code = 0;                 // grpc::StatusCode value, or kClientDropped
  double budget_ms = 0;         // 0 = no budget
  float keep_rate = 0;          // from the response (OK only)
  float expected_accuracy = 0;  // from the response (OK only), 0 = unknown
  bool injected = false;        // a deliberately bad or cancelled request (soak mix)
};

struct BenchReport {
  int64_t sent = 0;  // samples, including client drops
  int64_t ok = 0;
  int64_t admitted = 0;
  int64_t slo_met = 0;
  double elapsed_s = 0;
  double throughput_rps = 0;
  double goodput_rps = 0;
  double attainment_all = 0;                      // 0..1
  double attainment_admitted = 0;                 // 0..1 (0 when nothing was admitted)
  LatencySummary latency_ok;                      // successful requests
  LatencySummary latency_all;                     // every answered request (client drops excluded)
  std::map<std::string, int64_t> errors_by_code;  // code name -> count (non-OK only)
  double mean_keep_rate = 0;                      // over OK responses, rounded to 1e-6
  double mean_expected_accuracy = 0;              // over OK responses reporting one (> 0), to 1e-6
  int64_t injected = 0;                           // injected samples
  std::map<std::string, int64_t> injected_by_code;  // their codes, OK included
};

// Requires elapsed_s > 0 (otherwise rates are 0).
BenchReport ComputeBenchReport(const std::vector<BenchSample>& samples, double elapsed_s);

// "OK", "INVALID_ARGUMENT", ..., "CLIENT_DROPPED" for kClientDropped, "CODE_<n>" otherwise.
std::string CodeName(int code);

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_BENCH_REPORT_H_
