#include "client/call_runner.h"

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/bench_report.h"
#include "client/client_flags.h"
#include "server/rpc/tls/tls_credentials.h"

namespace vitserve::client {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& server) {
  const bool use_tls = absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca).empty() ||
                       !absl::GetFlag(FLAGS_tls_cert).empty();
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = MakeChannelCredentials(
      use_tls,
      {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)});
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // logits of large label sets
  if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
    args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
  }
  return grpc::CreateCustomChannel(server, *credentials, args);
}

std::shared_ptr<grpc::Channel> MakeChannelOrReport(const std::string& server) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(server);
  if (!channel.ok()) {
    std::fprintf(stderr, "vitclient: %s\n", std::string(channel.status().message()).c_str());
    return nullptr;
  }
  return *std::move(channel);
}

std::unique_ptr<vitserve::v1::InferenceService::Stub> MakeStubOrReport(const std::string& server) {
  const std::shared_ptr<grpc::Channel> channel = MakeChannelOrReport(server);
  if (channel == nullptr) return nullptr;
  return vitserve::v1::InferenceService::NewStub(channel);
}

void SetTimeout(grpc::ClientContext* ctx, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration() || timeout == absl::InfiniteDuration()) return;
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::string RpcErrorText(const std::string& server, const grpc::Status& status) {
  return absl::StrCat("vitclient: ", server, ": ", CodeName(status.error_code()), ": ",
                      status.error_message());
}

struct CallRunner::Call {
  grpc::ClientContext ctx;
  vitserve::v1::ClassifyRequest request;
  vitserve::v1::ClassifyResponse response;
  absl::Time start;
  size_t index = 0;
  Done done;
};

CallRunner::CallRunner(vitserve::v1::InferenceService::Stub* stub, int max_in_flight,
                       absl::Duration timeout)
    : stub_(stub), max_in_flight_(max_in_flight < 1 ? 1 : max_in_flight), timeout_(timeout) {}

CallRunner::~CallRunner() { Wait(); }

void CallRunner::Start(size_t index, vitserve::v1::ClassifyRequest request, Done done,
                       absl::Duration cancel_after) {
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](CallRunner* r)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) { return r->in_flight_ < r->max_in_flight_; },
        this));
    ++in_flight_;
  }
  Launch(index, std::move(request), std::move(done), cancel_after);
}

bool CallRunner::TryStart(size_t index, vitserve::v1::ClassifyRequest request, Done done,
                          absl::Duration cancel_after) {
  {
    absl::MutexLock lock(&mu_);
    if (in_flight_ >= max_in_flight_) return false;
    ++in_flight_;
  }
  Launch(index, std::move(request), std::move(done), cancel_after);
  return true;
}

void CallRunner::Launch(size_t index, vitserve::v1::ClassifyRequest request, Done done,
                        absl::Duration cancel_after) {
  // Shared: the completion callback and a pending cancellation timer both hold the call.
  auto call = std::make_shared<Call>();
  call->request = std::move(request);
  call->index = index;
  call->done = std::move(done);
  SetTimeout(&call->ctx, timeout_);
  call->start = absl::Now();
  stub_->async()->Classify(&call->ctx, &call->request, &call->response,
                           [this, call](grpc::Status status) {
                             Result result;
                             result.latency_s = absl::ToDoubleSeconds(absl::Now() - call->start);
                             result.status = std::move(status);
                             result.response = std::move(call->response);
                             call->done(call->index, std::move(result));
                             absl::MutexLock lock(&mu_);
                             --in_flight_;
                           });
  if (cancel_after == absl::InfiniteDuration()) return;
  {
    absl::MutexLock lock(&mu_);
    ++cancellers_;
  }
  std::thread([this, call, cancel_after] {
    absl::SleepFor(cancel_after);
    call->ctx.TryCancel();  // a no-op once the call has finished
    absl::MutexLock lock(&mu_);
    --cancellers_;
  }).detach();
}

void CallRunner::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](CallRunner* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
        return r->in_flight_ == 0 && r->cancellers_ == 0;
      },
      this));
}

int64_t CallRunner::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

}  // namespace vitserve::client
