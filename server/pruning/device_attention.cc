#include "server/pruning/device_attention.h"

#include <ATen/ATen.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define VITSERVE_HAVE_SDPA 1  // at::scaled_dot_product_attention with its `scale` argument
#endif

namespace vitserve {

AttentionDims CheckAttentionDims(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                                 const char* who) {
  AttentionDims s{q.size(0), q.size(1), q.size(2), kv.size(1), q.size(2) / heads};
  TORCH_CHECK(kv.size(0) == s.b && kv.size(2) == 2 * s.c && s.d * heads == s.c, who, ": q ",
              q.sizes(), " kv ", kv.sizes(), " heads ", heads);
  return s;
}

namespace {

// Heads split out: q [B, H, Nq, D], k and v [B, H, N, D] (views, no copies).
struct Heads {
  torch::Tensor q, k, v;
};

Heads SplitHeads(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads) {
  const AttentionDims s = CheckAttentionDims(q, kv, heads, "DeviceAttention");
  torch::Tensor kvh = kv.reshape({s.b, s.n, 2, heads, s.d}).permute({2, 0, 3, 1, 4});
  return {q.reshape({s.b, s.nq, heads, s.d}).transpose(1, 2), kvh[0], kvh[1]};
}

// Post-softmax logits of query rows [B, H, R, D] against keys, bias added; in q's dtype
// (the softmax itself in float32).
torch::Tensor Probs(const torch::Tensor& q, const torch::Tensor& k, double scale,
                    const torch::Tensor& key_bias) {
  torch::Tensor logits = at::matmul(q, k.transpose(-2, -1)).to(torch::kFloat32).mul_(scale);
  if (key_bias.defined()) {
    logits.add_(key_bias.to(torch::kFloat32).view({key_bias.size(0), 1, 1, key_bias.size(1)}));
  }
  return at::_softmax(logits, -1, false).to(q.scalar_type());
}

torch::Tensor MergeHeads(const torch::Tensor& out) {  // [B, H, Nq, D] -> [B, Nq, H * D]
  return out.transpose(1, 2).reshape({out.size(0), out.size(2), out.size(1) * out.size(3)});
}

}  // namespace

bool FusedAttentionAvailable() {
#ifdef VITSERVE_HAVE_SDPA
  return true;
#else
  return false;
#endif
}

torch::Tensor DeviceAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                              double scale, const torch::Tensor& key_bias,
                              torch::Tensor* cls_probs) {
  const Heads h = SplitHeads(q, kv, heads);
#ifdef VITSERVE_HAVE_SDPA
  if (!q.is_cpu()) {
    if (cls_probs != nullptr)
      *cls_probs = Probs(h.q.narrow(2, 0, 1), h.k, scale, key_bias).squeeze(2);
    c10::optional<at::Tensor> mask;
    if (key_bias.defined()) {
      mask = key_bias.to(q.scalar_type()).view({key_bias.size(0), 1, 1, key_bias.size(1)});
    }
    return MergeHeads(at::scaled_dot_product_attention(h.q, h.k, h.v, mask, /*dropout_p=*/0.0,
                                                       /*is_causal=*/false, scale));
  }
#endif
  torch::Tensor probs = Probs(h.q, h.k, scale, key_bias);
  if (cls_probs != nullptr) *cls_probs = probs.select(2, 0);
  return MergeHeads(at::matmul(probs, h.v));
}

}  // namespace vitserve
