// The Open Inference Protocol ("KServe v2") over vitserve's serving core, independent of
// the transport: the gRPC service (oip_grpc_service.h) and the HTTP/REST front end
// (oip_http_server.h) both call it. Requests are translated by oip_translate.h and run
// through ServingCore::Admit (server/serving/serving_core.h), so admission, scheduling, deadlines,
// metrics and error codes/messages are the native Classify path's.
//
// Behaviour
//   * Infer: the N images of a request are admitted as N native requests (N tasks) and
//     answered together once all are done. If one is refused by Admit's checks (before
//     decoding) the ones already admitted are cancelled and the refusal is the answer; if
//     several fail later (decoding on the decode pool, or in the scheduler), the answer is
//     the failure of the lowest image index. Triton's `timeout`
//     caps the client deadline. A non-empty model_version must be the served version
//     (NOT_FOUND otherwise).
//   * Readiness: ServerReady/ModelReady answer false until SetReady(true) (main calls it
//     with the gRPC health status) and after SetReady(false) (drain). ServerLive is true
//     while the process serves at all.
//   * ModelConfig: Triton's model configuration (max_batch_size, inputs and outputs,
//     dynamic_batching from the service options, 4 priority levels).
//   * ModelStatistics: cumulative per model, for requests served through this protocol
//     (the native API's requests are in the Prometheus metrics): inference_count =
//     images answered, success/fail = requests with their total time, queue /
//     compute_infer = per image; execution_count = sum over images of 1 / batch size
//     (the batches these images filled, rounded).
//
// Thread-safety: every method may be called concurrently from any thread. `service` and
// `clock` are not owned and must outlive the core.
#ifndef VITSERVE_SERVER_RPC_OIP_CORE_H_
#define VITSERVE_SERVER_RPC_OIP_CORE_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"
#include "server/rpc/oip_translate.h"
#include "server/serving/serving_core.h"
#include "server/util/clock.h"

namespace vitserve {

// The Triton extensions vitserve serves (ServerMetadata.extensions).
// binary_tensor_data is served by the REST front end only (gRPC is binary anyway).
inline constexpr const char* kOipExtensions[] = {"classification", "model_configuration",
                                                 "statistics", "parameters", "binary_tensor_data"};

struct OipCoreOptions {
  OipParseOptions parse;
  std::string server_name = "vitserve";
  std::string server_version;
};

class OipCore {
 public:
  using InferDone = std::function<void(absl::StatusOr<inference::ModelInferResponse>)>;

  OipCore(ServingCore* service, const Clock* clock, OipCoreOptions options);

  void SetReady(bool ready) { ready_ = ready; }
  bool ready() const { return ready_; }

  // Runs one request; `done` is called exactly once, possibly before Infer returns.
  // `client_deadline`: the transport's deadline (InfiniteFuture = none). `cancelled` is
  // the request's cancel flag (the transport sets it, then calls Cancelled()); Infer also
  // sets it to abandon the admitted images when a later one is refused.
  void Infer(const inference::ModelInferRequest& request, absl::Time client_deadline,
             std::shared_ptr<std::atomic<bool>> cancelled, InferDone done);
  // Tells the scheduler that a request's cancel flag was set.
  void Cancelled() { service_->KickScheduler(); }

  inference::ServerMetadataResponse ServerMetadata() const;
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& name,
                                                                 const std::string& version) const;
  absl::StatusOr<inference::ModelConfigResponse> ModelConfig(const std::string& name,
                                                             const std::string& version) const;
  // NOT_FOUND for an unknown model or version.
  absl::StatusOr<bool> ModelReady(const std::string& name, const std::string& version) const;
  // name "" = every model.
  absl::StatusOr<inference::ModelStatisticsResponse> ModelStatistics(
      const std::string& name, const std::string& version) const;

  int max_stream_in_flight() const { return service_->options().max_stream_in_flight; }

 private:
  struct Call;
  struct Stats {
    uint64_t last_inference_ms = 0;
    uint64_t inference_count = 0;
    double executions = 0;
    inference::InferStatistics infer;
  };

  // The served ModelInfo of name/version (NOT_FOUND for another version).
  absl::StatusOr<vitserve::v1::ModelInfo> Resolve(const std::string& name,
                                                  const std::string& version) const;
  void Finish(Call& call);
  void Record(const std::string& model, const absl::Status& status, absl::Duration total,
              const std::vector<vitserve::v1::ClassifyResponse>& results);

  ServingCore* const service_;
  const Clock* const clock_;
  const OipCoreOptions options_;
  std::atomic<bool> ready_{false};
  mutable absl::Mutex mu_;
  std::map<std::string, Stats> stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_OIP_CORE_H_
