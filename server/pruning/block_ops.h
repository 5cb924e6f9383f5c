// Shared pieces of the eval forward passes: one transformer block split where the
// methods need to step in (after attention, before the MLP), operating directly on the
// module's parameters through the CPU fast paths of cpu_kernels.h. Internal to
// server/pruning/.
//
// All functions take and return [B, N, C] float tensors. Thread-safe: they only read the
// module.
#ifndef VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_
#define VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_

#include <torch/types.h>

#include "server/vit/vit_module.h"

namespace vitserve {

// LayerNorm with the module's parameters.
torch::Tensor ApplyNorm(const torch::nn::LayerNorm& norm, const torch::Tensor& x);

// VitImpl::Embed computed as one GEMM: the conv with kernel = stride = patch is a linear
// map of each flattened patch (same math). [B, in, H, W] -> [B, prefix + P, C].
torch::Tensor EmbedTokens(VitImpl& vit, const torch::Tensor& images);

// The attention half of a block: returns x + proj(attn(norm1(x))); `x` is not modified.
// key_bias: undefined, or [B, N] added to every attention logit row before the softmax
//   (ToMe's proportional attention, log(size)).
// cls_probs_out: when non-null, receives [B, H, N], the post-softmax attention row of
//   token 0 (EViT's CLS attention).
// keys_out: when non-null, receives the keys [B, H, N, C/H] (a view of the qkv output).
torch::Tensor AttentionResidual(BlockImpl& block, const torch::Tensor& x,
                                const torch::Tensor& key_bias = {},
                                torch::Tensor* cls_probs_out = nullptr,
                                torch::Tensor* keys_out = nullptr);

// The MLP half: x + fc2(gelu(fc1(norm2(x)))) as a new tensor (GELU and the residual are
// fused into the GEMMs' epilogues); `x` is not modified.
torch::Tensor MlpResidual(BlockImpl& block, torch::Tensor x);

// One whole block: MlpResidual(AttentionResidual(x)).
torch::Tensor DenseBlock(BlockImpl& block, const torch::Tensor& x);

// A block whose output is needed only for the first `rows` tokens (the prefix tokens
// before the head): queries, proj and MLP on those rows, keys/values on all tokens.
// `key_bias` as in AttentionResidual. Returns [B, rows, C].
torch::Tensor PrefixOnlyBlock(BlockImpl& block, const torch::Tensor& x, int64_t rows,
                              const torch::Tensor& key_bias = {});

// DynamicViT's keep score, log p(keep) = column 0 of ScorePredictorImpl::forward, for the
// patch tokens x [B, N, C] (a narrowed view is fine) -> [B, N]. The same math through the
// CPU fast paths, with one rewrite: the first out_conv layer reads [local, global]
// features where global is the per-image mean, so its global half is applied once per
// image ([B, C/2] · W_globalᵀ) instead of to N broadcast copies (no concatenation, half
// that layer's multiply-adds). Agrees with forward() to float32 rounding.
torch::Tensor PredictorKeepScores(ScorePredictorImpl& predictor, const torch::Tensor& x);

// Gathers tokens `index` [B, K] (int64) from x [B, N, C] -> [B, K, C].
torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_
