// One admitted request as the scheduler holds it, and the scheduler type the serving core
// runs. Internal to server/serving/.
#ifndef VITSERVE_SERVER_SERVING_INFERENCE_TASK_H_
#define VITSERVE_SERVER_SERVING_INFERENCE_TASK_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/preprocess/preprocessor.h"
#include "server/scheduler/batch_policy.h"
#include "server/scheduler/batch_scheduler.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

struct ModelState;  // server/serving/model_registry.h

// Answers one request; called exactly once, on a batch thread.
using ClassifyDone = std::function<void(absl::StatusOr<vitserve::v1::ClassifyResponse>)>;

struct InferenceTask {
  ModelState* model = nullptr;  // not owned
  // The request's raw scheduling fields (keep_rate 0 = the batch policy chooses); the
  // keep-rate the task runs at is the batch's, chosen by the policy.
  TaskAttributes attrs;
  ImageTensor image;
  uint32_t top_k = 0;
  bool return_logits = false;
  std::string request_id;
  absl::Time arrival;
  // Set by the front end when the client goes away; outlives the task.
  const std::atomic<bool>* cancelled = nullptr;
  ClassifyDone done;

  const TaskAttributes& attributes() const { return attrs; }
  bool IsCancelled() const { return cancelled != nullptr && cancelled->load(); }
};

using TaskScheduler = BatchScheduler<InferenceTask>;

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_INFERENCE_TASK_H_
