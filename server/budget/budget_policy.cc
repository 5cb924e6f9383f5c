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

// G(k, n) = predicted × safety_factor × (1 + safety_fraction) + safety_margin.
absl::Duration GuardedTime(const BudgetPolicy::Options& options, const LatencyTable& table,
                           float keep_rate, int batch_size, double safety_factor) {
  return table.Predict(keep_rate, batch_size) * (safety_factor * (1.0 + options.safety_fraction)) +
         options.safety_margin;
}

// What can run at `rate` next to others (batch compatibility).
bool RunsAt(const TaskView& t, float rate) {
  if (t.fixed) return SameRate(t.fixed_rate, rate);
  if (t.budgeted()) return t.lowest <= rate + kKeepRateTolerance;
  return SameRate(t.unbudgeted_rate, rate);
}

// The fastest rate a task may run at: its own when fixed, lo(t) for "server chooses" with a
// budget, the default rate without one.
float FloorRate(const TaskView& t) {
  return t.fixed ? t.fixed_rate : (t.budgeted() ? t.lowest : t.unbudgeted_rate);
}

// A budgeted task the backlog scan loses, with the time its own batch could start at the
// earliest.
struct Lost {
  size_t view;
  absl::Time start;
};

// A batch the policy could run (rule 2): members index the decision's views.
struct Candidate {
  std::vector<size_t> members;
  float rate = 1.0f;
  absl::Time min_bound = absl::InfiniteFuture();
  absl::Time oldest = absl::InfiniteFuture();
  absl::Duration compute;  // G(rate, |members|)
  absl::Time latest_safe_start = absl::InfiniteFuture();
};

// One decision of the rule in budget_policy.h, at `now` against one table and safety factor.
// The steps are called in order: Classify (rule 1), RejectHopeless (1b), SetCap (2c),
// PickBatch (2, 2b, 3).
class Decider {
 public:
  Decider(const BudgetPolicy::Options& options, const LatencyTable& table, double safety_factor,
          double reserve, absl::Time now);

  // Rule 1: the task views, most urgent first, floors mapped with `accuracy`; unreachable
  // floors go to `reject`.
  void Classify(const QueueSnapshot& queue, const AccuracyCurve& accuracy,
                std::vector<std::pair<size_t, absl::Status>>& reject);
  // Rule 1b: rejects the tasks the backlog scan from `scan_start` loses (with
  // `rejects_only`, reports only the newcomer, the last of `num_tasks`).
  void RejectHopeless(absl::Time scan_start, bool rejects_only, size_t num_tasks,
                      std::vector<std::pair<size_t, absl::Status>>& reject);
  // Rule 2c's cap (the highest level until set).
  void SetCap(float cap) { cap_ = cap; }
  // Rules 2, 2b and 3: sets the batch to run now, or wake_at.
  void PickBatch(bool draining, BatchDecision& decision);

 private:
  absl::Duration Guarded(float rate, int n) const;
  // best(t, start, n): the highest level in [lowest, max(cap, lowest)] that fits the bound.
  std::optional<float> Best(const TaskView& t, absl::Time start, int n) const;
  // The backlog scan: the tasks not `excluded`, in urgency order, run back to back from
  // `start` in greedy batches at their floor rates (with `at_least` > 0, "server chooses"
  // tasks with a budget at no less than it). Returns the budgeted tasks lost even so.
  std::vector<Lost> Scan(absl::Time start, std::vector<bool> excluded, float at_least) const;
  // The greedy batch headed by views_[h] at `rate` over the unassigned tasks. `rescue`:
  // followers join whenever they fit (no waiting check).
  Candidate Form(size_t h, float rate, bool rescue) const;
  // Budgeted tasks outside `c` the backlog scan loses once `c` has run.
  int LostAfter(const Candidate& c, float at_least) const;
  // Rule 2b for head h whose greedy batch `c` loses tasks behind it.
  Candidate Rescue(size_t h, Candidate c) const;
  // The head's keep-rate (rule 2).
  float HeadRate(const TaskView& head) const;
  // Error message of rule 1b for a lost task.
  std::string HopelessMessage(const Lost& l, absl::Time scan_start) const;

  const BudgetPolicy::Options& options_;
  const LatencyTable& table_;
  const double safety_factor_;
  const double reserve_;  // ρ: the fraction of each budget kept free at its end
  const absl::Time now_;
  const std::vector<float>& levels_;  // highest first
  const size_t max_n_;
  // G(k, n) for every level and n <= max_batch_size, computed once per decision (batch
  // forming asks for it O(tasks²) times).
  std::vector<absl::Duration> grid_;
  float cap_;
  std::vector<TaskView> views_;
  std::vector<bool> assigned_;  // in a candidate, or rejected
};

Decider::Decider(const BudgetPolicy::Options& options, const LatencyTable& table,
                 double safety_factor, double reserve, absl::Time now)
    : options_(options),
      table_(table),
      safety_factor_(safety_factor),
      reserve_(std::clamp(reserve, 0.0, 1.0)),
      now_(now),
      levels_(table.keep_rate_levels()),
      max_n_(static_cast<size_t>(options.max_batch_size)),
      grid_(levels_.size() * max_n_),
      cap_(levels_.front()) {
  for (size_t l = 0; l < levels_.size(); ++l) {
    for (size_t n = 1; n <= max_n_; ++n) {
      grid_[l * max_n_ + n - 1] =
          GuardedTime(options_, table_, levels_[l], static_cast<int>(n), safety_factor_);
    }
  }
}

absl::Duration Decider::Guarded(float rate, int n) const {
  if (n >= 1 && static_cast<size_t>(n) <= max_n_) {
    for (size_t l = 0; l < levels_.size(); ++l) {
      if (levels_[l] == rate) return grid_[l * max_n_ + static_cast<size_t>(n) - 1];
    }
  }
  return GuardedTime(options_, table_, rate, n, safety_factor_);  // a fixed rate off the grid
}

std::optional<float> Decider::Best(const TaskView& t, absl::Time start, int n) const {
  const float highest = std::max(cap_, t.lowest);
  for (float level : levels_) {
    if (level > highest + kKeepRateTolerance) continue;
    if (level < t.lowest - kKeepRateTolerance) break;
    if (start + Guarded(level, n) <= t.bound) return level;
  }
  return std::nullopt;
}

void Decider::Classify(const QueueSnapshot& queue, const AccuracyCurve& accuracy,
                       std::vector<std::pair<size_t, absl::Status>>& reject) {
  views_.reserve(queue.tasks.size());
  for (size_t i = 0; i < queue.tasks.size(); ++i) {
    const QueuedTask& task = queue.tasks[i];
    TaskView v;
    v.index = i;
    v.bound = Bound(task);
    if (reserve_ > 0.0 && v.bound != absl::InfiniteFuture() && v.bound > task.enqueue_time) {
      v.bound -= (v.bound - task.enqueue_time) * reserve_;  // the guard's reserve
    }
    v.enqueue_time = task.enqueue_time;
    v.priority = task.attributes.priority;
    v.fixed = task.attributes.keep_rate > 0.0f;
    v.fixed_rate = task.attributes.keep_rate;
    if (!v.fixed) {
      absl::StatusOr<float> floor = ResolveKeepRateFloor(
          task.attributes.min_keep_rate, task.attributes.min_expected_accuracy, accuracy);
      if (!floor.ok()) {
        reject.emplace_back(i, floor.status());
        continue;
      }
      const float min_rate = *floor;
      if (min_rate > levels_.front() + kKeepRateTolerance) {
        reject.emplace_back(i, absl::InvalidArgumentError(absl::StrCat(
                                   "min_keep_rate ", min_rate,
                                   " is above the model's highest keep-rate ", levels_.front())));
        continue;
      }
      // Lowest level >= min_keep_rate (levels are highest first).
      v.lowest = levels_.front();
      for (float level : levels_) {
        if (level >= min_rate - kKeepRateTolerance) v.lowest = level;
      }
      v.unbudgeted_rate = std::max(options_.default_keep_rate, min_rate);
    }
    views_.push_back(v);
  }
  // Rule 2's order: most urgent first.
  std::sort(views_.begin(), views_.end(), [](const TaskView& a, const TaskView& b) {
    return std::tie(a.priority, a.bound, a.enqueue_time, a.index) <
           std::tie(b.priority, b.bound, b.enqueue_time, b.index);
  });
  assigned_.assign(views_.size(), false);
}

std::vector<Lost> Decider::Scan(absl::Time start, std::vector<bool> excluded,
                                float at_least) const {
  std::vector<Lost> lost;
  absl::Time t = start;
  for (size_t h = 0; h < views_.size(); ++h) {
    if (excluded[h]) continue;
    excluded[h] = true;
    const TaskView& head = views_[h];
    float rate = FloorRate(head);
    if (!head.fixed && head.budgeted()) rate = std::max(rate, at_least);
    if (head.budgeted() && t + Guarded(rate, 1) > head.bound) {
      lost.push_back({h, t});
      continue;
    }
    int n = 1;
    absl::Time min_bound = head.bound;
    for (size_t j = h + 1; j < views_.size() && static_cast<size_t>(n) < max_n_; ++j) {
      if (excluded[j] || !RunsAt(views_[j], rate)) continue;
      if (t + Guarded(rate, n + 1) > std::min(min_bound, views_[j].bound)) continue;
      excluded[j] = true;
      ++n;
      min_bound = std::min(min_bound, views_[j].bound);
    }
    t += Guarded(rate, n);
  }
  return lost;
}

std::string Decider::HopelessMessage(const Lost& l, absl::Time scan_start) const {
  const TaskView& t = views_[l.view];
  const float rate = FloorRate(t);
  std::string ahead;
  if (l.start > now_) {
    ahead = absl::StrCat(
        " after ", absl::FormatDuration(l.start - now_), " of predicted compute ahead of it (",
        scan_start > now_ ? "the running batch and " : "", "the requests queued before it)");
  }
  return absl::StrCat(
      "latency budget cannot be met: predicted compute time ",
      absl::FormatDuration(table_.Predict(rate, 1)), " (", absl::FormatDuration(Guarded(rate, 1)),
      " with the safety margin) at keep-rate ", rate,
      t.fixed ? " (as requested)" : " (the lowest allowed)", " for a batch of 1", ahead,
      " exceeds the remaining budget ", absl::FormatDuration(t.bound - now_),
      reserve_ > 0.0
          ? absl::StrCat(" (", std::lround(100 * reserve_), " % of the budget kept in reserve)")
          : "");
}

void Decider::RejectHopeless(absl::Time scan_start, bool rejects_only, size_t num_tasks,
                             std::vector<std::pair<size_t, absl::Status>>& reject) {
  for (const Lost& l : Scan(scan_start, assigned_, /*at_least=*/0.0f)) {
    const TaskView& t = views_[l.view];
    assigned_[l.view] = true;
    // Admission asks only about the newcomer (the last task): no message for the others.
    if (rejects_only && t.index + 1 != num_tasks) continue;
    reject.emplace_back(t.index, absl::DeadlineExceededError(HopelessMessage(l, scan_start)));
  }
}

Candidate Decider::Form(size_t h, float rate, bool rescue) const {
  Candidate c;
  c.rate = rate;
  c.members = {h};
  c.min_bound = views_[h].bound;
  c.oldest = views_[h].enqueue_time;
  // G(rate, n), filled on first use.
  std::vector<absl::Duration> compute_for(max_n_, absl::InfiniteDuration());
  auto compute = [&](size_t n) {
    if (compute_for[n - 1] == absl::InfiniteDuration()) {
      compute_for[n - 1] = Guarded(rate, static_cast<int>(n));
    }
    return compute_for[n - 1];
  };
  for (size_t j = h + 1; j < views_.size() && c.members.size() < max_n_; ++j) {
    if (assigned_[j]) continue;
    const TaskView& t = views_[j];
    // Cheap compatibility first, then the fit, then (budgeted) the waiting check.
    if (!RunsAt(t, rate)) continue;
    const absl::Time finish = now_ + compute(c.members.size() + 1);
    if (finish > std::min(c.min_bound, t.bound)) continue;
    if (!rescue && !t.fixed && t.budgeted()) {
      const std::optional<float> later = Best(t, finish, 1);
      if (later.has_value() && *later > rate + kKeepRateTolerance) continue;
    }
    c.members.push_back(j);
    c.min_bound = std::min(c.min_bound, t.bound);
    c.oldest = std::min(c.oldest, t.enqueue_time);
  }
  c.compute = compute(c.members.size());
  if (c.min_bound != absl::InfiniteFuture()) c.latest_safe_start = c.min_bound - c.compute;
  return c;
}

int Decider::LostAfter(const Candidate& c, float at_least) const {
  std::vector<bool> excluded = assigned_;
  for (size_t m : c.members) excluded[m] = true;
  return static_cast<int>(Scan(now_ + c.compute, std::move(excluded), at_least).size());
}

Candidate Decider::Rescue(size_t h, Candidate c) const {
  // Serve the queue at one level: the highest level k at which this batch and then every
  // "server chooses" task at >= k loses nobody. Failing that (the fastest schedule already
  // loses some), the level with the most members minus losses.
  const float rate = c.rate;
  std::vector<Candidate> tried;  // the rescue batches, highest level first
  for (float level : levels_) {
    if (level > rate + kKeepRateTolerance || level < views_[h].lowest - kKeepRateTolerance) {
      continue;
    }
    tried.push_back(Form(h, level, /*rescue=*/true));
    if (LostAfter(tried.back(), level) == 0) return std::move(tried.back());
  }
  int best_score = static_cast<int>(c.members.size()) - LostAfter(c, 0.0f);
  for (Candidate& lower : tried) {
    const int score = static_cast<int>(lower.members.size()) - LostAfter(lower, 0.0f);
    if (score > best_score) {
      best_score = score;
      c = std::move(lower);
    }
  }
  return c;
}

float Decider::HeadRate(const TaskView& head) const {
  if (head.fixed) return head.fixed_rate;
  if (head.budgeted()) return *Best(head, now_, 1);  // exists: the head passed rule 1b
  return head.unbudgeted_rate;
}

void Decider::PickBatch(bool draining, BatchDecision& decision) {
  std::vector<Candidate> waiting;  // earlier candidates that wait for company
  const Candidate* run = nullptr;
  Candidate ready;
  for (size_t h = 0; h < views_.size() && run == nullptr; ++h) {
    if (assigned_[h]) continue;
    const TaskView& head = views_[h];
    const float rate = HeadRate(head);
    Candidate c = Form(h, rate, /*rescue=*/false);
    if (options_.rescue_batching && !head.fixed && head.budgeted() && LostAfter(c, rate) > 0) {
      c = Rescue(h, std::move(c));
    }
    for (size_t m : c.members) assigned_[m] = true;

    // 3. Run now, or note when to look again.
    const absl::Time delay_due = c.oldest + options_.max_queue_delay;
    if (draining || c.members.size() >= max_n_ || now_ >= delay_due ||
        now_ >= c.latest_safe_start) {
      ready = std::move(c);
      run = &ready;
      // Running it would push an earlier (more urgent) waiting candidate past its latest
      // safe start: run that one now instead; this one is next.
      for (const Candidate& w : waiting) {
        if (w.latest_safe_start < now_ + ready.compute) {
          run = &w;
          break;
        }
      }
      break;
    }
    decision.wake_at = std::min({decision.wake_at, delay_due, c.latest_safe_start});
    waiting.push_back(std::move(c));
  }
  if (run == nullptr) return;
  for (size_t m : run->members) decision.batch.push_back(views_[m].index);
  std::sort(decision.batch.begin(), decision.batch.end());
  decision.keep_rate = run->rate;
  decision.predicted_compute = run->compute;
  decision.wake_at = absl::InfiniteFuture();
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
    std::shared_ptr<const LatencyGuard> guard,
    std::shared_ptr<const AccuracyCurveSource> accuracy) {
  if (absl::Status valid = ValidateBatchingOptions(options); !valid.ok()) return valid;
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
      new BudgetPolicy(options, std::move(latency_model), std::move(guard), std::move(accuracy)));
}

absl::Duration BudgetPolicy::GuardedCompute(const LatencyTable& table, float keep_rate,
                                            int batch_size, double safety_factor) const {
  return GuardedTime(options_, table, keep_rate, batch_size, safety_factor);
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now) const {
  const std::shared_ptr<const LatencyTable> table = latency_model_->Snapshot();
  const LatencyGuard::State guard = GuardState();
  const std::shared_ptr<const AccuracyCurve> accuracy = AccuracyNow();
  return Decide(queue, now, *table, guard.factor, guard.reserve, accuracy.get());
}

BatchDecision BudgetPolicy::Decide(const QueueSnapshot& queue, absl::Time now,
                                   const LatencyTable& table, double safety_factor, double reserve,
                                   const AccuracyCurve* accuracy) const {
  return DecideFrom(queue, now, now, /*rejects_only=*/false,
                    Inputs{table, safety_factor, reserve, accuracy});
}

absl::Status BudgetPolicy::Admit(const QueueSnapshot& queue, absl::Time now,
                                 absl::Time free_at) const {
  const std::shared_ptr<const LatencyTable> table = latency_model_->Snapshot();
  const LatencyGuard::State guard = GuardState();
  const std::shared_ptr<const AccuracyCurve> accuracy = AccuracyNow();
  return Admit(queue, now, free_at, *table, guard.factor, guard.reserve, accuracy.get());
}

absl::Status BudgetPolicy::Admit(const QueueSnapshot& queue, absl::Time now, absl::Time free_at,
                                 const LatencyTable& table, double safety_factor, double reserve,
                                 const AccuracyCurve* accuracy) const {
  if (queue.tasks.empty()) return absl::OkStatus();
  const size_t last = queue.tasks.size() - 1;
  BatchDecision d = DecideFrom(queue, now, std::max(now, free_at), /*rejects_only=*/true,
                               Inputs{table, safety_factor, reserve, accuracy});
  for (auto& [index, status] : d.reject) {
    if (index == last) return status;
  }
  return absl::OkStatus();
}

BatchDecision BudgetPolicy::DecideFrom(const QueueSnapshot& queue, absl::Time now,
                                       absl::Time scan_start, bool rejects_only,
                                       const Inputs& inputs) const {
  const LatencyTable& table = inputs.table;
  const double safety_factor = inputs.safety_factor;
  BatchDecision decision;
  Decider decider(options_, table, safety_factor, inputs.reserve, now);
  // Without a source: no calibration, and min_keep_rate 0 is no floor (the lowest level).
  const AccuracyCurve uncalibrated{
      std::string(queue.key), 0.0f, table.keep_rate_levels().front(), {}};
  decider.Classify(queue, inputs.accuracy != nullptr ? *inputs.accuracy : uncalibrated,
                   decision.reject);
  decider.RejectHopeless(scan_start, rejects_only, queue.tasks.size(), decision.reject);
  if (rejects_only) return decision;
  // The guard's factor scales predicted times, so it scales the load they make too.
  decider.SetCap(LoadCapKeepRate(table, queue.arrival_rate * safety_factor,
                                 options_.target_utilization, options_.max_batch_size,
                                 options_.parallel_batches));
  decider.PickBatch(queue.draining, decision);
  std::sort(decision.reject.begin(), decision.reject.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return decision;
}

}  // namespace vitserve
