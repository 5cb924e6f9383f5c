// The serving core driven directly, without a gRPC server: admission, batching at the
// policy's keep-rate, answers, reload and draining, with the in-test model and the real
// preprocessor, scheduler and metrics.
#include "server/serving/serving_core.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
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

  bool WaitUntilDecoded() {
    const absl::Time give_up = absl::Now() + kTestTimeout;
    while (core_->decoding() > 0) {
      if (absl::Now() > give_up) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }
  // Holds a decode thread: a request with an undecodable image is refused on the decode
  // thread, through its `done`, which waits there until `release`.
  struct HeldDecodeThread {
    absl::Notification entered;
    absl::Notification release;
    absl::Status status;
  };
  void HoldDecodeThread(HeldDecodeThread& held) {
    ClassifyRequest bad = Request(1.0f, "held");
    bad.set_image("not an image");
    ASSERT_TRUE(core_
                    ->Admit(bad, absl::InfiniteFuture(), nullptr,
                            [&held](absl::StatusOr<ClassifyResponse> r) {
                              held.status = r.status();
                              held.entered.Notify();
                              held.release.WaitForNotificationWithTimeout(kTestTimeout);
                            })
                    .ok());
    ASSERT_TRUE(held.entered.WaitForNotificationWithTimeout(kTestTimeout));
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

// GetModelInfo reports the model's kernel choices as they are when asked: the real
// model's last line (the one-image split chooser) changes as it serves.
TEST_F(ServingCoreTest, ModelInfoKernelChoicesAreLive) {
  Start(FastOptions());
  absl::StatusOr<vitserve::v1::ModelInfo> before = core_->DescribeModel("tiny");
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->kernel_choices_size(), 2);
  EXPECT_EQ(before->kernel_choices(0), "fake kernel");
  model_->ClearRuns();
  ASSERT_TRUE(Admit(Request(1.0f, "a")).ok());
  ASSERT_EQ(answers_.WaitFor(1).size(), 1u);
  absl::StatusOr<vitserve::v1::ModelInfo> after = core_->DescribeModel("tiny");
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->kernel_choices_size(), 2);
  EXPECT_EQ(after->kernel_choices(1), "runs 1");
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
  // Admit returns before decoding: wait until the five are in the queue.
  ASSERT_TRUE(WaitUntilDecoded());
  model_->Release();
  auto results = answers_.WaitFor(6);
  ASSERT_EQ(results.size(), 6u);
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status();
  // The blocker alone, then one batch per keep-rate: three at 0.6, two at the default. Which
  // of the two runs first depends on which request the decode threads queued first.
  const std::vector<int> sizes = model_->batch_sizes();
  const std::vector<float> rates = model_->keep_rates();
  ASSERT_EQ(sizes.size(), 3u);
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_EQ(sizes[0], 1);
  std::vector<std::pair<int, float>> batches = {{sizes[1], rates[1]}, {sizes[2], rates[2]}};
  EXPECT_THAT(batches, UnorderedElementsAre(std::make_pair(3, 0.6f), std::make_pair(2, 0.7f)));
}

TEST_F(ServingCoreTest, ReloadSwapsTheVersionAndRefusesAnotherArchitecture) {
  Start(FastOptions());
  // Shared: if the release came late, the hook would outlive this test body.
  auto old_released = std::make_shared<std::atomic<bool>>(false);
  model_->OnDestroy([old_released] { *old_released = true; });
  ModelSpec next_spec = TinySpec();
  next_spec.version = "8";
  FakeModel* next = nullptr;
  ASSERT_TRUE(core_->ReloadModel(Served(next_spec, &next)).ok());
  EXPECT_EQ(core_->ModelSummaries()[0].version(), "8");
  // Nothing held the old version (no batch in flight), so the swap released it and
  // `model_` dangles from here on. (It used to be read after this point; ThreadSanitizer
  // reported the use after free.)
  EXPECT_TRUE(*old_released);
  model_ = nullptr;
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
}

ServingOptions OneDecodeThread(int max_queued) {
  ServingOptions options = FastOptions();
  options.decode_threads = 1;
  options.max_decode_queue_size = max_queued;
  return options;
}

TEST_F(ServingCoreTest, DecodeErrorIsAnsweredThroughDoneWithThePreprocessorsMessage) {
  Start(FastOptions());
  ClassifyRequest bad = Request(1.0f, "bad");
  bad.set_image("not an image");
  // Admit returns before decoding; the decode error is the request's answer.
  ASSERT_TRUE(Admit(bad).ok());
  auto results = answers_.WaitFor(1);
  ASSERT_EQ(results.size(), 1u);
  auto pre = Preprocessor::Create(TinySpec().preprocess, TinySpec().arch, {});
  ASSERT_TRUE(pre.ok());
  absl::Status direct = (*pre)->FromEncoded("not an image").status();
  ASSERT_EQ(direct.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[0].status(), direct);
  EXPECT_TRUE(model_->keep_rates().empty());
}

TEST_F(ServingCoreTest, FullDecodeQueueIsRefusedAtOnceAndAcceptedRequestsAnsweredOnce) {
  Start(OneDecodeThread(2));
  HeldDecodeThread held;
  HoldDecodeThread(held);
  ASSERT_TRUE(Admit(Request(1.0f, "b")).ok());
  ASSERT_TRUE(Admit(Request(1.0f, "c")).ok());
  EXPECT_EQ(core_->decoding(), 3);  // the held one, two waiting
  absl::Status full = Admit(Request(1.0f, "d"));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("decode queue full"));
  held.release.Notify();
  auto results = answers_.WaitFor(2);
  ASSERT_TRUE(WaitUntilDecoded());
  core_->Shutdown();  // nothing left to answer: "d" was never admitted
  results = answers_.WaitFor(0);
  ASSERT_EQ(results.size(), 2u);
  std::vector<std::string> ids;
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    ids.push_back(r->request_id());
  }
  EXPECT_THAT(ids, UnorderedElementsAre("b", "c"));
  EXPECT_EQ(held.status.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServingCoreTest, CancelledWhileWaitingToBeDecodedIsAnsweredWithoutRunning) {
  Start(OneDecodeThread(4));
  HeldDecodeThread held;
  HoldDecodeThread(held);
  std::atomic<bool> cancelled{false};
  ASSERT_TRUE(
      core_->Admit(Request(1.0f, "gone"), absl::InfiniteFuture(), &cancelled, answers_.Callback())
          .ok());
  cancelled = true;
  held.release.Notify();
  auto results = answers_.WaitFor(1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(results[0].status().message(), HasSubstr("waiting to be decoded"));
  EXPECT_TRUE(model_->keep_rates().empty());
}

TEST_F(ServingCoreTest, ShutdownAnswersRequestsWaitingToBeDecoded) {
  Start(OneDecodeThread(8));
  HeldDecodeThread held;
  HoldDecodeThread(held);
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(Admit(Request(1.0f, id)).ok());
  // Shutdown answers the three waiting, then waits for the held decode thread.
  std::thread stopper([this] { core_->Shutdown(); });
  auto results = answers_.WaitFor(3);
  held.release.Notify();
  stopper.join();
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  }
  EXPECT_EQ(Admit(Request(1.0f)).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(answers_.WaitFor(0).size(), 3u);  // answered once each, nothing more
  EXPECT_TRUE(model_->keep_rates().empty());
}

// The floor is mapped by the budget policy from the request's raw fields, with the
// calibration of the version that runs the batch: a reload while the request waits moves it.
TEST_F(ServingCoreTest, TheBudgetPolicyMapsTheAccuracyFloorWithTheServedVersion) {
  ServingOptions options = FastOptions();
  options.scheduler = SchedulerKind::kBudget;
  options.sweep_repeats = 1;
  options.sweep_warmup_runs = 0;
  Start(options);
  // Calibrated 0.6 at 0.5 and 0.8 at 1.0: 0.75 needs keep-rate 0.875 (above the default 0.7).
  ClassifyRequest accurate = Request(1.0f, "accurate");
  accurate.set_min_expected_accuracy(0.75f);
  ASSERT_TRUE(Admit(accurate).ok());
  auto results = answers_.WaitFor(1);
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_NEAR(results[0]->keep_rate(), 0.875f, 1e-4);
  // Unreachable on this version: refused at admission, as before.
  ClassifyRequest impossible = Request(1.0f);
  impossible.set_min_expected_accuracy(0.9f);
  absl::Status refused = Admit(impossible);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("above model 'tiny''s best expected top-1 0.8"));

  // Queued behind a held batch, then a reload whose calibration reaches 0.75 at 0.5.
  model_->Hold();
  ASSERT_TRUE(Admit(Request(1.0f, "blocker")).ok());
  ASSERT_TRUE(model_->WaitForRuns(2));
  ASSERT_TRUE(Admit(accurate).ok());
  ModelSpec next_spec = TinySpec();
  next_spec.version = "8";
  next_spec.calibration = {{"evit", 0.5f, 0.76, 0.9, 0}, {"evit", 1.0f, 0.8, 1.0, 0}};
  FakeModel* next = nullptr;
  ASSERT_TRUE(core_->ReloadModel(Served(next_spec, &next)).ok());
  model_->Release();
  // The old version goes when its held batch ends (on the batch thread): not to be touched
  // again, TearDown included.
  model_ = nullptr;
  results = answers_.WaitFor(3);
  ASSERT_EQ(results.size(), 3u);
  ASSERT_TRUE(results[2].ok()) << results[2].status();
  EXPECT_EQ(results[2]->request_id(), "accurate");
  // The new version's floor is its minimum 0.5: the request runs at the default 0.7.
  EXPECT_FLOAT_EQ(results[2]->keep_rate(), 0.7f);
  EXPECT_FLOAT_EQ(next->keep_rates().back(), 0.7f);
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
