// ToMe (facebookresearch/ToMe tome/merge.py, tome/patch/timm.py), eval mode.
//
// Every block, between attention and MLP, merges r_eff = min(r, (t - protected) / 2)
// tokens (protected = CLS [+ dist]) by bipartite soft matching on the keys averaged over
// heads, L2-normalised without eps: A = tokens at even positions, B = odd positions,
// scores = A·Bᵀ with the CLS row (and the dist column) at -inf; each A token's best B
// match; the r_eff A tokens with the highest match merge into their B token by
// size-weighted average. Output order [unmerged A in index order, all B] (distilled:
// [A0, B0, A1.., B1..]), a `size` per token, and proportional attention (log(size)
// added to the attention logits) from the second block on.
#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "server/pruning/cost_model.h"
#include "server/pruning/forward_common.h"
#include "server/pruning/keep_counts.h"
#include "server/pruning/token_pruner.h"

namespace vitserve {
namespace {

// The merge plan of one block (indices per image).
struct MergePlan {
  torch::Tensor unmerged;  // [B, tA - r] indices into A, ascending
  torch::Tensor src;       // [B, r] indices into A
  torch::Tensor dst;       // [B, r] indices into B
  int r = 0;
  bool distilled = false;
};

MergePlan BipartiteSoftMatching(const torch::Tensor& keys, int r, bool distilled) {
  // keys [B, H, t, D] -> metric [B, t, D]
  torch::Tensor metric = keys.mean(1);
  metric = metric / metric.norm(2, /*dim=*/{-1}, /*keepdim=*/true);
  const int64_t t = metric.size(1);
  torch::Tensor a = metric.slice(1, 0, t, 2);
  torch::Tensor b = metric.slice(1, 1, t, 2);
  torch::Tensor scores = at::matmul(a, b.transpose(-1, -2));  // [B, tA, tB]
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  scores.select(1, 0).fill_(kNegInf);                 // CLS (A[0]) never merges
  if (distilled) scores.select(2, 0).fill_(kNegInf);  // dist token (B[0]) never receives
  auto [node_max, node_idx] = scores.max(-1);
  torch::Tensor edge_idx = std::get<1>(node_max.sort(-1, /*descending=*/true));
  MergePlan plan;
  plan.r = r;
  plan.distilled = distilled;
  plan.src = edge_idx.narrow(1, 0, r);
  plan.unmerged = std::get<0>(edge_idx.narrow(1, r, edge_idx.size(1) - r).sort(1));
  plan.dst = node_idx.gather(1, plan.src);
  return plan;
}

// merge(x, mode="sum") of merge.py for x [B, t, c].
torch::Tensor MergeSum(const MergePlan& plan, const torch::Tensor& x) {
  const int64_t t = x.size(1);
  torch::Tensor src = x.slice(1, 0, t, 2);
  torch::Tensor dst = x.slice(1, 1, t, 2).contiguous();
  torch::Tensor unm = GatherTokens(src, plan.unmerged);
  torch::Tensor moved = GatherTokens(src, plan.src);
  dst.scatter_add_(1, plan.dst.unsqueeze(-1).expand({x.size(0), plan.r, x.size(2)}), moved);
  if (plan.distilled) {
    return at::cat({unm.narrow(1, 0, 1), dst.narrow(1, 0, 1), unm.narrow(1, 1, unm.size(1) - 1),
                    dst.narrow(1, 1, dst.size(1) - 1)},
                   1);
  }
  return at::cat({unm, dst}, 1);
}

class ToMePruner : public TokenPruner {
 public:
  ToMePruner(const Architecture& arch, const PrunerOptions& options)
      : arch_(arch), options_(options) {}

  Method method() const override { return Method::kToMe; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const int r =
        options_.tome_r >= 0 ? options_.tome_r : ToMeMergeCountForKeepRate(arch_, keep_rate);
    torch::Tensor x = EmbedTokens(vit, images);
    torch::Tensor size;  // [B, t, 1]; undefined until the first merge (all ones)
    PrunedOutput out;
    out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
    for (int i = 0; i < o.depth; ++i) {
      BlockImpl& block = vit.block(i);
      const int t = static_cast<int>(x.size(1));
      const int merged = ToMeMergeCount(r, t, prefix);
      torch::Tensor bias;
      if (size.defined()) bias = size.log().squeeze(-1);  // [B, t]
      if (i == o.depth - 1 && options_.last_block_prefix_only) {
        // The merge leaves the prefix tokens untouched: only their rows feed the head.
        x = PrefixOnlyBlock(block, x, prefix, bias);
        out.tokens_per_stage.push_back(t - merged);
        break;
      }
      torch::Tensor keys;
      x = AttentionResidual(block, x, bias, /*cls_probs_out=*/nullptr, &keys);
      if (merged > 0) {
        const MergePlan plan = BipartiteSoftMatching(keys, merged, o.distilled);
        if (!size.defined()) size = at::ones({x.size(0), t, 1}, x.options());
        x = MergeSum(plan, x * size);
        size = MergeSum(plan, size);
        x.div_(size);
      }
      out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
      x = MlpResidual(block, x);
    }
    out.logits = vit.Head(x);
    return out;
  }

 private:
  Architecture arch_;
  PrunerOptions options_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeToMePruner(const Architecture& arch,
                                            const PrunerOptions& options) {
  return std::make_unique<ToMePruner>(arch, options);
}

}  // namespace vitserve
