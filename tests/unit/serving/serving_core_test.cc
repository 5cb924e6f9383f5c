// The serving core driven directly, without a gRPC server: admission, batching at the
// policy's keep-rate, answers, reload and draining, with the in-test model and the real
// preprocessor, scheduler and metrics.
#include "server/serving/serving_core.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/server_metrics.h"
#include "tests/unit/serving/fake_model.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using testing_fixtures::FakeModel;
using testing_fixtures::kTestTimeout;
using testing_fixtures::Request;
using testing_fixtures::TinySpec;
using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

// Collects the answers of admitted requests.
class Answers {
 public:
  ClassifyDone Callback() {
    return [this](absl::StatusOr<ClassifyResponse> r) {
      absl::MutexLock l(&mu_);
      results_.push_back(std::move(r));
    };
  }
  std::vector<absl::StatusOr<ClassifyResponse>> WaitFor(size_t n) {
    absl::MutexLock l(&mu_);
    auto done = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return results_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&done), kTestTimeout);
    return results_;
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::StatusOr<ClassifyResponse>> results_ ABSL_GUARDED_BY(mu_);
};

ServedModel Served(const ModelSpec& spec, FakeModel** raw) {
  auto model = std::make_unique<FakeModel>(spec);
  *raw = model.get();
  auto pre = Preprocessor::Create(spec.preprocess, spec.arch, {});
  EXPECT_TRUE(pre.ok()) << pre.status();
  return ServedModel{std::move(model), std::move(*pre)};
}

class ServingCoreTest : public ::testing::Test {
 protected:
  void Start(ServingOptions options, ServerMetrics* metrics = nullptr) {
    std::vector<ServedModel> models;
    models.push_back(Served(TinySpec(), &model_));
    auto core = ServingCore::Create(std::move(models), options, &clock_, metrics);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    model_->ClearRuns();  // the batch threads' warm-up
  }
  void TearDown() override {
    if (model_ != nullptr) model_->Release();
    if (core_ != nullptr) core_->Shutdown();
  }
  absl::Status Admit(const ClassifyRequest& request) {
    return core_->Admit(request, absl::InfiniteFuture(), nullptr, answers_.Callback());
  }

  RealClock clock_;
  FakeModel* model_ = nullptr;
  Answers answers_;
  std::unique_ptr<ServerMetrics> metrics_;  // outlives core_ (declared before it)
  std::unique_ptr<ServingCore> core_;
};

ServingOptions FastOptions() {
  ServingOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay = absl::ZeroDuration();
  return options;
}

TEST_F(ServingCoreTest, AdmittedRequestIsAnsweredAtTheModelsDefaultKeepRate) {
  Start(FastOptions());
  ClassifyRequest request = Request(1.0f, "a");
  request.set_top_k(2);
  ASSERT_TRUE(Admit(request).ok());
  auto results = answers_.WaitFor(1);
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[0]->request_id(), "a");
  EXPECT_EQ(results[0]->model(), "tiny");
  EXPECT_FLOAT_EQ(results[0]->keep_rate(), 0.7f);
  EXPECT_EQ(results[0]->predictions_size(), 2);
  EXPECT_THAT(model_->keep_rates(), ElementsAre(0.7f));
}

TEST_F(ServingCoreTest, RefusalsAreReturnedAndNeverAnswered) {
  Start(FastOptions());
  ClassifyRequest unknown = Request(1.0f);
  unknown.set_model("nope");
  absl::Status status = Admit(unknown);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("served models: tiny"));
  ClassifyRequest low = Request(1.0f);
  low.set_keep_rate(0.2f);  // below the model's minimum 0.5
  EXPECT_EQ(Admit(low).code(), absl::StatusCode::kInvalidArgument);
  core_->StartDraining();
  EXPECT_EQ(Admit(Request(1.0f)).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(core_->ModelSummaries()[0].ready());
  EXPECT_TRUE(model_->keep_rates().empty());
}

TEST_F(ServingCoreTest, RequestsAtOneKeepRateShareABatchAndRatesNeverMix) {
  Start(FastOptions());
  model_->Hold();
  ASSERT_TRUE(Admit(Request(1.0f, "blocker")).ok());
  ASSERT_TRUE(model_->WaitForRuns(1));
  // While the batch thread is busy: two at 0.6, two at the default (0.7), one at 0.6.
  for (float rate : {0.6f, 0.0f, 0.6f, 0.0f, 0.6f}) {
    ClassifyRequest r = Request(1.0f);
    r.set_keep_rate(rate);
    ASSERT_TRUE(Admit(r).ok());
  }
  model_->Release();
  auto results = answers_.WaitFor(6);
  ASSERT_EQ(results.size(), 6u);
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status();
  // The blocker alone, then one batch per keep-rate.
  EXPECT_THAT(model_->batch_sizes(), ElementsAre(1, 3, 2));
  EXPECT_THAT(model_->keep_rates(), UnorderedElementsAre(0.7f, 0.6f, 0.7f));
}

TEST_F(ServingCoreTest, ReloadSwapsTheVersionAndRefusesAnotherArchitecture) {
  Start(FastOptions());
  ModelSpec next_spec = TinySpec();
  next_spec.version = "8";
  FakeModel* next = nullptr;
  ASSERT_TRUE(core_->ReloadModel(Served(next_spec, &next)).ok());
  EXPECT_EQ(core_->ModelSummaries()[0].version(), "8");
  ModelSpec other = TinySpec();
  other.version = "9";
  other.arch.depth = 6;
  FakeModel* refused = nullptr;
  absl::Status status = core_->ReloadModel(Served(other, &refused));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("the architecture"));
  EXPECT_EQ(core_->ModelSummaries()[0].version(), "8");
  ASSERT_TRUE(Admit(Request(1.0f)).ok());
  ASSERT_EQ(answers_.WaitFor(1).size(), 1u);
  EXPECT_THAT(next->batch_sizes(), ElementsAre(1, 4, 4, 1));  // warm-ups, then the request
  EXPECT_TRUE(model_->batch_sizes().empty());
}

// Served models record through the handle ModelState::metrics; a request naming no served
// model is counted under the one bounded "_unknown" label, never under its own name.
TEST_F(ServingCoreTest, MetricsGoThroughEachModelsHandleAndUnknownNamesStayBounded) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Create({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  metrics_ = *std::move(metrics);
  Start(FastOptions(), metrics_.get());
  ASSERT_TRUE(Admit(Request(1.0f, "a")).ok());
  ASSERT_EQ(answers_.WaitFor(1).size(), 1u);
  for (const char* name : {"nope", "typo"}) {
    ClassifyRequest unknown = Request(1.0f);
    unknown.set_model(name);
    EXPECT_EQ(Admit(unknown).code(), absl::StatusCode::kNotFound);
  }
  const std::string text = metrics_->Serialize();
  EXPECT_THAT(text, HasSubstr("vitserve_requests_total{code=\"OK\",method=\"evit\","
                              "model=\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("vitserve_batches_total{model=\"tiny\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("vitserve_queue_depth{model=\"tiny\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("vitserve_in_flight_requests 0\n"));
  EXPECT_THAT(text, HasSubstr("vitserve_requests_total{code=\"NOT_FOUND\",method=\"other\","
                              "model=\"_unknown\"} 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("nope")));
  EXPECT_THAT(text, Not(HasSubstr("typo")));
}

}  // namespace
}  // namespace vitserve
