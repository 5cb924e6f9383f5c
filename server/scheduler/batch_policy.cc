#include "server/scheduler/batch_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::unique_ptr<SizeOrDelayPolicy>> SizeOrDelayPolicy::Create(
    const Options& options) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be >= 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_delay must be >= 0, got ",
                                                   absl::FormatDuration(options.max_queue_delay)));
  }
  if (!(options.default_keep_rate > 0.0f && options.default_keep_rate <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_keep_rate must be in (0, 1], got ", options.default_keep_rate));
  }
  return std::unique_ptr<SizeOrDelayPolicy>(new SizeOrDelayPolicy(options));
}

BatchDecision SizeOrDelayPolicy::Decide(const QueueSnapshot& queue, absl::Time now) const {
  BatchDecision decision;
  if (queue.tasks.empty()) return decision;
  auto effective = [this](float requested) {
    return requested > 0.0f ? requested : options_.default_keep_rate;
  };
  const float keep_rate = effective(queue.tasks[0].attributes.keep_rate);
  std::vector<size_t> members;
  for (size_t i = 0; i < queue.tasks.size(); ++i) {
    if (static_cast<int>(members.size()) == options_.max_batch_size) break;
    if (effective(queue.tasks[i].attributes.keep_rate) == keep_rate) members.push_back(i);
  }
  const absl::Time first_due = queue.tasks[0].enqueue_time + options_.max_queue_delay;
  if (queue.draining || static_cast<int>(members.size()) == options_.max_batch_size ||
      now >= first_due) {
    decision.batch = std::move(members);
    decision.keep_rate = keep_rate;
  } else {
    decision.wake_at = first_due;
  }
  return decision;
}

}  // namespace vitserve
