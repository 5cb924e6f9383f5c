#include "server/model/split_chooser.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace vitserve {
namespace {

constexpr SplitChooser::Kind kOther[2] = {SplitChooser::Kind::kSingle, SplitChooser::Kind::kSplit};

int Index(SplitChooser::Kind kind) { return static_cast<int>(kind); }

double Median(std::vector<double> values) {  // a copy: the ring keeps its order
  if (values.empty()) return 0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  return values[mid];
}

}  // namespace

absl::string_view SplitKindName(SplitChooser::Kind kind) {
  return kind == SplitChooser::Kind::kSplit ? "split" : "single";
}

SplitChooser::Kind SplitChooser::BestLocked() const {
  return arms_[Index(Kind::kSingle)].median_per_work < arms_[Index(Kind::kSplit)].median_per_work
             ? Kind::kSingle
             : Kind::kSplit;
}

SplitChooser::Kind SplitChooser::Next() {
  absl::MutexLock lock(&mu_);
  ++forwards_;
  const Arm& split = arms_[Index(Kind::kSplit)];
  if (!Warm(split)) return Kind::kSplit;
  if (split.median_seconds >= options_.short_forward_seconds) return Kind::kSplit;
  if (!Warm(arms_[Index(Kind::kSingle)])) return Kind::kSingle;
  const Kind best = BestLocked();
  if (++since_probe_ >= options_.probe_every) {
    since_probe_ = 0;
    return kOther[Index(best)];
  }
  return best;
}

void SplitChooser::Record(Kind kind, double seconds, double work) {
  if (!(work > 0) || !(seconds >= 0)) return;
  absl::MutexLock lock(&mu_);
  Arm& arm = arms_[Index(kind)];
  ++arm.seen;
  if (arm.seen == 1) return;  // the first forward of a kind makes its primitives
  const size_t window = static_cast<size_t>(std::max(1, options_.window));
  const size_t slot = static_cast<size_t>(arm.seen - 2) % window;
  if (arm.per_work.size() < window) {
    arm.per_work.push_back(seconds / work);
    arm.seconds.push_back(seconds);
  } else {
    arm.per_work[slot] = seconds / work;
    arm.seconds[slot] = seconds;
  }
  arm.median_per_work = Median(arm.per_work);
  arm.median_seconds = Median(arm.seconds);
}

std::string SplitChooser::Describe() const {
  absl::MutexLock lock(&mu_);
  const Arm& split = arms_[Index(Kind::kSplit)];
  const Arm& single = arms_[Index(Kind::kSingle)];
  if (Warm(split) && split.median_seconds >= options_.short_forward_seconds) {
    return absl::StrFormat("one image: split (forwards of %.1f ms: single not tried)",
                           1e3 * split.median_seconds);
  }
  if (!Warm(split) || !Warm(single)) {
    return absl::StrFormat("one image: measuring (%d split, %d single forwards)", split.seen,
                           single.seen);
  }
  return absl::StrFormat("one image: %s (split %.2f ms/GMAC, single %.2f ms/GMAC, %d forwards)",
                         SplitKindName(BestLocked()), 1e12 * split.median_per_work,
                         1e12 * single.median_per_work, forwards_);
}

}  // namespace vitserve
