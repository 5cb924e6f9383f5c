#include "server/pruning/cpu_kernels.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

float MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<float>();
}

TEST(CpuKernelsTest, FastLinearEqualsAtenLinear) {
  torch::manual_seed(1);
  torch::Tensor w = torch::randn({48, 32});
  torch::Tensor b = torch::randn({48});
  for (auto shape : {std::vector<int64_t>{5, 32}, std::vector<int64_t>{3, 7, 32}}) {
    torch::Tensor x = torch::randn(shape);
    EXPECT_LE(MaxDiff(FastLinear(x, w, b), at::linear(x, w, b)), 1e-4f);
  }
  // Non-contiguous input (a narrowed view) and weight/bias row ranges.
  torch::Tensor big = torch::randn({2, 9, 32});
  torch::Tensor view = big.narrow(1, 0, 4);
  EXPECT_LE(MaxDiff(FastLinear(view, w.narrow(0, 8, 16), b.narrow(0, 8, 16)),
                    at::linear(view, w.narrow(0, 8, 16), b.narrow(0, 8, 16))),
            1e-4f);
}

// The ATen statement of multi-head attention on a fused qkv buffer.
torch::Tensor ReferenceAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                                 double scale, const torch::Tensor& key_bias, torch::Tensor* cls) {
  const int64_t b = q.size(0), nq = q.size(1), c = q.size(2), n = kv.size(1), d = c / heads;
  torch::Tensor qh = q.reshape({b, nq, heads, d}).transpose(1, 2);
  torch::Tensor k = kv.narrow(2, 0, c).reshape({b, n, heads, d}).transpose(1, 2);
  torch::Tensor v = kv.narrow(2, c, c).reshape({b, n, heads, d}).transpose(1, 2);
  torch::Tensor logits = torch::matmul(qh, k.transpose(-2, -1)) * scale;
  if (key_bias.defined()) logits = logits + key_bias.view({b, 1, 1, n});
  torch::Tensor p = torch::softmax(logits, -1);
  if (cls != nullptr) *cls = p.select(2, 0);
  return torch::matmul(p, v).transpose(1, 2).reshape({b, nq, c});
}

TEST(CpuKernelsTest, FastAttentionEqualsReferenceOnQkvViews) {
  torch::manual_seed(2);
  const int64_t b = 3, n = 11, c = 24, heads = 4;
  torch::Tensor qkv = torch::randn({b, n, 3 * c});
  torch::Tensor q = qkv.narrow(2, 0, c);
  torch::Tensor kv = qkv.narrow(2, c, 2 * c);
  const double scale = 1.0 / std::sqrt(6.0);
  torch::Tensor bias = torch::rand({b, n}).log();
  for (bool with_bias : {false, true}) {
    torch::Tensor cls, want_cls;
    torch::Tensor got =
        FastAttention(q, kv, heads, scale, with_bias ? bias : torch::Tensor(), &cls);
    torch::Tensor want =
        ReferenceAttention(q, kv, heads, scale, with_bias ? bias : torch::Tensor(), &want_cls);
    EXPECT_LE(MaxDiff(got, want), 1e-5f) << with_bias;
    EXPECT_LE(MaxDiff(cls, want_cls), 1e-6f) << with_bias;
  }
  // Fewer query rows than keys (the last block's prefix-only shortcut).
  torch::Tensor q2 = q.narrow(1, 0, 2).contiguous();
  EXPECT_LE(MaxDiff(FastAttention(q2, kv, heads, scale, {}, nullptr),
                    ReferenceAttention(q2, kv, heads, scale, {}, nullptr)),
            1e-5f);
}

}  // namespace
}  // namespace vitserve
