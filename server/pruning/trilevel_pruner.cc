// Tri-Level E-ViT (ZLKong/Tri-Level-ViT models/models_attn_tok.py), inference parts.
//
// Every block's attention is the official masked softmax, not a plain one:
//   a = exp(l - rowmax(l)) · mask,  attn = (a + eps/N) / (Σ_keys a + eps),  eps = 1e-6,
// with one [B, N, N] mask shared by all heads (all ones until the first pruning block).
// Token level, at each location block, after attention + residual and before the MLP:
// the head-mean CLS attention ranks the N - 1 patches; the ceil(n · keep) best are kept
// in descending order, no fusion. Attention level (attn_ratio in (0, 1); 0 = off): at the
// same point each kept query row keeps k = ceil(n' · attn_ratio) keys, every key scoring
// >= its row's k-th largest head-mean attention (ties keep more); the CLS row and column
// always stay. That mask is used by the following blocks up to and including the next
// pruning block. The masked entries are still computed and multiplied by zero, as in
// the official code: the attention level changes the answer, not the work (see the
// benchmark in bench/results/methods-cpu.md).
#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "server/pruning/cpu_kernels.h"
#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

// The official masked-softmax epsilon.
constexpr double kTriLevelEps = 1e-6;

class TriLevelPruner : public LocatedPruner {
 public:
  TriLevelPruner(std::vector<int> locations, float attn_ratio, const PrunerOptions& options)
      : LocatedPruner(std::move(locations), options), attn_ratio_(attn_ratio) {}

  Method method() const override { return Method::kTriLevel; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const double rho = DecimalKeepRate(keep_rate);
    const bool attention_level = attn_ratio_ > 0.0f && attn_ratio_ < 1.0f;
    const double attn_rho = DecimalKeepRate(attn_ratio_);
    PrunedOutput out;
    torch::Tensor x = EmbedAndCount(vit, images, &out);
    torch::Tensor mask;  // [B, N, N] keys kept per query; undefined = all
    for (int i = 0; i < o.depth; ++i) {
      BlockImpl& block = vit.block(i);
      const bool location = AtLocation(i);
      torch::Tensor probs;  // [B, H, N, N]
      x = Attention(block, x, mask, &probs);
      if (location) {
        const int64_t b = x.size(0);
        const int64_t n = x.size(1) - 1;  // patches
        const double heads = static_cast<double>(block.attn->num_heads());
        torch::Tensor cls_attn = probs.select(2, 0).narrow(2, 1, n).sum(1).div_(heads);  // [B, n]
        const int64_t keep = std::min<int64_t>(n, TriLevelKeep(static_cast<int>(n), rho));
        torch::Tensor idx = std::get<1>(at::topk(cls_attn, keep, 1));  // [B, keep], descending
        x = WithPrefix(x, 1, GatherTokens(x.narrow(1, 1, n), idx));
        if (attention_level) {
          torch::Tensor pa = probs.narrow(2, 1, n).narrow(3, 1, n).sum(1).div_(heads);
          pa = at::gather(pa, 1, idx.unsqueeze(-1).expand({b, keep, n}));
          pa = at::gather(pa, 2, idx.unsqueeze(1).expand({b, keep, keep}));  // [B, keep, keep]
          const int64_t k_attn = static_cast<int64_t>(std::ceil(keep * attn_rho));
          torch::Tensor kth = std::get<0>(at::topk(pa, k_attn, 2)).narrow(2, k_attn - 1, 1);
          mask = at::ones({b, keep + 1, keep + 1}, x.options());
          mask.narrow(1, 1, keep).narrow(2, 1, keep).copy_(pa.ge(kth));
        } else {
          mask = torch::Tensor();
        }
        out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
      }
      // The head reads CLS only: the last block's MLP runs on that row alone.
      if (options().last_block_prefix_only && i == o.depth - 1) x = x.narrow(1, 0, 1).clone();
      x = MlpResidual(block, x);
    }
    out.logits = vit.Head(x);
    return out;
  }

 private:
  // x + proj(masked-eps-softmax attention of norm1(x)); `probs_out` receives [B, H, N, N].
  static torch::Tensor Attention(BlockImpl& block, const torch::Tensor& x,
                                 const torch::Tensor& mask, torch::Tensor* probs_out) {
    AttentionImpl& attn = *block.attn;
    const int64_t b = x.size(0);
    const int64_t n = x.size(1);
    const int64_t heads = attn.num_heads();
    const int64_t d = attn.head_dim();
    torch::Tensor qkv = FastLinear(ApplyNorm(block.norm1, x), attn.qkv->weight, attn.qkv->bias)
                            .view({b, n, 3, heads, d})
                            .permute({2, 0, 3, 1, 4});  // [3, B, H, N, D]
    torch::Tensor logits = at::matmul(qkv[0], qkv[1].transpose(-2, -1)).mul_(attn.scale());
    torch::Tensor a = logits.sub_(std::get<0>(logits.max(-1, /*keepdim=*/true))).exp_();
    if (mask.defined()) a.mul_(mask.unsqueeze(1));
    torch::Tensor denom = a.sum(-1, /*keepdim=*/true).add_(kTriLevelEps);
    torch::Tensor probs = a.add_(kTriLevelEps / static_cast<double>(n)).div_(denom);
    torch::Tensor merged = at::matmul(probs, qkv[2]).transpose(1, 2).reshape({b, n, heads * d});
    *probs_out = probs;
    return FastLinear(merged, attn.proj->weight, attn.proj->bias).add_(x);
  }

  float attn_ratio_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeTriLevelPruner(std::vector<int> locations, float attn_ratio,
                                                const PrunerOptions& options) {
  return std::make_unique<TriLevelPruner>(std::move(locations), attn_ratio, options);
}

}  // namespace vitserve
