// Chooses how a CPU forward of one image uses a model's intra-op threads: split every
// operation across them (task_pool.h) or run it on one thread, by the measured time of
// recent forwards of each kind. Internal to server/model/ (VitInferenceModel::Run).
//
// Why: splitting pays only when handing work between the cores is cheap next to the
// work. On the 2-vCPU AMD EPYC VM of 2026-12-08 a cache line took ~85 ns to go to the
// other vCPU and back most of the time, and ~390 ns for stretches of seconds to minutes
// (the host moved the vCPUs onto cores far apart; a two-thread ping-pong shows it). The
// bundled model at batch 1 (about 0.4 ms per forward, dozens of splits) then ran at
// 1400-1800 img/s on 2 threads against ~2200 on one, and at 2400-2800 when the cores
// were close. DeiT-S's GEMMs are large enough to split either way. No load-time timing
// can settle it, so the choice follows the forwards themselves.
//
// Policy: single is tried only for short forwards: while split forwards take
// `short_forward_seconds` or more (median), split runs (dozens of hand-offs of a few
// hundred nanoseconds each are lost in a forward of milliseconds, and a single-thread
// probe of DeiT-S would take ~1.7x as long as the split forward it replaces).
// Otherwise each kind's time per unit of work (the caller passes the forward's MACs) is
// the median of its last `window` observations, so one forward hit by an interrupt or a
// page fault does not flip the choice. The first forwards run split, then single, until
// each has `window` observations after its first (dropped: primitives are made then).
// After that the faster kind runs, and the other one once every `probe_every` forwards so
// that a change of machine is noticed: within `window` / 2 forwards when the running kind
// slows down, within `window` / 2 probes when the other one speeds up. Batches of several
// images do not come here (they split by image).
//
// Thread-safety: all methods may be called from several threads at once.
#ifndef VITSERVE_SERVER_MODEL_SPLIT_CHOOSER_H_
#define VITSERVE_SERVER_MODEL_SPLIT_CHOOSER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace vitserve {

class SplitChooser {
 public:
  enum class Kind { kSplit = 0, kSingle = 1 };

  struct Options {
    int window = 9;
    int64_t probe_every = 32;
    double short_forward_seconds = 0.005;
  };

  SplitChooser() : SplitChooser(Options()) {}
  explicit SplitChooser(Options options) : options_(options) {}

  // The kind the next forward should run.
  Kind Next();

  // A forward of `kind` took `seconds` for `work` units (> 0; e.g. its MACs).
  void Record(Kind kind, double seconds, double work);

  // The kind running and the medians, e.g. "one image: split (split 9.87 ms/GMAC, single
  // 12.80 ms/GMAC, 4100 forwards)"; "one image: split (forwards of 21.5 ms: single not
  // tried)" for long forwards; "one image: measuring (...)" during the warm-up.
  std::string Describe() const;

 private:
  struct Arm {
    int64_t seen = 0;              // observations, the dropped first one included
    std::vector<double> per_work;  // the last `window` seconds per unit of work (a ring)
    std::vector<double> seconds;   // the same observations' seconds per forward
    // Medians of the two rings, updated by Record so that Next reads them per forward.
    double median_per_work = 0;
    double median_seconds = 0;
  };

  // Enough observations after the dropped first one to be compared.
  bool Warm(const Arm& arm) const { return arm.seen > options_.window; }

  Kind BestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  Arm arms_[2] ABSL_GUARDED_BY(mu_);
  int64_t forwards_ ABSL_GUARDED_BY(mu_) = 0;     // Next calls
  int64_t since_probe_ ABSL_GUARDED_BY(mu_) = 0;  // Next calls since the other kind ran
};

absl::string_view SplitKindName(SplitChooser::Kind kind);  // "split" | "single"

}  // namespace vitserve

#endif  // VITSERVE_SERVER_MODEL_SPLIT_CHOOSER_H_
