// vitclient bench: the load generator. Open loop (--rate, Poisson arrivals from --seed)
// or closed loop (--concurrency); bounded by --duration_s and/or --requests and by
// per-call deadlines; targets only --server. Report definitions: client/bench_report.h.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/bench_report.h"
#include "client/budget_distribution.h"
#include "client/call_runner.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "client/image_files.h"
#include "client/output.h"
#include "client/progress_bar.h"

namespace vitserve::client {
namespace {

constexpr double kMaxDurationS = 3600;
constexpr int kRandomTensorVariants = 4;           // distinct random inputs, cycled
constexpr int64_t kDefaultBenchTimeoutMs = 60000;  // when --timeout_ms=0
constexpr uint32_t kBenchTopK = 1;
constexpr double kTwoPi = 6.283185307179586;
constexpr double kCancelWindowMs = 20;  // cancellation delay range without a budget

int Usage(const std::string& message) {
  std::fprintf(stderr, "vitclient bench: %s\n", message.c_str());
  return kExitUsage;
}

// Standard normal by Box-Muller on Uniform01 (deterministic for a seed).
float Normal(std::mt19937_64& rng) {
  const double u1 = 1.0 - Uniform01(rng);  // (0, 1]
  const double u2 = Uniform01(rng);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

class SampleLog {
 public:
  explicit SampleLog(ProgressBar* bar) : bar_(bar) {}
  void Add(const BenchSample& s) {
    absl::MutexLock lock(&mu_);
    samples_.push_back(s);
    if (s.code != 0) ++failed_;
    bar_->Update(static_cast<int64_t>(samples_.size()), failed_);
  }
  std::vector<BenchSample> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(samples_);
  }

 private:
  absl::Mutex mu_;
  std::vector<BenchSample> samples_ ABSL_GUARDED_BY(mu_);
  int64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  ProgressBar* const bar_;
};

// The flags of one bench run, read and checked once.
struct BenchOptions {
  std::string server;
  std::string model;
  double rate = 0;
  int concurrency = 0;
  double duration_s = 0;
  int64_t max_requests = 0;
  std::string input;
  bool random_tensor = false;
  uint64_t seed = 0;
  int max_inflight = 0;
  float keep_rate = 0;
  int64_t timeout_ms = 0;
  double bad_fraction = 0;
  double cancel_fraction = 0;
  bool progress = false;
  bool open_loop() const { return rate > 0; }
};

// Reads the flags into `o`; returns kExitOk, or kExitUsage after printing why.
int ReadBenchOptions(BenchOptions* o, absl::StatusOr<BudgetDistribution>* budget) {
  o->server = absl::GetFlag(FLAGS_server);
  o->model = absl::GetFlag(FLAGS_model);
  o->rate = absl::GetFlag(FLAGS_rate);
  o->concurrency = absl::GetFlag(FLAGS_concurrency);
  o->duration_s = absl::GetFlag(FLAGS_duration_s);
  o->max_requests = absl::GetFlag(FLAGS_requests);
  o->input = absl::GetFlag(FLAGS_input);
  o->random_tensor = absl::GetFlag(FLAGS_random_tensor);
  o->seed = absl::GetFlag(FLAGS_seed);
  o->max_inflight = absl::GetFlag(FLAGS_max_inflight);
  o->keep_rate = static_cast<float>(absl::GetFlag(FLAGS_keep_rate));
  o->timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  if (o->timeout_ms <= 0) o->timeout_ms = kDefaultBenchTimeoutMs;
  o->bad_fraction = absl::GetFlag(FLAGS_bad_fraction);
  o->cancel_fraction = absl::GetFlag(FLAGS_cancel_fraction);
  if (!(o->bad_fraction >= 0 && o->cancel_fraction >= 0 &&
        o->bad_fraction + o->cancel_fraction <= 1)) {
    return Usage("--bad_fraction and --cancel_fraction must be >= 0 and sum to <= 1");
  }
  if (!(o->rate >= 0) || !std::isfinite(o->rate)) {
    return Usage("--rate must be >= 0 (0 = closed loop)");
  }
  if (o->rate == 0 && o->concurrency < 1) {
    return Usage("--concurrency must be >= 1 in closed loop");
  }
  if (!(o->duration_s > 0 && o->duration_s <= kMaxDurationS)) {
    return Usage(absl::StrCat("--duration_s must be in (0, ", kMaxDurationS, "]"));
  }
  if (o->max_requests < 0) return Usage("--requests must be >= 0 (0 = until --duration_s)");
  if (o->max_inflight < 1) return Usage("--max_inflight must be >= 1");
  if (o->input.empty() == !o->random_tensor) {
    return Usage("give exactly one of --input=FILE_OR_DIR or --random_tensor");
  }
  *budget = BudgetDistribution::Parse(absl::GetFlag(FLAGS_budget_ms));
  if (!budget->ok()) return Usage(std::string(budget->status().message()));
  if (!ProgressEnabled(&o->progress)) return kExitUsage;
  return kExitOk;
}

// Random CHW tensors of the model's input shape; false (message printed) if the model
// reports none.
bool RandomTensorTemplates(const vitserve::v1::ModelInfo& info, std::mt19937_64& rng,
                           std::vector<vitserve::v1::ClassifyRequest>* templates) {
  const int c = static_cast<int>(info.architecture().in_chans());
  const int s = static_cast<int>(info.architecture().image_size());
  if (c <= 0 || s <= 0) {
    std::fprintf(stderr, "vitclient bench: model %s reports input shape [%d,%d,%d]\n",
                 info.name().c_str(), c, s, s);
    return false;
  }
  for (int v = 0; v < kRandomTensorVariants; ++v) {
    vitserve::v1::ClassifyRequest r;
    auto* t = r.mutable_tensor();
    t->add_shape(c);
    t->add_shape(s);
    t->add_shape(s);
    t->mutable_data()->Reserve(c * s * s);
    for (int i = 0; i < c * s * s; ++i) t->add_data(Normal(rng));
    templates->push_back(std::move(r));
  }
  return true;
}

// The request templates, cycled: random tensors or the --input image files. Returns
// kExitOk, or the exit code after printing why.
int BuildTemplates(const BenchOptions& o, const vitserve::v1::ModelInfo& info, std::mt19937_64& rng,
                   std::vector<vitserve::v1::ClassifyRequest>* templates) {
  if (o.random_tensor) {
    if (!RandomTensorTemplates(info, rng, templates)) return kExitFailed;
  } else {
    absl::StatusOr<std::vector<std::string>> files = DiscoverImageFiles({o.input});
    if (!files.ok()) return Usage(std::string(files.status().message()));
    if (files->empty()) return Usage(absl::StrCat(o.input, ": no image files found"));
    const size_t n = std::min<size_t>(files->size(), absl::GetFlag(FLAGS_max_inputs));
    for (size_t i = 0; i < n; ++i) {
      absl::StatusOr<std::string> bytes =
          ReadFileBytes((*files)[i], absl::GetFlag(FLAGS_max_file_bytes));
      if (!bytes.ok()) return Usage(std::string(bytes.status().message()));
      vitserve::v1::ClassifyRequest r;
      r.set_image(*std::move(bytes));
      templates->push_back(std::move(r));
    }
  }
  for (auto& r : *templates) {
    r.set_model(o.model);
    r.set_keep_rate(o.keep_rate);
    r.set_min_keep_rate(static_cast<float>(absl::GetFlag(FLAGS_min_keep_rate)));
    r.set_min_expected_accuracy(static_cast<float>(absl::GetFlag(FLAGS_min_expected_accuracy)));
    r.set_top_k(kBenchTopK);
  }
  return kExitOk;
}

// Sends requests until --duration_s or --requests, open or closed loop, and logs one
// sample per request.
void SendLoad(const BenchOptions& o, vitserve::v1::InferenceService::Stub* stub,
              const std::vector<vitserve::v1::ClassifyRequest>& templates,
              const BudgetDistribution& budget, std::mt19937_64& rng, SampleLog& log) {
  const absl::Time start = absl::Now();
  const absl::Time stop_sending = start + absl::Seconds(o.duration_s);
  CallRunner runner(stub, o.open_loop() ? o.max_inflight : o.concurrency,
                    absl::Milliseconds(o.timeout_ms));
  absl::Time next_arrival = start;
  for (int64_t i = 0; o.max_requests == 0 || i < o.max_requests; ++i) {
    vitserve::v1::ClassifyRequest request = templates[i % templates.size()];
    const double budget_ms = budget.Sample(rng);
    request.set_latency_budget_ms(static_cast<float>(budget_ms));
    request.set_request_id(absl::StrCat("bench-", i));
    if (o.open_loop()) {
      next_arrival += absl::Seconds(ExponentialGap(rng, o.rate));
      if (next_arrival >= stop_sending) break;
      absl::SleepFor(next_arrival - absl::Now());  // no-op when already late
    } else if (absl::Now() >= stop_sending) {
      break;
    }
    // Soak mix: a deliberately invalid request, or one the client cancels midway.
    // Drawn only when asked for, so plain runs keep their seeded budget sequence.
    const double u = o.bad_fraction + o.cancel_fraction > 0 ? Uniform01(rng) : 1.0;
    const bool bad = u < o.bad_fraction;
    const bool cancel = !bad && u < o.bad_fraction + o.cancel_fraction;
    if (bad) request.set_keep_rate(2.0f);  // outside (0, 1]: INVALID_ARGUMENT
    const absl::Duration cancel_after =
        cancel ? absl::Microseconds(static_cast<int64_t>(
                     Uniform01(rng) * (budget_ms > 0 ? budget_ms : kCancelWindowMs) * 1000.0))
               : absl::InfiniteDuration();
    auto done = [&log, budget_ms, injected = bad || cancel](size_t, CallRunner::Result r) {
      BenchSample s;
      s.injected = injected;
      s.latency_s = r.latency_s;
      s.code = r.status.error_code();
      s.budget_ms = budget_ms;
      s.keep_rate = r.response.keep_rate();
      s.expected_accuracy = r.response.expected_accuracy();
      log.Add(s);
    };
    if (!o.open_loop()) {
      runner.Start(static_cast<size_t>(i), std::move(request), done, cancel_after);
    } else if (!runner.TryStart(static_cast<size_t>(i), std::move(request), done, cancel_after)) {
      BenchSample dropped;
      dropped.code = kClientDropped;
      dropped.budget_ms = budget_ms;
      log.Add(dropped);
    }
  }
  runner.Wait();
}

// Prints the report (text or --json) and writes --json_out; returns the exit code.
int PrintReport(const BenchOptions& o, const std::string& model, const std::string& budget,
                const BenchReport& report) {
  BenchConfig config;
  config.server = o.server;
  config.model = model;
  config.mode = o.open_loop() ? "open-loop" : "closed-loop";
  config.rate = o.rate;
  config.concurrency = o.open_loop() ? 0 : o.concurrency;
  config.budget = budget;
  config.keep_rate = o.keep_rate;
  config.input = o.random_tensor ? "random_tensor" : o.input;
  config.seed = o.seed;
  const std::string json = BenchReportJson(config, report);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", json.c_str());
  } else {
    std::printf("%s\n", BenchReportText(config, report).c_str());
  }
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::trunc);
    out << json << "\n";
    if (!out) {
      std::fprintf(stderr, "vitclient bench: could not write %s\n", json_out.c_str());
      return kExitFailed;
    }
  }
  return report.ok > 0 ? kExitOk : kExitFailed;
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("takes no positional arguments (use --input=FILE_OR_DIR)");
  BenchOptions o;
  absl::StatusOr<BudgetDistribution> budget;
  if (const int rc = ReadBenchOptions(&o, &budget); rc != kExitOk) return rc;

  const std::unique_ptr<vitserve::v1::InferenceService::Stub> stub = MakeStubOrReport(o.server);
  if (stub == nullptr) return kExitUsage;
  vitserve::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Milliseconds(o.timeout_ms));
    vitserve::v1::GetModelInfoRequest request;
    request.set_model(o.model);
    const grpc::Status status = stub->GetModelInfo(&ctx, request, &info);
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", RpcErrorText(o.server, status).c_str());
      return kExitFailed;
    }
  }

  std::mt19937_64 rng(o.seed);
  std::vector<vitserve::v1::ClassifyRequest> templates;
  if (const int rc = BuildTemplates(o, info, rng, &templates); rc != kExitOk) return rc;

  ProgressBar bar(o.max_requests, o.progress, stderr);
  SampleLog log(&bar);
  const absl::Time start = absl::Now();
  SendLoad(o, stub.get(), templates, *budget, rng, log);
  bar.Finish();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  return PrintReport(o, info.name(), budget->ToString(), ComputeBenchReport(log.Take(), elapsed));
}

}  // namespace vitserve::client
