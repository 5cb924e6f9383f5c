// The service end to end over loopback gRPC, with a small deterministic in-test model
// (the real LibTorch model is covered by tests/integration) and the real preprocessor,
// cost model, scheduler and metrics.
#include "server/rpc/inference_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/grpc_server.h"
#include "tests/unit/serving/fake_model.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using testing_fixtures::FakeModel;
using testing_fixtures::kChannels;
using testing_fixtures::kImageSize;
using testing_fixtures::kNumClasses;
using testing_fixtures::kTestTimeout;
using testing_fixtures::Request;
using testing_fixtures::Tensor;
using testing_fixtures::TinySpec;
using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

class InferenceServiceTest : public ::testing::Test {
 protected:
  void StartServer(InferenceServiceOptions options, const Clock* clock = nullptr) {
    auto model = std::make_unique<FakeModel>(TinySpec());
    model_ = model.get();
    auto pre = Preprocessor::Create(TinySpec().preprocess, TinySpec().arch, {});
    ASSERT_TRUE(pre.ok()) << pre.status();
    std::vector<ServedModel> models;
    models.push_back(ServedModel{std::move(model), std::move(*pre)});
    auto metrics = ServerMetrics::Create({});
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = std::move(*metrics);
    auto service = InferenceServiceImpl::Create(
        std::move(models), options, clock != nullptr ? clock : &real_clock_, metrics_.get());
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = std::move(*service);
    // Create() returned after every batch thread's warm-up; tests about traffic start
    // from a model that has seen none.
    warm_up_batch_sizes_ = model_->batch_sizes();
    warm_up_keep_rates_ = model_->keep_rates();
    warm_up_threads_ = model_->threads();
    model_->ClearRuns();
    GrpcServerOptions server_options;
    server_options.host = "127.0.0.1";
    auto server = GrpcServer::Start(service_.get(), server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->SetServing(true);
    stub_ = vitserve::v1::InferenceService::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (model_ != nullptr) model_->Release();
    if (service_ != nullptr) service_->StartDraining();
    if (server_ != nullptr) server_->Shutdown(absl::Now() + absl::Seconds(5));
    if (service_ != nullptr) service_->Shutdown();
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + kTestTimeout));
  }

  grpc::Status Call(const ClassifyRequest& request, ClassifyResponse* response) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return stub_->Classify(&ctx, request, response);
  }

  RealClock real_clock_;
  // Outlives the service (tests that need fake time pass it to StartServer).
  FakeClock fake_clock_{absl::FromUnixSeconds(1000)};
  FakeModel* model_ = nullptr;
  // What the model ran during Create() (the batch threads' warm-up).
  std::vector<int> warm_up_batch_sizes_;
  std::vector<float> warm_up_keep_rates_;
  std::vector<std::thread::id> warm_up_threads_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<InferenceServiceImpl> service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<vitserve::v1::InferenceService::Stub> stub_;
};

InferenceServiceOptions FastOptions() {
  InferenceServiceOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay = absl::ZeroDuration();
  return options;
}

TEST_F(InferenceServiceTest, EveryBatchThreadRunsAFullWarmUpBatchBeforeCreateReturns) {
  InferenceServiceOptions options = FastOptions();
  options.num_batch_threads = 2;
  StartServer(options);
  // Per thread: a full batch (max_batch_size 4) at the model's highest and lowest
  // keep-rate, on that thread, never on the thread that called Create().
  EXPECT_THAT(warm_up_batch_sizes_, ElementsAre(4, 4, 4, 4));
  EXPECT_THAT(warm_up_keep_rates_, UnorderedElementsAre(1.0f, 1.0f, 0.5f, 0.5f));
  const std::set<std::thread::id> threads(warm_up_threads_.begin(), warm_up_threads_.end());
  EXPECT_EQ(threads.size(), 2u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
  // Traffic runs on those same threads, and the warm-up is not counted as requests.
  ClassifyResponse response;
  ASSERT_TRUE(Call(Request(1.0f, "r"), &response).ok());
  ASSERT_EQ(model_->threads().size(), 1u);
  EXPECT_EQ(threads.count(model_->threads()[0]), 1u);
  EXPECT_THAT(metrics_->Serialize(), HasSubstr("vitserve_batches_total{model=\"tiny\"} 1\n"));
}

TEST_F(InferenceServiceTest, ReloadWarmsTheNewVersionWithFullBatchesBeforeTheSwap) {
  StartServer(FastOptions());
  // Shared: if the release came late, the hook would outlive this test body.
  auto old_released = std::make_shared<std::atomic<bool>>(false);
  model_->OnDestroy([old_released] { *old_released = true; });
  ModelSpec spec = TinySpec();
  spec.version = "8";
  auto next = std::make_unique<FakeModel>(spec);
  FakeModel* next_model = next.get();
  auto pre = Preprocessor::Create(spec.preprocess, spec.arch, {});
  ASSERT_TRUE(pre.ok()) << pre.status();
  ASSERT_TRUE(service_->ReloadModel(ServedModel{std::move(next), std::move(*pre)}).ok());
  // One image at the default keep-rate (the logits check), then a full batch at the
  // highest and the lowest keep-rate, all on the new version. Nothing held the old one, so
  // the swap released it: `model_` dangles from here on (reading it was a use after free).
  EXPECT_THAT(next_model->batch_sizes(), ElementsAre(1, 4, 4));
  EXPECT_THAT(next_model->keep_rates(), ElementsAre(0.7f, 1.0f, 0.5f));
  EXPECT_TRUE(*old_released);
  model_ = nullptr;
  next_model->ClearRuns();
  ClassifyResponse response;
  ASSERT_TRUE(Call(Request(1.0f, "after"), &response).ok());
  EXPECT_THAT(next_model->batch_sizes(), ElementsAre(1));
}

TEST_F(InferenceServiceTest, ClassifyAnswersTopKWithCostsAndTiming) {
  StartServer(FastOptions());
  ClassifyRequest request = Request(1.0f, "req-1");
  request.set_top_k(2);
  request.set_return_logits(true);
  ClassifyResponse response;
  grpc::Status status = Call(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // Logits c*x0 + x0 - c at x0 = 1: all 1.0 -> tie, lowest index first.
  ASSERT_EQ(response.predictions_size(), 2);
  EXPECT_EQ(response.predictions(0).class_index(), 0u);
  EXPECT_EQ(response.predictions(0).label(), "zero");
  EXPECT_NEAR(response.predictions(0).score(), 0.25f, 1e-6);
  EXPECT_THAT(response.logits(), ElementsAre(1.0f, 1.0f, 1.0f, 1.0f));
  EXPECT_EQ(response.request_id(), "req-1");
  EXPECT_EQ(response.model(), "tiny");
  EXPECT_FLOAT_EQ(response.keep_rate(), 0.7f);  // 0 -> the model's default
  auto cost = EstimateCost(TinySpec().arch, TinySpec().pruning, 0.7f);
  ASSERT_TRUE(cost.ok());
  EXPECT_EQ(response.macs(), cost->macs);
  EXPECT_EQ(response.dense_macs(), DenseMacs(TinySpec().arch));
  EXPECT_LT(response.macs(), response.dense_macs());
  ASSERT_EQ(response.tokens_per_stage_size(), static_cast<int>(cost->tokens_per_stage.size()));
  EXPECT_EQ(response.batch_size(), 1u);
  EXPECT_GE(response.timing().queue_seconds(), 0.0);
  EXPECT_GE(response.timing().total_seconds(),
            response.timing().queue_seconds() + response.timing().compute_seconds() - 1e-9);
  EXPECT_NEAR(response.expected_accuracy(), 0.68f, 1e-5);  // 0.6 + 0.4 * (0.8 - 0.6)
}

TEST_F(InferenceServiceTest, KeepRateIsHonoured) {
  StartServer(FastOptions());
  ClassifyRequest dense = Request(2.0f);
  dense.set_keep_rate(1.0f);
  ClassifyRequest half = Request(2.0f);
  half.set_keep_rate(0.5f);
  ClassifyResponse r_dense, r_half;
  ASSERT_TRUE(Call(dense, &r_dense).ok());
  ASSERT_TRUE(Call(half, &r_half).ok());
  EXPECT_FLOAT_EQ(r_half.keep_rate(), 0.5f);
  EXPECT_LT(r_half.macs(), r_dense.macs());
  EXPECT_LT(r_half.tokens_per_stage(r_half.tokens_per_stage_size() - 1),
            r_dense.tokens_per_stage(r_dense.tokens_per_stage_size() - 1));
  EXPECT_EQ(r_dense.predictions(0).class_index(), 3u);  // x0 = 2: logits 2, 3, 4, 5
}

TEST_F(InferenceServiceTest, BadRequestsGetTheRightCodeAndSayWhy) {
  StartServer(FastOptions());
  struct Case {
    std::string name;
    ClassifyRequest request;
    grpc::StatusCode code;
    std::string fragment;
  };
  std::vector<Case> cases;
  ClassifyRequest r = Request(0.0f);
  r.set_model("nope");
  cases.push_back({"unknown model", r, grpc::StatusCode::NOT_FOUND, "served models: tiny"});
  r = Request(0.0f);
  r.set_keep_rate(1.5f);
  cases.push_back({"keep_rate 1.5", r, grpc::StatusCode::INVALID_ARGUMENT, "(0, 1]"});
  r = Request(0.0f);
  r.set_keep_rate(-0.1f);
  cases.push_back({"keep_rate -0.1", r, grpc::StatusCode::INVALID_ARGUMENT, "(0, 1]"});
  r = Request(0.0f);
  r.set_latency_budget_ms(-5.0f);
  cases.push_back({"negative budget", r, grpc::StatusCode::INVALID_ARGUMENT, "latency_budget_ms"});
  cases.push_back({"no input", ClassifyRequest(), grpc::StatusCode::INVALID_ARGUMENT, "no input"});
  r = Request(0.0f);
  r.mutable_tensor()->set_shape(1, 8);
  cases.push_back({"wrong shape", r, grpc::StatusCode::INVALID_ARGUMENT, "shape"});
  r = ClassifyRequest();
  r.set_image("garbage, not an image");
  cases.push_back({"garbage image", r, grpc::StatusCode::INVALID_ARGUMENT, ""});
  for (const Case& c : cases) {
    ClassifyResponse response;
    grpc::Status status = Call(c.request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.fragment)) << c.name;
    EXPECT_FALSE(status.error_message().empty()) << c.name;
  }
  EXPECT_TRUE(model_->seen().empty());
  // Every refusal is counted, by code.
  EXPECT_THAT(metrics_->Serialize(), HasSubstr("code=\"INVALID_ARGUMENT\""));
}

TEST_F(InferenceServiceTest, ConcurrentRequestsAtOneKeepRateShareABatch) {
  InferenceServiceOptions options = FastOptions();
  options.max_queue_delay = absl::Hours(1);  // only a full batch can run
  StartServer(options);
  constexpr int kRequests = 4;
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<ClassifyResponse> responses(kRequests);
  std::vector<grpc::Status> statuses(kRequests);
  std::vector<std::unique_ptr<grpc::ClientAsyncResponseReader<ClassifyResponse>>> readers;
  for (int i = 0; i < kRequests; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    SetDeadline(contexts.back().get());
    readers.push_back(stub_->AsyncClassify(contexts.back().get(), Request(i), &cq));
    readers.back()->Finish(&responses[i], &statuses[i], reinterpret_cast<void*>(i));
  }
  for (int i = 0; i < kRequests; ++i) {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
  }
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(responses[i].batch_size(), 4u);
  }
  EXPECT_THAT(model_->batch_sizes(), ElementsAre(4));
  cq.Shutdown();
}

// Reads stream responses until `n` arrived.
std::vector<ClassifyResponse> ReadN(
    grpc::ClientReaderWriter<ClassifyRequest, ClassifyResponse>* stream, int n) {
  std::vector<ClassifyResponse> out;
  ClassifyResponse r;
  while (static_cast<int>(out.size()) < n && stream->Read(&r)) out.push_back(r);
  return out;
}

TEST_F(InferenceServiceTest, StreamAnswersEveryRequestWithItsIdAndKeepsGoingAfterErrors) {
  InferenceServiceOptions options = FastOptions();
  options.max_stream_in_flight = 3;  // fewer than the requests: exercises back-pressure
  StartServer(options);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ClassifyStream(&ctx);
  constexpr int kRequests = 40;
  std::set<std::string> expected;
  for (int i = 0; i < kRequests; ++i) {
    ClassifyRequest r = Request(static_cast<float>(i % 3), absl::StrCat("id-", i));
    if (i == 7) r.set_keep_rate(1.5f);                  // one bad request mid-stream
    if (i == 13) r.set_image("garbage, not an image");  // refused on the decode thread
    ASSERT_TRUE(stream->Write(r));
    expected.insert(absl::StrCat("id-", i));
  }
  stream->WritesDone();
  std::vector<ClassifyResponse> responses = ReadN(stream.get(), kRequests + 1);
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(responses.size(), static_cast<size_t>(kRequests));
  std::set<std::string> got;
  for (const ClassifyResponse& r : responses) {
    got.insert(r.request_id());
    if (r.request_id() == "id-7") {
      EXPECT_EQ(r.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(r.error().message(), HasSubstr("keep_rate"));
      EXPECT_EQ(r.predictions_size(), 0);
    } else if (r.request_id() == "id-13") {
      EXPECT_EQ(r.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(r.error().message(), HasSubstr("image"));
      EXPECT_EQ(r.predictions_size(), 0);
    } else {
      EXPECT_EQ(r.error().code(), 0) << r.error().message();
      EXPECT_EQ(r.predictions_size(), 4);
    }
  }
  EXPECT_EQ(got, expected);
}

TEST_F(InferenceServiceTest, FullQueueAnswersResourceExhaustedAtOnce) {
  InferenceServiceOptions options = FastOptions();
  options.max_batch_size = 1;
  options.max_queue_size = 1;
  // One decode thread: the requests reach the queue in the order they were written.
  options.decode_threads = 1;
  StartServer(options);
  model_->Hold();
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ClassifyStream(&ctx);
  ASSERT_TRUE(stream->Write(Request(1.0f, "running")));
  ASSERT_TRUE(model_->WaitForRuns(1));                  // the batch thread is busy
  ASSERT_TRUE(stream->Write(Request(2.0f, "queued")));  // fills the queue
  ASSERT_TRUE(stream->Write(Request(3.0f, "refused")));
  std::vector<ClassifyResponse> first = ReadN(stream.get(), 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].request_id(), "refused");
  EXPECT_EQ(first[0].error().code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(first[0].error().message(), HasSubstr("queue full"));
  model_->Release();
  stream->WritesDone();
  std::vector<ClassifyResponse> rest = ReadN(stream.get(), 3);
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(rest.size(), 2u);
  for (const ClassifyResponse& r : rest) EXPECT_EQ(r.error().code(), 0) << r.request_id();
  EXPECT_THAT(model_->seen(), ElementsAre(1.0f, 2.0f));
  EXPECT_THAT(metrics_->Serialize(), HasSubstr("reason=\"queue_full\""));
}

TEST_F(InferenceServiceTest, RequestPastItsBudgetInTheQueueNeverRuns) {
  InferenceServiceOptions options = FastOptions();
  options.max_batch_size = 1;
  StartServer(options, &fake_clock_);
  model_->Hold();
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ClassifyStream(&ctx);
  ASSERT_TRUE(stream->Write(Request(1.0f, "running")));
  ASSERT_TRUE(model_->WaitForRuns(1));
  ClassifyRequest budgeted = Request(2.0f, "budgeted");
  budgeted.set_latency_budget_ms(50.0f);
  ASSERT_TRUE(stream->Write(budgeted));
  // Requests on a stream are admitted in order: once this one's error is back, the
  // budgeted request is queued.
  ClassifyRequest marker = Request(0.0f, "marker");
  marker.set_keep_rate(1.5f);
  ASSERT_TRUE(stream->Write(marker));
  std::vector<ClassifyResponse> first = ReadN(stream.get(), 1);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(first[0].request_id(), "marker");
  fake_clock_.Advance(absl::Milliseconds(51));
  model_->Release();
  stream->WritesDone();
  std::vector<ClassifyResponse> rest = ReadN(stream.get(), 3);
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(rest.size(), 2u);
  for (const ClassifyResponse& r : rest) {
    if (r.request_id() == "budgeted") {
      EXPECT_EQ(r.error().code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    } else {
      EXPECT_EQ(r.request_id(), "running");
      EXPECT_EQ(r.error().code(), 0);
    }
  }
  EXPECT_THAT(model_->seen(), ElementsAre(1.0f));
}

TEST_F(InferenceServiceTest, DrainingRefusesNewRequestsWithUnavailable) {
  StartServer(FastOptions());
  service_->StartDraining();
  ClassifyResponse response;
  grpc::Status status = Call(Request(1.0f), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("draining"));
}

TEST_F(InferenceServiceTest, ListModelsAndGetModelInfo) {
  StartServer(FastOptions());
  grpc::ClientContext list_ctx;
  vitserve::v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&list_ctx, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 1);
  EXPECT_EQ(list.models(0).name(), "tiny");
  EXPECT_EQ(list.models(0).method(), "evit");
  EXPECT_EQ(list.models(0).version(), "7");
  EXPECT_TRUE(list.models(0).ready());
  EXPECT_EQ(list.default_model(), "tiny");

  grpc::ClientContext info_ctx;
  vitserve::v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_ctx, {}, &info).ok());
  EXPECT_EQ(info.name(), "tiny");
  EXPECT_EQ(info.architecture().image_size(), static_cast<uint32_t>(kImageSize));
  EXPECT_EQ(info.dense_macs(), DenseMacs(TinySpec().arch));
  EXPECT_THAT(info.labels(), ElementsAre("zero", "one", "two", "three"));
  ASSERT_EQ(info.grid_size(), 6);  // 1.0 ... 0.5
  EXPECT_FLOAT_EQ(info.grid(0).keep_rate(), 1.0f);
  EXPECT_EQ(info.grid(0).macs(), info.dense_macs());
  EXPECT_LT(info.grid(5).macs(), info.grid(0).macs());
  EXPECT_DOUBLE_EQ(info.grid(5).expected_accuracy(), 0.6);
  EXPECT_EQ(info.calibration_size(), 2);
  EXPECT_EQ(info.device(), "cpu");

  grpc::ClientContext missing_ctx;
  vitserve::v1::GetModelInfoRequest missing;
  missing.set_model("nope");
  EXPECT_EQ(stub_->GetModelInfo(&missing_ctx, missing, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace vitserve
