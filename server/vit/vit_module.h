// The ViT / DeiT backbone as a LibTorch module whose parameter names are exactly timm's
// state-dict keys, plus the optional heads of the token-reduction methods vitserve serves.
//
// Parameter names (named_parameters() / checkpoint keys):
//   cls_token [1,1,C]            pos_embed [1, P + prefix, C]     dist_token [1,1,C] (distilled)
//   patch_embed.proj.{weight,bias}      Conv2d(in_chans -> C, kernel = stride = patch)
//   blocks.{i}.norm1.{weight,bias}      LayerNorm(C, eps = norm_eps)
//   blocks.{i}.attn.qkv.{weight,bias}   Linear(C -> 3C)
//   blocks.{i}.attn.proj.{weight,bias}  Linear(C -> C)
//   blocks.{i}.norm2.{weight,bias}      LayerNorm(C, eps = norm_eps)
//   blocks.{i}.mlp.fc1.{weight,bias}    Linear(C -> mlp_hidden)
//   blocks.{i}.mlp.fc2.{weight,bias}    Linear(mlp_hidden -> C)
//   norm.{weight,bias}, head.{weight,bias}, head_dist.{weight,bias} (distilled)
// Method heads (present only when the options ask for them):
//   DynamicViT  score_predictor.{p}.in_conv.0.*   LayerNorm(C, eps 1e-5)
//               score_predictor.{p}.in_conv.1.*   Linear(C, C)            (then GELU)
//               score_predictor.{p}.out_conv.0.*  Linear(C, C/2)          (then GELU)
//               score_predictor.{p}.out_conv.2.*  Linear(C/2, C/4)        (then GELU)
//               score_predictor.{p}.out_conv.4.*  Linear(C/4, 2)          (then LogSoftmax)
//   TNT         alpha_heads.{i}.*  Linear(C, 1), one per block (i < depth)
//               alpha_norm.*       LayerNorm(C, eps = norm_eps); used in training only
//   SViTE       gumbel.*           Linear(C, 1): the token selector (VITA-Group/SViTE
//                                  vision_transformer_data.py names it `gumbel`)
//
// The building blocks are public so that a trainer can write its own training forward
// (Gumbel masking, noise allocation) on the same parameters; the eval forward passes of
// the methods live in server/pruning/ and use the same pieces.
//
// Thread-safety: a Vit is a torch::nn::Module. After construction and weight loading it
// is only read by the forward functions, which may then run from many threads at once
// (under torch::InferenceMode). Mutating it (load, to(), train()) must not overlap any
// forward. Errors: the forward functions throw c10::Error on shape mismatches (callers
// at module boundaries catch it).
#ifndef VITSERVE_SERVER_VIT_VIT_MODULE_H_
#define VITSERVE_SERVER_VIT_VIT_MODULE_H_

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <tuple>
#include <vector>

#include "server/spec/model_spec.h"

namespace vitserve {

// LayerNorm eps of the timm backbone (norm1, norm2, norm, alpha_norm).
inline constexpr double kVitNormEps = 1e-6;
// LayerNorm eps of DynamicViT's predictor (nn.LayerNorm default).
inline constexpr double kPredictorNormEps = 1e-5;

struct VitOptions {
  int image_size = 224;   // square input side
  int patch_size = 16;    // conv kernel = stride
  int in_chans = 3;       // input channels
  int embed_dim = 384;    // C
  int depth = 12;         // number of blocks
  int num_heads = 6;      // attention heads; C % num_heads == 0
  int mlp_hidden = 1536;  // MLP width (C * mlp_ratio)
  int num_classes = 1000;
  bool distilled = false;         // dist_token + head_dist (DeiT distilled)
  double norm_eps = kVitNormEps;  // backbone LayerNorm eps
  int num_score_predictors = 0;   // DynamicViT predictors (one per pruning location)
  bool tnt_heads = false;         // TNT alpha_heads + alpha_norm
  bool svite_selector = false;    // SViTE token selector `gumbel`
  // Per-block widths (a compacted SViTE model: fewer heads of the original head_dim, a
  // narrower MLP). Empty = every block has num_heads x head_dim() and mlp_hidden.
  // Otherwise exactly `depth` entries, each with num_heads, head_dim, mlp_hidden >= 1;
  // block i's qkv is Linear(C, 3·heads·head_dim), proj Linear(heads·head_dim, C).
  std::vector<BlockShape> block_shapes;

  // The backbone of `arch` without method heads.
  static VitOptions FromArchitecture(const Architecture& arch);
  // The backbone plus the heads `pruning.method` needs (DynamicViT: one predictor per
  // location, method default locations if empty; TNT: alpha heads; SViTE: selector).
  static VitOptions FromSpec(const Architecture& arch, const PruningSpec& pruning);

  int num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int num_prefix_tokens() const { return distilled ? 2 : 1; }
  int head_dim() const { return embed_dim / num_heads; }
  // Block i's widths: block_shapes[i], or the uniform shape.
  BlockShape block_shape(int i) const;
};

// timm PatchEmbed: Conv2d, flatten, transpose. forward: [B, in, H, W] -> [B, P, C].
class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(const VitOptions& o);
  torch::Tensor forward(const torch::Tensor& images);
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

// timm Attention: qkv Linear(C, 3A), heads split [B, N, 3, H, D], scale D^-0.5, softmax,
// proj Linear(A, C), where D = head_dim and A = H·D (= C unless heads were pruned away).
// The pieces are exposed separately.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int embed_dim, int num_heads, int head_dim);
  // [B, N, C] -> q, k, v, each [B, H, N, D] (views into one qkv buffer).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> QKV(const torch::Tensor& x) const;
  // Post-softmax attention probabilities [B, H, N, N]: softmax(q kᵀ · scale + bias), with
  // `logit_bias` (broadcastable to [B, H, N, N]; e.g. ToMe's log(size)) added when defined.
  torch::Tensor Probabilities(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& logit_bias = {}) const;
  // probs @ v, heads merged, then proj: -> [B, N, C].
  torch::Tensor Output(const torch::Tensor& probs, const torch::Tensor& v) const;
  // Plain attention of `x` (already normalised): Output(Probabilities(QKV(x))).
  torch::Tensor forward(const torch::Tensor& x);

  int num_heads() const { return num_heads_; }
  int head_dim() const { return head_dim_; }
  // A = num_heads · head_dim: the width of q, k, v and of proj's input.
  int64_t width() const { return static_cast<int64_t>(num_heads_) * head_dim_; }
  double scale() const { return scale_; }

  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};

 private:
  int num_heads_;
  int head_dim_;
  double scale_;
};
TORCH_MODULE(Attention);

// timm Mlp: fc1, exact (erf) GELU, fc2.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int embed_dim, int hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Mlp);

// timm Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x)). `index` picks the block's
// widths from o.block_shape(index).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const VitOptions& o, int index);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr};
  Attention attn{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

// DynamicViT PredictorLG. forward(patch tokens [B, N, C]) -> log-probabilities [B, N, 2]
// (column 0 = keep). The global feature is the plain mean over the N given tokens (the
// eval-mode behaviour: every token still present has policy 1).
class ScorePredictorImpl : public torch::nn::Module {
 public:
  explicit ScorePredictorImpl(int embed_dim);
  torch::Tensor forward(const torch::Tensor& x);
  // Registered inside the lists in_conv = [LayerNorm, Linear, GELU] and
  // out_conv = [Linear, GELU, Linear, GELU, Linear] so the keys carry the official
  // nn.Sequential indices (in_conv.0/.1, out_conv.0/.2/.4); the handles below alias them.
  torch::nn::ModuleList in_conv{nullptr};
  torch::nn::ModuleList out_conv{nullptr};
  torch::nn::LayerNorm in_norm{nullptr};
  torch::nn::Linear in_fc{nullptr};
  torch::nn::Linear out_fc0{nullptr};
  torch::nn::Linear out_fc2{nullptr};
  torch::nn::Linear out_fc4{nullptr};

  // Inference copy of out_fc0's weight columns [:, :C/2] (the per-token half; the other
  // half multiplies the per-image global feature), contiguous so the GEMM kernels (and the
  // weights packed at load) can take it. SplitOutFc0() makes it once the weights are final
  // (after loading and moving them); OutFc0Local() returns it while out_fc0's weight is
  // unchanged since (its version counter), else an undefined tensor (the caller then
  // copies the columns itself), so training steps never read a stale copy.
  // Not thread-safe against concurrent calls of SplitOutFc0; OutFc0Local is const.
  void SplitOutFc0();
  torch::Tensor OutFc0Local() const;

 private:
  torch::Tensor out_fc0_local_;
  int64_t out_fc0_local_version_ = -1;
};
TORCH_MODULE(ScorePredictor);

class VitImpl : public torch::nn::Module {
 public:
  explicit VitImpl(const VitOptions& options);

  const VitOptions& options() const { return options_; }

  // Patch embedding, prefix tokens (CLS[, dist]) prepended, pos_embed added:
  // [B, in, H, W] -> [B, prefix + P, C].
  torch::Tensor Embed(const torch::Tensor& images);
  // Final norm and head(s) on the prefix tokens of `x` [B, N, C] -> logits [B, classes].
  // Distilled: the mean of head(CLS) and head_dist(dist) (timm eval behaviour).
  torch::Tensor Head(const torch::Tensor& x);
  // Dense eval forward: [B, in, H, W] -> logits.
  torch::Tensor forward(const torch::Tensor& images);

  torch::Tensor cls_token;
  torch::Tensor pos_embed;
  torch::Tensor dist_token;  // undefined unless distilled
  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
  torch::nn::Linear head_dist{nullptr};            // distilled only
  torch::nn::ModuleList score_predictor{nullptr};  // DynamicViT only
  torch::nn::ModuleList alpha_heads{nullptr};      // TNT only
  torch::nn::LayerNorm alpha_norm{nullptr};        // TNT only (training)
  torch::nn::Linear gumbel{nullptr};               // SViTE only

  // Typed accessors (no bounds check beyond ModuleList's).
  BlockImpl& block(int i) const;
  ScorePredictorImpl& predictor(int p) const;
  torch::nn::LinearImpl& alpha_head(int i) const;

 private:
  VitOptions options_;
};
TORCH_MODULE(Vit);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_VIT_VIT_MODULE_H_
