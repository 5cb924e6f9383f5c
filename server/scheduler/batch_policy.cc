#include "server/scheduler/batch_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::Status ValidateBatchingOptions(const BatchingOptions& options) {
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
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SizeOrDelayPolicy>> SizeOrDelayPolicy::Create(
    const Options& options) {
  if (absl::Status valid = ValidateBatchingOptions(options); !valid.ok()) return valid;
  return std::unique_ptr<SizeOrDelayPolicy>(new SizeOrDelayPolicy(options));
}

BatchDecision SizeOrDelayPolicy::Decide(const QueueSnapshot& queue, absl::Time now) const {
  BatchDecision decision;
  if (queue.tasks.empty()) return decision;
  auto effective = [this](float requested) {
    return requested > 0.0f ? requested : options_.default_keep_rate;
  };
  // Groups by keep-rate, ordered by their oldest task; each holds its first max_batch_size.
  struct Group {
    float keep_rate;
    std::vector<size_t> members;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < queue.tasks.size(); ++i) {
    const float keep_rate = effective(queue.tasks[i].attributes.keep_rate);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [keep_rate](const Group& g) { return g.keep_rate == keep_rate; });
    if (it == groups.end()) it = groups.insert(groups.end(), Group{keep_rate, {}});
    if (static_cast<int>(it->members.size()) < options_.max_batch_size) it->members.push_back(i);
  }
  absl::Time wake = absl::InfiniteFuture();
  for (Group& group : groups) {
    const absl::Time due = queue.tasks[group.members[0]].enqueue_time + options_.max_queue_delay;
    if (queue.draining || static_cast<int>(group.members.size()) == options_.max_batch_size ||
        now >= due) {
      decision.batch = std::move(group.members);
      decision.keep_rate = group.keep_rate;
      return decision;
    }
    wake = std::min(wake, due);
  }
  decision.wake_at = wake;
  return decision;
}

}  // namespace vitserve
