// Hot reload under load, end to end: the real vitserve binary serves version 1 of a model
// while client threads send Classify requests without pause; the model directory is
// rewritten with version 2 (other weights) and the server gets SIGHUP. Then a broken
// version 3 (corrupt weights) is written and SIGHUP sent again.
//   * zero failed requests across both reloads;
//   * ListModels reports version 2 after the first and still 2 after the refused one;
//   * the same image gets different logits from version 2 (the weights really changed);
//   * the refusal is logged and the server keeps answering.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/subprocess.h"
#include "tests/integration/test_model_repository.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve {
namespace {

constexpr absl::Duration kStartupTimeout = absl::Seconds(120);
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kReloadTimeout = absl::Seconds(120);

vitserve::v1::ClassifyRequest Request(const TestModelOptions& m) {
  vitserve::v1::ClassifyRequest request;
  vitserve::v1::Tensor* t = request.mutable_tensor();
  for (int d : {3, m.image_size, m.image_size}) t->add_shape(d);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  for (int i = 0; i < 3 * m.image_size * m.image_size; ++i) t->add_data(dist(gen));
  request.set_return_logits(true);
  request.set_keep_rate(1.0f);
  return request;
}

std::string ServedVersion(vitserve::v1::InferenceService::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  vitserve::v1::ListModelsResponse response;
  if (!stub->ListModels(&ctx, {}, &response).ok() || response.models_size() == 0) return "";
  return response.models(0).version();
}

TEST(HotReloadTest, SwitchesVersionsUnderLoadWithoutFailuresAndRefusesBrokenOnes) {
  absl::StatusOr<std::string> dir = MakeTempDir("vitserve_reload_");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string repo = *dir + "/models";
  TestModelOptions v1;
  v1.method = "dense";
  v1.default_keep_rate = 1.0f;
  ASSERT_TRUE(WriteTestModel(repo, v1).ok());
  const std::string stderr_path = *dir + "/stderr";
  absl::StatusOr<std::unique_ptr<Subprocess>> server = Subprocess::Start(
      {VITSERVE_BINARY, "--model_repository=" + repo, "--host=127.0.0.1", "--port=0",
       "--metrics_port=-1", "--scheduler=fixed", "--max_queue_size=1024"},
      stderr_path);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::string> line = (*server)->WaitForLine(kListeningPrefix, kStartupTimeout);
  ASSERT_TRUE(line.ok()) << line.status() << ReadFileOrEmpty(stderr_path);
  auto channel = grpc::CreateChannel(std::string(absl::StripPrefix(*line, kListeningPrefix)),
                                     grpc::InsecureChannelCredentials());
  auto stub = vitserve::v1::InferenceService::NewStub(channel);
  ASSERT_EQ(ServedVersion(stub.get()), "1");

  const vitserve::v1::ClassifyRequest request = Request(v1);
  auto classify = [&](vitserve::v1::ClassifyResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    return stub->Classify(&ctx, request, response);
  };
  vitserve::v1::ClassifyResponse before;
  ASSERT_TRUE(classify(&before).ok());

  // Load: 3 client threads, back to back, for the whole test.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::string first_error;
  std::atomic<bool> have_error{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        vitserve::v1::ClassifyResponse response;
        grpc::Status s = classify(&response);
        if (s.ok()) {
          ++ok;
        } else {
          ++failed;
          if (!have_error.exchange(true)) first_error = s.error_message();
        }
      }
    });
  }
  auto wait_for = [&](auto done) {
    const absl::Time deadline = absl::Now() + kReloadTimeout;
    while (!done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
    return done();
  };
  ASSERT_TRUE(wait_for([&] { return ok.load() >= 50; }));

  // Version 2: same architecture, other weights.
  TestModelOptions v2 = v1;
  v2.version = "2";
  v2.seed = 2;
  ASSERT_TRUE(WriteTestModel(repo, v2).ok());
  const int ok_before_reload = ok.load();
  (*server)->Signal(SIGHUP);
  EXPECT_TRUE(wait_for([&] { return ServedVersion(stub.get()) == "2"; }))
      << ReadFileOrEmpty(stderr_path);
  EXPECT_TRUE(wait_for([&] { return ok.load() >= ok_before_reload + 50; }));

  // Version 3: the weights file is garbage. Refused; version 2 keeps serving.
  TestModelOptions v3 = v2;
  v3.version = "3";
  ASSERT_TRUE(WriteTestModel(repo, v3).ok());
  std::ofstream(repo + "/" + v1.name + "/model.safetensors", std::ios::trunc) << "not weights";
  (*server)->Signal(SIGHUP);
  EXPECT_TRUE(wait_for([&] {
    return absl::StrContains(ReadFileOrEmpty(stderr_path), "reload refused");
  })) << ReadFileOrEmpty(stderr_path);
  const int ok_after_refusal = ok.load();
  EXPECT_TRUE(wait_for([&] { return ok.load() >= ok_after_refusal + 50; }));
  EXPECT_EQ(ServedVersion(stub.get()), "2");

  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0) << "first error: " << first_error;
  EXPECT_GT(ok.load(), 150);

  vitserve::v1::ClassifyResponse after;
  ASSERT_TRUE(classify(&after).ok());
  ASSERT_EQ(after.logits_size(), before.logits_size());
  float diff = 0.0f;
  for (int i = 0; i < after.logits_size(); ++i) {
    diff = std::max(diff, std::abs(after.logits(i) - before.logits(i)));
  }
  EXPECT_GT(diff, 1e-3f) << "version 2 answered with version 1's logits";

  (*server)->Signal(SIGTERM);
  absl::StatusOr<int> code = (*server)->Wait(absl::Seconds(60));
  EXPECT_TRUE(code.ok() && *code == 0) << ReadFileOrEmpty(stderr_path);
  RemoveTree(*dir);
}

}  // namespace
}  // namespace vitserve
