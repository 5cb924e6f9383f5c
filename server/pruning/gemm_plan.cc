#include "server/pruning/gemm_plan.h"

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "absl/strings/str_format.h"
#include "server/pruning/cpu_kernels.h"

namespace vitserve {
namespace {

thread_local const GemmPlan* current_plan = nullptr;

// Seconds of one FastLinear on `shape` with `kernel` forced (a one-shape plan).
double TimeKernel(GemmKernel kernel, const GemmShape& shape, const GemmTimer& timer,
                  const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  GemmChoice forced;
  forced.shape = shape;
  forced.kernel = kernel;
  const GemmPlan plan({forced});
  return timer(kernel, shape, [&] {
    ScopedGemmPlan scope(&plan);
    (void)FastLinear(x, w, b);
  });
}

}  // namespace

const char* GemmKernelName(GemmKernel kernel) {
  return kernel == GemmKernel::kAten ? "aten" : "onednn";
}

GemmTimer WallClockGemmTimer(int repeats) {
  return [repeats](GemmKernel, const GemmShape&, const std::function<void()>& run) {
    run();  // warm-up: oneDNN's JIT, OpenBLAS's buffers, caches
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < std::max(1, repeats); ++i) {
      const auto start = std::chrono::steady_clock::now();
      run();
      best = std::min(
          best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
  };
}

GemmKernel GemmPlan::Lookup(int64_t m, int64_t n, int64_t k) const {
  const GemmChoice* best = nullptr;
  double best_distance = std::numeric_limits<double>::infinity();
  for (const GemmChoice& c : choices_) {
    if (c.shape.n != n || c.shape.k != k) continue;
    const double distance =
        std::abs(std::log(static_cast<double>(std::max<int64_t>(m, 1))) -
                 std::log(static_cast<double>(std::max<int64_t>(c.shape.m, 1))));
    if (distance < best_distance) {
      best = &c;
      best_distance = distance;
    }
  }
  return best != nullptr ? best->kernel : GemmKernel::kOneDnn;
}

std::vector<std::string> GemmPlan::Describe() const {
  std::vector<std::string> out;
  for (const GemmChoice& c : choices_) {
    out.push_back(absl::StrFormat("%dx%dx%d %s (onednn %.3f ms, aten %.3f ms)", c.shape.m,
                                  c.shape.n, c.shape.k, GemmKernelName(c.kernel),
                                  1e3 * c.onednn_seconds, 1e3 * c.aten_seconds));
  }
  return out;
}

GemmPlan ChooseGemmKernels(const std::vector<GemmShape>& shapes, const GemmTimer& timer) {
  std::map<std::tuple<int64_t, int64_t, int64_t>, GemmShape> unique;
  for (const GemmShape& s : shapes) unique.emplace(std::make_tuple(s.m, s.n, s.k), s);
  std::vector<GemmChoice> choices;
  torch::NoGradGuard no_grad;
  for (const auto& [key, shape] : unique) {
    GemmChoice c;
    c.shape = shape;
    if (!FastCpuKernelsAvailable()) {
      c.kernel = GemmKernel::kAten;
      choices.push_back(c);
      continue;
    }
    const torch::Tensor x = torch::randn({shape.m, shape.k});
    const torch::Tensor w = torch::randn({shape.n, shape.k});
    const torch::Tensor b = torch::randn({shape.n});
    c.onednn_seconds = TimeKernel(GemmKernel::kOneDnn, shape, timer, x, w, b);
    c.aten_seconds = TimeKernel(GemmKernel::kAten, shape, timer, x, w, b);
    c.kernel = c.aten_seconds < c.onednn_seconds ? GemmKernel::kAten : GemmKernel::kOneDnn;
    choices.push_back(c);
  }
  return GemmPlan(std::move(choices));
}

GemmPlan ChooseGemmKernelsOnce(const std::vector<GemmShape>& shapes) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int>;  // m, n, k, threads
  static std::mutex* mu = new std::mutex();
  static auto* memo = new std::map<Key, GemmChoice>();
  const int threads = KernelThreads();
  std::lock_guard<std::mutex> lock(*mu);
  std::vector<GemmShape> missing;
  for (const GemmShape& s : shapes) {
    if (memo->count({s.m, s.n, s.k, threads}) == 0) missing.push_back(s);
  }
  const GemmPlan timed = ChooseGemmKernels(missing, WallClockGemmTimer(2));
  for (const GemmChoice& c : timed.choices()) {
    memo->emplace(Key{c.shape.m, c.shape.n, c.shape.k, threads}, c);
  }
  std::map<Key, GemmChoice> mine;
  for (const GemmShape& s : shapes) {
    const Key key{s.m, s.n, s.k, threads};
    mine.emplace(key, memo->at(key));
  }
  std::vector<GemmChoice> choices;
  for (const auto& [key, choice] : mine) choices.push_back(choice);
  return GemmPlan(std::move(choices));
}

ScopedGemmPlan::ScopedGemmPlan(const GemmPlan* plan) : previous_(current_plan) {
  current_plan = plan;
}

ScopedGemmPlan::~ScopedGemmPlan() { current_plan = previous_; }

const GemmPlan* CurrentGemmPlan() { return current_plan; }

}  // namespace vitserve
