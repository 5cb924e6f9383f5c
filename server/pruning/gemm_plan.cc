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
#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr EnumNameEntry<GemmKernel> kKernelNames[] = {{GemmKernel::kOneDnn, "onednn"},
                                                      {GemmKernel::kAten, "aten"},
                                                      {GemmKernel::kPacked, "packed"},
                                                      {GemmKernel::kMatmul, "matmul"}};

thread_local const GemmPlan* current_plan = nullptr;
thread_local const PackedWeightSet* current_packed = nullptr;

// Seconds of one FastLinear on `shape` with `kernel` forced (a one-shape plan).
double TimeKernel(GemmKernel kernel, const GemmShape& shape, const GemmTimer& timer,
                  const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                  const PackedWeightSet& packed) {
  GemmChoice forced;
  forced.shape = shape;
  forced.kernel = kernel;
  const GemmPlan plan({forced});
  return timer(kernel, shape, [&] {
    ScopedGemmPlan scope(&plan, &packed);
    (void)FastLinear(x, w, b);
  });
}

}  // namespace

absl::string_view GemmKernelName(GemmKernel kernel) {
  return EnumName(kKernelNames, kernel, "onednn");
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
    const std::string matmul =
        c.matmul_seconds > 0 ? absl::StrFormat(", matmul %.3f ms", 1e3 * c.matmul_seconds) : "";
    out.push_back(absl::StrFormat("%dx%dx%d %s (onednn %.3f ms, aten %.3f ms, packed %.3f ms%s)",
                                  c.shape.m, c.shape.n, c.shape.k, GemmKernelName(c.kernel),
                                  1e3 * c.onednn_seconds, 1e3 * c.aten_seconds,
                                  1e3 * c.packed_seconds, matmul));
  }
  return out;
}

GemmPlan ChooseGemmKernels(const std::vector<GemmShape>& shapes, const GemmTimer& timer,
                           PackedIsa isa, int rounds) {
  std::map<std::tuple<int64_t, int64_t, int64_t>, GemmShape> unique;
  for (const GemmShape& s : shapes) unique.emplace(std::make_tuple(s.m, s.n, s.k), s);
  std::vector<GemmChoice> choices;
  torch::NoGradGuard no_grad;
  for (const auto& [key, shape] : unique) {
    GemmChoice c;
    c.shape = shape;
    const torch::Tensor x = torch::randn({shape.m, shape.k});
    const torch::Tensor w = torch::randn({shape.n, shape.k});
    const torch::Tensor b = torch::randn({shape.n});
    PackedWeightSet packed;
    packed.Add(w.data_ptr<float>(), shape.n, shape.k, isa);
    const bool matmul =
        FastCpuKernelsAvailable() && packed.AddMatmul(w.data_ptr<float>(), shape.n, shape.k);
    const double never = std::numeric_limits<double>::infinity();
    c.aten_seconds = c.packed_seconds = never;
    c.onednn_seconds = FastCpuKernelsAvailable() ? never : 0.0;
    c.matmul_seconds = matmul ? never : 0.0;
    for (int round = 0; round < std::max(1, rounds); ++round) {
      if (matmul) {
        c.matmul_seconds = std::min(c.matmul_seconds,
                                    TimeKernel(GemmKernel::kMatmul, shape, timer, x, w, b, packed));
      }
      c.aten_seconds =
          std::min(c.aten_seconds, TimeKernel(GemmKernel::kAten, shape, timer, x, w, b, packed));
      c.packed_seconds = std::min(c.packed_seconds,
                                  TimeKernel(GemmKernel::kPacked, shape, timer, x, w, b, packed));
      if (FastCpuKernelsAvailable()) {
        c.onednn_seconds = std::min(c.onednn_seconds,
                                    TimeKernel(GemmKernel::kOneDnn, shape, timer, x, w, b, packed));
      }
    }
    c.kernel = c.packed_seconds < c.aten_seconds ? GemmKernel::kPacked : GemmKernel::kAten;
    const double best = std::min(c.packed_seconds, c.aten_seconds);
    if (FastCpuKernelsAvailable() && c.onednn_seconds <= best) c.kernel = GemmKernel::kOneDnn;
    if (matmul && c.matmul_seconds < std::min(best, c.onednn_seconds)) {
      c.kernel = GemmKernel::kMatmul;
    }
    choices.push_back(c);
  }
  return GemmPlan(std::move(choices));
}

GemmPlan ChooseGemmKernelsOnce(const std::vector<GemmShape>& shapes, PackedIsa isa) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int, PackedIsa>;  // m, n, k, threads, isa
  static std::mutex* mu = new std::mutex();
  static auto* memo = new std::map<Key, GemmChoice>();
  const int threads = KernelThreads();
  std::lock_guard<std::mutex> lock(*mu);
  std::vector<GemmShape> missing;
  for (const GemmShape& s : shapes) {
    if (memo->count({s.m, s.n, s.k, threads, isa}) == 0) missing.push_back(s);
  }
  // 3 rounds of (warm-up + 1 timed run) per candidate: a candidate was timed best-of-2 in
  // one go before, and on a 2-core VM the same shape's time varied 0.23-0.39 ms between
  // processes (bench/results/kernels-choice-cpu.md).
  const GemmPlan timed = ChooseGemmKernels(missing, WallClockGemmTimer(1), isa, /*rounds=*/3);
  for (const GemmChoice& c : timed.choices()) {
    memo->emplace(Key{c.shape.m, c.shape.n, c.shape.k, threads, isa}, c);
  }
  std::map<Key, GemmChoice> mine;
  for (const GemmShape& s : shapes) {
    const Key key{s.m, s.n, s.k, threads, isa};
    mine.emplace(key, memo->at(key));
  }
  std::vector<GemmChoice> choices;
  for (const auto& [key, choice] : mine) choices.push_back(choice);
  return GemmPlan(std::move(choices));
}

void PackedWeightSet::Add(const float* weight, int64_t n, int64_t k, PackedIsa isa) {
  if (packed_.count(weight) == 0) packed_.emplace(weight, PackWeights(weight, n, k, isa));
}

bool PackedWeightSet::AddMatmul(const float* weight, int64_t n, int64_t k) {
  if (matmul_.count(weight) > 0) return true;
  absl::StatusOr<std::unique_ptr<OneDnnMatmulWeights>> made =
      OneDnnMatmulWeights::Create(weight, n, k);
  if (!made.ok()) return false;
  matmul_.emplace(weight, *std::move(made));
  return true;
}

const OneDnnMatmulWeights* PackedWeightSet::FindMatmul(const float* weight, int64_t n,
                                                       int64_t k) const {
  const auto it = matmul_.find(weight);
  if (it == matmul_.end() || it->second->n() != n || it->second->k() != k) return nullptr;
  return it->second.get();
}

const PackedWeights* PackedWeightSet::Find(const float* weight, int64_t n, int64_t k) const {
  const auto it = packed_.find(weight);
  if (it == packed_.end() || it->second.n() != n || it->second.k() != k) return nullptr;
  return &it->second;
}

ScopedGemmPlan::ScopedGemmPlan(const GemmPlan* plan, const PackedWeightSet* packed)
    : previous_(current_plan), previous_packed_(current_packed) {
  current_plan = plan;
  current_packed = packed;
}

ScopedGemmPlan::~ScopedGemmPlan() {
  current_plan = previous_;
  current_packed = previous_packed_;
}

const GemmPlan* CurrentGemmPlan() { return current_plan; }

const PackedWeightSet* CurrentPackedWeights() { return current_packed; }

}  // namespace vitserve
