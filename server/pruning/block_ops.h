// Shared pieces of the eval forward passes: one transformer block split where the
// methods need to step in (after attention, before the MLP), operating directly on the
// module's parameters. Internal to server/pruning/.
//
// All functions take and return [B, N, C] float tensors and may update their input in
// place when it is a temporary they own (documented per function). Thread-safe: they
// only read the module.
#ifndef VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_
#define VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_

#include <torch/types.h>

#include "server/model/vit_module.h"

namespace vitserve {

// LayerNorm with the module's parameters.
torch::Tensor ApplyNorm(const torch::nn::LayerNorm& norm, const torch::Tensor& x);

// The attention half of a block: returns x + proj(attn(norm1(x))). When `probs_out` is
// non-null it receives the post-softmax probabilities [B, H, N, N]; when `keys_out` is
// non-null, the keys [B, H, N, C/H]. `logit_bias` (broadcastable to [B, H, N, N]) is added
// to the scaled logits before the softmax when defined (ToMe's log(size)). `x` is not
// modified.
torch::Tensor AttentionResidual(BlockImpl& block, const torch::Tensor& x,
                                const torch::Tensor& logit_bias = {},
                                torch::Tensor* probs_out = nullptr,
                                torch::Tensor* keys_out = nullptr);

// The MLP half: x + fc2(gelu(fc1(norm2(x)))). Adds into `x` in place and returns it.
torch::Tensor MlpResidual(BlockImpl& block, torch::Tensor x);

// One whole block: MlpResidual(AttentionResidual(x)).
torch::Tensor DenseBlock(BlockImpl& block, const torch::Tensor& x);

// A block whose output is needed only for the first `rows` tokens (the prefix tokens
// before the head): queries, proj and MLP on those rows, keys/values on all tokens.
// `logit_bias` as in AttentionResidual. Returns [B, rows, C].
torch::Tensor PrefixOnlyBlock(BlockImpl& block, const torch::Tensor& x, int64_t rows,
                              const torch::Tensor& logit_bias = {});

// Gathers tokens `index` [B, K] (int64) from x [B, N, C] -> [B, K, C].
torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_BLOCK_OPS_H_
