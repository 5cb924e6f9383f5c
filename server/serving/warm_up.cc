#include "server/serving/warm_up.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace vitserve {

absl::Status WarmUpModel(InferenceModel& model, int batch_size, float keep_rate) {
  const ModelSpec& spec = model.spec();
  ImageTensor zero;
  zero.channels = spec.arch.in_chans;
  zero.height = spec.arch.image_size;
  zero.width = spec.arch.image_size;
  zero.data.assign(static_cast<size_t>(zero.channels) * zero.height * zero.width, 0.0f);
  const std::vector<const ImageTensor*> images(static_cast<size_t>(std::max(1, batch_size)), &zero);
  absl::StatusOr<std::vector<ImageResult>> result = model.Run(images, keep_rate);
  if (!result.ok()) {
    return absl::Status(
        result.status().code(),
        absl::StrCat("warm-up of model '", spec.name, "' failed: ", result.status().message()));
  }
  for (const ImageResult& r : *result) {
    for (float l : r.logits) {
      if (!std::isfinite(l)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "warm-up of model '", spec.name, "' produced non-finite logits (broken weights?)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WarmUpFullBatches(InferenceModel& model, int max_batch_size) {
  const PruningSpec& pruning = model.spec().pruning;
  for (const float keep_rate : {pruning.max_keep_rate, pruning.min_keep_rate}) {
    if (absl::Status s = WarmUpModel(model, max_batch_size, keep_rate); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace vitserve
