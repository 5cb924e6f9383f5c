// Warm-up forwards: lazy initialisation (allocator pools, kernels, first touch of the
// weights) paid before traffic, and a check that a version's logits are finite.
#ifndef VITSERVE_SERVER_SERVING_WARM_UP_H_
#define VITSERVE_SERVER_SERVING_WARM_UP_H_

#include "absl/status/status.h"
#include "server/executor/inference_model.h"

namespace vitserve {

// Runs `batch_size` zero images (at least 1) at `keep_rate`; INVALID_ARGUMENT when a logit
// is not finite, the model's error (naming the model) when it fails.
absl::Status WarmUpModel(InferenceModel& model, int batch_size, float keep_rate);

// A full zero batch of `max_batch_size` at the model's highest and lowest keep-rate.
absl::Status WarmUpFullBatches(InferenceModel& model, int max_batch_size);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_WARM_UP_H_
