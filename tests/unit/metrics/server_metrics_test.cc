// ServerMetrics against the real prometheus-cpp registry and exposer, and the real
// `promtool check metrics` linter: no mocks.
#include "server/metrics/server_metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/metrics_test_util.h"

namespace vitserve {
namespace {

using metrics_test::FillEverything;
using metrics_test::Find;
using metrics_test::kGrpcInvalidArgument;
using metrics_test::kGrpcNotFound;
using metrics_test::NewMetrics;
using metrics_test::OkRequest;
using metrics_test::Parse;
using metrics_test::Sample;
using metrics_test::Value;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kPromtool[] = VITSERVE_PROMTOOL_PATH;

// Runs `command` through the shell; returns its exit status and combined output.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(ServerMetricsTest, PromtoolCheckMetricsReportsNothing) {
  ASSERT_STRNE(kPromtool, "") << "promtool not found at configure time (Debian: apt-get install "
                                 "prometheus); this test needs the real linter";
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  FillEverything(*m);
  const std::string text = m->Serialize();

  // Every family has samples, so the linter sees every name, type and unit.
  const std::vector<Sample> samples = Parse(text);
  for (const char* family : {"vitserve_requests_total",
                             "vitserve_request_duration_seconds_bucket",
                             "vitserve_queue_duration_seconds_count",
                             "vitserve_compute_duration_seconds_sum",
                             "vitserve_batch_compute_duration_seconds_count",
                             "vitserve_images_total",
                             "vitserve_batches_total",
                             "vitserve_batch_size_bucket",
                             "vitserve_batch_keep_rate_count",
                             "vitserve_macs_total",
                             "vitserve_dense_macs_total",
                             "vitserve_request_macs_bucket",
                             "vitserve_keep_rate_bucket",
                             "vitserve_latency_budget_total",
                             "vitserve_rejections_total",
                             "vitserve_queue_depth",
                             "vitserve_arrival_rate",
                             "vitserve_keep_rate_cap",
                             "vitserve_latency_safety_factor",
                             "vitserve_budget_reserve_ratio",
                             "vitserve_budget_miss_ratio",
                             "vitserve_in_flight_requests",
                             "vitserve_model_info",
                             "vitserve_latency_model_abs_error_seconds_bucket",
                             "vitserve_latency_model_relative_error_bucket",
                             "vitserve_latency_model_predictions_total",
                             "vitserve_latency_model_predicted_seconds_total",
                             "vitserve_latency_model_observed_seconds_total",
                             "vitserve_expected_accuracy_bucket",
                             "vitserve_shadow_comparisons_total",
                             "vitserve_shadow_kl_divergence_bucket",
                             "vitserve_top1_probability_bucket",
                             "vitserve_process_resident_memory_bytes"}) {
    EXPECT_THAT(Find(samples, family), Not(IsEmpty())) << family;
  }
  // Every series name carries the prefix.
  for (const Sample& s : samples) EXPECT_EQ(s.name.rfind("vitserve_", 0), 0u) << s.name;

  const std::string path = testing::TempDir() + "/vitserve_metrics.prom";
  {
    std::ofstream out(path);
    out << text;
  }
  auto [status, output] = RunCommand(absl::StrCat(kPromtool, " check metrics < ", path));
  EXPECT_EQ(status, 0) << output;
  EXPECT_EQ(output, "") << "promtool check metrics must report nothing; text was:\n" << text;
  std::remove(path.c_str());
}

TEST(ServerMetricsTest, PromtoolFlagsABadExpositionSoTheCheckAboveCanFail) {
  ASSERT_STRNE(kPromtool, "");
  const std::string path = testing::TempDir() + "/bad_metrics.prom";
  {
    std::ofstream out(path);
    out << "# HELP vitserve_requests Requests.\n# TYPE vitserve_requests counter\n"
           "vitserve_requests 1\n";
  }
  auto [status, output] = RunCommand(absl::StrCat(kPromtool, " check metrics < ", path));
  EXPECT_THAT(output, HasSubstr("_total")) << output;
  std::remove(path.c_str());
}

TEST(ServerMetricsTest, RequestCountersAddUpByModelMethodAndCode) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  m->OnModelLoaded("b", "tome", "1");
  for (int i = 0; i < 5; ++i) m->OnRequestDone(OkRequest("a", 0.7f));
  RequestRecord bad = OkRequest("a", 0.7f);
  bad.grpc_code = kGrpcInvalidArgument;
  bad.had_budget = false;
  for (int i = 0; i < 2; ++i) m->OnRequestDone(bad);
  RequestRecord on_b = OkRequest("b", 0.5f);
  on_b.method = "tome";
  m->OnRequestDone(on_b);

  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(
      Value(s, "vitserve_requests_total", {{"model", "a"}, {"method", "evit"}, {"code", "OK"}}), 5);
  EXPECT_EQ(Value(s, "vitserve_requests_total",
                  {{"model", "a"}, {"method", "evit"}, {"code", "INVALID_ARGUMENT"}}),
            2);
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "b"}, {"method", "tome"}}), 1);
  // MACs count successful requests only.
  EXPECT_EQ(Value(s, "vitserve_macs_total", {{"model", "a"}}), 5 * 3'000'000.0);
  EXPECT_EQ(Value(s, "vitserve_dense_macs_total", {{"model", "a"}}), 5 * 4'600'000.0);
  EXPECT_EQ(Value(s, "vitserve_request_macs_count", {{"model", "a"}}), 5);
  EXPECT_EQ(Value(s, "vitserve_request_duration_seconds_count", {{"model", "a"}}), 5);
  EXPECT_DOUBLE_EQ(Value(s, "vitserve_request_duration_seconds_sum", {{"model", "a"}}), 5 * 0.013);
  // Budgets: 5 met on a (the failures had none), 1 met on b, nothing missed.
  EXPECT_EQ(Value(s, "vitserve_latency_budget_total", {{"model", "a"}, {"outcome", "met"}}), 5);
  EXPECT_THAT(Find(s, "vitserve_latency_budget_total", {{"outcome", "missed"}}), IsEmpty());
  EXPECT_EQ(Value(s, "vitserve_expected_accuracy_count", {{"model", "b"}}), 1);
}

TEST(ServerMetricsTest, HistogramBucketsPlaceFloatKeepRatesOnTheirBoundary) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "dynamicvit", "1");
  // 0.3f is 0.30000001192... as a double; it must still count in le="0.3".
  m->OnRequestDone(OkRequest("a", 0.3f));
  m->OnRequestDone(OkRequest("a", 0.7f));
  m->OnRequestDone(OkRequest("a", 1.0f));
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_keep_rate_bucket", {{"model", "a"}, {"le", "0.2"}}), 0);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_bucket", {{"model", "a"}, {"le", "0.3"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_bucket", {{"model", "a"}, {"le", "0.7"}}), 2);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_bucket", {{"model", "a"}, {"le", "0.9"}}), 2);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_bucket", {{"model", "a"}, {"le", "1"}}), 3);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_count", {{"model", "a"}}), 3);
  // top-1 probability split by keep-rate level, one series per level used.
  EXPECT_EQ(
      Value(s, "vitserve_top1_probability_count", {{"model", "a"}, {"keep_rate_level", "0.3"}}), 1);
  EXPECT_EQ(
      Value(s, "vitserve_top1_probability_count", {{"model", "a"}, {"keep_rate_level", "1.0"}}), 1);
  EXPECT_EQ(Find(s, "vitserve_top1_probability_count").size(), 3u);
  // Request latency 0.013 s: above the 0.01 bucket, inside 0.025.
  EXPECT_EQ(Value(s, "vitserve_request_duration_seconds_bucket", {{"model", "a"}, {"le", "0.01"}}),
            0);
  EXPECT_EQ(Value(s, "vitserve_request_duration_seconds_bucket", {{"model", "a"}, {"le", "0.025"}}),
            3);
}

TEST(ServerMetricsTest, BatchesCountImagesAndSizes) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  m->OnBatch("a", 8, 0.5f, 0.02);
  m->OnBatch("a", 3, 0.5f, 0.01);
  m->OnBatch("a", 1, 1.0f, 0.005);
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_batches_total", {{"model", "a"}}), 3);
  EXPECT_EQ(Value(s, "vitserve_images_total", {{"model", "a"}}), 12);
  EXPECT_EQ(Value(s, "vitserve_batch_size_bucket", {{"model", "a"}, {"le", "2"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_batch_size_bucket", {{"model", "a"}, {"le", "4"}}), 2);
  EXPECT_EQ(Value(s, "vitserve_batch_size_bucket", {{"model", "a"}, {"le", "8"}}), 3);
  EXPECT_EQ(Value(s, "vitserve_batch_size_sum", {{"model", "a"}}), 12);
  EXPECT_DOUBLE_EQ(Value(s, "vitserve_batch_compute_duration_seconds_sum", {{"model", "a"}}),
                   0.035);
  EXPECT_EQ(Value(s, "vitserve_batch_keep_rate_bucket", {{"model", "a"}, {"le", "0.5"}}), 2);
}

TEST(ServerMetricsTest, LabelValuesStayBounded) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  for (int i = 0; i < 50; ++i) {
    RequestRecord r = OkRequest(absl::StrCat("client_typo_", i), 1.0f);
    r.grpc_code = kGrpcNotFound;
    m->OnRequestDone(r);
  }
  RequestRecord odd_method = OkRequest("a", 1.0f);
  odd_method.method = "Classify";
  m->OnRequestDone(odd_method);
  m->OnRejected("a", "some new reason");
  m->OnRejected("a", kRejectQueueFull);

  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "_unknown"}, {"code", "NOT_FOUND"}}),
            50);
  for (const Sample& sample : s) {
    auto it = sample.labels.find("model");
    if (it != sample.labels.end()) {
      EXPECT_THAT(it->second, Not(HasSubstr("client_typo"))) << sample.name;
    }
  }
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "a"}, {"method", "other"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_rejections_total", {{"model", "a"}, {"reason", "other"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_rejections_total", {{"model", "a"}, {"reason", "queue_full"}}), 1);
}

TEST(ServerMetricsTest, ModelInfoIsReplacedOnReload) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  m->OnModelLoaded("a", "evit", "2");
  const std::vector<Sample> s = Parse(m->Serialize());
  ASSERT_EQ(Find(s, "vitserve_model_info").size(), 1u);
  EXPECT_EQ(Value(s, "vitserve_model_info", {{"model", "a"}, {"method", "evit"}, {"version", "2"}}),
            1);
}

TEST(ServerMetricsTest, GaugesLatencyModelAndShadow) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  m->SetQueueDepth("a", 7);
  m->SetQueueDepth("a", 4);
  m->SetLoad("a", 1600.0, 0.3f);
  m->SetLoad("a", 850.5, 0.8f);
  m->SetLatencyGuard("a", 2.0, 0.3, 0.5);
  m->SetLatencyGuard("a", 1.25, 0.02, 0.004);
  m->AddInFlight(3);
  m->AddInFlight(-1);
  m->OnLatencyPrediction("a", 0.010, 0.015);         // under-predicted by 5 ms (50 %)
  m->OnLatencyPrediction("a", 0.020, 0.019);         // over-predicted by 1 ms (5 %)
  m->OnLatencyPrediction("a", 0.020, std::nan(""));  // ignored
  m->OnShadow("a", ShadowRecord{ShadowRecord::Outcome::kAgree, 0.01});
  m->OnShadow("a", ShadowRecord{ShadowRecord::Outcome::kAgree, 0.03});
  m->OnShadow("a", ShadowRecord{ShadowRecord::Outcome::kDisagree, 0.7});
  m->OnShadow("a", ShadowRecord{ShadowRecord::Outcome::kSkipped});

  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_queue_depth", {{"model", "a"}}), 4);
  EXPECT_EQ(Value(s, "vitserve_arrival_rate", {{"model", "a"}}), 850.5);
  EXPECT_FLOAT_EQ(Value(s, "vitserve_keep_rate_cap", {{"model", "a"}}), 0.8f);
  EXPECT_EQ(Value(s, "vitserve_latency_safety_factor", {{"model", "a"}}), 1.25);
  EXPECT_EQ(Value(s, "vitserve_budget_reserve_ratio", {{"model", "a"}}), 0.02);
  EXPECT_EQ(Value(s, "vitserve_budget_miss_ratio", {{"model", "a"}}), 0.004);
  EXPECT_EQ(Value(s, "vitserve_in_flight_requests"), 2);
  EXPECT_EQ(Value(s, "vitserve_latency_model_predictions_total",
                  {{"model", "a"}, {"direction", "under"}}),
            1);
  EXPECT_EQ(
      Value(s, "vitserve_latency_model_predictions_total", {{"model", "a"}, {"direction", "over"}}),
      1);
  EXPECT_EQ(Value(s, "vitserve_latency_model_abs_error_seconds_count", {{"model", "a"}}), 2);
  EXPECT_NEAR(Value(s, "vitserve_latency_model_abs_error_seconds_sum", {{"model", "a"}}), 0.006,
              1e-12);
  EXPECT_EQ(
      Value(s, "vitserve_latency_model_relative_error_bucket", {{"model", "a"}, {"le", "0.1"}}), 1);
  EXPECT_EQ(
      Value(s, "vitserve_latency_model_relative_error_bucket", {{"model", "a"}, {"le", "0.5"}}), 2);
  EXPECT_NEAR(Value(s, "vitserve_latency_model_predicted_seconds_total", {{"model", "a"}}), 0.030,
              1e-12);
  EXPECT_NEAR(Value(s, "vitserve_latency_model_observed_seconds_total", {{"model", "a"}}), 0.034,
              1e-12);
  EXPECT_EQ(Value(s, "vitserve_shadow_comparisons_total", {{"model", "a"}, {"outcome", "agree"}}),
            2);
  EXPECT_EQ(
      Value(s, "vitserve_shadow_comparisons_total", {{"model", "a"}, {"outcome", "disagree"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_shadow_comparisons_total", {{"model", "a"}, {"outcome", "skipped"}}),
            1);
  EXPECT_EQ(Value(s, "vitserve_shadow_kl_divergence_count", {{"model", "a"}}), 3);
  // Resident memory of this test process: at least a megabyte, less than the machine.
  const double rss = Value(s, "vitserve_process_resident_memory_bytes");
  EXPECT_GT(rss, 1 << 20);
  EXPECT_LT(rss, 1e12);
}

TEST(ServerMetricsTest, ConcurrentRecordingLosesNothing) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  m->OnModelLoaded("a", "evit", "1");
  m->OnModelLoaded("b", "evit", "1");
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      const std::string model = t % 2 == 0 ? "a" : "b";
      for (int i = 0; i < kPerThread; ++i) {
        m->AddInFlight(1);
        m->OnRequestDone(OkRequest(model, 0.1f * static_cast<float>(1 + i % 10)));
        m->OnBatch(model, 1, 0.5f, 0.001);
        m->AddInFlight(-1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "a"}}), kThreads / 2 * kPerThread);
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "b"}}), kThreads / 2 * kPerThread);
  EXPECT_EQ(Value(s, "vitserve_images_total", {{"model", "a"}}), kThreads / 2 * kPerThread);
  EXPECT_EQ(Value(s, "vitserve_in_flight_requests"), 0);
  double top1_count = 0;
  for (const Sample& x : Find(s, "vitserve_top1_probability_count")) top1_count += x.value;
  EXPECT_EQ(top1_count, kThreads * kPerThread);
  EXPECT_EQ(Find(s, "vitserve_top1_probability_count").size(), 20u);  // 2 models x 10 levels
}

// Fetches http://127.0.0.1:port/metrics with a plain socket; returns the whole response.
std::string HttpGetMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n = 0;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

TEST(ServerMetricsTest, ExposerServesTheSameTextOnAFreeLoopbackPort) {
  MetricsOptions options;
  options.bind_address = "127.0.0.1:0";
  std::unique_ptr<ServerMetrics> m = NewMetrics(options);
  ASSERT_NE(m, nullptr);
  ASSERT_GT(m->port(), 0);
  m->OnModelLoaded("served", "tome", "7");
  m->OnRequestDone(OkRequest("served", 0.6f));
  const std::string response = HttpGetMetrics(m->port());
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response, HasSubstr("vitserve_model_info{method=\"tome\",model=\"served\","
                                  "version=\"7\"} 1"));
  EXPECT_THAT(response, HasSubstr("vitserve_process_resident_memory_bytes "));

  // The same port cannot be bound twice: UNAVAILABLE, not a crash.
  MetricsOptions taken;
  taken.bind_address = absl::StrCat("127.0.0.1:", m->port());
  absl::StatusOr<std::unique_ptr<ServerMetrics>> second = ServerMetrics::Create(taken);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(ServerMetricsTest, NoExposerWithoutAddressAndBadAddressesAreRejected) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->port(), 0);
  for (const char* bad : {"127.0.0.1", "127.0.0.1:http", ":9090", "127.0.0.1:70000"}) {
    MetricsOptions options;
    options.bind_address = bad;
    EXPECT_EQ(ServerMetrics::Create(options).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace vitserve
