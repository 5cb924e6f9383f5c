#include "server/pruning/block_ops.h"

#include <ATen/ATen.h>

#include "server/pruning/cpu_kernels.h"

namespace vitserve {
namespace {

torch::Tensor Linear(const torch::nn::Linear& l, const torch::Tensor& x) {
  return FastLinear(x, l->weight, l->bias);
}

// Epilogues fused into FastLinear (cpu_kernels.h).
LinearEpilogue Residual(const torch::Tensor& r) {
  LinearEpilogue e;
  e.residual = r;
  return e;
}

LinearEpilogue Gelu() {
  LinearEpilogue e;
  e.gelu = true;
  return e;
}

}  // namespace

torch::Tensor ApplyNorm(const torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  return FastLayerNorm(x, norm->weight, norm->bias, norm->options.eps());
}

torch::Tensor EmbedTokens(VitImpl& vit, const torch::Tensor& images) {
  const VitOptions& o = vit.options();
  const int64_t b = images.size(0);
  const int64_t g = o.image_size / o.patch_size;  // patches per side
  const int64_t p = o.patch_size;
  TORCH_CHECK(images.dim() == 4 && images.size(1) == o.in_chans && images.size(2) == o.image_size &&
                  images.size(3) == o.image_size,
              "EmbedTokens: images ", images.sizes());
  // [B, in, g, p, g, p] -> [B, g, g, in, p, p]: each row is one patch in the conv
  // weight's (in, kh, kw) order.
  torch::Tensor patches = images.reshape({b, o.in_chans, g, p, g, p})
                              .permute({0, 2, 4, 1, 3, 5})
                              .reshape({b, g * g, o.in_chans * p * p});
  const torch::nn::Conv2d& conv = vit.patch_embed->proj;
  torch::Tensor x = FastLinear(patches, conv->weight.reshape({o.embed_dim, -1}), conv->bias);
  const int64_t prefix = o.num_prefix_tokens();
  torch::Tensor tokens = at::empty({b, prefix + g * g, o.embed_dim}, x.options());
  tokens.narrow(1, 0, 1).copy_(vit.cls_token.expand({b, 1, o.embed_dim}));
  if (o.distilled) tokens.narrow(1, 1, 1).copy_(vit.dist_token.expand({b, 1, o.embed_dim}));
  tokens.narrow(1, prefix, g * g).copy_(x);
  return tokens.add_(vit.pos_embed);
}

torch::Tensor AttentionResidual(BlockImpl& block, const torch::Tensor& x,
                                const torch::Tensor& key_bias, torch::Tensor* cls_probs_out,
                                torch::Tensor* keys_out) {
  AttentionImpl& attn = *block.attn;
  const int64_t b = x.size(0);
  const int64_t n = x.size(1);
  const int64_t a = attn.width();  // heads x head_dim (< C after SViTE compaction)
  const int64_t heads = attn.num_heads();
  torch::Tensor qkv = Linear(attn.qkv, ApplyNorm(block.norm1, x));  // [B, N, 3A]
  if (keys_out != nullptr) {
    *keys_out = qkv.narrow(2, a, a).view({b, n, heads, attn.head_dim()}).transpose(1, 2);
  }
  torch::Tensor merged = FastAttention(qkv.narrow(2, 0, a), qkv.narrow(2, a, 2 * a), heads,
                                       attn.scale(), key_bias, cls_probs_out);
  return FastLinear(merged, attn.proj->weight, attn.proj->bias, Residual(x));
}

torch::Tensor MlpResidual(BlockImpl& block, torch::Tensor x) {
  MlpImpl& mlp = *block.mlp;
  torch::Tensor h = FastLinear(ApplyNorm(block.norm2, x), mlp.fc1->weight, mlp.fc1->bias, Gelu());
  return FastLinear(h, mlp.fc2->weight, mlp.fc2->bias, Residual(x));
}

torch::Tensor DenseBlock(BlockImpl& block, const torch::Tensor& x) {
  return MlpResidual(block, AttentionResidual(block, x));
}

torch::Tensor PrefixOnlyBlock(BlockImpl& block, const torch::Tensor& x, int64_t rows,
                              const torch::Tensor& key_bias) {
  AttentionImpl& attn = *block.attn;
  const int64_t a = attn.width();
  torch::Tensor h = ApplyNorm(block.norm1, x);
  const torch::Tensor& w = attn.qkv->weight;  // [3A, C]: q rows, then k rows, then v rows
  const torch::Tensor& bias = attn.qkv->bias;
  // Queries of the prefix rows only; keys and values of every row.
  torch::Tensor q =
      FastLinear(h.narrow(1, 0, rows).contiguous(), w.narrow(0, 0, a), bias.narrow(0, 0, a));
  torch::Tensor kv = FastLinear(h, w.narrow(0, a, 2 * a), bias.narrow(0, a, 2 * a));
  torch::Tensor merged =
      FastAttention(q, kv, attn.num_heads(), attn.scale(), key_bias, /*cls_probs=*/nullptr);
  torch::Tensor y =
      FastLinear(merged, attn.proj->weight, attn.proj->bias, Residual(x.narrow(1, 0, rows)));
  return MlpResidual(block, y);
}

torch::Tensor PredictorKeepScores(ScorePredictorImpl& predictor, const torch::Tensor& x) {
  torch::Tensor h = FastLinear(ApplyNorm(predictor.in_norm, x), predictor.in_fc->weight,
                               predictor.in_fc->bias, Gelu());  // [B, N, C]
  const int64_t c = h.size(-1);
  const int64_t half = c / 2;
  // out_fc0(cat(local, global)) = (local · W[:, :half]ᵀ + b) + global · W[:, half:]ᵀ; the
  // per-image product is [B, C - half] x [C - half, C/2], small enough for at::matmul on
  // the strided weight view.
  const torch::Tensor& w0 = predictor.out_fc0->weight;          // [C/2, C]
  torch::Tensor global = h.narrow(-1, half, c - half).mean(1);  // [B, C - half]
  torch::Tensor per_image = at::matmul(global, w0.narrow(1, half, c - half).t());
  torch::Tensor w0_local = predictor.OutFc0Local();  // split at load; packed if chosen
  if (!w0_local.defined()) w0_local = w0.narrow(1, 0, half).contiguous();
  torch::Tensor y = FastLinear(h.narrow(-1, 0, half), w0_local, predictor.out_fc0->bias);
  y.add_(per_image.unsqueeze(1));
  FastGelu_(y);
  y = FastLinear(y, predictor.out_fc2->weight, predictor.out_fc2->bias, Gelu());
  return at::log_softmax(Linear(predictor.out_fc4, y), -1).select(-1, 0);
}

torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& index) {
  return at::gather(x, 1, index.unsqueeze(-1).expand({index.size(0), index.size(1), x.size(2)}));
}

}  // namespace vitserve
