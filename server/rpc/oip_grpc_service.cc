#include "server/rpc/oip_grpc_service.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/bounded_stream_reactor.h"
#include "server/rpc/grpc_deadline.h"
#include "server/rpc/status_util.h"

namespace vitserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

// Finishes a unary RPC at once: OK with `*response = *value`, or the error.
template <typename T>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, absl::StatusOr<T> value,
                                 T* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (value.ok()) *response = *std::move(value);
  reactor->Finish(ToGrpcStatus(value.status()));
  return reactor;
}

// Unary ModelInfer: answers once every image is done (or at once on refusal).
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor(OipCore* core, ModelInferResponse* response) : core_(core), response_(response) {}

  void Start(const ModelInferRequest& request, absl::Time client_deadline) {
    core_->Infer(request, client_deadline, cancelled_,
                 [this](absl::StatusOr<ModelInferResponse> result) {
                   if (result.ok()) response_->Swap(&*result);
                   Finish(ToGrpcStatus(result.status()));
                 });
  }
  void OnCancel() override {
    *cancelled_ = true;
    core_->Cancelled();
  }
  void OnDone() override { delete this; }

 private:
  OipCore* const core_;
  ModelInferResponse* const response_;
  const std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

// The cancel flags of one stream's requests: each request has its own (abandoning one
// request's images on a refusal leaves the others alone); cancelling the stream sets all.
class StreamCancelFlags {
 public:
  std::shared_ptr<std::atomic<bool>> NewFlag() {
    absl::MutexLock lock(&mu_);
    auto flag = std::make_shared<std::atomic<bool>>(cancelled_);
    flags_.erase(
        std::remove_if(flags_.begin(), flags_.end(), [](const auto& f) { return f.expired(); }),
        flags_.end());
    flags_.push_back(flag);
    return flag;
  }
  void CancelAll() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (const auto& f : flags_) {
      if (auto flag = f.lock()) *flag = true;
    }
  }

 private:
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::weak_ptr<std::atomic<bool>>> flags_ ABSL_GUARDED_BY(mu_);
};

ModelStreamInferResponse StreamAnswer(const std::string& id,
                                      absl::StatusOr<ModelInferResponse> result) {
  ModelStreamInferResponse out;
  if (result.ok()) {
    out.mutable_infer_response()->Swap(&*result);
  } else {
    out.set_error_message(absl::StrCat(absl::StatusCodeToString(result.status().code()), ": ",
                                       result.status().message()));
    out.mutable_infer_response()->set_id(id);
  }
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* OipGrpcService::ServerLive(grpc::CallbackServerContext* context,
                                                     const inference::ServerLiveRequest*,
                                                     inference::ServerLiveResponse* response) {
  inference::ServerLiveResponse live;
  live.set_live(true);
  return Answer(context, absl::StatusOr<inference::ServerLiveResponse>(live), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ServerReady(grpc::CallbackServerContext* context,
                                                      const inference::ServerReadyRequest*,
                                                      inference::ServerReadyResponse* response) {
  inference::ServerReadyResponse ready;
  ready.set_ready(core_->ready());
  return Answer(context, absl::StatusOr<inference::ServerReadyResponse>(ready), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ModelReady(grpc::CallbackServerContext* context,
                                                     const inference::ModelReadyRequest* request,
                                                     inference::ModelReadyResponse* response) {
  absl::StatusOr<bool> ready = core_->ModelReady(request->name(), request->version());
  if (!ready.ok()) {
    return Answer(context, absl::StatusOr<inference::ModelReadyResponse>(ready.status()), response);
  }
  inference::ModelReadyResponse out;
  out.set_ready(*ready);
  return Answer(context, absl::StatusOr<inference::ModelReadyResponse>(out), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  return Answer(context, absl::StatusOr<inference::ServerMetadataResponse>(core_->ServerMetadata()),
                response);
}

grpc::ServerUnaryReactor* OipGrpcService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  return Answer(context, core_->ModelMetadata(request->name(), request->version()), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ModelConfig(grpc::CallbackServerContext* context,
                                                      const inference::ModelConfigRequest* request,
                                                      inference::ModelConfigResponse* response) {
  return Answer(context, core_->ModelConfig(request->name(), request->version()), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  return Answer(context, core_->ModelStatistics(request->name(), request->version()), response);
}

grpc::ServerUnaryReactor* OipGrpcService::ModelInfer(grpc::CallbackServerContext* context,
                                                     const ModelInferRequest* request,
                                                     ModelInferResponse* response) {
  auto* reactor = new InferReactor(core_, response);
  reactor->Start(*request, ClientDeadline(context));
  return reactor;
}

grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse>*
OipGrpcService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  OipCore* core = core_;
  const absl::Time deadline = ClientDeadline(context);
  auto flags = std::make_shared<StreamCancelFlags>();
  using Reactor = BoundedStreamReactor<ModelInferRequest, ModelStreamInferResponse>;
  return new Reactor(
      core->max_stream_in_flight(),
      [core, deadline, flags](const ModelInferRequest& request, Reactor::Answer answer) {
        core->Infer(request, deadline, flags->NewFlag(),
                    [answer = std::move(answer),
                     id = request.id()](absl::StatusOr<ModelInferResponse> result) {
                      answer(StreamAnswer(id, std::move(result)));
                    });
      },
      [core, flags] {
        flags->CancelAll();
        core->Cancelled();
      });
}

}  // namespace vitserve
