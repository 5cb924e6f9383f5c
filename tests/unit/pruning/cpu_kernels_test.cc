#include "server/pruning/cpu_kernels.h"

#include <torch/torch.h>

#include <algorithm>
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

TEST(CpuKernelsTest, FastLinearEpiloguesAndThreadSplitEqualAten) {
  torch::manual_seed(2);
  const int threads_before = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    // n = 40 splits into column blocks of 32 and 8 with two threads.
    for (int64_t n : {40, 7, 384}) {
      torch::Tensor x = torch::randn({3, 11, 32});
      torch::Tensor w = torch::randn({n, 32});
      torch::Tensor b = torch::randn({n});
      torch::Tensor big = torch::randn({3, 13, n});
      torch::Tensor residual = big.narrow(1, 1, 11);  // not contiguous
      torch::Tensor plain = at::linear(x, w, b);
      EXPECT_LE(MaxDiff(FastLinear(x, w, b), plain), 1e-4f) << threads << " threads, n " << n;
      LinearEpilogue both;
      both.residual = residual;
      both.gelu = true;
      EXPECT_LE(MaxDiff(FastLinear(x, w, b, both), at::gelu(plain + residual)), 1e-4f)
          << threads << " threads, n " << n;
    }
  }
  at::set_num_threads(threads_before);
}

TEST(CpuKernelsTest, FastLayerNormEqualsAtenLayerNorm) {
  torch::manual_seed(3);
  // Against a float64 reference: within 3e-5 of it, or within twice ATen's own float32 error
  // (rows with a large common offset, where a one-pass variance would lose them).
  auto check = [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                  double eps) {
    const int64_t c = x.size(-1);
    torch::Tensor exact = at::layer_norm(x.to(torch::kFloat64), {c}, w.to(torch::kFloat64),
                                         b.to(torch::kFloat64), eps)
                              .to(torch::kFloat32);
    const float aten_error = MaxDiff(at::layer_norm(x, {c}, w, b, eps), exact);
    EXPECT_LE(MaxDiff(FastLayerNorm(x, w, b, eps), exact), std::max(2 * aten_error, 3e-5f)) << c;
  };
  for (int64_t c : {96, 37, 1}) {  // a full vector width, a ragged tail, a degenerate row
    torch::Tensor w = torch::randn({c});
    torch::Tensor b = torch::randn({c});
    torch::Tensor x = torch::randn({3, 50, c});
    check(x, w, b, 1e-6);
    check(x * 4 + 100, w, b, 1e-6);
  }
  // A narrowed token range (rows contiguous per image) and a transposed view (the ATen
  // path); the result is contiguous either way.
  torch::Tensor w = torch::randn({16});
  torch::Tensor b = torch::randn({16});
  torch::Tensor tokens = torch::randn({2, 9, 16}).narrow(1, 1, 5);
  check(tokens, w, b, 1e-5);
  EXPECT_TRUE(FastLayerNorm(tokens, w, b, 1e-5).is_contiguous());
  check(torch::randn({2, 16, 9}).transpose(1, 2), w, b, 1e-5);
}

TEST(CpuKernelsTest, FastGeluEqualsAtenGelu) {
  // Both tails (where erf saturates, and exp(-z²) would underflow), zero and the bend.
  torch::Tensor x = torch::linspace(-12.0, 12.0, 24003).reshape({3, 8001});
  torch::Tensor want = at::gelu(x);
  torch::Tensor got = x.clone();
  FastGelu_(got);
  EXPECT_LE(MaxDiff(got, want), 2e-6f);
  EXPECT_EQ(got[0][0].item<float>(), 0.0f);  // gelu(-12) underflows to -0 in float32
  EXPECT_FLOAT_EQ(got[2][8000].item<float>(), 12.0f);
  // A non-contiguous view goes through at::gelu_ and only the view changes.
  torch::Tensor base = torch::randn({4, 6});
  torch::Tensor original = base.clone();
  torch::Tensor column = base.select(1, 2);
  FastGelu_(column);
  EXPECT_LE(MaxDiff(base.select(1, 2), at::gelu(original.select(1, 2))), 1e-6f);
  EXPECT_TRUE(torch::equal(base.select(1, 3), original.select(1, 3)));
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

TEST(CpuKernelsTest, FastAttentionWithTwoThreadsEqualsReference) {
  torch::manual_seed(5);
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  const int64_t b = 2, n = 9, c = 24, heads = 3;
  torch::Tensor qkv = torch::randn({b, n, 3 * c});
  torch::Tensor cls, want_cls;
  torch::Tensor got =
      FastAttention(qkv.narrow(2, 0, c), qkv.narrow(2, c, 2 * c), heads, 0.3, {}, &cls);
  torch::Tensor want =
      ReferenceAttention(qkv.narrow(2, 0, c), qkv.narrow(2, c, 2 * c), heads, 0.3, {}, &want_cls);
  at::set_num_threads(threads_before);
  EXPECT_LE(MaxDiff(got, want), 1e-5f);
  EXPECT_LE(MaxDiff(cls, want_cls), 1e-6f);
}

}  // namespace
}  // namespace vitserve
