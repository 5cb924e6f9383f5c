// inference.GRPCInferenceService (the Open Inference Protocol over gRPC, with Triton's
// ModelStreamInfer, ModelConfig and ModelStatistics), registered on the native API's
// port. Thin: every RPC is answered by OipCore (oip_core.h); this class only turns
// absl::Status into grpc::Status (status_util.h) and wires cancellation.
//
// ModelStreamInfer: requests are run as they are read; every request gets exactly one
// ModelStreamInferResponse, in completion order (ids echoed); a failed request is a
// response with error_message set ("CODE: message") and the stream stays open. At most
// max_stream_in_flight requests per stream are unanswered (BoundedStreamReactor).
//
// Thread-safety: RPC handlers run on gRPC threads; the core is thread-safe. `core` is not
// owned and must outlive the grpc::Server the service is registered with.
#ifndef VITSERVE_SERVER_RPC_OIP_GRPC_SERVICE_H_
#define VITSERVE_SERVER_RPC_OIP_GRPC_SERVICE_H_

#include "inference/grpc_service.grpc.pb.h"
#include "server/rpc/oip_core.h"

namespace vitserve {

class OipGrpcService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit OipGrpcService(OipCore* core) : core_(core) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

 private:
  OipCore* const core_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_OIP_GRPC_SERVICE_H_
