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

// A request that passed the cheap checks, on its way to the decode pool.
struct ServingCore::Admission {
  ClassifyRequest request;
  ModelState* model = nullptr;
  std::shared_ptr<ServedModel> served;  // the version admitted against
  RefusalKey key;
  const std::atomic<bool>* cancelled = nullptr;
  ClassifyDone done;
};

namespace {

constexpr char kDeadlineBeforeQueued[] =
    "the request's deadline (client deadline or latency_budget_ms) passed before it could "
    "be queued";

}  // namespace

absl::Status ServingCore::Refuse(const RefusalKey& key, absl::Status status) {
  RecordRefusal(key.model, key.requested_model, status,
                absl::ToDoubleSeconds(clock_->Now() - key.arrival), key.deadline);
  return status;
}

absl::Status ServingCore::Admit(ClassifyRequest request, absl::Time client_deadline,
                                const std::atomic<bool>* cancelled, ClassifyDone done) {
  auto admission = std::make_unique<Admission>();
  // Taken before decoding: decode time counts against the request's budget.
  admission->key.arrival = clock_->Now();
  if (absl::Status checked = CheckRequest(request, client_deadline, *admission); !checked.ok()) {
    return Refuse(admission->key, std::move(checked));
  }
  admission->request = std::move(request);
  admission->cancelled = cancelled;
  admission->done = std::move(done);
  // A job the pool refuses is destroyed unrun, with `admission` and `done`.
  const RefusalKey key = admission->key;
  // In flight from here until answered (BatchRunner, or FinishAdmission on an error).
  if (metrics_ != nullptr) metrics_->AddInFlight(1);
  absl::Status submitted =
      decode_pool_->Submit([this, owned = std::move(admission)](absl::Status pool) mutable {
        FinishAdmission(*owned, std::move(pool));
      });
  if (submitted.ok()) return submitted;
  if (metrics_ != nullptr) metrics_->AddInFlight(-1);
  return Refuse(key, std::move(submitted));
}

absl::Status ServingCore::CheckRequest(const ClassifyRequest& request, absl::Time client_deadline,
                                       Admission& admission) const {
  absl::StatusOr<ModelState*> found = registry_->Find(request.model());
  admission.key.model = found.ok() ? *found : nullptr;
  admission.key.requested_model = request.model();
  if (draining_) {
    return absl::UnavailableError(
        "server is draining (shutting down) and accepts no new requests; retry on another "
        "replica");
  }
  if (!found.ok()) return found.status();
  ModelState* model = *found;
  const ModelSpec& spec = model->spec();
  admission.model = model;
  admission.served = model->Current();
  if (absl::Status valid = ValidateClassifyRequest(request, spec); !valid.ok()) return valid;
  if (absl::Status valid = ValidateSchedulingFields(request, spec, kNumPriorityLevels);
      !valid.ok()) {
    return valid;
  }
  // Refused at once if impossible on the served version; the policy maps it per batch.
  if (absl::Status floor = ValidateKeepRateFloor(
          request.min_keep_rate(), request.min_expected_accuracy(), *model->accuracy->Snapshot());
      !floor.ok()) {
    return floor;
  }
  admission.key.deadline = RequestDeadline(request, admission.key.arrival, client_deadline);
  if (admission.key.deadline <= admission.key.arrival) {
    return absl::DeadlineExceededError(kDeadlineBeforeQueued);
  }
  return absl::OkStatus();
}

void ServingCore::FinishAdmission(Admission& admission, absl::Status pool) {
  absl::Status status = pool.ok() ? DecodeAndEnqueue(admission) : std::move(pool);
  if (status.ok()) return;                      // the task (and `done`) is the scheduler's now
  Refuse(admission.key, status).IgnoreError();  // metrics only: `done` answers
  if (metrics_ != nullptr) metrics_->AddInFlight(-1);
  admission.done(std::move(status));
}

absl::Status ServingCore::DecodeAndEnqueue(Admission& admission) {
  // Nothing to decode for a request that can no longer be answered in time.
  if (admission.cancelled != nullptr && admission.cancelled->load()) {
    return absl::CancelledError("request cancelled while waiting to be decoded");
  }
  const RefusalKey& key = admission.key;
  if (key.deadline <= clock_->Now()) {
    return absl::DeadlineExceededError(kDeadlineBeforeQueued);
  }
  const ClassifyRequest& request = admission.request;
  const ServedModel& served = *admission.served;
  absl::StatusOr<ImageTensor> image = request.input_case() == ClassifyRequest::kImage
                                          ? served.preprocessor->FromEncoded(request.image())
                                          : served.preprocessor->FromTensor(request.tensor());
  if (!image.ok()) return image.status();

  auto task = std::make_unique<InferenceTask>();
  task->model = admission.model;
  task->attrs.deadline = key.deadline;
  task->attrs.keep_rate = request.keep_rate();  // 0 = the model's batch policy chooses
  // The raw floor fields: the model's batch policy maps them (scheduler/keep_rate_floor.h).
  task->attrs.min_keep_rate = request.min_keep_rate();
  task->attrs.min_expected_accuracy = request.min_expected_accuracy();
  task->attrs.latency_budget =
      key.deadline == absl::InfiniteFuture() ? absl::ZeroDuration() : key.deadline - key.arrival;
  task->attrs.priority = static_cast<int>(request.priority());
  task->image = *std::move(image);
  task->top_k = ResolveTopK(request.top_k(), admission.model->spec().arch.num_classes);
  task->return_logits = request.return_logits();
  task->request_id = request.request_id();
  task->arrival = key.arrival;
  task->cancelled = admission.cancelled;
  task->done = std::move(admission.done);
  absl::Status scheduled = Enqueue(*admission.model, task);
  // Refused: `task` is still ours, and so is its `done`.
  if (!scheduled.ok()) admission.done = std::move(task->done);
  return scheduled;
}

absl::Status ServingCore::Enqueue(ModelState& model, std::unique_ptr<InferenceTask>& task) {
  const absl::Time deadline = task->attrs.deadline;
  // Counted before Schedule: the batch may start (and decrement) before it returns.
  ++model.queued;
  absl::Status scheduled = scheduler_->Schedule(model.queue, &task);
  if (!scheduled.ok()) {
    // Refused on arrival by the policy (DEADLINE_EXCEEDED before the deadline).
    if (model.guard != nullptr && scheduled.code() == absl::StatusCode::kDeadlineExceeded &&
        clock_->Now() < deadline) {
      model.guard->ObserveRefusal(clock_->Now());
    }
    --model.queued;
    return scheduled;
  }
  if (model.metrics != nullptr) model.metrics->SetQueueDepth(model.queued.load());
  return absl::OkStatus();
}

}  // namespace vitserve
