#include "server/rpc/inference_service.h"

#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "server/rpc/bounded_stream_reactor.h"
#include "server/rpc/grpc_deadline.h"
#include "server/rpc/status_util.h"
#include "server/spec/cost_model.h"

namespace vitserve {

using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

namespace {

ClassifyResponse ErrorResponse(const std::string& request_id, const absl::Status& status) {
  ClassifyResponse response;
  response.set_request_id(request_id);
  response.mutable_error()->set_code(static_cast<int32_t>(status.code()));
  response.mutable_error()->set_message(std::string(status.message()));
  return response;
}

// Unary Classify: answers once the task is done (or at once on refusal).
class ClassifyReactor final : public grpc::ServerUnaryReactor {
 public:
  ClassifyReactor(ServingCore* core, ClassifyResponse* response)
      : core_(core), response_(response) {}

  void Start(const ClassifyRequest& request, absl::Time client_deadline) {
    absl::Status status =
        core_->Admit(request, client_deadline, &cancelled_,
                     [this](absl::StatusOr<ClassifyResponse> result) { Complete(result); });
    if (!status.ok()) Finish(ToGrpcStatus(status));
  }

  void OnCancel() override {
    cancelled_ = true;
    core_->KickScheduler();
  }
  void OnDone() override { delete this; }

 private:
  void Complete(absl::StatusOr<ClassifyResponse>& result) {
    if (!result.ok()) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    response_->Swap(&*result);
    Finish(grpc::Status::OK);
  }

  ServingCore* const core_;
  ClassifyResponse* const response_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> InferenceServiceImpl::Create(
    std::vector<ServedModel> models, const InferenceServiceOptions& options, const Clock* clock,
    ServerMetrics* metrics) {
  absl::StatusOr<std::unique_ptr<ServingCore>> core =
      ServingCore::Create(std::move(models), options, clock, metrics);
  if (!core.ok()) return core.status();
  return std::unique_ptr<InferenceServiceImpl>(new InferenceServiceImpl(*std::move(core)));
}

InferenceServiceImpl::~InferenceServiceImpl() { Shutdown(); }

grpc::ServerUnaryReactor* InferenceServiceImpl::Classify(grpc::CallbackServerContext* context,
                                                         const ClassifyRequest* request,
                                                         ClassifyResponse* response) {
  auto* reactor = new ClassifyReactor(core_.get(), response);
  reactor->Start(*request, ClientDeadline(context));
  return reactor;
}

grpc::ServerBidiReactor<ClassifyRequest, ClassifyResponse>* InferenceServiceImpl::ClassifyStream(
    grpc::CallbackServerContext* context) {
  // Requests are admitted as they are read; a refusal is answered at once as an error
  // response (BoundedStreamReactor keeps at most max_stream_in_flight unanswered).
  using Reactor = BoundedStreamReactor<ClassifyRequest, ClassifyResponse>;
  const absl::Time deadline = ClientDeadline(context);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  ServingCore* core = core_.get();
  return new Reactor(
      max_stream_in_flight(),
      [core, deadline, cancelled](const ClassifyRequest& request, Reactor::Answer answer) {
        const std::string id = request.request_id();
        absl::Status status =
            core->Admit(request, deadline, cancelled.get(),
                        [answer, id, cancelled](absl::StatusOr<ClassifyResponse> r) {
                          answer(r.ok() ? *std::move(r) : ErrorResponse(id, r.status()));
                        });
        if (!status.ok()) answer(ErrorResponse(id, status));
      },
      [core, cancelled] {
        *cancelled = true;
        core->KickScheduler();
      });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const vitserve::v1::ListModelsRequest* /*request*/,
    vitserve::v1::ListModelsResponse* response) {
  for (vitserve::v1::ModelSummary& summary : core_->ModelSummaries()) {
    *response->add_models() = std::move(summary);
  }
  response->set_default_model(core_->default_model());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::GetModelInfo(
    grpc::CallbackServerContext* context, const vitserve::v1::GetModelInfoRequest* request,
    vitserve::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<vitserve::v1::ModelInfo> info = core_->DescribeModel(request->model());
  if (!info.ok()) {
    reactor->Finish(ToGrpcStatus(info.status()));
    return reactor;
  }
  *response = std::move(*info);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace vitserve
