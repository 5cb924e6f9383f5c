#include "server/rpc/oip_core.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace vitserve {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using vitserve::v1::ClassifyResponse;

// One request in flight: its images' results, gathered until the last one is in.
struct OipCore::Call {
  OipInferPlan plan;
  std::shared_ptr<std::atomic<bool>> cancelled;
  InferDone done;
  absl::Time start;
  absl::Mutex mu;
  std::vector<ClassifyResponse> results ABSL_GUARDED_BY(mu);
  // Images (plus one guard held while admitting) not yet answered.
  int remaining ABSL_GUARDED_BY(mu) = 0;
  // A refusal at admission: the answer, whatever the cancelled images report.
  absl::Status admit_error ABSL_GUARDED_BY(mu);
  // The failure of the lowest image index in the scheduler.
  absl::Status first_error ABSL_GUARDED_BY(mu);
  size_t first_error_index ABSL_GUARDED_BY(mu) = 0;
};

namespace {

void AddDuration(inference::StatisticDuration* d, absl::Duration t) {
  d->set_count(d->count() + 1);
  d->set_ns(d->ns() + static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(t))));
}

}  // namespace

OipCore::OipCore(ServingCore* service, const Clock* clock, OipCoreOptions options)
    : service_(service), clock_(clock), options_(std::move(options)) {}

void OipCore::Infer(const ModelInferRequest& request, absl::Time client_deadline,
                    std::shared_ptr<std::atomic<bool>> cancelled, InferDone done) {
  const absl::Time start = clock_->Now();
  absl::StatusOr<OipInferPlan> plan = ParseInferRequest(request, options_.parse);
  if (plan.ok() && !plan->version.empty()) {
    absl::StatusOr<vitserve::v1::ModelInfo> info = Resolve(plan->model, plan->version);
    if (!info.ok()) plan = info.status();
  }
  if (!plan.ok()) {
    done(plan.status());
    return;
  }
  if (plan->timeout != absl::InfiniteDuration()) {
    client_deadline = std::min(client_deadline, absl::Now() + plan->timeout);
  }
  auto call = std::make_shared<Call>();
  call->plan = *std::move(plan);
  call->cancelled = std::move(cancelled);
  call->done = std::move(done);
  call->start = start;
  const size_t n = call->plan.images.size();
  {
    absl::MutexLock lock(&call->mu);
    call->results.resize(n);
    call->remaining = static_cast<int>(n) + 1;  // +1: the admission guard
  }
  for (size_t i = 0; i < n; ++i) {
    absl::Status admitted =
        service_->Admit(std::move(call->plan.images[i]), client_deadline, call->cancelled.get(),
                        [this, call, i](absl::StatusOr<ClassifyResponse> result) {
                          bool last = false;
                          {
                            absl::MutexLock lock(&call->mu);
                            if (result.ok()) {
                              call->results[i] = *std::move(result);
                            } else if (call->first_error.ok() || i < call->first_error_index) {
                              call->first_error = result.status();
                              call->first_error_index = i;
                            }
                            last = --call->remaining == 0;
                          }
                          if (last) Finish(*call);
                        });
    if (!admitted.ok()) {
      *call->cancelled = true;  // the images already admitted leave their queues
      service_->KickScheduler();
      absl::MutexLock lock(&call->mu);
      call->admit_error = admitted;
      call->remaining -= static_cast<int>(n - i);
      break;
    }
  }
  bool last = false;
  {
    absl::MutexLock lock(&call->mu);
    last = --call->remaining == 0;
  }
  if (last) Finish(*call);
}

void OipCore::Finish(Call& call) {
  absl::Status status;
  std::vector<ClassifyResponse> results;
  {
    absl::MutexLock lock(&call.mu);
    status = !call.admit_error.ok() ? call.admit_error : call.first_error;
    results = std::move(call.results);
  }
  absl::StatusOr<ModelInferResponse> response = status.ok()
                                                    ? BuildInferResponse(call.plan, results)
                                                    : absl::StatusOr<ModelInferResponse>(status);
  if (response.ok() && response->model_version().empty()) {
    // The served version (the native response does not carry it; reload may change it).
    for (const vitserve::v1::ModelSummary& model : service_->ModelSummaries()) {
      if (model.name() == response->model_name()) response->set_model_version(model.version());
    }
  }
  const std::string model = response.ok() ? response->model_name() : call.plan.model;
  Record(model, response.status(), clock_->Now() - call.start, results);
  call.done(std::move(response));
}

void OipCore::Record(const std::string& model, const absl::Status& status, absl::Duration total,
                     const std::vector<ClassifyResponse>& results) {
  // Unknown models are not counted (a client could grow the map without bound).
  if (model.empty() || status.code() == absl::StatusCode::kNotFound) return;
  absl::MutexLock lock(&mu_);
  Stats& s = stats_[model];
  if (!status.ok()) {
    AddDuration(s.infer.mutable_fail(), total);
    return;
  }
  AddDuration(s.infer.mutable_success(), total);
  s.last_inference_ms = static_cast<uint64_t>(absl::ToUnixMillis(clock_->Now()));
  for (const ClassifyResponse& r : results) {
    ++s.inference_count;
    if (r.batch_size() > 0) s.executions += 1.0 / r.batch_size();
    AddDuration(s.infer.mutable_queue(), absl::Seconds(r.timing().queue_seconds()));
    AddDuration(s.infer.mutable_compute_infer(), absl::Seconds(r.timing().compute_seconds()));
  }
}

absl::StatusOr<vitserve::v1::ModelInfo> OipCore::Resolve(const std::string& name,
                                                         const std::string& version) const {
  absl::StatusOr<vitserve::v1::ModelInfo> info = service_->DescribeModel(name);
  if (!info.ok()) return info.status();
  if (!version.empty() && version != info->version()) {
    return absl::NotFoundError(absl::StrCat("model '", info->name(), "' has no version '", version,
                                            "'; served version: '", info->version(), "'"));
  }
  return info;
}

inference::ServerMetadataResponse OipCore::ServerMetadata() const {
  inference::ServerMetadataResponse response;
  response.set_name(options_.server_name);
  response.set_version(options_.server_version);
  for (const char* extension : kOipExtensions) response.add_extensions(extension);
  return response;
}

absl::StatusOr<bool> OipCore::ModelReady(const std::string& name,
                                         const std::string& version) const {
  absl::StatusOr<vitserve::v1::ModelInfo> info = Resolve(name, version);
  if (!info.ok()) return info.status();
  return ready();
}

absl::StatusOr<inference::ModelMetadataResponse> OipCore::ModelMetadata(
    const std::string& name, const std::string& version) const {
  absl::StatusOr<vitserve::v1::ModelInfo> info = Resolve(name, version);
  if (!info.ok()) return info.status();
  const auto& arch = info->architecture();
  inference::ModelMetadataResponse response;
  response.set_name(info->name());
  response.add_versions(info->version());
  response.set_platform("vitserve");
  auto* image = response.add_inputs();
  image->set_name(kOipImageInput);
  image->set_datatype("BYTES");
  image->add_shape(-1);
  auto* tensor = response.add_inputs();
  tensor->set_name(kOipTensorInput);
  tensor->set_datatype("FP32");
  for (int64_t d : {int64_t{-1}, int64_t{arch.in_chans()}, int64_t{arch.image_size()},
                    int64_t{arch.image_size()}}) {
    tensor->add_shape(d);
  }
  auto* logits = response.add_outputs();
  logits->set_name(kOipLogitsOutput);
  logits->set_datatype("FP32");
  logits->add_shape(-1);
  logits->add_shape(arch.num_classes());
  return response;
}

absl::StatusOr<inference::ModelConfigResponse> OipCore::ModelConfig(
    const std::string& name, const std::string& version) const {
  absl::StatusOr<vitserve::v1::ModelInfo> info = Resolve(name, version);
  if (!info.ok()) return info.status();
  const auto& arch = info->architecture();
  const ServingOptions& service_options = service_->options();
  inference::ModelConfigResponse response;
  inference::ModelConfig* config = response.mutable_config();
  config->set_name(info->name());
  config->set_platform("vitserve");
  config->set_backend("vitserve");
  config->set_max_batch_size(service_options.max_batch_size);
  inference::ModelInput* image = config->add_input();
  image->set_name(kOipImageInput);
  image->set_data_type(inference::TYPE_STRING);
  image->add_dims(1);
  image->set_optional(true);
  inference::ModelInput* tensor = config->add_input();
  tensor->set_name(kOipTensorInput);
  tensor->set_data_type(inference::TYPE_FP32);
  tensor->set_format(inference::ModelInput::FORMAT_NCHW);
  tensor->add_dims(arch.in_chans());
  tensor->add_dims(arch.image_size());
  tensor->add_dims(arch.image_size());
  tensor->set_optional(true);
  inference::ModelOutput* logits = config->add_output();
  logits->set_name(kOipLogitsOutput);
  logits->set_data_type(inference::TYPE_FP32);
  logits->add_dims(arch.num_classes());
  inference::ModelDynamicBatching* batching = config->mutable_dynamic_batching();
  batching->add_preferred_batch_size(service_options.max_batch_size);
  batching->set_max_queue_delay_microseconds(
      static_cast<uint64_t>(absl::ToInt64Microseconds(service_options.max_queue_delay)));
  batching->set_priority_levels(options_.parse.num_priority_levels);
  batching->set_default_priority_level(1);  // vitserve priority 0, the native default
  return response;
}

absl::StatusOr<inference::ModelStatisticsResponse> OipCore::ModelStatistics(
    const std::string& name, const std::string& version) const {
  std::vector<vitserve::v1::ModelInfo> models;
  if (!name.empty()) {
    absl::StatusOr<vitserve::v1::ModelInfo> info = Resolve(name, version);
    if (!info.ok()) return info.status();
    models.push_back(*std::move(info));
  } else {
    for (const vitserve::v1::ModelSummary& summary : service_->ModelSummaries()) {
      vitserve::v1::ModelInfo& info = models.emplace_back();
      info.set_name(summary.name());
      info.set_version(summary.version());
    }
  }
  inference::ModelStatisticsResponse response;
  absl::MutexLock lock(&mu_);
  for (const vitserve::v1::ModelInfo& info : models) {
    inference::ModelStatistics* out = response.add_model_stats();
    out->set_name(info.name());
    out->set_version(info.version());
    auto it = stats_.find(info.name());
    if (it == stats_.end()) continue;
    out->set_last_inference(it->second.last_inference_ms);
    out->set_inference_count(it->second.inference_count);
    out->set_execution_count(static_cast<uint64_t>(std::llround(it->second.executions)));
    *out->mutable_inference_stats() = it->second.infer;
  }
  return response;
}

}  // namespace vitserve
