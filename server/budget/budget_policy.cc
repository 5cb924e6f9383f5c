#include "server/budget/budget_policy.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
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

float LoadCapKeepRate(const LatencyTable& table, double arrival_rate, double target_utilization,
                      int max_batch_size, int parallel_batches) {
  const std::vector<float>& levels = table.keep_rate_levels();  // highest first
  if (!(target_utilization > 0.0) || !(arrival_rate > 0.0) || max_batch_size < 1) {
    return levels.front();
  }
  const double capacity = target_utilization * std::max(parallel_batches, 1);
  for (float level : levels) {
    const double seconds_per_task =
        absl::ToDoubleSeconds(table.Predict(level, max_batch_size)) / max_batch_size;
    if (arrival_rate * seconds_per_task <= capacity) return level;
  }
  return levels.back();
}

absl::StatusOr<std::unique_ptr<BudgetPolicy>> BudgetPolicy::Create(
    const Options& options, std::shared_ptr<const LatencyModel> latency_model,
    std::shared_ptr<const LatencyGuard> guard) {
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
  if (!(options.target_utilization >= 0.0 && options.target_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_utilization must be in [0, 1], got ", options.target_utilization));
  }
  if (options.parallel_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel_batches must be >= 1, got ", options.parallel_batches));
  }
  if (latency_model == nullptr) return absl::InvalidArgumentError("latency_model is required");
  return std::unique_ptr<BudgetPolicy>(
      new BudgetPolicy(options, std::move(latency_model), std::move(guard)));
}

absl::Duration BudgetPolicy::GuardedCompute(const LatencyTable& table, float keep_rate,
                                            int batch_size, double safety_factor) const {
  return table.Predict(keep_rate, batch_size) * (safety_factor * (1.0 + options_.safety_fraction)) +
         options_.safety_margin;
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now) const {
  const std::shared_ptr<const LatencyTable> table = latency_model_->Snapshot();
  return Decide(queue, now, *table, SafetyFactor());
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now,
                                   const LatencyTable& table, double safety_factor) const {
  return DecideFrom(queue, now, now, /*rejects_only=*/false, table, safety_factor);
}

absl::Status BudgetPolicy::Admit(const QueueSnapshot& queue, absl::Time now,
                                 absl::Time free_at) const {
  const std::shared_ptr<const LatencyTable> table = latency_model_->Snapshot();
  return Admit(queue, now, free_at, *table, SafetyFactor());
}

absl::Status BudgetPolicy::Admit(const QueueSnapshot& queue, absl::Time now, absl::Time free_at,
                                 const LatencyTable& table, double safety_factor) const {
  if (queue.tasks.empty()) return absl::OkStatus();
  const size_t last = queue.tasks.size() - 1;
  BatchDecision d =
      DecideFrom(queue, now, std::max(now, free_at), /*rejects_only=*/true, table, safety_factor);
  for (auto& [index, status] : d.reject) {
    if (index == last) return status;
  }
  return absl::OkStatus();
}

BatchDecision BudgetPolicy::DecideFrom(const QueueSnapshot& queue, absl::Time now,
                                       absl::Time scan_start, bool rejects_only,
                                       const LatencyTable& table, double safety_factor) const {
  BatchDecision decision;
  const std::vector<float>& levels = table.keep_rate_levels();  // highest first

  // G(k, n) for every level and n <= max_batch_size, computed once per decision (the
  // batch-forming loop below asks for it O(tasks²) times).
  const size_t max_n = static_cast<size_t>(options_.max_batch_size);
  std::vector<absl::Duration> grid(levels.size() * max_n);
  for (size_t l = 0; l < levels.size(); ++l) {
    for (size_t n = 1; n <= max_n; ++n) {
      grid[l * max_n + n - 1] =
          GuardedCompute(table, levels[l], static_cast<int>(n), safety_factor);
    }
  }
  auto guarded = [&](float rate, int n) -> absl::Duration {
    if (n >= 1 && static_cast<size_t>(n) <= max_n) {
      for (size_t l = 0; l < levels.size(); ++l) {
        if (levels[l] == rate) return grid[l * max_n + static_cast<size_t>(n) - 1];
      }
    }
    return GuardedCompute(table, rate, n, safety_factor);  // a fixed keep-rate off the grid
  };
  // 2c. The load cap: the highest level at which the offered load fits the device. Set
  // below, after admission's early return (rule 1b does not use it).
  float cap = levels.front();
  // best(t, start, n): highest level in [lowest, max(cap, lowest)] whose guarded batch
  // time fits the bound.
  auto best = [&](const TaskView& t, absl::Time start, int n) -> std::optional<float> {
    const float highest = std::max(cap, t.lowest);
    for (float level : levels) {
      if (level > highest + kKeepRateTolerance) continue;
      if (level < t.lowest - kKeepRateTolerance) break;
      if (start + guarded(level, n) <= t.bound) return level;
    }
    return std::nullopt;
  };

  // 1. Classify; an unreachable min_keep_rate is INVALID_ARGUMENT.
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
    if (!v.fixed) {
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
    }
    views.push_back(v);
  }

  // 2. Most urgent first; candidate batches formed greedily.
  std::sort(views.begin(), views.end(), [](const TaskView& a, const TaskView& b) {
    return std::tie(a.priority, a.bound, a.enqueue_time, a.index) <
           std::tie(b.priority, b.bound, b.enqueue_time, b.index);
  });
  // What can run at `rate` next to others (batch compatibility).
  auto runs_at = [](const TaskView& t, float rate) {
    if (t.fixed) return SameRate(t.fixed_rate, rate);
    if (t.budgeted()) return t.lowest <= rate + kKeepRateTolerance;
    return SameRate(t.unbudgeted_rate, rate);
  };
  // The fastest rate a task may run at: its own when fixed, lo(t) for "server chooses"
  // with a budget, the default rate without one.
  auto floor_rate = [](const TaskView& t) {
    return t.fixed ? t.fixed_rate : (t.budgeted() ? t.lowest : t.unbudgeted_rate);
  };
  // The backlog scan: the tasks not `excluded`, in urgency order, run back to back from
  // `start` in greedy batches at their floor rates (the fastest schedule the policy could
  // still choose). Returns the budgeted tasks that miss their bound even so, each with the
  // time its own batch could start at the earliest.
  struct Lost {
    size_t view;
    absl::Time start;
  };
  // With `at_least` > 0, "server chooses" tasks with a budget run at no less than it
  // (the queue served at one keep-rate level).
  auto scan = [&](absl::Time start, std::vector<bool> excluded, float at_least) {
    std::vector<Lost> lost;
    absl::Time t = start;
    for (size_t h = 0; h < views.size(); ++h) {
      if (excluded[h]) continue;
      excluded[h] = true;
      const TaskView& head = views[h];
      float rate = floor_rate(head);
      if (!head.fixed && head.budgeted()) rate = std::max(rate, at_least);
      if (head.budgeted() && t + guarded(rate, 1) > head.bound) {
        lost.push_back({h, t});
        continue;
      }
      int n = 1;
      absl::Time min_bound = head.bound;
      for (size_t j = h + 1; j < views.size() && static_cast<size_t>(n) < max_n; ++j) {
        if (excluded[j] || !runs_at(views[j], rate)) continue;
        if (t + guarded(rate, n + 1) > std::min(min_bound, views[j].bound)) continue;
        excluded[j] = true;
        ++n;
        min_bound = std::min(min_bound, views[j].bound);
      }
      t += guarded(rate, n);
    }
    return lost;
  };

  // 1b. Reject what the backlog makes hopeless: a budgeted task that misses its bound
  // even in the fastest schedule of the queue. Rejected now, while the client still has
  // time to go elsewhere, instead of expiring in the queue.
  std::vector<bool> assigned(views.size(), false);
  for (const Lost& l : scan(scan_start, assigned, /*at_least=*/0.0f)) {
    const TaskView& t = views[l.view];
    assigned[l.view] = true;
    // Admission asks only about the newcomer (the last task): no message for the others.
    if (rejects_only && t.index + 1 != queue.tasks.size()) continue;
    const float rate = floor_rate(t);
    const absl::Duration g = guarded(rate, 1);
    std::string ahead;
    if (l.start > now) {
      ahead = absl::StrCat(
          " after ", absl::FormatDuration(l.start - now), " of predicted compute ahead of it (",
          scan_start > now ? "the running batch and " : "", "the requests queued before it)");
    }
    decision.reject.emplace_back(
        t.index,
        absl::DeadlineExceededError(absl::StrCat(
            "latency budget cannot be met: predicted compute time ",
            absl::FormatDuration(table.Predict(rate, 1)), " (", absl::FormatDuration(g),
            " with the safety margin) at keep-rate ", rate,
            t.fixed ? " (as requested)" : " (the lowest allowed)", " for a batch of 1", ahead,
            " exceeds the remaining budget ", absl::FormatDuration(t.bound - now))));
  }
  if (rejects_only) return decision;
  // The guard's factor scales predicted times, so it scales the load they make too.
  cap = LoadCapKeepRate(table, queue.arrival_rate * safety_factor, options_.target_utilization,
                        options_.max_batch_size, options_.parallel_batches);

  struct Candidate {
    std::vector<size_t> members;  // into views
    float rate = 1.0f;
    absl::Time min_bound = absl::InfiniteFuture();
    absl::Time oldest = absl::InfiniteFuture();
    absl::Duration compute;  // G(rate, |members|)
    absl::Time latest_safe_start = absl::InfiniteFuture();
  };
  // The greedy batch headed by views[h] at `rate`, over the tasks not yet assigned (every
  // task before h is assigned: it headed or joined an earlier candidate).
  // `rescue`: the batch is formed to save the queue behind it, so followers join
  // whenever they fit (the waiting check assumes they would run alone next).
  auto form = [&](size_t h, float rate, bool rescue) {
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
      if (!runs_at(t, rate)) continue;
      const absl::Time finish = now + compute(c.members.size() + 1);
      if (finish > std::min(c.min_bound, t.bound)) continue;
      if (!rescue && !t.fixed && t.budgeted()) {
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
  // Budgeted tasks outside `c` that the backlog scan loses once `c` has run, with the
  // "server chooses" ones at no less than `at_least`.
  auto lost_after = [&](const Candidate& c, float at_least) {
    std::vector<bool> excluded = assigned;
    for (size_t m : c.members) excluded[m] = true;
    return static_cast<int>(scan(now + c.compute, std::move(excluded), at_least).size());
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
    Candidate c = form(h, rate, /*rescue=*/false);
    if (options_.rescue_batching && !head.fixed && head.budgeted() && lost_after(c, rate) > 0) {
      // The queue behind this batch could not all be served at the head's rate. Serve the
      // queue at one level: the highest level k at which this batch and then every
      // "server chooses" task at >= k loses nobody. Failing that (the fastest schedule
      // already loses some), the level with the most members minus losses.
      std::vector<Candidate> tried;  // the rescue batches, highest level first
      bool found = false;
      for (float level : levels) {
        if (level > rate + kKeepRateTolerance || level < head.lowest - kKeepRateTolerance) continue;
        tried.push_back(form(h, level, /*rescue=*/true));
        found = lost_after(tried.back(), level) == 0;
        if (found) break;
      }
      if (found) {
        c = std::move(tried.back());
      } else {
        int best_score = static_cast<int>(c.members.size()) - lost_after(c, 0.0f);
        for (Candidate& lower : tried) {
          const int score = static_cast<int>(lower.members.size()) - lost_after(lower, 0.0f);
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
    decision.predicted_compute = run->compute;
    decision.wake_at = absl::InfiniteFuture();
  }
  std::sort(decision.reject.begin(), decision.reject.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return decision;
}

}  // namespace vitserve
