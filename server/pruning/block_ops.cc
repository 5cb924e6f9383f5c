#include "server/pruning/block_ops.h"

#include <ATen/ATen.h>
#include <torch/version.h>

namespace vitserve {
namespace {

torch::Tensor Linear(const torch::nn::Linear& l, const torch::Tensor& x) {
  return at::linear(x, l->weight, l->bias);
}

// Scaled attention logits q kᵀ · scale (+ bias), softmax over keys. Same operation order
// as timm: matmul, then scale, then (ToMe) bias, then softmax.
torch::Tensor Probabilities(const AttentionImpl& attn, const torch::Tensor& q,
                            const torch::Tensor& k, const torch::Tensor& logit_bias) {
  torch::Tensor logits = at::matmul(q, k.transpose(-2, -1));
  logits.mul_(attn.scale());
  if (logit_bias.defined()) logits.add_(logit_bias);
  return at::_softmax(logits, -1, /*half_to_float=*/false);
}

// probs [B, H, Nq, N] @ v [B, H, N, D] -> [B, Nq, H·D].
torch::Tensor MergeHeads(const torch::Tensor& probs, const torch::Tensor& v) {
  const int64_t b = probs.size(0);
  const int64_t nq = probs.size(2);
  return at::matmul(probs, v).transpose(1, 2).reshape({b, nq, -1});
}

}  // namespace

torch::Tensor ApplyNorm(const torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  return at::layer_norm(x, norm->options.normalized_shape(), norm->weight, norm->bias,
                        norm->options.eps());
}

torch::Tensor AttentionResidual(BlockImpl& block, const torch::Tensor& x,
                                const torch::Tensor& logit_bias, torch::Tensor* probs_out,
                                torch::Tensor* keys_out) {
  AttentionImpl& attn = *block.attn;
  const int64_t b = x.size(0);
  const int64_t n = x.size(1);
  const int64_t c = x.size(2);
  const int64_t heads = attn.num_heads();
  torch::Tensor qkv = Linear(attn.qkv, ApplyNorm(block.norm1, x))
                          .view({b, n, 3, heads, c / heads})
                          .permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv[0];
  torch::Tensor k = qkv[1];
  torch::Tensor v = qkv[2];
  if (keys_out != nullptr) *keys_out = k;
  torch::Tensor merged;
#if TORCH_VERSION_MAJOR >= 2
  if (probs_out == nullptr && !logit_bias.defined()) {
    // Fused attention (no probabilities materialised); same math, LibTorch 2.x only.
    merged = at::scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape({b, n, c});
  }
#endif
  if (!merged.defined()) {
    torch::Tensor probs = Probabilities(attn, q, k, logit_bias);
    if (probs_out != nullptr) *probs_out = probs;
    merged = MergeHeads(probs, v);
  }
  return Linear(attn.proj, merged).add_(x);
}

torch::Tensor MlpResidual(BlockImpl& block, torch::Tensor x) {
  MlpImpl& mlp = *block.mlp;
  torch::Tensor h = Linear(mlp.fc1, ApplyNorm(block.norm2, x));
  at::gelu_(h);
  return x.add_(Linear(mlp.fc2, h));
}

torch::Tensor DenseBlock(BlockImpl& block, const torch::Tensor& x) {
  return MlpResidual(block, AttentionResidual(block, x));
}

torch::Tensor PrefixOnlyBlock(BlockImpl& block, const torch::Tensor& x, int64_t rows,
                              const torch::Tensor& logit_bias) {
  AttentionImpl& attn = *block.attn;
  const int64_t b = x.size(0);
  const int64_t n = x.size(1);
  const int64_t c = x.size(2);
  const int64_t heads = attn.num_heads();
  const int64_t d = c / heads;
  torch::Tensor h = ApplyNorm(block.norm1, x);
  const torch::Tensor& w = attn.qkv->weight;  // [3C, C]: q rows, then k rows, then v rows
  const torch::Tensor& bias = attn.qkv->bias;
  // Queries of the prefix rows only; keys and values of every row.
  torch::Tensor q = at::linear(h.narrow(1, 0, rows), w.narrow(0, 0, c), bias.narrow(0, 0, c))
                        .view({b, rows, heads, d})
                        .transpose(1, 2);
  torch::Tensor kv = at::linear(h, w.narrow(0, c, 2 * c), bias.narrow(0, c, 2 * c))
                         .view({b, n, 2, heads, d})
                         .permute({2, 0, 3, 1, 4});
  torch::Tensor merged = MergeHeads(Probabilities(attn, q, kv[0], logit_bias), kv[1]);
  torch::Tensor y = Linear(attn.proj, merged).add_(x.narrow(1, 0, rows));
  return MlpResidual(block, y);
}

torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index) {
  return at::gather(x, 1, index.unsqueeze(-1).expand({index.size(0), index.size(1), x.size(2)}));
}

}  // namespace vitserve
