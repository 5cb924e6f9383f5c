// The progress line vitclient draws on stderr while many requests are in flight:
//   [##########..........]  120/500  24.0/s  ETA 0:16  (2 failed)
//
// Thread-safety: ProgressBar is internally synchronised; Update/Print/Finish may be called
// from gRPC callback threads. FormatProgress is pure.
#ifndef VITSERVE_CLIENT_PROGRESS_BAR_H_
#define VITSERVE_CLIENT_PROGRESS_BAR_H_

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitserve::client {

// One progress line (no newline, no carriage return). `bar_width` is the number of
// cells between the brackets. Rate = done / elapsed; ETA = (total - done) / rate, "?"
// until something has completed; total <= 0 means unknown (no bar, no ETA).
std::string FormatProgress(int64_t done, int64_t total, int64_t failed, double elapsed_s,
                           int bar_width);

// "M:SS" or "H:MM:SS"; negative or non-finite -> "?".
std::string FormatEta(double seconds);

class ProgressBar {
 public:
  // Redraw at most every this often (plus once at Finish).
  static constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);
  static constexpr int kBarWidth = 30;

  // Draws on `out` only when `enabled`; does not own `out`.
  ProgressBar(int64_t total, bool enabled, FILE* out);

  // Records progress; redraws when due.
  void Update(int64_t done, int64_t failed);
  // Writes a full line to `stream` (stdout or stderr) without garbling the bar: clears
  // the bar, writes the line, redraws the bar.
  void PrintLine(FILE* stream, absl::string_view line);
  // Final redraw and newline (if enabled). Idempotent.
  void Finish();

 private:
  void DrawLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t total_;
  const bool enabled_;
  FILE* const out_;
  const absl::Time start_;
  absl::Mutex mu_;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_draw_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool drawn_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_PROGRESS_BAR_H_
