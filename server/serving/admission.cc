// ServingCore's admission: a request from a front end becomes an InferenceTask in its
// model's batching queue, or is refused with a status the front end answers at once.
#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/serving/classify_logic.h"
#include "server/serving/serving_core.h"

namespace vitserve {

using vitserve::v1::ClassifyRequest;

void ServingCore::RecordRefusal(const ModelState* model, const std::string& requested_model,
                                const absl::Status& status, double seconds, absl::Time deadline) {
  if (metrics_ == nullptr) return;
  ModelMetrics* metrics =
      model != nullptr ? model->metrics : metrics_->ForModel(requested_model, "");
  if (metrics == nullptr) return;
  const char* reason = RefusalReason(status, clock_->Now(), deadline);
  if (*reason != '\0') metrics->OnRejected(reason);
  RequestOutcome record;
  record.grpc_code = static_cast<int>(status.code());
  record.total_seconds = seconds;
  // A request that carried a budget or deadline and was refused missed it: counting it
  // as "no budget" would make SLO attainment read too high under overload.
  record.had_budget = deadline != absl::InfiniteFuture();
  record.budget_met = false;
  metrics->OnRequestDone(record);
}

absl::Time ServingCore::RequestDeadline(const ClassifyRequest& request, absl::Time arrival,
                                        absl::Time client_deadline) const {
  // On the core's clock: the client's remaining time, capped by the budget.
  absl::Time deadline = absl::InfiniteFuture();
  if (client_deadline != absl::InfiniteFuture()) {
    deadline = arrival + (client_deadline - absl::Now());
  }
  if (request.latency_budget_ms() > 0.0f) {
    deadline = std::min(deadline,
                        arrival + absl::Microseconds(static_cast<int64_t>(
                                      static_cast<double>(request.latency_budget_ms()) * 1000.0)));
  }
  return deadline;
}

absl::Status ServingCore::Admit(const ClassifyRequest& request, absl::Time client_deadline,
                                const std::atomic<bool>* cancelled, ClassifyDone done) {
  const absl::Time arrival = clock_->Now();
  absl::StatusOr<ModelState*> found = registry_->Find(request.model());
  const ModelState* const found_model = found.ok() ? *found : nullptr;
  // Set once the request's budget / client deadline is known; refusals after that point
  // count as missed budgets.
  absl::Time deadline = absl::InfiniteFuture();
  auto refuse = [&](absl::Status status) {
    RecordRefusal(found_model, request.model(), status,
                  absl::ToDoubleSeconds(clock_->Now() - arrival), deadline);
    return status;
  };
  if (draining_) {
    return refuse(absl::UnavailableError(
        "server is draining (shutting down) and accepts no new requests; retry on another "
        "replica"));
  }
  if (!found.ok()) return refuse(found.status());
  ModelState* model = *found;
  const ModelSpec& spec = model->spec();
  const std::shared_ptr<ServedModel> served = model->Current();
  if (absl::Status valid = ValidateClassifyRequest(request, spec); !valid.ok()) {
    return refuse(valid);
  }
  if (absl::Status valid = ValidateSchedulingFields(request, spec, kNumPriorityLevels);
      !valid.ok()) {
    return refuse(valid);
  }
  // The served version's spec: its calibration may have changed on reload.
  absl::StatusOr<float> min_keep_rate = ResolveMinKeepRate(request, served->model->spec());
  if (!min_keep_rate.ok()) return refuse(min_keep_rate.status());
  deadline = RequestDeadline(request, arrival, client_deadline);
  if (deadline <= arrival) {
    return refuse(absl::DeadlineExceededError(
        "the request's deadline (client deadline or latency_budget_ms) passed before it could "
        "be queued"));
  }
  absl::StatusOr<ImageTensor> image = request.input_case() == ClassifyRequest::kImage
                                          ? served->preprocessor->FromEncoded(request.image())
                                          : served->preprocessor->FromTensor(request.tensor());
  if (!image.ok()) return refuse(image.status());

  auto task = std::make_unique<InferenceTask>();
  task->model = model;
  task->attrs.deadline = deadline;
  task->attrs.keep_rate = request.keep_rate();  // 0 = the model's batch policy chooses
  task->attrs.min_keep_rate = *min_keep_rate;
  task->attrs.latency_budget =
      deadline == absl::InfiniteFuture() ? absl::ZeroDuration() : deadline - arrival;
  task->attrs.priority = static_cast<int>(request.priority());
  task->image = *std::move(image);
  task->top_k = ResolveTopK(request.top_k(), spec.arch.num_classes);
  task->return_logits = request.return_logits();
  task->request_id = request.request_id();
  task->arrival = arrival;
  task->cancelled = cancelled;
  task->done = std::move(done);
  if (absl::Status s = Enqueue(*model, std::move(task)); !s.ok()) return refuse(s);
  return absl::OkStatus();
}

absl::Status ServingCore::Enqueue(ModelState& model, std::unique_ptr<InferenceTask> task) {
  const absl::Time deadline = task->attrs.deadline;
  // Counted before Schedule: the batch may start (and decrement) before it returns.
  ++model.queued;
  if (metrics_ != nullptr) metrics_->AddInFlight(1);
  absl::Status scheduled = scheduler_->Schedule(model.queue, &task);
  if (!scheduled.ok()) {
    // Refused on arrival by the policy (DEADLINE_EXCEEDED before the deadline).
    if (model.guard != nullptr && scheduled.code() == absl::StatusCode::kDeadlineExceeded &&
        clock_->Now() < deadline) {
      model.guard->ObserveRefusal(clock_->Now());
    }
    --model.queued;
    if (metrics_ != nullptr) metrics_->AddInFlight(-1);
    return scheduled;
  }
  if (model.metrics != nullptr) model.metrics->SetQueueDepth(model.queued.load());
  return absl::OkStatus();
}

}  // namespace vitserve
