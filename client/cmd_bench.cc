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

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  if (!args.empty()) return Usage("takes no positional arguments (use --input=FILE_OR_DIR)");
  const std::string server = absl::GetFlag(FLAGS_server);
  const double rate = absl::GetFlag(FLAGS_rate);
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  const int64_t max_requests = absl::GetFlag(FLAGS_requests);
  const std::string input = absl::GetFlag(FLAGS_input);
  const bool random_tensor = absl::GetFlag(FLAGS_random_tensor);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const int max_inflight = absl::GetFlag(FLAGS_max_inflight);
  const float keep_rate = static_cast<float>(absl::GetFlag(FLAGS_keep_rate));
  int64_t timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  if (timeout_ms <= 0) timeout_ms = kDefaultBenchTimeoutMs;
  const double bad_fraction = absl::GetFlag(FLAGS_bad_fraction);
  const double cancel_fraction = absl::GetFlag(FLAGS_cancel_fraction);
  if (!(bad_fraction >= 0 && cancel_fraction >= 0 && bad_fraction + cancel_fraction <= 1)) {
    return Usage("--bad_fraction and --cancel_fraction must be >= 0 and sum to <= 1");
  }

  if (!(rate >= 0) || !std::isfinite(rate)) return Usage("--rate must be >= 0 (0 = closed loop)");
  if (rate == 0 && concurrency < 1) return Usage("--concurrency must be >= 1 in closed loop");
  if (!(duration_s > 0 && duration_s <= kMaxDurationS)) {
    return Usage(absl::StrCat("--duration_s must be in (0, ", kMaxDurationS, "]"));
  }
  if (max_requests < 0) return Usage("--requests must be >= 0 (0 = until --duration_s)");
  if (max_inflight < 1) return Usage("--max_inflight must be >= 1");
  if (input.empty() == !random_tensor) {
    return Usage("give exactly one of --input=FILE_OR_DIR or --random_tensor");
  }
  absl::StatusOr<BudgetDistribution> budget =
      BudgetDistribution::Parse(absl::GetFlag(FLAGS_budget_ms));
  if (!budget.ok()) return Usage(std::string(budget.status().message()));
  bool progress = false;
  if (!ProgressEnabled(&progress)) return kExitUsage;

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(server);
  if (!channel.ok()) {
    std::fprintf(stderr, "vitclient: %s\n", std::string(channel.status().message()).c_str());
    return kExitUsage;
  }
  auto stub = vitserve::v1::InferenceService::NewStub(*channel);
  vitserve::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, absl::Milliseconds(timeout_ms));
    vitserve::v1::GetModelInfoRequest request;
    request.set_model(absl::GetFlag(FLAGS_model));
    const grpc::Status status = stub->GetModelInfo(&ctx, request, &info);
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", RpcErrorText(server, status).c_str());
      return kExitFailed;
    }
  }

  // Request templates, cycled.
  std::mt19937_64 rng(seed);
  std::vector<vitserve::v1::ClassifyRequest> templates;
  if (random_tensor) {
    const int c = static_cast<int>(info.architecture().in_chans());
    const int s = static_cast<int>(info.architecture().image_size());
    if (c <= 0 || s <= 0) {
      std::fprintf(stderr, "vitclient bench: model %s reports input shape [%d,%d,%d]\n",
                   info.name().c_str(), c, s, s);
      return kExitFailed;
    }
    for (int v = 0; v < kRandomTensorVariants; ++v) {
      vitserve::v1::ClassifyRequest r;
      auto* t = r.mutable_tensor();
      t->add_shape(c);
      t->add_shape(s);
      t->add_shape(s);
      t->mutable_data()->Reserve(c * s * s);
      for (int i = 0; i < c * s * s; ++i) t->add_data(Normal(rng));
      templates.push_back(std::move(r));
    }
  } else {
    absl::StatusOr<std::vector<std::string>> files = DiscoverImageFiles({input});
    if (!files.ok()) return Usage(std::string(files.status().message()));
    if (files->empty()) return Usage(absl::StrCat(input, ": no image files found"));
    const size_t n = std::min<size_t>(files->size(), absl::GetFlag(FLAGS_max_inputs));
    for (size_t i = 0; i < n; ++i) {
      absl::StatusOr<std::string> bytes =
          ReadFileBytes((*files)[i], absl::GetFlag(FLAGS_max_file_bytes));
      if (!bytes.ok()) return Usage(std::string(bytes.status().message()));
      vitserve::v1::ClassifyRequest r;
      r.set_image(*std::move(bytes));
      templates.push_back(std::move(r));
    }
  }
  for (auto& r : templates) {
    r.set_model(absl::GetFlag(FLAGS_model));
    r.set_keep_rate(keep_rate);
    r.set_min_keep_rate(static_cast<float>(absl::GetFlag(FLAGS_min_keep_rate)));
    r.set_min_expected_accuracy(static_cast<float>(absl::GetFlag(FLAGS_min_expected_accuracy)));
    r.set_top_k(kBenchTopK);
  }

  const bool open_loop = rate > 0;
  ProgressBar bar(max_requests, progress, stderr);
  SampleLog log(&bar);
  const absl::Time start = absl::Now();
  const absl::Time stop_sending = start + absl::Seconds(duration_s);
  {
    CallRunner runner(stub.get(), open_loop ? max_inflight : concurrency,
                      absl::Milliseconds(timeout_ms));
    absl::Time next_arrival = start;
    for (int64_t i = 0; max_requests == 0 || i < max_requests; ++i) {
      vitserve::v1::ClassifyRequest request = templates[i % templates.size()];
      const double budget_ms = budget->Sample(rng);
      request.set_latency_budget_ms(static_cast<float>(budget_ms));
      request.set_request_id(absl::StrCat("bench-", i));
      if (open_loop) {
        next_arrival += absl::Seconds(ExponentialGap(rng, rate));
        if (next_arrival >= stop_sending) break;
        absl::SleepFor(next_arrival - absl::Now());  // no-op when already late
      } else if (absl::Now() >= stop_sending) {
        break;
      }
      // Soak mix: a deliberately invalid request, or one the client cancels midway.
      // Drawn only when asked for, so plain runs keep their seeded budget sequence.
      const double u = bad_fraction + cancel_fraction > 0 ? Uniform01(rng) : 1.0;
      const bool bad = u < bad_fraction;
      const bool cancel = !bad && u < bad_fraction + cancel_fraction;
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
      if (open_loop) {
        if (!runner.TryStart(static_cast<size_t>(i), std::move(request), done, cancel_after)) {
          BenchSample dropped;
          dropped.code = kClientDropped;
          dropped.budget_ms = budget_ms;
          log.Add(dropped);
        }
      } else {
        runner.Start(static_cast<size_t>(i), std::move(request), done, cancel_after);
      }
    }
    runner.Wait();
  }
  bar.Finish();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  const BenchReport report = ComputeBenchReport(log.Take(), elapsed);

  BenchConfig config;
  config.server = server;
  config.model = info.name();
  config.mode = open_loop ? "open-loop" : "closed-loop";
  config.rate = rate;
  config.concurrency = open_loop ? 0 : concurrency;
  config.budget = budget->ToString();
  config.keep_rate = keep_rate;
  config.input = random_tensor ? "random_tensor" : input;
  config.seed = seed;
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

}  // namespace vitserve::client
