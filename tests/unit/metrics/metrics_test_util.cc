// Shared helpers of the metrics tests: see metrics_test_util.h.
#include "tests/unit/metrics/metrics_test_util.h"

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace metrics_test {

// Parses the text format as prometheus-cpp writes it (no escaped quotes in our labels).
std::vector<Sample> Parse(const std::string& text) {
  std::vector<Sample> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line.front() == '#') continue;
    Sample s;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (brace != absl::string_view::npos && brace < space) {
      s.name = std::string(line.substr(0, brace));
      const size_t close = line.find('}', brace);
      for (absl::string_view kv :
           absl::StrSplit(line.substr(brace + 1, close - brace - 1), ',', absl::SkipEmpty())) {
        const size_t eq = kv.find('=');
        absl::string_view value = kv.substr(eq + 1);
        absl::ConsumePrefix(&value, "\"");
        absl::ConsumeSuffix(&value, "\"");
        s.labels[std::string(kv.substr(0, eq))] = std::string(value);
      }
    } else {
      s.name = std::string(line.substr(0, space));
    }
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &s.value)) << line;
    out.push_back(std::move(s));
  }
  return out;
}

// Samples named `name` whose labels include every pair of `labels`.
std::vector<Sample> Find(const std::vector<Sample>& samples, const std::string& name,
                         const std::map<std::string, std::string>& labels) {
  std::vector<Sample> out;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) out.push_back(s);
  }
  return out;
}

// The value of the single sample matching; fails the test when there is not exactly one.
double Value(const std::vector<Sample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels) {
  std::vector<Sample> found = Find(samples, name, labels);
  EXPECT_EQ(found.size(), 1u) << name;
  return found.empty() ? -1 : found.front().value;
}

std::unique_ptr<ServerMetrics> NewMetrics(const MetricsOptions& options) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> m = ServerMetrics::Create(options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

RequestRecord OkRequest(const std::string& model, float keep_rate) {
  RequestRecord r;
  r.model = model;
  r.method = "evit";
  r.grpc_code = kGrpcOk;
  r.queue_seconds = 0.002;
  r.compute_seconds = 0.010;
  r.total_seconds = 0.013;
  r.keep_rate = keep_rate;
  r.macs = 3'000'000;
  r.dense_macs = 4'600'000;
  r.had_budget = true;
  r.budget_met = true;
  r.top1_probability = 0.8f;
  r.expected_accuracy = 0.79;
  return r;
}

// Records at least one sample of every series family ServerMetrics defines.
void FillEverything(ServerMetrics& m) {
  m.OnModelLoaded("deit_s_evit", "evit", "1");
  m.OnModelLoaded("deit_s_dense", "dense", "2");
  for (float keep : {0.3f, 0.5f, 0.7f, 1.0f}) m.OnRequestDone(OkRequest("deit_s_evit", keep));
  RequestRecord late = OkRequest("deit_s_dense", 1.0f);
  late.budget_met = false;
  late.total_seconds = 0.4;
  m.OnRequestDone(late);
  RequestRecord rejected = OkRequest("deit_s_evit", 0.5f);
  rejected.grpc_code = kGrpcResourceExhausted;
  m.OnRequestDone(rejected);
  RequestRecord missing = OkRequest("no_such_model", 1.0f);
  missing.grpc_code = kGrpcNotFound;
  missing.had_budget = false;
  m.OnRequestDone(missing);
  m.OnBatch("deit_s_evit", 4, 0.7f, 0.01);
  m.OnBatch("deit_s_dense", 1, 1.0f, 0.02);
  for (const char* reason : {kRejectQueueFull, kRejectDeadline, kRejectBudgetUnmeetable,
                             kRejectCancelled, kRejectDraining}) {
    m.OnRejected("deit_s_evit", reason);
  }
  m.SetQueueDepth("deit_s_evit", 3);
  m.SetLoad("deit_s_evit", 120.0, 0.7f);
  m.SetLatencyGuard("deit_s_evit", 1.4, 0.05, 0.012);
  m.AddInFlight(2);
  m.OnLatencyPrediction("deit_s_evit", 0.010, 0.012);
  m.OnLatencyPrediction("deit_s_evit", 0.010, 0.009);
  m.OnShadow("deit_s_evit", ShadowRecord{ShadowRecord::Outcome::kAgree, 0.02});
  m.OnShadow("deit_s_evit", ShadowRecord{ShadowRecord::Outcome::kDisagree, 0.4});
  m.OnShadow("deit_s_evit", ShadowRecord{ShadowRecord::Outcome::kSkipped});
}

std::string SortedExposition(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "vitserve_process_resident_memory_bytes ")) continue;
    lines.emplace_back(line);
  }
  std::sort(lines.begin(), lines.end());
  return absl::StrCat(absl::StrJoin(lines, "\n"), "\n");
}

}  // namespace metrics_test
}  // namespace vitserve
