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

  // G(k, n) for every level and n <= max_batch_size, computed once per decision (the
  // batch-forming loop below asks for it O(tasks²) times).
  const size_t max_n = static_cast<size_t>(options_.max_batch_size);
  std::vector<absl::Duration> grid(levels.size() * max_n);
  for (size_t l = 0; l < levels.size(); ++l) {
    for (size_t n = 1; n <= max_n; ++n) {
      grid[l * max_n + n - 1] = GuardedCompute(table, levels[l], static_cast<int>(n));
    }
  }
  auto guarded = [&](float rate, int n) -> absl::Duration {
    if (n >= 1 && static_cast<size_t>(n) <= max_n) {
      for (size_t l = 0; l < levels.size(); ++l) {
        if (levels[l] == rate) return grid[l * max_n + static_cast<size_t>(n) - 1];
      }
    }
    return GuardedCompute(table, rate, n);  // a fixed keep-rate off the grid
  };
  // best(t, start, n): highest level >= lowest whose guarded batch time fits the bound.
  auto best = [&](const TaskView& t, absl::Time start, int n) -> std::optional<float> {
    for (float level : levels) {
      if (level < t.lowest - kKeepRateTolerance) break;
      if (start + guarded(level, n) <= t.bound) return level;
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
      const absl::Duration g = guarded(lowest_rate, 1);
      if (now + g > v.bound) {
        decision.reject.emplace_back(
            i, absl::DeadlineExceededError(
                   absl::StrCat("latency budget cannot be met: predicted compute time ",
                                absl::FormatDuration(table.Predict(lowest_rate, 1)), " (",
                                absl::FormatDuration(g), " with the safety margin) at keep-rate ",
                                lowest_rate, v.fixed ? " (as requested)" : " (the lowest allowed)",
                                " for a batch of 1 exceeds the remaining budget ",
                                absl::FormatDuration(v.bound - now))));
        continue;
      }
    }
    views.push_back(v);
  }

  // 2. Most urgent first; candidate batches formed greedily.
  std::sort(views.begin(), views.end(), [](const TaskView& a, const TaskView& b) {
    return std::tie(a.priority, a.bound, a.enqueue_time, a.index) <
           std::tie(b.priority, b.bound, b.enqueue_time, b.index);
  });
  struct Candidate {
    std::vector<size_t> members;  // into views
    float rate = 1.0f;
    absl::Time min_bound = absl::InfiniteFuture();
    absl::Time oldest = absl::InfiniteFuture();
    absl::Duration compute;  // G(rate, |members|)
    absl::Time latest_safe_start = absl::InfiniteFuture();
  };
  std::vector<bool> assigned(views.size(), false);
  // The greedy batch headed by views[h] at `rate`, over the tasks not yet assigned (every
  // task before h is assigned: it headed or joined an earlier candidate).
  auto form = [&](size_t h, float rate) {
    Candidate c;
    c.rate = rate;
    c.members = {h};
    c.min_bound = views[h].bound;
    c.oldest = views[h].enqueue_time;
    // G(rate, n), filled on first use.
    std::vector<absl::Duration> compute_for(max_n, absl::InfiniteDuration());
    auto compute = [&](size_t n) {
      if (compute_for[n - 1] == absl::InfiniteDuration()) {
        compute_for[n - 1] = guarded(rate, static_cast<int>(n));
      }
      return compute_for[n - 1];
    };
    for (size_t j = h + 1; j < views.size() && c.members.size() < max_n; ++j) {
      if (assigned[j]) continue;
      const TaskView& t = views[j];
      // Cheap compatibility first, then the fit, then (budgeted) the waiting check.
      if (t.fixed ? !SameRate(t.fixed_rate, rate)
                  : (t.budgeted() ? t.lowest > rate + kKeepRateTolerance
                                  : !SameRate(t.unbudgeted_rate, rate))) {
        continue;
      }
      const absl::Time finish = now + compute(c.members.size() + 1);
      if (finish > std::min(c.min_bound, t.bound)) continue;
      if (!t.fixed && t.budgeted()) {
        const std::optional<float> later = best(t, finish, 1);
        if (later.has_value() && *later > rate + kKeepRateTolerance) continue;
      }
      c.members.push_back(j);
      c.min_bound = std::min(c.min_bound, t.bound);
      c.oldest = std::min(c.oldest, t.enqueue_time);
    }
    c.compute = compute(c.members.size());
    if (c.min_bound != absl::InfiniteFuture()) c.latest_safe_start = c.min_bound - c.compute;
    return c;
  };
  // Budgeted tasks after h, outside `c`, that could not make it even alone at their
  // lowest allowed keep-rate once `c` has run.
  auto lost_after = [&](const Candidate& c, size_t h) {
    const absl::Time finish = now + c.compute;
    int lost = 0;
    size_t next_member = 1;  // members after the head, in increasing order
    for (size_t j = h + 1; j < views.size(); ++j) {
      if (next_member < c.members.size() && c.members[next_member] == j) {
        ++next_member;
        continue;
      }
      const TaskView& t = views[j];
      if (assigned[j] || !t.budgeted()) continue;
      if (finish + guarded(t.fixed ? t.fixed_rate : t.lowest, 1) > t.bound) ++lost;
    }
    return lost;
  };

  std::vector<Candidate> waiting;  // earlier candidates that wait for company
  const Candidate* run = nullptr;
  Candidate ready;
  for (size_t h = 0; h < views.size() && run == nullptr; ++h) {
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
    Candidate c = form(h, rate);
    if (options_.rescue_batching && !head.fixed && head.budgeted()) {
      // Lower the head's keep-rate only to save requests this batch would otherwise doom.
      const int lost = lost_after(c, h);
      if (lost > 0) {
        int best_score = static_cast<int>(c.members.size()) - lost;
        for (float level : levels) {
          if (level >= rate || level < head.lowest - kKeepRateTolerance) continue;
          Candidate lower = form(h, level);
          const int score = static_cast<int>(lower.members.size()) - lost_after(lower, h);
          if (score > best_score) {
            best_score = score;
            c = std::move(lower);
          }
        }
      }
    }
    for (size_t m : c.members) assigned[m] = true;

    // 3. Run now, or note when to look again.
    const absl::Time delay_due = c.oldest + options_.max_queue_delay;
    if (queue.draining || c.members.size() >= max_n || now >= delay_due ||
        now >= c.latest_safe_start) {
      ready = std::move(c);
      run = &ready;
      // Running it would push an earlier (more urgent) waiting candidate past its latest
      // safe start: run that one now instead; this one is next.
      for (const Candidate& w : waiting) {
        if (w.latest_safe_start < now + ready.compute) {
          run = &w;
          break;
        }
      }
      break;
    }
    decision.wake_at = std::min({decision.wake_at, delay_due, c.latest_safe_start});
    waiting.push_back(std::move(c));
  }
  if (run != nullptr) {
    for (size_t m : run->members) decision.batch.push_back(views[m].index);
    std::sort(decision.batch.begin(), decision.batch.end());
    decision.keep_rate = run->rate;
    decision.wake_at = absl::InfiniteFuture();
  }
  std::sort(decision.reject.begin(), decision.reject.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return decision;
}

}  // namespace vitserve
