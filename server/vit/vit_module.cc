#include "server/vit/vit_module.h"

#include <torch/nn/modules/activation.h>

#include <cmath>
#include <string>

namespace vitserve {
namespace {

torch::nn::Linear MakeLinear(int in, int out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(true));
}

torch::nn::LayerNorm MakeLayerNorm(int dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// Applies a registered Linear without going through Module::forward's checks.
torch::Tensor Apply(const torch::nn::Linear& l, const torch::Tensor& x) {
  return torch::linear(x, l->weight, l->bias);
}

torch::Tensor Apply(const torch::nn::LayerNorm& n, const torch::Tensor& x) {
  return torch::layer_norm(x, n->options.normalized_shape(), n->weight, n->bias, n->options.eps());
}

}  // namespace

VitOptions VitOptions::FromArchitecture(const Architecture& arch) {
  VitOptions o;
  o.image_size = arch.image_size;
  o.patch_size = arch.patch_size;
  o.in_chans = arch.in_chans;
  o.embed_dim = arch.embed_dim;
  o.depth = arch.depth;
  o.num_heads = arch.num_heads;
  o.mlp_hidden = arch.mlp_hidden();
  o.num_classes = arch.num_classes;
  o.distilled = arch.distilled;
  o.norm_eps = arch.norm_eps;
  return o;
}

VitOptions VitOptions::FromSpec(const Architecture& arch, const PruningSpec& pruning) {
  VitOptions o = FromArchitecture(arch);
  switch (pruning.method) {
    case Method::kDynamicViT: {
      const std::vector<int> locations = pruning.locations.empty()
                                             ? DefaultLocations(pruning.method, arch.depth)
                                             : pruning.locations;
      o.num_score_predictors = static_cast<int>(locations.size());
      break;
    }
    case Method::kTNT:
      o.tnt_heads = true;
      break;
    case Method::kSViTE:
      o.svite_selector = true;
      break;
    case Method::kDense:
    case Method::kEViT:
    case Method::kToMe:
    case Method::kTriLevel:
      break;
  }
  return o;
}

PatchEmbedImpl::PatchEmbedImpl(const VitOptions& o) {
  proj = register_module(
      "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans, o.embed_dim, o.patch_size)
                                    .stride(o.patch_size)
                                    .bias(true)));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& images) {
  // [B, C, h, w] -> [B, h*w, C]
  return proj->forward(images).flatten(2).transpose(1, 2);
}

BlockShape VitOptions::block_shape(int i) const {
  if (!block_shapes.empty()) return block_shapes.at(i);
  return BlockShape{num_heads, head_dim(), mlp_hidden};
}

AttentionImpl::AttentionImpl(int embed_dim, int num_heads, int head_dim)
    : num_heads_(num_heads),
      head_dim_(head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(head_dim))) {
  qkv = register_module("qkv", MakeLinear(embed_dim, 3 * num_heads * head_dim));
  proj = register_module("proj", MakeLinear(num_heads * head_dim, embed_dim));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> AttentionImpl::QKV(
    const torch::Tensor& x) const {
  const int64_t b = x.size(0);
  const int64_t n = x.size(1);
  // [B, N, 3, H, D] -> [3, B, H, N, D]
  torch::Tensor qkv_out =
      Apply(qkv, x).view({b, n, 3, num_heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  return {qkv_out[0], qkv_out[1], qkv_out[2]};
}

torch::Tensor AttentionImpl::Probabilities(const torch::Tensor& q, const torch::Tensor& k,
                                           const torch::Tensor& logit_bias) const {
  torch::Tensor logits = torch::matmul(q, k.transpose(-2, -1)).mul_(scale_);
  if (logit_bias.defined()) logits.add_(logit_bias);
  return torch::softmax(logits, -1);
}

torch::Tensor AttentionImpl::Output(const torch::Tensor& probs, const torch::Tensor& v) const {
  const int64_t b = probs.size(0);
  const int64_t n = probs.size(2);
  torch::Tensor o = torch::matmul(probs, v).transpose(1, 2).reshape({b, n, -1});
  return Apply(proj, o);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  auto [q, k, v] = QKV(x);
  return Output(Probabilities(q, k), v);
}

MlpImpl::MlpImpl(int embed_dim, int hidden) {
  fc1 = register_module("fc1", MakeLinear(embed_dim, hidden));
  fc2 = register_module("fc2", MakeLinear(hidden, embed_dim));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return Apply(fc2, torch::gelu(Apply(fc1, x)));
}

BlockImpl::BlockImpl(const VitOptions& o, int index) {
  const BlockShape shape = o.block_shape(index);
  norm1 = register_module("norm1", MakeLayerNorm(o.embed_dim, o.norm_eps));
  attn = register_module("attn", Attention(o.embed_dim, shape.num_heads, shape.head_dim));
  norm2 = register_module("norm2", MakeLayerNorm(o.embed_dim, o.norm_eps));
  mlp = register_module("mlp", Mlp(o.embed_dim, shape.mlp_hidden));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = x + attn->forward(Apply(norm1, x));
  return y + mlp->forward(Apply(norm2, y));
}

ScorePredictorImpl::ScorePredictorImpl(int embed_dim) {
  in_norm = MakeLayerNorm(embed_dim, kPredictorNormEps);
  in_fc = MakeLinear(embed_dim, embed_dim);
  out_fc0 = MakeLinear(embed_dim, embed_dim / 2);
  out_fc2 = MakeLinear(embed_dim / 2, embed_dim / 4);
  out_fc4 = MakeLinear(embed_dim / 4, 2);
  in_conv = register_module("in_conv", torch::nn::ModuleList(in_norm, in_fc, torch::nn::GELU()));
  out_conv = register_module("out_conv", torch::nn::ModuleList(out_fc0, torch::nn::GELU(), out_fc2,
                                                               torch::nn::GELU(), out_fc4));
}

torch::Tensor ScorePredictorImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = torch::gelu(Apply(in_fc, Apply(in_norm, x)));
  const int64_t c = h.size(-1);
  const int64_t half = c / 2;
  torch::Tensor local = h.narrow(-1, 0, half);
  torch::Tensor global = h.narrow(-1, half, c - half).mean(1, /*keepdim=*/true);
  h = torch::cat({local, global.expand({h.size(0), h.size(1), c - half})}, -1);
  h = torch::gelu(Apply(out_fc0, h));
  h = torch::gelu(Apply(out_fc2, h));
  return torch::log_softmax(Apply(out_fc4, h), -1);
}

void ScorePredictorImpl::SplitOutFc0() {
  torch::NoGradGuard no_grad;
  const torch::Tensor& w = out_fc0->weight;  // [C/2, C]
  out_fc0_local_ = w.narrow(1, 0, w.size(1) / 2).contiguous();
  out_fc0_local_version_ = static_cast<int64_t>(w._version());
}

torch::Tensor ScorePredictorImpl::OutFc0Local() const {
  const torch::Tensor& w = out_fc0->weight;
  if (!out_fc0_local_.defined() || static_cast<int64_t>(w._version()) != out_fc0_local_version_ ||
      out_fc0_local_.device() != w.device() || out_fc0_local_.scalar_type() != w.scalar_type()) {
    return torch::Tensor();
  }
  return out_fc0_local_;
}

VitImpl::VitImpl(const VitOptions& options) : options_(options) {
  const VitOptions& o = options_;
  const int c = o.embed_dim;
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, c}));
  pos_embed = register_parameter("pos_embed",
                                 torch::zeros({1, o.num_patches() + o.num_prefix_tokens(), c}));
  if (o.distilled) dist_token = register_parameter("dist_token", torch::zeros({1, 1, c}));
  patch_embed = register_module("patch_embed", PatchEmbed(o));
  blocks = register_module("blocks", torch::nn::ModuleList());
  TORCH_CHECK(o.block_shapes.empty() || static_cast<int>(o.block_shapes.size()) == o.depth,
              "VitOptions: ", o.block_shapes.size(), " block shapes for depth ", o.depth);
  for (int i = 0; i < o.depth; ++i) blocks->push_back(Block(o, i));
  norm = register_module("norm", MakeLayerNorm(c, o.norm_eps));
  head = register_module("head", MakeLinear(c, o.num_classes));
  if (o.distilled) head_dist = register_module("head_dist", MakeLinear(c, o.num_classes));
  if (o.num_score_predictors > 0) {
    score_predictor = register_module("score_predictor", torch::nn::ModuleList());
    for (int p = 0; p < o.num_score_predictors; ++p) score_predictor->push_back(ScorePredictor(c));
  }
  if (o.tnt_heads) {
    alpha_heads = register_module("alpha_heads", torch::nn::ModuleList());
    for (int i = 0; i < o.depth; ++i) alpha_heads->push_back(MakeLinear(c, 1));
    alpha_norm = register_module("alpha_norm", MakeLayerNorm(c, o.norm_eps));
  }
  if (o.svite_selector) gumbel = register_module("gumbel", MakeLinear(c, 1));
}

torch::Tensor VitImpl::Embed(const torch::Tensor& images) {
  torch::Tensor patches = patch_embed->forward(images);  // [B, P, C]
  const int64_t b = patches.size(0);
  torch::Tensor x =
      options_.distilled
          ? torch::cat({cls_token.expand({b, -1, -1}), dist_token.expand({b, -1, -1}), patches}, 1)
          : torch::cat({cls_token.expand({b, -1, -1}), patches}, 1);
  return x.add_(pos_embed);
}

torch::Tensor VitImpl::Head(const torch::Tensor& x) {
  // LayerNorm is per token, so normalising only the prefix tokens equals timm's
  // norm(x)[:, 0].
  torch::Tensor prefix = Apply(norm, x.narrow(1, 0, options_.num_prefix_tokens()));
  torch::Tensor logits = Apply(head, prefix.select(1, 0));
  if (options_.distilled) {
    logits = (logits + Apply(head_dist, prefix.select(1, 1))) / 2;
  }
  return logits;
}

torch::Tensor VitImpl::forward(const torch::Tensor& images) {
  torch::Tensor x = Embed(images);
  for (int i = 0; i < options_.depth; ++i) x = block(i).forward(x);
  return Head(x);
}

BlockImpl& VitImpl::block(int i) const { return *blocks->ptr<BlockImpl>(i); }

ScorePredictorImpl& VitImpl::predictor(int p) const {
  return *score_predictor->ptr<ScorePredictorImpl>(p);
}

torch::nn::LinearImpl& VitImpl::alpha_head(int i) const {
  return *alpha_heads->ptr<torch::nn::LinearImpl>(i);
}

}  // namespace vitserve
