#include "client/progress_bar.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vitserve::client {

namespace {
constexpr int64_t kSecondsPerMinute = 60;
constexpr int64_t kSecondsPerHour = 3600;
constexpr absl::string_view kClearLine = "\r\033[K";  // carriage return + erase line
}  // namespace

std::string FormatEta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s >= kSecondsPerHour) {
    return absl::StrFormat("%d:%02d:%02d", s / kSecondsPerHour,
                           (s % kSecondsPerHour) / kSecondsPerMinute, s % kSecondsPerMinute);
  }
  return absl::StrFormat("%d:%02d", s / kSecondsPerMinute, s % kSecondsPerMinute);
}

std::string FormatProgress(int64_t done, int64_t total, int64_t failed, double elapsed_s,
                           int bar_width) {
  const double rate = elapsed_s > 0 ? done / elapsed_s : 0.0;
  std::string line;
  if (total > 0) {
    const int64_t clamped = std::clamp<int64_t>(done, 0, total);
    const int filled = static_cast<int>(clamped * bar_width / total);
    absl::StrAppend(&line, "[", std::string(filled, '#'), std::string(bar_width - filled, '.'),
                    "] ", done, "/", total);
  } else {
    absl::StrAppend(&line, done);
  }
  absl::StrAppendFormat(&line, "  %.1f/s", rate);
  if (total > 0) {
    const double eta = (done > 0 && rate > 0) ? (total - done) / rate : -1.0;
    absl::StrAppend(&line, "  ETA ", FormatEta(eta));
  }
  if (failed > 0) absl::StrAppend(&line, "  (", failed, " failed)");
  return line;
}

ProgressBar::ProgressBar(int64_t total, bool enabled, FILE* out)
    : total_(total), enabled_(enabled), out_(out), start_(absl::Now()) {}

void ProgressBar::Update(int64_t done, int64_t failed) {
  absl::MutexLock lock(&mu_);
  done_ = done;
  failed_ = failed;
  if (!enabled_ || finished_) return;
  const absl::Time now = absl::Now();
  if (now - last_draw_ < kRedrawInterval && done != total_) return;
  last_draw_ = now;
  DrawLocked();
}

void ProgressBar::PrintLine(FILE* stream, absl::string_view line) {
  absl::MutexLock lock(&mu_);
  if (enabled_ && drawn_ && !finished_) ClearLocked();
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
  if (enabled_ && drawn_ && !finished_) DrawLocked();
}

void ProgressBar::Finish() {
  absl::MutexLock lock(&mu_);
  if (!enabled_ || finished_) return;
  DrawLocked();
  std::fputc('\n', out_);
  std::fflush(out_);
  finished_ = true;
}

void ProgressBar::DrawLocked() {
  const std::string line = absl::StrCat(
      kClearLine, FormatProgress(done_, total_, failed_,
                                 absl::ToDoubleSeconds(absl::Now() - start_), kBarWidth));
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::ClearLocked() {
  std::fwrite(kClearLine.data(), 1, kClearLine.size(), out_);
  std::fflush(out_);
}

}  // namespace vitserve::client
