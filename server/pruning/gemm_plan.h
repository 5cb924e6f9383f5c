// Per-machine choice of the GEMM kernel behind FastLinear (cpu_kernels.h), made when a
// model loads by timing the candidates, per layer shape, on the machine that runs it.
//
// Candidates: kOneDnn (oneDNN's sgemm, JIT for AVX-512 or AVX2), kAten (at::linear:
// Debian's OpenBLAS) and kPacked (our micro-kernel on weights packed at load,
// packed_gemm.h), each splitting the output columns across the intra-op threads, and
// kMatmul (oneDNN's matmul primitive on weights reordered at load, onednn_matmul.h),
// splitting the rows (every thread reads the whole reordered weight; nothing is packed
// per call). Which wins depends on
// the ISA (on an AVX-512 machine OpenBLAS runs its AVX2 "Haswell" kernel), the core count and the
// shape; the developers' machine, CI and users' machines differ, so it is measured rather than
// assumed.
//
// A GemmPlan is immutable once made. FastLinear consults the plan made current on the
// calling thread by a ScopedGemmPlan (VitInferenceModel::Run does that around a forward)
// and runs oneDNN for shapes the plan does not list or when no plan is current.
// Thread-safety: plans are read-only; the current plan is per thread.
#ifndef VITSERVE_SERVER_PRUNING_GEMM_PLAN_H_
#define VITSERVE_SERVER_PRUNING_GEMM_PLAN_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/pruning/onednn_matmul.h"
#include "server/pruning/packed_gemm.h"

namespace vitserve {

enum class GemmKernel { kOneDnn, kAten, kPacked, kMatmul };

// "onednn" | "aten" | "packed" | "matmul".
absl::string_view GemmKernelName(GemmKernel kernel);

// An [m, k] x [k, n] product (a linear layer on m rows).
struct GemmShape {
  int64_t m = 0;  // rows: tokens x images
  int64_t n = 0;  // output features
  int64_t k = 0;  // input features
};

struct GemmChoice {
  GemmShape shape;
  GemmKernel kernel = GemmKernel::kOneDnn;
  double onednn_seconds = 0;  // 0 when not measured (oneDNN not compiled in)
  double aten_seconds = 0;
  double packed_seconds = 0;
  double matmul_seconds = 0;  // 0 when not measured (no oneDNN, or no matmul for the shape)
};

// Seconds one call of `run` takes with `kernel` on `shape`. The real timer runs it a few
// times; tests inject one that returns chosen numbers.
using GemmTimer = std::function<double(GemmKernel kernel, const GemmShape& shape,
                                       const std::function<void()>& run)>;

// Best wall time of `repeats` runs after one warm-up run.
GemmTimer WallClockGemmTimer(int repeats);

class GemmPlan {
 public:
  GemmPlan() = default;
  explicit GemmPlan(std::vector<GemmChoice> choices) : choices_(std::move(choices)) {}

  // The kernel for an m x n x k product: the choice for the same (n, k) whose m is
  // closest on a log scale; kOneDnn when (n, k) is not in the plan.
  GemmKernel Lookup(int64_t m, int64_t n, int64_t k) const;

  const std::vector<GemmChoice>& choices() const { return choices_; }

  // One line per choice:
  // "197x1152x384 onednn (onednn 1.234 ms, aten 2.345 ms, packed 1.500 ms)", with
  // ", matmul 1.100 ms" before the ")" when kMatmul was timed.
  std::vector<std::string> Describe() const;

 private:
  std::vector<GemmChoice> choices_;
};

// Times the candidates on random float32 inputs of each shape (duplicates measured once)
// and keeps the fastest; kPacked runs the kernel of `isa`. Without oneDNN compiled in only
// kAten and kPacked are timed. `rounds` (>= 1) interleaves the candidates: each round times
// every candidate once (one `timer` call), and a candidate's time is its best over the
// rounds, so a burst of noise from elsewhere on the machine slows one round of every
// candidate rather than all of one candidate's runs.
GemmPlan ChooseGemmKernels(const std::vector<GemmShape>& shapes, const GemmTimer& timer,
                           PackedIsa isa = BestPackedIsa(), int rounds = 1);

// ChooseGemmKernels with WallClockGemmTimer(1) over 3 interleaved rounds, memoised for the
// process per (shape, intra-op thread count): every model loaded in one process runs a shape
// with the same kernel, so two loads of the same weights give bitwise equal results, and a
// later load times only shapes not seen before. Thread-safe (loads are serialised while
// timing).
GemmPlan ChooseGemmKernelsOnce(const std::vector<GemmShape>& shapes, PackedIsa isa);

// Linear-layer weights packed at load for kPacked (and reordered for kMatmul), found by
// their data pointer and shape. Not modified after the Adds; a model owns one and makes it
// current with its plan.
class PackedWeightSet {
 public:
  // Packs weight [n, k] (row-major) for `isa`; a second Add of the same pointer is a no-op.
  void Add(const float* weight, int64_t n, int64_t k, PackedIsa isa);
  // The packed copy of `weight` if it was added with this n and k, else null.
  const PackedWeights* Find(const float* weight, int64_t n, int64_t k) const;
  size_t size() const { return packed_.size(); }

  // Reorders weight [n, k] for oneDNN's matmul; a second call for the same pointer is a
  // no-op. False when oneDNN has no matmul for it (FindMatmul then returns null).
  bool AddMatmul(const float* weight, int64_t n, int64_t k);
  // The reordered copy of `weight` if AddMatmul made one with this n and k, else null.
  const OneDnnMatmulWeights* FindMatmul(const float* weight, int64_t n, int64_t k) const;
  size_t matmul_size() const { return matmul_.size(); }

 private:
  std::map<const float*, PackedWeights> packed_;
  std::map<const float*, std::unique_ptr<OneDnnMatmulWeights>> matmul_;
};

// Makes `plan` and `packed` (either may be null: none) current on this thread for the
// guard's lifetime.
class ScopedGemmPlan {
 public:
  explicit ScopedGemmPlan(const GemmPlan* plan, const PackedWeightSet* packed = nullptr);
  ~ScopedGemmPlan();
  ScopedGemmPlan(const ScopedGemmPlan&) = delete;
  ScopedGemmPlan& operator=(const ScopedGemmPlan&) = delete;

 private:
  const GemmPlan* previous_;
  const PackedWeightSet* previous_packed_;
};

// The plan current on this thread, or null.
const GemmPlan* CurrentGemmPlan();

// The packed weights current on this thread, or null.
const PackedWeightSet* CurrentPackedWeights();

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_GEMM_PLAN_H_
