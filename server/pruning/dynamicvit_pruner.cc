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

class DynamicVitPruner : public LocatedPruner {
 public:
  using LocatedPruner::LocatedPruner;

  Method method() const override { return Method::kDynamicViT; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const int initial = o.num_patches();
    const double rho = DecimalKeepRate(keep_rate);
    PrunedOutput out;
    torch::Tensor x = EmbedAndCount(vit, images, &out);
    int stage = 0;
    for (int i = 0; i < o.depth; ++i) {
      if (AtLocation(i)) {
        const int current = static_cast<int>(x.size(1)) - prefix;
        const int keep = DynamicVitKeep(initial, rho, stage);
        if (keep < current) {
          torch::Tensor patches = x.narrow(1, prefix, current);
          torch::Tensor score = PredictorKeepScores(vit.predictor(stage), patches);
          x = KeepTopScored(x, prefix, patches, score, keep);
        }
        out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
        ++stage;
      }
      x = RunPlainBlock(vit, i, x, options());
    }
    out.logits = vit.Head(x);
    return out;
  }
};

}  // namespace

std::unique_ptr<TokenPruner> MakeDynamicVitPruner(std::vector<int> locations,
                                                  const PrunerOptions& options) {
  return std::make_unique<DynamicVitPruner>(std::move(locations), options);
}

}  // namespace vitserve
