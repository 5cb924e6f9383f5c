// Runs the real `vitserve` binary on loopback against a small real model repository
// written at test time, and talks to it with real gRPC stubs (and the real `vitclient`).
// One server serves the whole suite; the SIGTERM test starts its own.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/spec/cost_model.h"
#include "server/spec/model_spec.h"
#include "tests/integration/subprocess.h"
#include "tests/integration/test_model_repository.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve {
namespace {

using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

// Generous bounds for a 2-core CI machine; reached only when something hangs.
constexpr absl::Duration kStartupTimeout = absl::Seconds(120);
constexpr absl::Duration kRpcTimeout = absl::Seconds(60);
constexpr absl::Duration kExitTimeout = absl::Seconds(60);
constexpr char kMetricsPrefix[] = "vitserve metrics on ";

TestModelOptions ModelOptions() { return TestModelOptions{}; }

Architecture Arch() {
  const TestModelOptions o = ModelOptions();
  Architecture a;
  a.image_size = o.image_size;
  a.patch_size = o.patch_size;
  a.embed_dim = o.embed_dim;
  a.depth = o.depth;
  a.num_heads = o.num_heads;
  a.num_classes = o.num_classes;
  return a;
}

// A running vitserve with its addresses.
struct Server {
  std::unique_ptr<Subprocess> process;
  std::string address;          // host:port of gRPC
  std::string metrics_address;  // host:port of /metrics
  std::string stderr_path;
};

absl::StatusOr<Server> StartServer(const std::string& repo, const std::string& stderr_path,
                                   const std::vector<std::string>& extra_flags) {
  std::vector<std::string> argv = {VITSERVE_BINARY,    absl::StrCat("--model_repository=", repo),
                                   "--host=127.0.0.1", "--port=0",
                                   "--metrics_port=0", "--threads=1"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  Server server;
  server.stderr_path = stderr_path;
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(argv, stderr_path);
  if (!p.ok()) return p.status();
  server.process = std::move(*p);
  absl::StatusOr<std::string> line = server.process->WaitForLine(kListeningPrefix, kStartupTimeout);
  if (!line.ok()) return line.status();
  server.address = std::string(absl::StripPrefix(*line, kListeningPrefix));
  absl::StatusOr<std::string> metrics =
      server.process->WaitForLine(kMetricsPrefix, kStartupTimeout);
  if (!metrics.ok()) return metrics.status();
  server.metrics_address = std::string(absl::StripPrefix(*metrics, kMetricsPrefix));
  return server;
}

// A deterministic pseudo-random image, PNG-encoded.
std::string PngBytes(int width, int height, int seed) {
  cv::Mat image(height, width, CV_8UC3);
  cv::RNG rng(seed);
  rng.fill(image, cv::RNG::UNIFORM, 0, 256);
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(".png", image, buf));
  return std::string(buf.begin(), buf.end());
}

// A preprocessed [3, S, S] tensor of deterministic values in [-2, 2].
vitserve::v1::Tensor RandomTensor(int seed) {
  const int s = ModelOptions().image_size;
  vitserve::v1::Tensor t;
  t.add_shape(3);
  t.add_shape(s);
  t.add_shape(s);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (int i = 0; i < 3 * s * s; ++i) t.add_data(dist(gen));
  return t;
}

// GET http://<address><path> over a plain socket (HTTP/1.0, connection closed by the
// server). Returns the whole response, headers included.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", address));
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(kRpcTimeout)), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::InternalError("short write");
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

class ServerIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir = MakeTempDir("vitserve_it_");
    ASSERT_TRUE(dir.ok()) << dir.status();
    work_dir_ = new std::string(*dir);
    repo_ = new std::string(*work_dir_ + "/models");
    ASSERT_TRUE(WriteTestModel(*repo_, ModelOptions()).ok());
    absl::StatusOr<Server> server =
        StartServer(*repo_, *work_dir_ + "/vitserve.stderr", {"--max_queue_delay_ms=2"});
    ASSERT_TRUE(server.ok()) << server.status() << "\nserver stderr:\n"
                             << ReadFileOrEmpty(*work_dir_ + "/vitserve.stderr");
    server_ = new Server(std::move(*server));
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(server_->address, grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr && server_->process != nullptr) {
      server_->process->Signal(SIGTERM);
      absl::StatusOr<int> code = server_->process->Wait(kExitTimeout);
      EXPECT_TRUE(code.ok() && *code == 0) << code.status() << "\nserver stderr:\n"
                                           << ReadFileOrEmpty(server_->stderr_path);
    }
    delete channel_;
    delete server_;  // SIGKILLs the process if it is still running
    if (work_dir_ != nullptr) RemoveTree(*work_dir_);
    delete repo_;
    delete work_dir_;
    channel_ = nullptr;
    server_ = nullptr;
    repo_ = nullptr;
    work_dir_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(server_, nullptr) << "the server did not start"; }

  std::unique_ptr<vitserve::v1::InferenceService::Stub> Stub() {
    return vitserve::v1::InferenceService::NewStub(*channel_);
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  }

  grpc::Status Classify(const ClassifyRequest& request, ClassifyResponse* response) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return Stub()->Classify(&ctx, request, response);
  }

  static std::string* work_dir_;
  static std::string* repo_;
  static Server* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
};

std::string* ServerIntegrationTest::work_dir_ = nullptr;
std::string* ServerIntegrationTest::repo_ = nullptr;
Server* ServerIntegrationTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ServerIntegrationTest::channel_ = nullptr;

TEST_F(ServerIntegrationTest, HealthIsServing) {
  auto health = grpc::health::v1::Health::NewStub(*channel_);
  for (const std::string service : {"", "vitserve.v1.InferenceService"}) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&ctx, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST_F(ServerIntegrationTest, ReflectionListsTheInferenceService) {
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(*channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = reflection->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("*");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  EXPECT_THAT(names, Contains("vitserve.v1.InferenceService"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServerIntegrationTest, ClassifiesAPngImage) {
  ClassifyRequest request;
  request.set_image(PngBytes(50, 40, 7));
  request.set_request_id("png-1");
  ClassifyResponse response;
  grpc::Status status = Classify(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.predictions_size(), 5);
  double previous = 1.0;
  for (const auto& p : response.predictions()) {
    EXPECT_EQ(p.label(), absl::StrCat("class_", p.class_index()));
    EXPECT_LE(p.score(), previous);
    previous = p.score();
  }
  EXPECT_EQ(response.request_id(), "png-1");
  EXPECT_EQ(response.model(), ModelOptions().name);
  // keep_rate 0 with a 60 s client deadline: the budget scheduler (the default) has time
  // for full accuracy.
  EXPECT_FLOAT_EQ(response.keep_rate(), 1.0f);
  EXPECT_GT(response.macs(), 0u);
  EXPECT_LE(response.macs(), response.dense_macs());
  EXPECT_EQ(response.dense_macs(), DenseMacs(Arch()));
  EXPECT_GE(response.batch_size(), 1u);
  EXPECT_GT(response.timing().total_seconds(), 0.0);
}

TEST_F(ServerIntegrationTest, ClassifiesATensorDeterministically) {
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(3);
  request.set_return_logits(true);
  request.set_top_k(3);
  ClassifyResponse first, second;
  ASSERT_TRUE(Classify(request, &first).ok());
  // The [1, C, H, W] form is accepted too and gives the same answer.
  request.mutable_tensor()->clear_shape();
  for (int64_t d : {1, 3, ModelOptions().image_size, ModelOptions().image_size}) {
    request.mutable_tensor()->add_shape(d);
  }
  ASSERT_TRUE(Classify(request, &second).ok());
  ASSERT_EQ(first.logits_size(), ModelOptions().num_classes);
  ASSERT_EQ(second.logits_size(), ModelOptions().num_classes);
  for (int i = 0; i < first.logits_size(); ++i) {
    EXPECT_NEAR(first.logits(i), second.logits(i), 1e-4f) << i;
    EXPECT_TRUE(std::isfinite(first.logits(i)));
  }
  ASSERT_EQ(first.predictions_size(), 3);
  EXPECT_EQ(first.predictions(0).class_index(), second.predictions(0).class_index());
}

TEST_F(ServerIntegrationTest, KeepRateShrinksTokensAndMacsAsTheCostModelSays) {
  PruningSpec pruning;
  pruning.method = Method::kEViT;
  uint64_t previous_macs = std::numeric_limits<uint64_t>::max();
  for (float keep : {1.0f, 0.5f, 0.25f}) {
    ClassifyRequest request;
    *request.mutable_tensor() = RandomTensor(5);
    request.set_keep_rate(keep);
    ClassifyResponse response;
    grpc::Status status = Classify(request, &response);
    ASSERT_TRUE(status.ok()) << keep << ": " << status.error_message();
    absl::StatusOr<CostEstimate> expected = EstimateCost(Arch(), pruning, keep);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_FLOAT_EQ(response.keep_rate(), keep);
    std::vector<int> tokens(response.tokens_per_stage().begin(), response.tokens_per_stage().end());
    EXPECT_EQ(tokens, expected->tokens_per_stage) << "keep " << keep;
    EXPECT_EQ(response.macs(), expected->macs) << "keep " << keep;
    EXPECT_LT(response.macs(), previous_macs);
    previous_macs = response.macs();
  }
}

TEST_F(ServerIntegrationTest, StreamKeepsManyRequestsInFlightAndEchoesIds) {
  auto stub = Stub();
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub->ClassifyStream(&ctx);
  constexpr int kRequests = 48;
  std::set<std::string> sent;
  // All requests are written before any response is read: they are in flight together.
  for (int i = 0; i < kRequests; ++i) {
    ClassifyRequest request;
    *request.mutable_tensor() = RandomTensor(100 + i % 4);
    request.set_keep_rate(i % 2 == 0 ? 0.5f : 1.0f);
    request.set_request_id(absl::StrCat("s", i));
    if (i == 10) request.set_keep_rate(2.0f);  // fails alone; the stream goes on
    ASSERT_TRUE(stream->Write(request));
    sent.insert(request.request_id());
  }
  stream->WritesDone();
  std::set<std::string> received;
  ClassifyResponse response;
  while (stream->Read(&response)) {
    EXPECT_TRUE(received.insert(response.request_id()).second) << response.request_id();
    if (response.request_id() == "s10") {
      EXPECT_EQ(response.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(response.error().message(), HasSubstr("keep_rate"));
    } else {
      EXPECT_EQ(response.error().code(), 0) << response.error().message();
      EXPECT_EQ(response.predictions_size(), 5);
    }
  }
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(received, sent);
}

TEST_F(ServerIntegrationTest, BadInputsGetTheRightCodeAndAMessage) {
  struct Case {
    std::string name;
    ClassifyRequest request;
    grpc::StatusCode code;
  };
  std::vector<Case> cases;
  ClassifyRequest r;
  r.set_image("");
  cases.push_back({"empty image", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = ClassifyRequest();
  r.set_image("\x89PNG but not really, just garbage bytes");
  cases.push_back({"garbage bytes", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = ClassifyRequest();
  r.mutable_tensor()->add_shape(3);
  r.mutable_tensor()->add_shape(16);
  r.mutable_tensor()->add_shape(16);
  r.mutable_tensor()->mutable_data()->Resize(3 * 16 * 16, 0.0f);
  cases.push_back({"wrong tensor shape", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = ClassifyRequest();
  *r.mutable_tensor() = RandomTensor(1);
  r.mutable_tensor()->set_data(17, std::numeric_limits<float>::quiet_NaN());
  cases.push_back({"NaN in tensor", r, grpc::StatusCode::INVALID_ARGUMENT});
  r = ClassifyRequest();
  *r.mutable_tensor() = RandomTensor(1);
  r.set_keep_rate(1.5f);
  cases.push_back({"keep_rate 1.5", r, grpc::StatusCode::INVALID_ARGUMENT});
  r.set_keep_rate(-0.1f);
  cases.push_back({"keep_rate -0.1", r, grpc::StatusCode::INVALID_ARGUMENT});
  r.set_keep_rate(0.0f);
  r.set_latency_budget_ms(-3.0f);
  cases.push_back({"negative budget", r, grpc::StatusCode::INVALID_ARGUMENT});
  r.set_latency_budget_ms(0.0f);
  r.set_model("no_such_model");
  cases.push_back({"unknown model", r, grpc::StatusCode::NOT_FOUND});
  cases.push_back({"no input", ClassifyRequest(), grpc::StatusCode::INVALID_ARGUMENT});
  for (const Case& c : cases) {
    ClassifyResponse response;
    grpc::Status status = Classify(c.request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_GT(status.error_message().size(), 10u) << c.name;
  }
}

TEST_F(ServerIntegrationTest, ListModelsAndGetModelInfo) {
  auto stub = Stub();
  grpc::ClientContext list_ctx;
  SetDeadline(&list_ctx);
  vitserve::v1::ListModelsResponse list;
  ASSERT_TRUE(stub->ListModels(&list_ctx, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 1);
  EXPECT_EQ(list.models(0).name(), ModelOptions().name);
  EXPECT_EQ(list.models(0).method(), "evit");
  EXPECT_EQ(list.default_model(), ModelOptions().name);

  grpc::ClientContext info_ctx;
  SetDeadline(&info_ctx);
  vitserve::v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&info_ctx, {}, &info).ok());
  EXPECT_EQ(info.architecture().embed_dim(), static_cast<uint32_t>(ModelOptions().embed_dim));
  EXPECT_EQ(info.labels_size(), ModelOptions().num_classes);
  EXPECT_EQ(info.dense_macs(), DenseMacs(Arch()));
  EXPECT_EQ(info.device(), "cpu");
  // 1.0, 0.9, ..., 0.3 and the model's minimum 0.25.
  ASSERT_EQ(info.grid_size(), 9);
  EXPECT_FLOAT_EQ(info.grid(0).keep_rate(), 1.0f);
  EXPECT_FLOAT_EQ(info.grid(8).keep_rate(), 0.25f);
  EXPECT_GT(info.grid(0).macs(), info.grid(8).macs());
}

TEST_F(ServerIntegrationTest, MetricsEndpointServesVitserveMetrics) {
  ClassifyRequest request;
  *request.mutable_tensor() = RandomTensor(9);
  ClassifyResponse response;
  ASSERT_TRUE(Classify(request, &response).ok());
  absl::StatusOr<std::string> page = HttpGet(server_->metrics_address, "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(*page, HasSubstr("200 OK"));
  EXPECT_THAT(*page, HasSubstr("vitserve_requests_total{"));
  EXPECT_THAT(*page, HasSubstr("code=\"OK\""));
  EXPECT_THAT(*page, HasSubstr("vitserve_batch_size"));
  // The budget scheduler's latency guard (on by default) exports its state after a batch.
  EXPECT_THAT(*page, HasSubstr("vitserve_latency_safety_factor{"));
  EXPECT_THAT(*page, HasSubstr("vitserve_budget_reserve_ratio{"));
  EXPECT_THAT(*page, HasSubstr("vitserve_budget_miss_ratio{"));
}

#ifdef VITCLIENT_BINARY
TEST_F(ServerIntegrationTest, VitclientClassifiesAFileAndListsModels) {
  const std::string png = *work_dir_ + "/client_input.png";
  {
    std::ofstream out(png, std::ios::binary);
    out << PngBytes(64, 48, 11);
  }
  absl::StatusOr<CommandResult> classify = RunCommand(
      {VITCLIENT_BINARY, "classify", png, absl::StrCat("--server=", server_->address), "--json"},
      kRpcTimeout);
  ASSERT_TRUE(classify.ok()) << classify.status();
  EXPECT_EQ(classify->exit_code, 0) << classify->out;
  EXPECT_THAT(classify->out, HasSubstr("class_"));
  absl::StatusOr<CommandResult> models = RunCommand(
      {VITCLIENT_BINARY, "models", absl::StrCat("--server=", server_->address)}, kRpcTimeout);
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->exit_code, 0) << models->out;
  EXPECT_THAT(models->out, HasSubstr(ModelOptions().name));
  absl::StatusOr<CommandResult> info =
      RunCommand({VITCLIENT_BINARY, "info", ModelOptions().name,
                  absl::StrCat("--server=", server_->address), "--json"},
                 kRpcTimeout);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->exit_code, 0) << info->out;
  EXPECT_THAT(info->out, HasSubstr(absl::StrCat("\"", ModelOptions().name, "\"")));
  // A failed call exits 1 (the RPC error goes to stderr).
  absl::StatusOr<CommandResult> missing = RunCommand(
      {VITCLIENT_BINARY, "info", "no-such-model", absl::StrCat("--server=", server_->address)},
      kRpcTimeout);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->exit_code, 1) << missing->out;
}
#endif

// A second server, so that stopping it does not disturb the suite's server.
TEST(ServerLifecycleTest, SigtermAnswersEveryRequestInFlightAndExitsZero) {
  absl::StatusOr<std::string> dir = MakeTempDir("vitserve_sigterm_");
  ASSERT_TRUE(dir.ok()) << dir.status();
  // Removes the directory however the test ends.
  struct Cleanup {
    std::string path;
    ~Cleanup() { RemoveTree(path); }
  } cleanup{*dir};
  const std::string repo = *dir + "/models";
  ASSERT_TRUE(WriteTestModel(repo, ModelOptions()).ok());
  // A long batching delay keeps the requests queued while the signal arrives.
  absl::StatusOr<Server> server =
      StartServer(repo, *dir + "/stderr", {"--max_queue_delay_ms=400", "--max_batch_size=64"});
  ASSERT_TRUE(server.ok()) << server.status() << ReadFileOrEmpty(*dir + "/stderr");

  auto stub = vitserve::v1::InferenceService::NewStub(
      grpc::CreateChannel(server->address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  auto stream = stub->ClassifyStream(&ctx);
  constexpr int kQueued = 8;
  for (int i = 0; i < kQueued; ++i) {
    ClassifyRequest request;
    *request.mutable_tensor() = RandomTensor(i);
    request.set_request_id(absl::StrCat("q", i));
    ASSERT_TRUE(stream->Write(request));
  }
  // Requests on a stream are admitted in order: once this invalid one is answered, the
  // eight before it are queued in the server.
  ClassifyRequest marker;
  marker.set_request_id("marker");
  marker.set_keep_rate(7.0f);
  ASSERT_TRUE(stream->Write(marker));
  ClassifyResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.request_id(), "marker");
  ASSERT_EQ(response.error().code(), grpc::StatusCode::INVALID_ARGUMENT);

  server->process->Signal(SIGTERM);
  std::set<std::string> answered;
  for (int i = 0; i < kQueued; ++i) {
    ASSERT_TRUE(stream->Read(&response)) << "only " << answered.size() << " answered";
    EXPECT_EQ(response.error().code(), 0) << response.error().message();
    EXPECT_EQ(response.predictions_size(), 5);
    answered.insert(response.request_id());
  }
  EXPECT_EQ(answered.size(), static_cast<size_t>(kQueued));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  absl::StatusOr<int> code = server->process->Wait(kExitTimeout);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << ReadFileOrEmpty(*dir + "/stderr");
  EXPECT_THAT(ReadFileOrEmpty(*dir + "/stderr"), HasSubstr("draining"));
}

}  // namespace
}  // namespace vitserve
