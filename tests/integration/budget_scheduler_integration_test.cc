// The latency-budget scheduler end to end: the real vitserve binary (--scheduler=budget,
// the default) on loopback with a real model, real gRPC clients.
//
// Budgets are chosen from the server's own latency table (GetModelInfo), not from
// wall-clock guesses, so the test holds on a loaded machine: a "tight" budget lies between
// the guarded batch-of-1 time at the model's minimum keep-rate and at 1.0, so the server
// can only meet it below 1.0; a "hopeless" one lies below the guarded time at the minimum.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"
#include "tests/integration/test_model_repository.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

constexpr absl::Duration kStartupTimeout = absl::Seconds(180);
constexpr absl::Duration kRpcTimeout = absl::Seconds(60);
constexpr absl::Duration kExitTimeout = absl::Seconds(60);
// The server's BudgetPolicy safety terms (InferenceServiceOptions defaults).
constexpr double kSafetyFraction = 0.1;
constexpr double kSafetyMarginMs = 1.0;

// Larger than the suite's tiny model, so that a batch takes several ms and the
// differences between keep-rates dwarf the policy's fixed 1 ms margin and the admission
// path's own time on a loaded machine. Many tokens and small weights (0.8 MB a block), so
// that a batch of 1 is compute-bound and its time follows its token count: with 64 tokens
// and 256-wide blocks (3 MB each) it was bound by reading the weights, keep-rate 0.25 ran
// 0.73x of dense here and 0.89x on a CI machine, and the 1 ms left between the guarded
// minimum and the budget was eaten by the admission path there (all 20 bursts refused).
// 12 blocks (was 6): on the 2-vCPU Zen 5 VM (2026-12-08) six blocks ran in 2.8 ms at 0.25
// and 5.2 ms dense (guarded), the ~2 ms between the guarded minimum and the burst's budget
// did not cover the dispatch of the one admitted request, and every burst was refused in
// about half of the runs (the same at 89cff72); with 12, 5.3 and 10.3 ms: 0 of 9 failed.
TestModelOptions BudgetModel() {
  TestModelOptions o;
  o.name = "budget";
  o.image_size = 64;
  o.patch_size = 4;  // 256 patches
  o.embed_dim = 128;
  o.depth = 12;
  o.num_heads = 4;
  o.default_keep_rate = 0.7f;
  o.min_keep_rate = 0.25f;
  return o;
}

vitserve::v1::Tensor RandomTensor(int seed) {
  const int s = BudgetModel().image_size;
  vitserve::v1::Tensor t;
  for (int d : {3, s, s}) t.add_shape(d);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (int i = 0; i < 3 * s * s; ++i) t.add_data(dist(gen));
  return t;
}

class BudgetSchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = MakeTempDir("vitserve_budget_");
    ASSERT_TRUE(dir.ok()) << dir.status();
    work_dir_ = new std::string(*dir);
    const std::string repo = *work_dir_ + "/models";
    ASSERT_TRUE(WriteTestModel(repo, BudgetModel()).ok());
    stderr_path_ = new std::string(*work_dir_ + "/vitserve.stderr");
    absl::StatusOr<std::unique_ptr<Subprocess>> p =
        Subprocess::Start({VITSERVE_BINARY, absl::StrCat("--model_repository=", repo),
                           "--host=127.0.0.1", "--port=0", "--metrics_port=-1", "--threads=1",
                           "--scheduler=budget", "--sweep_time_cap_s=10", "--max_queue_delay_ms=2",
                           // No latency guard (its factor and reserve are not in ModelInfo):
                           // the tests compute the server's guarded times from the table.
                           "--budget_miss_target=0"},
                          *stderr_path_);
    ASSERT_TRUE(p.ok()) << p.status();
    process_ = p->release();
    absl::StatusOr<std::string> line = process_->WaitForLine(kListeningPrefix, kStartupTimeout);
    ASSERT_TRUE(line.ok()) << line.status() << ReadFileOrEmpty(*stderr_path_);
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(std::string(absl::StripPrefix(*line, kListeningPrefix)),
                            grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    if (process_ != nullptr) {
      process_->Signal(SIGTERM);
      absl::StatusOr<int> code = process_->Wait(kExitTimeout);
      EXPECT_TRUE(code.ok() && *code == 0) << ReadFileOrEmpty(*stderr_path_);
    }
    delete channel_;
    delete process_;
    if (work_dir_ != nullptr) RemoveTree(*work_dir_);
    delete work_dir_;
    delete stderr_path_;
    channel_ = nullptr;
    process_ = nullptr;
    work_dir_ = nullptr;
    stderr_path_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(channel_, nullptr) << "the server did not start"; }

  static std::unique_ptr<vitserve::v1::InferenceService::Stub> Stub() {
    return vitserve::v1::InferenceService::NewStub(*channel_);
  }

  static grpc::Status Classify(const ClassifyRequest& request, ClassifyResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    return Stub()->Classify(&ctx, request, response);
  }

  // The server's guarded batch-of-1 time (ms) at the highest and lowest grid keep-rate;
  // `info_out` (optional) receives the whole ModelInfo.
  static void GuardedTimesMs(double* dense_ms, double* min_ms,
                             vitserve::v1::ModelInfo* info_out = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    vitserve::v1::ModelInfo info;
    ASSERT_TRUE(Stub()->GetModelInfo(&ctx, {}, &info).ok());
    if (info_out != nullptr) *info_out = info;
    ASSERT_GE(info.grid_size(), 2);
    auto guarded = [](const vitserve::v1::KeepRatePoint& p) {
      auto it = p.latency_seconds_by_batch().find(1);
      EXPECT_NE(it, p.latency_seconds_by_batch().end()) << "no latency table at " << p.keep_rate();
      const double ms = it == p.latency_seconds_by_batch().end() ? 0.0 : it->second * 1e3;
      return ms * (1.0 + kSafetyFraction) + kSafetyMarginMs;
    };
    *dense_ms = guarded(info.grid(0));
    *min_ms = guarded(info.grid(info.grid_size() - 1));
  }

  static std::string* work_dir_;
  static std::string* stderr_path_;
  static Subprocess* process_;
  static std::shared_ptr<grpc::Channel>* channel_;
};

std::string* BudgetSchedulerTest::work_dir_ = nullptr;
std::string* BudgetSchedulerTest::stderr_path_ = nullptr;
Subprocess* BudgetSchedulerTest::process_ = nullptr;
std::shared_ptr<grpc::Channel>* BudgetSchedulerTest::channel_ = nullptr;

TEST_F(BudgetSchedulerTest, ModelInfoCarriesTheLatencyTable) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  vitserve::v1::ModelInfo info;
  ASSERT_TRUE(Stub()->GetModelInfo(&ctx, {}, &info).ok());
  ASSERT_GT(info.grid_size(), 0);
  for (const vitserve::v1::KeepRatePoint& p : info.grid()) {
    ASSERT_EQ(p.latency_seconds_by_batch().size(), 4u) << p.keep_rate();  // 1, 2, 4, 8
    double previous = 0.0;
    for (uint32_t b : {1u, 2u, 4u, 8u}) {
      const double s = p.latency_seconds_by_batch().at(b);
      EXPECT_GT(s, 0.0);
      EXPECT_GE(s, previous) << "not monotone in batch size at keep-rate " << p.keep_rate();
      previous = s;
    }
  }
  EXPECT_THAT(ReadFileOrEmpty(*stderr_path_), HasSubstr("latency sweep"));
}

TEST_F(BudgetSchedulerTest, GenerousBudgetAtLightLoadRunsDense) {
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(1);
  request.set_latency_budget_ms(5000.0f);
  ClassifyResponse response;
  grpc::Status status = Classify(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FLOAT_EQ(response.keep_rate(), 1.0f);
}

// Neither a budget nor a client deadline: nothing to choose by, so the model's configured
// default. (A client deadline alone counts as a budget: the policy then picks the best
// keep-rate that meets it, 1.0 when there is time.)
TEST_F(BudgetSchedulerTest, NoBudgetNoDeadlineRunsAtTheModelDefault) {
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(2);
  ClassifyResponse response;
  grpc::ClientContext ctx;  // no deadline
  ASSERT_TRUE(Stub()->Classify(&ctx, request, &response).ok());
  EXPECT_FLOAT_EQ(response.keep_rate(), BudgetModel().default_keep_rate);
}

// The guarded time (ms) the table in `info` predicts for a batch of `n` at `keep_rate`
// (a grid level): the largest table batch size <= n, so a lower bound; 0 when unknown.
double GuardedMsAt(const vitserve::v1::ModelInfo& info, float keep_rate, uint32_t n) {
  for (const vitserve::v1::KeepRatePoint& p : info.grid()) {
    if (std::fabs(p.keep_rate() - keep_rate) > 1e-4f) continue;
    double seconds = 0;
    uint32_t best = 0;
    for (const auto& [batch, s] : p.latency_seconds_by_batch()) {
      if (batch <= n && batch > best) {
        best = batch;
        seconds = s;
      }
    }
    return seconds * 1e3 * (1.0 + kSafetyFraction) + kSafetyMarginMs;
  }
  return 0.0;
}

// Every accepted request runs below keep-rate 1.0 (1.0 cannot meet the budget even alone)
// and finishes within its budget -- unless the batch's compute itself overran the
// latency model's guarded prediction, which no scheduler can prevent on a machine whose
// cores are shared (the server counts those in vitserve_latency_model_predictions_total
// {direction="under"}); such a request must still have started in time.
//
// Only the first few requests of a burst can be served in time (the rest are refused at
// once, correctly), so a stall of the server's threads longer than the budget's slack
// over the minimum keep-rate (a few ms; seen once on a loaded 2-core CI machine) refuses
// the whole burst, as it should. The burst is therefore tried a few times; a server that
// never serves any of them still fails.
TEST_F(BudgetSchedulerTest, TightBudgetsInABurstAreMetBelowFullKeepRate) {
  double dense_ms = 0, min_ms = 0, budget_ms = 0;
  vitserve::v1::ModelInfo info;
  constexpr int kBurst = 24;
  // Usually one or two requests of the first burst fit; the rest are refused at once.
  // The admitted one must start within ~2 ms of arriving while 24 client threads share
  // the 2 cores. In one fresh-clone CI run no request of 5 bursts came back OK (the
  // refusals saw one admitted request ahead, so it was admitted and then missed its
  // deadline). More bursts, with a pause between them, make "none accepted" point at the
  // scheduler rather than at one slow moment of the machine.
  constexpr int kAttempts = 20;
  std::vector<ClassifyResponse> accepted;
  std::string first_refusal;
  for (int attempt = 0; attempt < kAttempts && accepted.empty(); ++attempt) {
    if (attempt > 0) absl::SleepFor(absl::Milliseconds(50));
    // The server refines its table as batches run: read it again before every burst.
    GuardedTimesMs(&dense_ms, &min_ms, &info);
    ASSERT_LT(min_ms, dense_ms) << "the model is not faster at its minimum keep-rate";
    // Between the two: met only below 1.0 even alone; more room than the minimum needs.
    // 85 % of the way to the dense time (it was 75 %, and the server ran its latency guard:
    // under ctest -j2 the remaining 9.48 ms once fell under a guarded minimum of 9.65 ms and
    // every burst was refused; with --gtest_repeat=3 the guard's factor reached 1.5 and the
    // second repeat failed the same way). 1.0 stays out of reach: the budget is below the
    // guarded dense time and the remaining budget only shrinks from here.
    budget_ms = min_ms + 0.85 * (dense_ms - min_ms);
    absl::Mutex mu;
    std::vector<grpc::Status> statuses;
    std::vector<std::thread> threads;
    for (int i = 0; i < kBurst; ++i) {
      threads.emplace_back([&, i] {
        ClassifyRequest request;
        *request.mutable_tensor() = RandomTensor(100 + kBurst * attempt + i);
        request.set_latency_budget_ms(static_cast<float>(budget_ms));
        ClassifyResponse response;
        grpc::Status status = Classify(request, &response);
        absl::MutexLock lock(&mu);
        statuses.push_back(status);
        if (status.ok()) accepted.push_back(response);
      });
    }
    for (std::thread& t : threads) t.join();
    for (const grpc::Status& status : statuses) {
      const grpc::StatusCode code = status.error_code();
      // Refused requests are refused for their budget (or an overflowing queue), nothing else.
      EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                  code == grpc::StatusCode::RESOURCE_EXHAUSTED)
          << code << ": " << status.error_message();
      if (!status.ok() && first_refusal.empty()) first_refusal = status.error_message();
    }
  }
  ASSERT_FALSE(accepted.empty()) << "every request of " << kAttempts
                                 << " bursts was refused; budget " << budget_ms
                                 << " ms (guarded batch-of-1: " << min_ms << " ms at the minimum, "
                                 << dense_ms << " ms at 1.0); first refusal: " << first_refusal;
  int overran = 0;
  for (const ClassifyResponse& r : accepted) {
    const double compute_ms = r.timing().compute_seconds() * 1e3;
    const double guarded_ms = GuardedMsAt(info, r.keep_rate(), r.batch_size());
    if (compute_ms > guarded_ms) {
      ++overran;
      EXPECT_LT(r.timing().queue_seconds() * 1e3, budget_ms);
    } else {
      // The plan is exact under the fake clock (tests/unit/budget); here a batch thread
      // woken on a loaded 2-core machine may start a little after its planned time
      // (seen: 0.05 ms late with 2 test binaries, a training job and a fuzzer running).
      constexpr double kDispatchJitterMs = 2.0;
      EXPECT_LE(r.timing().total_seconds() * 1e3, budget_ms + kDispatchJitterMs)
          << "keep-rate " << r.keep_rate() << ", batch " << r.batch_size() << ", compute "
          << compute_ms << " ms (guarded prediction " << guarded_ms << " ms)";
    }
    EXPECT_LT(r.keep_rate(), 1.0f);
    EXPECT_GE(r.keep_rate(), BudgetModel().min_keep_rate - 1e-6f);
  }
  std::cerr << "budget " << budget_ms << " ms (guarded batch-of-1: " << min_ms << " ms at "
            << BudgetModel().min_keep_rate << ", " << dense_ms << " ms at 1.0): " << accepted.size()
            << " of " << kBurst << " accepted, " << overran
            << " with compute over the prediction\n";
}

TEST_F(BudgetSchedulerTest, HopelessBudgetIsRejectedAtOnceWithThePredictedTime) {
  double dense_ms = 0, min_ms = 0;
  GuardedTimesMs(&dense_ms, &min_ms);
  // Below the guarded time at the minimum keep-rate: no keep-rate can meet it. Large
  // enough that the request is normally queued before it expires; on a loaded machine it
  // may expire first (also DEADLINE_EXCEEDED, without the prediction), so a few tries.
  const double budget_ms = 0.8 * min_ms;
  bool saw_prediction = false;
  for (int attempt = 0; attempt < 10 && !saw_prediction; ++attempt) {
    ClassifyRequest request;
    *request.mutable_tensor() = RandomTensor(200 + attempt);
    request.set_latency_budget_ms(static_cast<float>(budget_ms));
    ClassifyResponse response;
    grpc::Status status = Classify(request, &response);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
    saw_prediction = status.error_message().find("predicted compute time") != std::string::npos;
  }
  EXPECT_TRUE(saw_prediction) << "no early rejection naming the predicted time";
}

// End-to-end budgets: gRPC sends the client's remaining time (grpc-timeout) when the call
// starts, so time the client spent before sending counts. A deadline set 1 s ahead and used
// only when 0.8 x the guarded minimum-keep-rate time is left is refused at once with the
// prediction, although latency_budget_ms alone (5 s) would have been ample.
TEST_F(BudgetSchedulerTest, ClientDeadlineCountsTimeBeforeTheRequestReachedTheServer) {
  double dense_ms = 0, min_ms = 0;
  GuardedTimesMs(&dense_ms, &min_ms);
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(300);
  request.set_latency_budget_ms(5000.0f);
  {
    grpc::ClientContext ctx;  // control: the same request with the time left
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    ClassifyResponse response;
    grpc::Status status = Stub()->Classify(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  bool saw_prediction = false;
  std::string message;
  for (int attempt = 0; attempt < 5 && !saw_prediction; ++attempt) {
    grpc::ClientContext ctx;
    const absl::Time deadline = absl::Now() + absl::Seconds(1);
    ctx.set_deadline(absl::ToChronoTime(deadline));
    absl::SleepFor(deadline - absl::Now() - absl::Microseconds(std::lround(800 * min_ms)));
    ClassifyResponse response;
    grpc::Status status = Stub()->Classify(&ctx, request, &response);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
    message = status.error_message();
    // Else the client's own deadline fired first (a loaded machine): try again.
    saw_prediction = message.find("predicted compute time") != std::string::npos;
  }
  ASSERT_TRUE(saw_prediction) << "no early rejection; last: " << message;
  // The remaining budget the server judged by is the client's, not latency_budget_ms.
  const std::string remaining = message.substr(message.rfind(' ') + 1);
  absl::Duration seen;
  ASSERT_TRUE(absl::ParseDuration(remaining, &seen)) << message;
  EXPECT_LT(seen, absl::Milliseconds(min_ms)) << message;
}

TEST_F(BudgetSchedulerTest, MinKeepRateAndPriorityAreValidated) {
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(3);
  request.set_min_keep_rate(0.1f);  // below the model's 0.25
  ClassifyResponse response;
  grpc::Status status = Classify(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("min_keep_rate"));
  request.set_min_keep_rate(0.0f);
  request.set_min_expected_accuracy(0.5f);  // the test model has no calibration
  status = Classify(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("min_expected_accuracy needs a calibrated model"));
  request.set_min_expected_accuracy(0.0f);
  request.set_priority(4);
  status = Classify(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("priority"));
  request.set_priority(3);
  request.set_min_keep_rate(0.5f);
  request.set_latency_budget_ms(5000.0f);
  ASSERT_TRUE(Classify(request, &response).ok());
  EXPECT_GE(response.keep_rate(), 0.5f);
}

}  // namespace
}  // namespace vitserve
