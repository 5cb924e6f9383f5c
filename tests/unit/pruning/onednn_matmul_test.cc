#include "server/pruning/onednn_matmul.h"

#include <torch/torch.h>

#include <memory>

#include "gtest/gtest.h"
#include "server/pruning/cpu_kernels.h"

namespace vitserve {
namespace {

// The reordered weights multiply like at::linear, with each epilogue (none, residual,
// GELU, residual then GELU), at row counts other than the one the layout was chosen for
// (197), including a single row.
TEST(OneDnnMatmulTest, MatchesAtenLinearWithEveryEpilogueAndRowCount) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  torch::manual_seed(11);
  const int64_t n = 80;
  const int64_t k = 48;
  const torch::Tensor w = torch::randn({n, k});
  const torch::Tensor b = torch::randn({n});
  auto made = OneDnnMatmulWeights::Create(w.data_ptr<float>(), n, k);
  ASSERT_TRUE(made.ok()) << made.status();
  const OneDnnMatmulWeights& mm = **made;
  EXPECT_EQ(mm.n(), n);
  EXPECT_EQ(mm.k(), k);
  for (int64_t m : {1, 7, 197, 300}) {
    const torch::Tensor x = torch::randn({m, k});
    const torch::Tensor r = torch::randn({m, n});
    for (bool residual : {false, true}) {
      for (bool gelu : {false, true}) {
        torch::Tensor want = at::linear(x, w, b);
        if (residual) want = want + r;
        if (gelu) want = at::gelu(want);
        torch::Tensor y = torch::full({m, n}, 7.0f);
        ASSERT_TRUE(mm.Run(x.data_ptr<float>(), b.data_ptr<float>(),
                           residual ? r.data_ptr<float>() : nullptr, gelu, y.data_ptr<float>(), m));
        EXPECT_LE((y - want).abs().max().item<float>(), 1e-4f)
            << "m " << m << " residual " << residual << " gelu " << gelu;
      }
    }
  }
}

// The caller's buffer is copied: changing it after Create changes nothing.
TEST(OneDnnMatmulTest, KeepsItsOwnCopyOfTheWeights) {
  if (!FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN not compiled in";
  torch::manual_seed(12);
  torch::Tensor w = torch::randn({32, 16});
  const torch::Tensor b = torch::zeros({32});
  const torch::Tensor x = torch::randn({5, 16});
  const torch::Tensor want = at::linear(x, w, b);
  auto made = OneDnnMatmulWeights::Create(w.data_ptr<float>(), 32, 16);
  ASSERT_TRUE(made.ok()) << made.status();
  w.fill_(0.0f);
  torch::Tensor y = torch::empty({5, 32});
  ASSERT_TRUE((*made)->Run(x.data_ptr<float>(), b.data_ptr<float>(), nullptr, false,
                           y.data_ptr<float>(), 5));
  EXPECT_LE((y - want).abs().max().item<float>(), 1e-4f);
}

TEST(OneDnnMatmulTest, WithoutOneDnnCreateSaysUnimplemented) {
  if (FastCpuKernelsAvailable()) GTEST_SKIP() << "oneDNN is compiled in";
  const float w[4] = {1, 2, 3, 4};
  auto made = OneDnnMatmulWeights::Create(w, 2, 2);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace vitserve
