#include "server/model/split_chooser.h"

#include "absl/strings/str_format.h"

namespace vitserve {
namespace {

constexpr SplitChooser::Kind kOther[2] = {SplitChooser::Kind::kSingle, SplitChooser::Kind::kSplit};

int Index(SplitChooser::Kind kind) { return static_cast<int>(kind); }

}  // namespace

absl::string_view SplitKindName(SplitChooser::Kind kind) {
  return kind == SplitChooser::Kind::kSplit ? "split" : "single";
}

SplitChooser::Kind SplitChooser::BestLocked() const {
  return arms_[Index(Kind::kSingle)].average < arms_[Index(Kind::kSplit)].average ? Kind::kSingle
                                                                                  : Kind::kSplit;
}

SplitChooser::Kind SplitChooser::Next() {
  absl::MutexLock lock(&mu_);
  ++forwards_;
  const int64_t needed = options_.warmup + 1;
  const Arm& split = arms_[Index(Kind::kSplit)];
  const Arm& single = arms_[Index(Kind::kSingle)];
  if (split.seen < needed) return Kind::kSplit;
  if (split.seconds >= options_.short_forward_seconds) return Kind::kSplit;
  if (single.seen < needed) {
    return Kind::kSingle;
  }
  const Kind best = BestLocked();
  const Kind other = kOther[Index(best)];
  const int64_t every = arms_[Index(other)].average > options_.far_ratio * arms_[Index(best)].average
                            ? options_.far_probe_every
                            : options_.probe_every;
  if (++since_probe_ >= every) {
    since_probe_ = 0;
    return other;
  }
  return best;
}

void SplitChooser::Record(Kind kind, double seconds, double work) {
  if (!(work > 0) || !(seconds >= 0)) return;
  absl::MutexLock lock(&mu_);
  Arm& arm = arms_[Index(kind)];
  ++arm.seen;
  if (arm.seen == 1) return;  // the first forward of a kind makes its primitives
  const double per_work = seconds / work;
  if (arm.seen == 2) {
    arm.average = per_work;
    arm.seconds = seconds;
  } else {
    arm.average += options_.smoothing * (per_work - arm.average);
    arm.seconds += options_.smoothing * (seconds - arm.seconds);
  }
}

std::string SplitChooser::Describe() const {
  absl::MutexLock lock(&mu_);
  const Arm& split = arms_[Index(Kind::kSplit)];
  const Arm& single = arms_[Index(Kind::kSingle)];
  if (split.seen > options_.warmup && split.seconds >= options_.short_forward_seconds) {
    return absl::StrFormat("one image: split (forwards of %.1f ms: single not tried)",
                           1e3 * split.seconds);
  }
  if (split.seen <= options_.warmup || single.seen <= options_.warmup) {
    return absl::StrFormat("one image: measuring (%d split, %d single forwards)", split.seen,
                           single.seen);
  }
  return absl::StrFormat("one image: %s (split %.3f ns/MMAC, single %.3f ns/MMAC, %d forwards)",
                         SplitKindName(BestLocked()), 1e15 * split.average, 1e15 * single.average,
                         forwards_);
}

}  // namespace vitserve
