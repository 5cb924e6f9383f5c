#include "server/pruning/gemm_plan.h"

#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <map>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/pruning/cpu_kernels.h"
#include "server/pruning/task_pool.h"

namespace vitserve {
namespace {

// A timer that runs nothing and returns the seconds listed per (kernel, n): the choice
// must follow the timings, whatever this machine is.
GemmTimer FakeTimer(std::map<std::pair<GemmKernel, int64_t>, double> seconds, int* calls) {
  return [seconds = std::move(seconds), calls](GemmKernel kernel, const GemmShape& shape,
                                               const std::function<void()>&) {
    ++*calls;
    return seconds.at({kernel, shape.n});
  };
}

TEST(GemmPlanTest, ChoosesTheFasterKernelPerShape) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  int calls = 0;
  const GemmTimer timer = FakeTimer({{{GemmKernel::kOneDnn, 48}, 2e-3},
                                     {{GemmKernel::kAten, 48}, 1e-3},
                                     {{GemmKernel::kPacked, 48}, 4e-3},
                                     {{GemmKernel::kOneDnn, 64}, 1e-3},
                                     {{GemmKernel::kAten, 64}, 3e-3},
                                     {{GemmKernel::kPacked, 64}, 2e-3},
                                     {{GemmKernel::kOneDnn, 80}, 3e-3},
                                     {{GemmKernel::kAten, 80}, 2e-3},
                                     {{GemmKernel::kPacked, 80}, 1e-3},
                                     {{GemmKernel::kMatmul, 48}, 9e-3},
                                     {{GemmKernel::kMatmul, 64}, 9e-3},
                                     {{GemmKernel::kMatmul, 80}, 9e-3}},
                                    &calls);
  // The (5, 48, 32) duplicate is timed once.
  const GemmPlan plan = ChooseGemmKernels(
      {{5, 48, 32}, {5, 48, 32}, {40, 64, 32}, {400, 64, 32}, {9, 80, 16}}, timer);
  EXPECT_EQ(calls, 16);
  ASSERT_EQ(plan.choices().size(), 4u);
  EXPECT_EQ(plan.Lookup(5, 48, 32), GemmKernel::kAten);
  EXPECT_EQ(plan.Lookup(40, 64, 32), GemmKernel::kOneDnn);
  EXPECT_EQ(plan.Lookup(9, 80, 16), GemmKernel::kPacked);
  // Other m: the nearest measured m of the same (n, k); unknown (n, k): oneDNN.
  EXPECT_EQ(plan.Lookup(7, 48, 32), GemmKernel::kAten);
  EXPECT_EQ(plan.Lookup(1000, 64, 32), GemmKernel::kOneDnn);
  EXPECT_EQ(plan.Lookup(5, 48, 33), GemmKernel::kOneDnn);
  const std::vector<std::string> lines = plan.Describe();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0],
            "5x48x32 aten (onednn 2.000 ms, aten 1.000 ms, packed 4.000 ms, matmul 9.000 ms)");
}

// A burst of noise from elsewhere on the machine slows the one run it lands on: with one
// round it decides the choice, with interleaved rounds each candidate's best run wins.
TEST(GemmPlanTest, InterleavedRoundsKeepEachCandidatesBestRun) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  int calls = 0;
  // Packed is the fastest (1 ms), but its first run is hit by the burst (9 ms).
  const GemmTimer timer = [&calls](GemmKernel kernel, const GemmShape&,
                                   const std::function<void()>&) {
    ++calls;
    if (kernel == GemmKernel::kPacked) return calls <= 4 ? 9e-3 : 1e-3;
    if (kernel == GemmKernel::kMatmul) return 4e-3;
    return kernel == GemmKernel::kAten ? 2e-3 : 3e-3;
  };
  const GemmPlan one = ChooseGemmKernels({{8, 48, 32}}, timer, BestPackedIsa(), /*rounds=*/1);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(one.Lookup(8, 48, 32), GemmKernel::kAten);
  calls = 0;
  const GemmPlan three = ChooseGemmKernels({{8, 48, 32}}, timer, BestPackedIsa(), /*rounds=*/3);
  EXPECT_EQ(calls, 12);
  EXPECT_EQ(three.Lookup(8, 48, 32), GemmKernel::kPacked);
  ASSERT_EQ(three.choices().size(), 1u);
  EXPECT_EQ(three.choices()[0].packed_seconds, 1e-3);
  EXPECT_EQ(three.choices()[0].aten_seconds, 2e-3);
  EXPECT_EQ(three.choices()[0].onednn_seconds, 3e-3);
  EXPECT_EQ(three.choices()[0].matmul_seconds, 4e-3);
}

// oneDNN's matmul primitive is chosen where it is the fastest, at one thread and at more
// (one reordered column block per thread).
TEST(GemmPlanTest, TheMatmulPrimitiveIsChosenWhereItIsTheFastest) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  const std::map<std::pair<GemmKernel, int64_t>, double> seconds = {
      {{GemmKernel::kOneDnn, 48}, 2e-3}, {{GemmKernel::kAten, 48}, 3e-3},
      {{GemmKernel::kPacked, 48}, 4e-3}, {{GemmKernel::kMatmul, 48}, 1e-3},
      {{GemmKernel::kOneDnn, 64}, 1e-3}, {{GemmKernel::kAten, 64}, 3e-3},
      {{GemmKernel::kPacked, 64}, 2e-3}, {{GemmKernel::kMatmul, 64}, 1.5e-3}};
  for (int threads : {1, 2}) {
    ScopedIntraOpThreads scope(threads);
    int calls = 0;
    const GemmPlan plan = ChooseGemmKernels({{5, 48, 32}, {5, 64, 32}}, FakeTimer(seconds, &calls));
    EXPECT_EQ(calls, 8);
    EXPECT_EQ(plan.Lookup(5, 48, 32), GemmKernel::kMatmul) << threads;
    EXPECT_EQ(plan.Lookup(5, 64, 32), GemmKernel::kOneDnn) << threads;
    const std::vector<std::string> lines = plan.Describe();
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0],
              "5x48x32 matmul (onednn 2.000 ms, aten 3.000 ms, packed 4.000 ms, matmul 1.000 ms)");
  }
}

TEST(GemmPlanTest, LookupPicksTheClosestMeasuredRowCount) {
  GemmChoice small{{10, 8, 8}, GemmKernel::kAten, 1e-3, 5e-4};
  GemmChoice large{{1000, 8, 8}, GemmKernel::kOneDnn, 1e-3, 2e-3};
  const GemmPlan plan({small, large});
  EXPECT_EQ(plan.Lookup(50, 8, 8), GemmKernel::kAten);     // log-closer to 10
  EXPECT_EQ(plan.Lookup(200, 8, 8), GemmKernel::kOneDnn);  // log-closer to 1000
}

TEST(GemmPlanTest, FastLinearFollowsTheCurrentPlanAndBothKernelsAgree) {
  torch::manual_seed(4);
  // 100 output columns: at 3 threads both kernels split them into blocks of 48, 48, 4.
  const torch::Tensor x = torch::randn({2, 3, 32});
  const torch::Tensor w = torch::randn({100, 32}, torch::requires_grad());
  const torch::Tensor b = torch::randn({100}, torch::requires_grad());
  const torch::Tensor r = torch::randn({2, 3, 100});
  LinearEpilogue epilogue;
  epilogue.residual = r;
  epilogue.gelu = true;
  const torch::Tensor expected = at::gelu(at::linear(x, w, b) + r).detach();
  for (PackedIsa isa : {PackedIsa::kGeneric, PackedIsa::kAvx2, PackedIsa::kAvx512})
    for (int threads : {1, 3}) {
      if (BestPackedIsa(isa) != isa) continue;  // this CPU lacks it
      for (GemmKernel kernel :
           {GemmKernel::kOneDnn, GemmKernel::kAten, GemmKernel::kPacked, GemmKernel::kMatmul}) {
        GemmChoice choice;
        choice.shape = {6, 100, 32};
        choice.kernel = kernel;
        const GemmPlan plan({choice});
        PackedWeightSet packed;
        packed.Add(w.data_ptr<float>(), 100, 32, isa);
        (void)packed.AddMatmul(w.data_ptr<float>(), 100, 32);
        ScopedGemmPlan scope(&plan, &packed);
        EXPECT_EQ(CurrentGemmPlan(), &plan);
        EXPECT_EQ(CurrentPackedWeights(), &packed);
        // As a forward runs: inference mode (thread-local: the pool's workers must set
        // their own before touching weights that require grad) and the model's threads.
        c10::InferenceMode inference;
        ScopedIntraOpThreads intra(threads);
        const torch::Tensor input = x.clone();  // an inference tensor, as in a forward
        for (int rep = 0; rep < 20; ++rep) {    // so that the pool's workers take some blocks
          const torch::Tensor y = FastLinear(input, w, b, epilogue);
          ASSERT_EQ(y.sizes(), expected.sizes());
          ASSERT_LE((y - expected).abs().max().item<float>(), 1e-4f)
              << GemmKernelName(kernel) << " at " << threads << " threads, " << PackedIsaName(isa);
        }
      }
    }
  EXPECT_EQ(CurrentGemmPlan(), nullptr);
  EXPECT_EQ(CurrentPackedWeights(), nullptr);
}

// The matmul kernel splits rows across the threads, at least 16 a range (40 rows: one
// range on one thread, two of 20 on two or three).
TEST(GemmPlanTest, TheMatmulKernelSplitsRowsAcrossThreads) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({40, 24});
  const torch::Tensor w = torch::randn({72, 24});
  const torch::Tensor b = torch::randn({72});
  const torch::Tensor r = torch::randn({40, 72});
  GemmChoice choice;
  choice.shape = {40, 72, 24};
  choice.kernel = GemmKernel::kMatmul;
  const GemmPlan plan({choice});
  PackedWeightSet packed;
  ASSERT_TRUE(packed.AddMatmul(w.data_ptr<float>(), 72, 24));
  ScopedGemmPlan scope(&plan, &packed);
  for (int threads : {1, 2, 3}) {
    ScopedIntraOpThreads intra(threads);
    for (bool gelu : {false, true}) {
      LinearEpilogue epilogue;
      epilogue.residual = r;
      epilogue.gelu = gelu;
      torch::Tensor want = at::linear(x, w, b) + r;
      if (gelu) want = at::gelu(want);
      for (int rep = 0; rep < 10; ++rep) {
        const torch::Tensor y = FastLinear(x, w, b, epilogue);
        ASSERT_LE((y - want).abs().max().item<float>(), 1e-4f) << threads << " threads";
      }
    }
  }
}

TEST(GemmPlanTest, WallClockTimerRunsWarmUpPlusRepeats) {
  int runs = 0;
  const double seconds = WallClockGemmTimer(3)(GemmKernel::kOneDnn, {1, 1, 1}, [&] { ++runs; });
  EXPECT_EQ(runs, 4);
  EXPECT_GE(seconds, 0.0);
}

}  // namespace
}  // namespace vitserve
