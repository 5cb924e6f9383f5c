// TNT — Training Noise Token pruning (mx-ethan-rao/tnt models.py), eval mode.
//
// After block i for each location i: alpha = softmax(alpha_heads[i](patch tokens)) over
// the current patch tokens (prefix excluded; alpha_norm is training-only), and the top
// int(current patch count · rate) by alpha are kept, in descending alpha order, the
// prefix tokens (CLS, dist) prepended. The official random similarity pre-prune
// (torch.randperm) is not offered: the factory refuses tnt_seed != 0.
#include <memory>
#include <utility>
#include <vector>

#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

class TntPruner : public LocatedPruner {
 public:
  using LocatedPruner::LocatedPruner;

  Method method() const override { return Method::kTNT; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const double rate = DecimalKeepRate(keep_rate);
    PrunedOutput out;
    torch::Tensor x = EmbedAndCount(vit, images, &out);
    for (int i = 0; i < o.depth; ++i) {
      const int current = static_cast<int>(x.size(1)) - prefix;  // blocks keep the count
      x = RunPlainBlock(vit, i, x, options());
      if (!AtLocation(i)) continue;
      const int keep = std::min(current, TntKeep(current, rate));
      // After the last block only the prefix rows remain (RunPlainBlock's shortcut) and a
      // pruning step cannot change the logits: it is counted, not executed.
      if (keep < current && i < o.depth - 1) {
        torch::Tensor patches = x.narrow(1, prefix, current);
        const torch::nn::LinearImpl& head = vit.alpha_head(i);
        torch::Tensor alpha =
            at::_softmax(at::linear(patches, head.weight, head.bias).squeeze(-1), -1, false);
        x = KeepTopScored(x, prefix, patches, alpha, keep);
      }
      out.tokens_per_stage.push_back(prefix + keep);
    }
    out.logits = vit.Head(x);
    return out;
  }
};

}  // namespace

std::unique_ptr<TokenPruner> MakeTntPruner(std::vector<int> locations,
                                           const PrunerOptions& options) {
  return std::make_unique<TntPruner>(std::move(locations), options);
}

}  // namespace vitserve
