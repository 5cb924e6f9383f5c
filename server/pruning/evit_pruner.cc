// EViT (youweiliang/evit evit.py), eval mode, fused variant.
//
// At each location block: after attention + residual and before the MLP, the CLS
// attention (post-softmax row 0 over the non-prefix tokens, averaged over heads) ranks
// the N - prefix non-prefix tokens; the ceil(kr * (N - prefix)) best are kept in
// descending order, and the dropped ones are fused into one token = Σ token · cls_attn
// (not renormalised) appended last: [prefix, kept..., fused]. The fused token is an
// ordinary token afterwards (ranked, possibly fused again). Distilled models keep both
// prefix tokens and rank the rest (the official code has CLS only).
#include <memory>
#include <utility>
#include <vector>

#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

class EvitPruner : public LocatedPruner {
 public:
  using LocatedPruner::LocatedPruner;

  Method method() const override { return Method::kEViT; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const double kr = DecimalKeepRate(keep_rate);
    PrunedOutput out;
    torch::Tensor x = EmbedAndCount(vit, images, &out);
    for (int i = 0; i < o.depth; ++i) {
      if (!AtLocation(i)) {
        x = RunPlainBlock(vit, i, x, options());
        continue;
      }
      BlockImpl& block = vit.block(i);
      const int current = static_cast<int>(x.size(1)) - prefix;
      const int left = EvitKeep(current, kr);
      if (left >= current) {  // the official code returns early: nothing dropped, no fusion
        x = MlpResidual(block, AttentionResidual(block, x));
        out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
        continue;
      }
      torch::Tensor cls_probs;  // [B, H, N]
      x = AttentionResidual(block, x, /*key_bias=*/{}, &cls_probs);
      // CLS row over the non-prefix keys, mean over heads: [B, current].
      torch::Tensor cls_attn = cls_probs.narrow(-1, prefix, current).mean(1);
      auto [sorted_attn, order] = at::sort(cls_attn, /*dim=*/1, /*descending=*/true);
      torch::Tensor others = x.narrow(1, prefix, current);
      torch::Tensor kept = GatherTokens(others, order.narrow(1, 0, left));
      const int dropped = current - left;
      torch::Tensor dropped_tokens = GatherTokens(others, order.narrow(1, left, dropped));
      // Σ_j attn_j · token_j over the dropped tokens: [B, 1, dropped] @ [B, dropped, C].
      torch::Tensor fused =
          at::bmm(sorted_attn.narrow(1, left, dropped).unsqueeze(1), dropped_tokens);
      x = at::cat({x.narrow(1, 0, prefix), kept, fused}, 1);
      out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
      x = i == o.depth - 1 && options().last_block_prefix_only
              ? MlpResidual(block, x.narrow(1, 0, prefix).clone())
              : MlpResidual(block, x);
    }
    out.logits = vit.Head(x);
    return out;
  }
};

}  // namespace

std::unique_ptr<TokenPruner> MakeEvitPruner(std::vector<int> locations,
                                            const PrunerOptions& options) {
  return std::make_unique<EvitPruner>(std::move(locations), options);
}

}  // namespace vitserve
