// ServerMetrics::ForModel handles (ModelMetrics) against the real prometheus-cpp registry:
// the handle path gives exactly the series and values of the string-keyed path, and those
// are the series and values of the implementation before handles existed (a golden file
// recorded at 08c94d6 from FillEverything); a handle is resolved once and stays put.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/server_metrics.h"
#include "tests/unit/metrics/metrics_test_util.h"

namespace vitserve {
namespace {

using metrics_test::FillEverything;
using metrics_test::Find;
using metrics_test::kGrpcNotFound;
using metrics_test::kGrpcResourceExhausted;
using metrics_test::NewMetrics;
using metrics_test::OkRequest;
using metrics_test::Parse;
using metrics_test::Sample;
using metrics_test::SortedExposition;
using metrics_test::Value;
using ::testing::IsEmpty;

constexpr char kGoldenPath[] = VITSERVE_METRICS_TESTDATA_DIR "/fill_everything.prom";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// FillEverything's sequence, through handles: one ForModel per (model, method) up front,
// then no name on any call.
void FillEverythingThroughHandles(ServerMetrics& m) {
  m.OnModelLoaded("deit_s_evit", "evit", "1");
  m.OnModelLoaded("deit_s_dense", "dense", "2");
  // OkRequest counts every request under method "evit", the dense model's included.
  ModelMetrics* evit = m.ForModel("deit_s_evit", "evit");
  ModelMetrics* dense = m.ForModel("deit_s_dense", "evit");
  ModelMetrics* missing = m.ForModel("no_such_model", "evit");
  for (float keep : {0.3f, 0.5f, 0.7f, 1.0f}) evit->OnRequestDone(OkRequest("", keep));
  RequestOutcome late = OkRequest("", 1.0f);
  late.budget_met = false;
  late.total_seconds = 0.4;
  dense->OnRequestDone(late);
  RequestOutcome rejected = OkRequest("", 0.5f);
  rejected.grpc_code = kGrpcResourceExhausted;
  evit->OnRequestDone(rejected);
  RequestOutcome not_found = OkRequest("", 1.0f);
  not_found.grpc_code = kGrpcNotFound;
  not_found.had_budget = false;
  missing->OnRequestDone(not_found);
  evit->OnBatch(4, 0.7f, 0.01);
  dense->OnBatch(1, 1.0f, 0.02);
  for (const char* reason : {kRejectQueueFull, kRejectDeadline, kRejectBudgetUnmeetable,
                             kRejectCancelled, kRejectDraining}) {
    evit->OnRejected(reason);
  }
  evit->SetQueueDepth(3);
  evit->SetLoad(120.0, 0.7f);
  evit->SetLatencyGuard(1.4, 0.05, 0.012);
  m.AddInFlight(2);
  evit->OnLatencyPrediction(0.010, 0.012);
  evit->OnLatencyPrediction(0.010, 0.009);
  evit->OnShadow(ShadowRecord{ShadowRecord::Outcome::kAgree, 0.02});
  evit->OnShadow(ShadowRecord{ShadowRecord::Outcome::kDisagree, 0.4});
  evit->OnShadow(ShadowRecord{ShadowRecord::Outcome::kSkipped});
}

// The sorted exposition after `fill`, against the golden file.
void ExpectGolden(void (*fill)(ServerMetrics&)) {
  const std::string golden = ReadFile(kGoldenPath);
  ASSERT_FALSE(golden.empty()) << kGoldenPath;
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  fill(*m);
  EXPECT_EQ(SortedExposition(m->Serialize()), golden);
}

TEST(ModelMetricsTest, StringPathGivesTheSeriesAndValuesOfBefore) { ExpectGolden(&FillEverything); }

TEST(ModelMetricsTest, HandlePathGivesTheSeriesAndValuesOfBefore) {
  ExpectGolden(&FillEverythingThroughHandles);
}

TEST(ModelMetricsTest, OneHandlePerModelAndMethodStableAcrossReloads) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  ModelMetrics* a = m->ForModel("a", "evit");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(m->ForModel("a", "evit"), a);
  EXPECT_NE(m->ForModel("a", "tome"), a);  // counts requests under another method label
  m->OnModelLoaded("b", "tome", "1");
  m->OnModelLoaded("a", "evit", "2");  // reload: the handle and its series stay
  EXPECT_EQ(m->ForModel("a", "evit"), a);
  a->OnRequestDone(OkRequest("", 0.5f));
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "a"}, {"method", "evit"}}), 1);
  EXPECT_EQ(Value(s, "vitserve_model_info", {{"model", "a"}, {"version", "2"}}), 1);
}

TEST(ModelMetricsTest, UnknownModelsShareOneBoundedHandleSet) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  ModelMetrics* first = m->ForModel("client_typo_0", "");
  for (int i = 1; i < 50; ++i) {
    EXPECT_EQ(m->ForModel(absl::StrCat("client_typo_", i), ""), first) << i;
  }
  EXPECT_NE(first, m->ForModel("a", ""));
  first->OnRejected(kRejectQueueFull);
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_rejections_total", {{"model", "_unknown"}}), 1);
  EXPECT_THAT(Find(s, "vitserve_queue_depth", {{"model", "client_typo_0"}}), IsEmpty());
}

// A handle is resolved when it is taken, not per call: one taken for a name before it was
// announced keeps recording under "_unknown" afterwards, while the string-keyed path
// (which resolves on every call) moves to the announced model.
TEST(ModelMetricsTest, HandleIsResolvedOnceNotPerCall) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  ModelMetrics* early = m->ForModel("late", "evit");
  m->OnModelLoaded("late", "evit", "1");
  early->OnBatch(2, 0.5f, 0.01);
  m->OnBatch("late", 3, 0.5f, 0.01);
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(Value(s, "vitserve_images_total", {{"model", "_unknown"}}), 2);
  EXPECT_EQ(Value(s, "vitserve_images_total", {{"model", "late"}}), 3);
}

TEST(ModelMetricsTest, HandlesCountEveryCallFromManyThreads) {
  std::unique_ptr<ServerMetrics> m = NewMetrics();
  ASSERT_NE(m, nullptr);
  m->OnModelLoaded("a", "evit", "1");
  ModelMetrics* a = m->ForModel("a", "evit");
  a->OnRequestDone(OkRequest("", 0.5f));
  const size_t series_after_one = Parse(m->Serialize()).size();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([a] {
      for (int i = 0; i < kPerThread; ++i) {
        a->OnRequestDone(OkRequest("", 0.5f));
        a->OnBatch(1, 0.5f, 0.001);
        a->SetQueueDepth(i);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::vector<Sample> s = Parse(m->Serialize());
  EXPECT_EQ(s.size(), series_after_one);  // no series added by repeated calls
  EXPECT_EQ(Value(s, "vitserve_requests_total", {{"model", "a"}, {"code", "OK"}}),
            1 + kThreads * kPerThread);
  EXPECT_EQ(Value(s, "vitserve_images_total", {{"model", "a"}}), kThreads * kPerThread);
  EXPECT_EQ(Value(s, "vitserve_keep_rate_count", {{"model", "a"}}), 1 + kThreads * kPerThread);
}

}  // namespace
}  // namespace vitserve
