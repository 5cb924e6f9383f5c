#include "server/budget/budget_policy.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// Keep-rates closer than this are the same level (floats from the wire vs the grid).
constexpr float kKeepRateTolerance = 1e-5f;

bool SameRate(float a, float b) { return std::abs(a - b) <= kKeepRateTolerance; }

// What the policy derives from one task before forming batches.
struct TaskView {
  size_t index = 0;
  absl::Time bound = absl::InfiniteFuture();  // deadline; infinite = no budget
  absl::Time enqueue_time;
  int priority = 0;
  bool fixed = false;           // keep_rate requested by the client
  float fixed_rate = 0.f;       // when fixed
  float lowest = 0.f;           // lo(t): lowest allowed level (server chooses)
  float unbudgeted_rate = 0.f;  // server chooses, no budget: the rate it runs at
  bool budgeted() const { return bound != absl::InfiniteFuture(); }
};

absl::Time Bound(const QueuedTask& task) {
  const TaskAttributes& a = task.attributes;
  if (a.deadline != absl::InfiniteFuture()) return a.deadline;
  if (a.latency_budget > absl::ZeroDuration()) return task.enqueue_time + a.latency_budget;
  return absl::InfiniteFuture();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BudgetPolicy>> BudgetPolicy::Create(
    const Options& options, std::shared_ptr<const LatencyModel> latency_model) {
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
  if (!(options.safety_fraction >= 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("safety_fraction must be >= 0, got ", options.safety_fraction));
  }
  if (options.safety_margin < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("safety_margin must be >= 0, got ",
                                                   absl::FormatDuration(options.safety_margin)));
  }
  if (latency_model == nullptr) return absl::InvalidArgumentError("latency_model is required");
  return std::unique_ptr<BudgetPolicy>(new BudgetPolicy(options, std::move(latency_model)));
}

absl::Duration BudgetPolicy::GuardedCompute(const LatencyTable& table, float keep_rate,
                                            int batch_size) const {
  return table.Predict(keep_rate, batch_size) * (1.0 + options_.safety_fraction) +
         options_.safety_margin;
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now) const {
  const std::shared_ptr<const LatencyTable> table = latency_model_->Snapshot();
  return Decide(queue, now, *table);
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now,
                                   const LatencyTable& table) const {
  BatchDecision decision;
  const std::vector<float>& levels = table.keep_rate_levels();  // highest first

  // best(t, start, n): highest level >= lowest whose guarded batch time fits the bound.
  auto best = [&](const TaskView& t, absl::Time start, int n) -> std::optional<float> {
    for (float level : levels) {
      if (level < t.lowest - kKeepRateTolerance) break;
      if (start + GuardedCompute(table, level, n) <= t.bound) return level;
    }
    return std::nullopt;
  };

  // 1. Classify; reject hopeless tasks.
  std::vector<TaskView> views;
  views.reserve(queue.tasks.size());
  for (size_t i = 0; i < queue.tasks.size(); ++i) {
    const QueuedTask& task = queue.tasks[i];
    TaskView v;
    v.index = i;
    v.bound = Bound(task);
    v.enqueue_time = task.enqueue_time;
    v.priority = task.attributes.priority;
    v.fixed = task.attributes.keep_rate > 0.0f;
    v.fixed_rate = task.attributes.keep_rate;
    float lowest_rate = 0.0f;
    if (v.fixed) {
      lowest_rate = v.fixed_rate;
    } else {
      const float min_rate = task.attributes.min_keep_rate;
      if (min_rate > levels.front() + kKeepRateTolerance) {
        decision.reject.emplace_back(
            i, absl::InvalidArgumentError(absl::StrCat("min_keep_rate ", min_rate,
                                                       " is above the model's highest keep-rate ",
                                                       levels.front())));
        continue;
      }
      // Lowest level >= min_keep_rate (levels are highest first).
      v.lowest = levels.front();
      for (float level : levels) {
        if (level >= min_rate - kKeepRateTolerance) v.lowest = level;
      }
      v.unbudgeted_rate = std::max(options_.default_keep_rate, min_rate);
      lowest_rate = v.lowest;
    }
    if (v.budgeted()) {
      const absl::Duration predicted = table.Predict(lowest_rate, 1);
      const absl::Duration guarded = GuardedCompute(table, lowest_rate, 1);
      if (now + guarded > v.bound) {
        decision.reject.emplace_back(
            i, absl::DeadlineExceededError(absl::StrCat(
                   "latency budget cannot be met: predicted compute time ",
                   absl::FormatDuration(predicted), " (", absl::FormatDuration(guarded),
                   " with the safety margin) at keep-rate ", lowest_rate,
                   v.fixed ? " (as requested)" : " (the lowest allowed)",
                   " for a batch of 1 exceeds the remaining budget ",
                   absl::FormatDuration(v.bound - now))));
        continue;
      }
    }
    views.push_back(v);
  }

  // 2. Most urgent first.
  std::sort(views.begin(), views.end(), [](const TaskView& a, const TaskView& b) {
    return std::tie(a.priority, a.bound, a.enqueue_time, a.index) <
           std::tie(b.priority, b.bound, b.enqueue_time, b.index);
  });

  std::vector<bool> assigned(views.size(), false);
  for (size_t h = 0; h < views.size(); ++h) {
    if (assigned[h]) continue;
    const TaskView& head = views[h];
    float rate = 0.0f;
    if (head.fixed) {
      rate = head.fixed_rate;
    } else if (head.budgeted()) {
      rate = *best(head, now, 1);  // exists: the head passed the hopeless check
    } else {
      rate = head.unbudgeted_rate;
    }
    std::vector<size_t> members = {h};
    absl::Time min_bound = head.bound;
    absl::Time oldest = head.enqueue_time;
    assigned[h] = true;
    for (size_t j = h + 1; j < views.size(); ++j) {
      if (static_cast<int>(members.size()) >= options_.max_batch_size) break;
      if (assigned[j]) continue;
      const TaskView& t = views[j];
      const int grown = static_cast<int>(members.size()) + 1;
      const absl::Time finish = now + GuardedCompute(table, rate, grown);
      if (finish > std::min(min_bound, t.bound)) continue;
      bool compatible = false;
      if (t.fixed) {
        compatible = SameRate(t.fixed_rate, rate);
      } else if (!t.budgeted()) {
        compatible = SameRate(t.unbudgeted_rate, rate);
      } else if (t.lowest <= rate + kKeepRateTolerance) {
        const std::optional<float> later = best(t, finish, 1);
        compatible = !later.has_value() || *later <= rate + kKeepRateTolerance;
      }
      if (!compatible) continue;
      members.push_back(j);
      assigned[j] = true;
      min_bound = std::min(min_bound, t.bound);
      oldest = std::min(oldest, t.enqueue_time);
    }

    // 3. Run now, or note when to look again.
    const int n = static_cast<int>(members.size());
    const absl::Time latest_safe_start = min_bound == absl::InfiniteFuture()
                                             ? absl::InfiniteFuture()
                                             : min_bound - GuardedCompute(table, rate, n);
    const absl::Time delay_due = oldest + options_.max_queue_delay;
    if (queue.draining || n >= options_.max_batch_size || now >= delay_due ||
        now >= latest_safe_start) {
      for (size_t m : members) decision.batch.push_back(views[m].index);
      std::sort(decision.batch.begin(), decision.batch.end());
      decision.keep_rate = rate;
      decision.wake_at = absl::InfiniteFuture();
      break;
    }
    decision.wake_at = std::min({decision.wake_at, delay_due, latest_safe_start});
  }
  std::sort(decision.reject.begin(), decision.reject.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return decision;
}

}  // namespace vitserve
