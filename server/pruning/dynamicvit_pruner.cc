// DynamicViT (raoyongming/DynamicViT models/dyvit.py), eval mode.
//
// Before block locations[p], predictor p scores the patch tokens (PredictorKeepScores; prefix
// excluded; its global feature is the plain mean over the tokens still present) and the int(N0 *
// rho^(p+1)) best by log-probability column 0 are kept, N0 being the model's initial patch count.
// Kept tokens stay in descending score order (argsort, not spatial order); the prefix tokens are
// prepended. Later blocks are plain blocks.
#include <memory>
#include <utility>
#include <vector>

#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

class DynamicVitPruner : public TokenPruner {
 public:
  DynamicVitPruner(std::vector<int> locations, const PrunerOptions& options)
      : locations_(std::move(locations)), options_(options) {}

  Method method() const override { return Method::kDynamicViT; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const int initial = o.num_patches();
    const double rho = DecimalKeepRate(keep_rate);
    torch::Tensor x = EmbedTokens(vit, images);
    PrunedOutput out;
    out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
    int stage = 0;
    for (int i = 0; i < o.depth; ++i) {
      if (IsLocation(locations_, i)) {
        const int current = static_cast<int>(x.size(1)) - prefix;
        const int keep = DynamicVitKeep(initial, rho, stage);
        if (keep < current) {
          torch::Tensor patches = x.narrow(1, prefix, current);
          torch::Tensor score = PredictorKeepScores(vit.predictor(stage), patches);
          torch::Tensor order = std::get<1>(at::topk(score, keep, /*dim=*/1, /*largest=*/true,
                                                     /*sorted=*/true));
          x = WithPrefix(x, prefix, GatherTokens(patches, order));
        }
        out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
        ++stage;
      }
      x = RunPlainBlock(vit, i, x, options_);
    }
    out.logits = vit.Head(x);
    return out;
  }

 private:
  std::vector<int> locations_;
  PrunerOptions options_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeDynamicVitPruner(std::vector<int> locations,
                                                  const PrunerOptions& options) {
  return std::make_unique<DynamicVitPruner>(std::move(locations), options);
}

}  // namespace vitserve
