// gRPC plumbing shared by the commands: channel/stub creation, deadlines, and CallRunner,
// which keeps a bounded number of unary Classify calls in flight with the callback API.
#ifndef VITSERVE_CLIENT_CALL_RUNNER_H_
#define VITSERVE_CLIENT_CALL_RUNNER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve::client {

// A channel to `server` (host:port): plaintext by default; TLS when --tls, --tls_ca or
// --tls_cert is set (server verified against --tls_ca, or gRPC's default roots), with a
// client certificate (--tls_cert, --tls_key) for mutual TLS, and --tls_server_name
// overriding the name checked against the server certificate. Errors: unreadable or
// non-PEM files, incomplete combinations (NOT_FOUND / INVALID_ARGUMENT).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& server);

// MakeChannel for a command: on error prints "vitclient: <message>" to stderr and returns
// null (the command then exits with kExitUsage).
std::shared_ptr<grpc::Channel> MakeChannelOrReport(const std::string& server);

// An InferenceService stub on MakeChannelOrReport(server); null after printing why.
std::unique_ptr<vitserve::v1::InferenceService::Stub> MakeStubOrReport(const std::string& server);

// Sets the context's deadline `timeout` from now; a zero or infinite timeout sets none.
void SetTimeout(grpc::ClientContext* ctx, absl::Duration timeout);

// "vitclient: SERVER: CODE: message" for a failed call that is not about one file.
std::string RpcErrorText(const std::string& server, const grpc::Status& status);

// Runs Classify calls asynchronously, at most `max_in_flight` at once.
//
// Thread-safety: Start/TryStart/Wait may be called from one producer thread; the `done`
// callbacks run on gRPC's threads, one per finished call, possibly concurrently, and must
// not block for long. Ownership: the runner owns each call's context/request/response
// until its callback has returned. The destructor waits for every started call.
class CallRunner {
 public:
  struct Result {
    grpc::Status status;
    vitserve::v1::ClassifyResponse response;
    double latency_s = 0;  // client-measured, call start to completion
  };
  using Done = std::function<void(size_t index, Result result)>;

  CallRunner(vitserve::v1::InferenceService::Stub* stub, int max_in_flight, absl::Duration timeout);
  ~CallRunner();
  CallRunner(const CallRunner&) = delete;
  CallRunner& operator=(const CallRunner&) = delete;

  // Waits until a slot is free, then starts the call. A finite `cancel_after` cancels it
  // (ClientContext::TryCancel) that long after it started, if it is still running.
  void Start(size_t index, vitserve::v1::ClassifyRequest request, Done done,
             absl::Duration cancel_after = absl::InfiniteDuration());
  // Starts the call only if a slot is free now; false otherwise (request dropped).
  bool TryStart(size_t index, vitserve::v1::ClassifyRequest request, Done done,
                absl::Duration cancel_after = absl::InfiniteDuration());
  // Blocks until every started call has finished (and every pending cancellation ran).
  void Wait();
  int64_t in_flight() const;

 private:
  struct Call;
  void Launch(size_t index, vitserve::v1::ClassifyRequest request, Done done,
              absl::Duration cancel_after);

  vitserve::v1::InferenceService::Stub* const stub_;
  const int max_in_flight_;
  const absl::Duration timeout_;
  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t cancellers_ ABSL_GUARDED_BY(mu_) = 0;  // detached TryCancel timers still pending
};

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_CALL_RUNNER_H_
