// The vitserve.v1.InferenceService over gRPC (callback API): reactors only. Every request
// goes to the serving core (server/serving/serving_core.h, which documents the behaviour:
// models, schedulers, deadlines, refusals, metrics); absl::Status becomes grpc::Status
// once, in status_util.h.
//
// Behaviour of the reactors
//   * Classify: admitted on the gRPC thread, answered when its batch is done (or at once
//     on refusal); a client cancel kicks the scheduler so the task leaves its queue.
//   * ClassifyStream: requests are admitted as they are read; every request gets exactly
//     one response echoing its request_id, in completion order; a failed request is a
//     response with `error` set and the stream stays open. At most
//     `max_stream_in_flight` requests per stream are unanswered (queued, running or
//     waiting to be written); the reactor stops reading until one is written
//     (back-pressure through HTTP/2 flow control).
//   * ListModels / GetModelInfo: the core's ModelSummaries / DescribeModel.
//
// Lifetime: the service must outlive the grpc::Server it is registered with (shut the
// server down first), and Shutdown() must run before destruction if any request may
// still be queued (the destructor calls it).
#ifndef VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_
#define VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/metrics/server_metrics.h"
#include "server/serving/serving_core.h"
#include "server/serving/serving_options.h"
#include "server/util/clock.h"
#include "vitserve/v1/inference.grpc.pb.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

// The service's options are the serving core's.
using InferenceServiceOptions = ServingOptions;

class InferenceServiceImpl final : public vitserve::v1::InferenceService::CallbackService {
 public:
  // ServingCore::Create (same arguments and errors) under a gRPC service.
  static absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> Create(
      std::vector<ServedModel> models, const InferenceServiceOptions& options, const Clock* clock,
      ServerMetrics* metrics);
  ~InferenceServiceImpl() override;

  // The serving core (for the other protocol front ends and for main).
  ServingCore& core() { return *core_; }

  // The core's, forwarded (see serving_core.h).
  absl::Status WarmUp() { return core_->WarmUp(); }
  absl::Status ReloadModel(ServedModel next) { return core_->ReloadModel(std::move(next)); }
  void StartDraining() { core_->StartDraining(); }
  void Shutdown() { core_->Shutdown(); }
  const std::string& default_model() const { return core_->default_model(); }
  std::shared_ptr<const LatencyModel> latency_model(const std::string& model) const {
    return core_->latency_model(model);
  }
  int max_stream_in_flight() const { return core_->options().max_stream_in_flight; }

  // vitserve.v1.InferenceService.
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const vitserve::v1::ClassifyRequest* request,
                                     vitserve::v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<vitserve::v1::ClassifyRequest, vitserve::v1::ClassifyResponse>*
  ClassifyStream(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const vitserve::v1::ListModelsRequest* request,
                                       vitserve::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const vitserve::v1::GetModelInfoRequest* request,
                                         vitserve::v1::ModelInfo* response) override;

 private:
  explicit InferenceServiceImpl(std::unique_ptr<ServingCore> core) : core_(std::move(core)) {}

  const std::unique_ptr<ServingCore> core_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_INFERENCE_SERVICE_H_
