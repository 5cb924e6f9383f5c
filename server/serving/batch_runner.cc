#include "server/serving/batch_runner.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/budget/budget_policy.h"
#include "server/serving/classify_logic.h"
#include "server/serving/shadow.h"

namespace vitserve {

using vitserve::v1::ClassifyResponse;

struct BatchRunner::Outcome {
  std::shared_ptr<ServedModel> served;  // the version that ran the batch
  absl::StatusOr<std::vector<ImageResult>> results;
  absl::Duration predicted;
  absl::Time start;
  absl::Time end;
  double compute_seconds() const { return absl::ToDoubleSeconds(end - start); }
};

namespace {

// Whether a request that has a deadline was answered within its budget (arrival to answer).
bool WithinBudget(const InferenceTask& task, double total_seconds) {
  return total_seconds <= absl::ToDoubleSeconds(task.attrs.latency_budget);
}

ClassifyResponse BuildResponse(const InferenceTask& task, const ModelState& model,
                               const ImageResult& r, float keep_rate, int batch_size,
                               absl::Time start, absl::Time end, const ModelSpec& spec) {
  ClassifyResponse response;
  for (vitserve::v1::Prediction& p : TopKPredictions(r.logits, task.top_k, spec.labels)) {
    *response.add_predictions() = std::move(p);
  }
  response.set_keep_rate(keep_rate);
  for (int t : r.tokens_per_stage) response.add_tokens_per_stage(static_cast<uint32_t>(t));
  response.set_macs(r.macs);
  response.set_dense_macs(model.dense_macs);
  vitserve::v1::Timing* timing = response.mutable_timing();
  timing->set_queue_seconds(absl::ToDoubleSeconds(start - task.arrival));
  timing->set_compute_seconds(absl::ToDoubleSeconds(end - start));
  timing->set_total_seconds(absl::ToDoubleSeconds(end - task.arrival));
  response.set_batch_size(static_cast<uint32_t>(batch_size));
  response.set_model(model.name);
  if (task.return_logits) {
    for (float l : r.logits) response.add_logits(l);
  }
  response.set_request_id(task.request_id);
  response.set_expected_accuracy(
      static_cast<float>(ExpectedAccuracy(spec.calibration, spec.pruning.method, keep_rate)));
  return response;
}

}  // namespace

const char* RefusalReason(const absl::Status& status, absl::Time now, absl::Time deadline) {
  switch (status.code()) {
    case absl::StatusCode::kResourceExhausted:
      return kRejectQueueFull;
    case absl::StatusCode::kDeadlineExceeded:
      return now < deadline ? kRejectBudgetUnmeetable : kRejectDeadline;
    case absl::StatusCode::kCancelled:
      return kRejectCancelled;
    case absl::StatusCode::kUnavailable:
      return kRejectDraining;
    default:
      return "";
  }
}

void BatchRunner::Run(float keep_rate, std::vector<std::unique_ptr<InferenceTask>> batch) {
  ModelState& model = *batch[0]->model;
  const int64_t depth = model.queued -= static_cast<int64_t>(batch.size());
  if (model.metrics != nullptr) model.metrics->SetQueueDepth(depth);
  // The images move out of the tasks so they outlive the answers (shadow comparison).
  std::vector<ImageTensor> owned_images;
  owned_images.reserve(batch.size());
  for (auto& task : batch) owned_images.push_back(std::move(task->image));
  std::vector<const ImageTensor*> images;
  images.reserve(batch.size());
  for (const ImageTensor& image : owned_images) images.push_back(&image);

  Outcome outcome = Forward(model, keep_rate, images);
  RecordBatch(model, keep_rate, static_cast<int>(batch.size()), outcome);
  if (outcome.results.ok() && outcome.results->size() != batch.size()) {
    outcome.results = absl::InternalError(absl::StrCat("model returned ", outcome.results->size(),
                                                       " results for a batch of ", batch.size()));
  }
  AnswerAll(model, keep_rate, batch, outcome);
  if (outcome.results.ok()) {
    MaybeShadow(model, *outcome.served->model, keep_rate, images, *outcome.results);
  }
}

BatchRunner::Outcome BatchRunner::Forward(ModelState& model, float keep_rate,
                                          const std::vector<const ImageTensor*>& images) const {
  const int batch_size = static_cast<int>(images.size());
  Outcome outcome;
  outcome.predicted = model.latency != nullptr ? model.latency->Predict(keep_rate, batch_size)
                                               : absl::ZeroDuration();
  outcome.served = model.Current();  // one version per batch
  outcome.start = clock_->Now();
  outcome.results = outcome.served->model->Run(images, keep_rate);
  outcome.end = clock_->Now();
  if (model.latency != nullptr && outcome.results.ok()) {
    const absl::Duration took = outcome.end - outcome.start;
    model.latency->Observe(keep_rate, batch_size, took).IgnoreError();
    if (model.guard != nullptr) model.guard->ObserveBatch(outcome.end, outcome.predicted, took);
  }
  return outcome;
}

void BatchRunner::RecordBatch(ModelState& model, float keep_rate, int batch_size,
                              const Outcome& outcome) {
  ModelMetrics* metrics = model.metrics;
  if (metrics == nullptr) return;
  metrics->OnBatch(batch_size, keep_rate, outcome.compute_seconds());
  if (model.latency == nullptr) return;
  if (options_.scheduler == SchedulerKind::kBudget) {
    // What rule 2c saw for this model's queue.
    const double arrival_rate = arrival_rate_ ? arrival_rate_(model) : 0.0;
    const double factor = model.guard != nullptr ? model.guard->Factor() : 1.0;
    metrics->SetLoad(arrival_rate,
                     LoadCapKeepRate(*model.latency->Snapshot(), arrival_rate * factor,
                                     options_.target_utilization, options_.max_batch_size,
                                     options_.num_batch_threads));
    if (model.guard != nullptr) {
      const LatencyGuard::State guard = model.guard->GetState();
      metrics->SetLatencyGuard(guard.factor, guard.reserve, guard.miss_ratio);
    }
  }
  if (outcome.results.ok()) {
    metrics->OnLatencyPrediction(absl::ToDoubleSeconds(outcome.predicted),
                                 outcome.compute_seconds());
  }
}

void BatchRunner::AnswerAll(ModelState& model, float keep_rate,
                            std::vector<std::unique_ptr<InferenceTask>>& batch,
                            const Outcome& outcome) {
  const ModelSpec& spec = outcome.served->model->spec();  // labels, calibration of this version
  const int batch_size = static_cast<int>(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    std::unique_ptr<InferenceTask>& task = batch[i];
    if (!outcome.results.ok()) {
      Answer(std::move(task), outcome.results.status());
      continue;
    }
    ClassifyResponse response = BuildResponse(*task, model, (*outcome.results)[i], keep_rate,
                                              batch_size, outcome.start, outcome.end, spec);
    Answer(std::move(task), std::move(response));
  }
}

void BatchRunner::MaybeShadow(ModelState& model, InferenceModel& version, float keep_rate,
                              const std::vector<const ImageTensor*>& images,
                              const std::vector<ImageResult>& results) {
  const double fraction = options_.shadow_fraction;
  ModelMetrics* metrics = model.metrics;
  if (metrics == nullptr || fraction <= 0.0 || keep_rate >= 1.0f || images.empty()) return;
  const uint64_t n = images.size();
  const uint64_t sampled = ShadowSampleCount(model.shadow_seen.fetch_add(n), n, fraction);
  if (sampled == 0) return;
  const auto skip_all = [&] {
    for (uint64_t i = 0; i < sampled; ++i) {
      metrics->OnShadow(ShadowRecord{ShadowRecord::Outcome::kSkipped, 0.0});
    }
  };
  if (model.queued.load() > 0) return skip_all();  // work is waiting: never delay it
  std::vector<const ImageTensor*> chosen(images.begin(), images.begin() + sampled);
  absl::StatusOr<std::vector<ImageResult>> dense = version.Run(chosen, 1.0f);
  if (!dense.ok() || dense->size() != chosen.size()) return skip_all();
  for (size_t i = 0; i < chosen.size(); ++i) {
    const ShadowComparison c = CompareWithDense((*dense)[i].logits, results[i].logits);
    metrics->OnShadow(ShadowRecord{
        c.top1_agrees ? ShadowRecord::Outcome::kAgree : ShadowRecord::Outcome::kDisagree,
        c.kl_nats});
  }
}

void BatchRunner::Reject(std::unique_ptr<InferenceTask> task, absl::Status status) {
  ModelState& model = *task->model;
  const int64_t depth = --model.queued;
  if (model.metrics != nullptr) {
    model.metrics->SetQueueDepth(depth);
    const char* reason = RefusalReason(status, clock_->Now(), task->attrs.deadline);
    if (*reason != '\0') model.metrics->OnRejected(reason);
  }
  Answer(std::move(task), std::move(status));
}

void BatchRunner::ObserveBudget(const InferenceTask& task,
                                const absl::StatusOr<ClassifyResponse>& result) {
  LatencyGuard* guard = task.model->guard.get();
  if (guard == nullptr || task.attrs.deadline == absl::InfiniteFuture()) return;
  const absl::Time now = clock_->Now();
  if (result.ok()) {
    guard->ObserveRequest(now, WithinBudget(task, result->timing().total_seconds()));
  } else if (result.status().code() == absl::StatusCode::kDeadlineExceeded) {
    if (now >= task.attrs.deadline) {
      guard->ObserveRequest(now, /*met=*/false);  // expired in the queue
    } else {
      guard->ObserveRefusal(now);  // the policy refused it at once (rule 1b)
    }
  }
  // Other failures (cancellations, errors) say nothing about the predictions.
}

void BatchRunner::Answer(std::unique_ptr<InferenceTask> task,
                         absl::StatusOr<ClassifyResponse> result) {
  ObserveBudget(*task, result);
  if (task->model->metrics != nullptr) {
    RequestOutcome record;
    record.grpc_code = static_cast<int>(result.status().code());
    record.dense_macs = task->model->dense_macs;
    if (result.ok()) {
      record.queue_seconds = result->timing().queue_seconds();
      record.compute_seconds = result->timing().compute_seconds();
      record.total_seconds = result->timing().total_seconds();
      record.keep_rate = result->keep_rate();
      record.macs = result->macs();
      if (result->predictions_size() > 0) record.top1_probability = result->predictions(0).score();
      record.expected_accuracy = result->expected_accuracy();
    } else {
      record.total_seconds = absl::ToDoubleSeconds(clock_->Now() - task->arrival);
    }
    record.had_budget = task->attrs.deadline != absl::InfiniteFuture();
    record.budget_met =
        record.had_budget && result.ok() && WithinBudget(*task, record.total_seconds);
    task->model->metrics->OnRequestDone(record);
  }
  if (metrics_ != nullptr) metrics_->AddInFlight(-1);
  task->done(std::move(result));
}

}  // namespace vitserve
