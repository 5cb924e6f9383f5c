#include "server/pruning/device_attention.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// Attention written out in float64 from the definition: softmax(q kᵀ · scale + bias) v.
struct Reference {
  torch::Tensor out;        // [B, Nq, C]
  torch::Tensor cls_probs;  // [B, H, N]
};

Reference Attend(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads, double scale,
                 const torch::Tensor& bias) {
  const int64_t b = q.size(0), nq = q.size(1), c = q.size(2), n = kv.size(1), d = c / heads;
  torch::Tensor qh = q.to(torch::kFloat64).reshape({b, nq, heads, d}).transpose(1, 2);
  torch::Tensor k =
      kv.narrow(2, 0, c).to(torch::kFloat64).reshape({b, n, heads, d}).transpose(1, 2);
  torch::Tensor v =
      kv.narrow(2, c, c).to(torch::kFloat64).reshape({b, n, heads, d}).transpose(1, 2);
  torch::Tensor logits = torch::matmul(qh, k.transpose(-2, -1)) * scale;
  if (bias.defined()) logits = logits + bias.to(torch::kFloat64).view({b, 1, 1, n});
  torch::Tensor p = torch::softmax(logits, -1);
  return {torch::matmul(p, v).transpose(1, 2).reshape({b, nq, c}), p.select(2, 0)};
}

float MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64).cpu() - b.to(torch::kFloat64).cpu()).abs().max().item<float>();
}

// Every device this build can reach: the CPU path always, CUDA (fused SDPA on LibTorch >=
// 2.1) when present.
std::vector<torch::Device> Devices() {
  std::vector<torch::Device> out = {torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA, 0);
  return out;
}

TEST(DeviceAttentionTest, MatchesDefinitionOnQkvViewsWithBiasAndClsRow) {
  torch::manual_seed(5);
  const int64_t b = 2, n = 13, heads = 3, c = 48;
  const double scale = 1.0 / std::sqrt(16.0);
  torch::Tensor qkv = torch::randn({b, n, 3 * c});
  torch::Tensor bias = (torch::rand({b, n}) * 4 + 1).log();  // ToMe's log(size), sizes 1..5
  const Reference want = Attend(qkv.narrow(2, 0, c), qkv.narrow(2, c, 2 * c), heads, scale, bias);
  const Reference plain = Attend(qkv.narrow(2, 0, c), qkv.narrow(2, c, 2 * c), heads, scale, {});
  for (const torch::Device& dev : Devices()) {
    torch::Tensor x = qkv.to(dev);
    torch::Tensor cls;
    torch::Tensor got =
        DeviceAttention(x.narrow(2, 0, c), x.narrow(2, c, 2 * c), heads, scale, bias.to(dev), &cls);
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{b, n, c})) << dev;
    ASSERT_EQ(cls.sizes(), (std::vector<int64_t>{b, heads, n})) << dev;
    EXPECT_LE(MaxDiff(got, want.out), 1e-5f) << dev;
    EXPECT_LE(MaxDiff(cls, want.cls_probs), 1e-5f) << dev;
    // No bias, no CLS row: the fused kernel alone on CUDA.
    EXPECT_LE(MaxDiff(DeviceAttention(x.narrow(2, 0, c), x.narrow(2, c, 2 * c), heads, scale, {},
                                      nullptr),
                      plain.out),
              1e-5f)
        << dev;
  }
}

TEST(DeviceAttentionTest, PrefixQueriesAndLowPrecisionKeepTheirDtype) {
  torch::manual_seed(6);
  const int64_t b = 2, n = 9, heads = 2, c = 32;
  torch::Tensor q = torch::randn({b, 1, c});  // PrefixOnlyBlock: the CLS query alone
  torch::Tensor kv = torch::randn({b, n, 2 * c});
  const Reference want = Attend(q, kv, heads, 0.25, {});
  for (const torch::Device& dev : Devices()) {
    torch::Tensor cls;
    torch::Tensor got = DeviceAttention(q.to(dev, torch::kBFloat16), kv.to(dev, torch::kBFloat16),
                                        heads, 0.25, {}, &cls);
    EXPECT_EQ(got.scalar_type(), torch::kBFloat16) << dev;
    EXPECT_EQ(cls.scalar_type(), torch::kBFloat16) << dev;
    EXPECT_LE(MaxDiff(got, want.out), 3e-2f) << dev;  // bf16 operands
    EXPECT_LE(MaxDiff(cls, want.cls_probs), 1e-2f) << dev;
  }
}

}  // namespace
}  // namespace vitserve
