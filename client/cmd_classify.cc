// vitclient classify FILE_OR_DIR...: one Classify call per image file, --concurrency at a
// time; results printed in input order as soon as every earlier file is done.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/call_runner.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "client/image_files.h"
#include "client/output.h"
#include "client/progress_bar.h"

namespace vitserve::client {
namespace {

// What one file produced: a line for stdout (table block or JSON) and/or for stderr.
struct FileOutput {
  std::string out;
  std::string err;
  bool failed = false;
};

// Collects per-file outputs and prints the longest finished prefix, in input order.
class OrderedPrinter {
 public:
  OrderedPrinter(size_t n, ProgressBar* bar) : outputs_(n), bar_(bar) {}

  void Set(size_t index, FileOutput output) {
    absl::MutexLock lock(&mu_);
    if (output.failed) ++failed_;
    ++done_;
    outputs_[index] = std::move(output);
    while (next_ < outputs_.size() && outputs_[next_].has_value()) {
      const FileOutput& o = *outputs_[next_];
      if (!o.err.empty()) bar_->PrintLine(stderr, o.err);
      if (!o.out.empty()) bar_->PrintLine(stdout, o.out);
      *outputs_[next_] = FileOutput();  // printed: free the text, the slot stays done
      ++next_;
    }
    bar_->Update(done_, failed_);
  }

  int64_t failed() const {
    absl::MutexLock lock(&mu_);
    return failed_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::optional<FileOutput>> outputs_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  ProgressBar* const bar_;
};

FileOutput ErrorOutput(const std::string& file, const std::string& request_id, int code,
                       const std::string& message, bool json) {
  FileOutput o;
  o.failed = true;
  o.err = ClassifyErrorText(file, code, message);
  if (json) o.out = ClassifyErrorJson(file, request_id, code, message);
  return o;
}

}  // namespace

bool ProgressEnabled(bool* enabled) {
  const std::string mode = absl::GetFlag(FLAGS_progress);
  if (mode == "auto") {
    *enabled = isatty(STDERR_FILENO) == 1;
  } else if (mode == "true" || mode == "1") {
    *enabled = true;
  } else if (mode == "false" || mode == "0") {
    *enabled = false;
  } else {
    std::fprintf(stderr, "vitclient: --progress=%s; accepted: auto, true, false\n", mode.c_str());
    return false;
  }
  return true;
}

namespace {

// --budget_ms, --top_k and --progress of classify; false after printing why.
bool ReadClassifyFlags(double* budget_ms, int* top_k, bool* progress) {
  const std::string budget_flag = absl::GetFlag(FLAGS_budget_ms);
  if (!absl::SimpleAtod(budget_flag, budget_ms) || !(*budget_ms >= 0)) {
    std::fprintf(stderr,
                 "vitclient classify: --budget_ms=%s; accepted: a number of milliseconds >= 0 "
                 "(distributions are for bench)\n",
                 budget_flag.c_str());
    return false;
  }
  *top_k = absl::GetFlag(FLAGS_top_k);
  if (*top_k < 0) {
    std::fprintf(stderr, "vitclient classify: --top_k must be >= 0 (0 = server default)\n");
    return false;
  }
  return ProgressEnabled(progress);
}

// The fields every classify request of this run shares.
vitserve::v1::ClassifyRequest BaseRequest(double budget_ms, int top_k) {
  vitserve::v1::ClassifyRequest base;
  base.set_model(absl::GetFlag(FLAGS_model));
  base.set_keep_rate(static_cast<float>(absl::GetFlag(FLAGS_keep_rate)));
  base.set_min_keep_rate(static_cast<float>(absl::GetFlag(FLAGS_min_keep_rate)));
  base.set_min_expected_accuracy(static_cast<float>(absl::GetFlag(FLAGS_min_expected_accuracy)));
  base.set_latency_budget_ms(static_cast<float>(budget_ms));
  base.set_top_k(static_cast<uint32_t>(top_k));
  base.set_return_logits(absl::GetFlag(FLAGS_logits));
  return base;
}

// Classifies every file (--concurrency calls at once) and hands each result, in file
// order, to `printer`.
void ClassifyFiles(vitserve::v1::InferenceService::Stub* stub,
                   const std::vector<std::string>& files, const vitserve::v1::ClassifyRequest& base,
                   bool json, OrderedPrinter& printer) {
  const int64_t max_file_bytes = absl::GetFlag(FLAGS_max_file_bytes);
  CallRunner runner(stub, absl::GetFlag(FLAGS_concurrency),
                    absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  const std::string id_prefix = absl::StrCat("vitclient-", getpid(), "-");
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& file = files[i];
    const std::string request_id = absl::StrCat(id_prefix, i);
    absl::StatusOr<std::string> bytes = ReadFileBytes(file, max_file_bytes);
    if (!bytes.ok()) {
      printer.Set(i, ErrorOutput(file, request_id, static_cast<int>(bytes.status().code()),
                                 std::string(bytes.status().message()), json));
      continue;
    }
    vitserve::v1::ClassifyRequest request = base;
    request.set_image(*std::move(bytes));
    request.set_request_id(request_id);
    runner.Start(i, std::move(request),
                 [&printer, &file, request_id, json](size_t index, CallRunner::Result r) {
                   if (!r.status.ok()) {
                     printer.Set(index, ErrorOutput(file, request_id, r.status.error_code(),
                                                    r.status.error_message(), json));
                     return;
                   }
                   FileOutput o;
                   o.out = json ? ClassifyResultJson(file, r.response, r.latency_s)
                                : ClassifyResultText(file, r.response, r.latency_s);
                   printer.Set(index, std::move(o));
                 });
  }
  runner.Wait();
}

}  // namespace

int RunClassify(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fprintf(stderr, "vitclient classify: give one or more image files or directories\n");
    return kExitUsage;
  }
  double budget_ms = 0;
  int top_k = 0;
  bool progress = false;
  if (!ReadClassifyFlags(&budget_ms, &top_k, &progress)) return kExitUsage;

  absl::StatusOr<std::vector<std::string>> files = DiscoverImageFiles(args);
  if (!files.ok()) {
    std::fprintf(stderr, "vitclient classify: %s\n", std::string(files.status().message()).c_str());
    return kExitUsage;
  }
  if (files->empty()) {
    std::fprintf(stderr,
                 "vitclient classify: no image files found (extensions: .jpg .jpeg .png "
                 ".bmp .webp .tif .tiff)\n");
    return kExitUsage;
  }

  const std::string server = absl::GetFlag(FLAGS_server);
  const bool json = absl::GetFlag(FLAGS_json);
  const std::unique_ptr<vitserve::v1::InferenceService::Stub> stub = MakeStubOrReport(server);
  if (stub == nullptr) return kExitUsage;

  ProgressBar bar(static_cast<int64_t>(files->size()), progress, stderr);
  OrderedPrinter printer(files->size(), &bar);
  const absl::Time start = absl::Now();
  ClassifyFiles(stub.get(), *files, BaseRequest(budget_ms, top_k), json, printer);
  bar.Finish();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  const int64_t failed = printer.failed();
  if (!json || failed > 0) {
    std::fprintf(stderr, "vitclient: %zu file(s), %lld failed, %.2f s (%.1f images/s)\n",
                 files->size(), static_cast<long long>(failed), elapsed,
                 elapsed > 0 ? files->size() / elapsed : 0.0);
  }
  return failed > 0 ? kExitFailed : kExitOk;
}

}  // namespace vitserve::client
