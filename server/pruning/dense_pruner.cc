// Dense: the plain timm forward; no reduction.
#include <memory>

#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"

namespace vitserve {
namespace {

class DensePruner : public TokenPruner {
 public:
  explicit DensePruner(const PrunerOptions& options) : options_(options) {}

  Method method() const override { return Method::kDense; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float) const override {
    PrunedOutput out;
    torch::Tensor x = EmbedAndCount(vit, images, &out);
    for (int i = 0; i < vit.options().depth; ++i) x = RunPlainBlock(vit, i, x, options_);
    out.logits = vit.Head(x);
    return out;
  }

 private:
  PrunerOptions options_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeDensePruner(const PrunerOptions& options) {
  return std::make_unique<DensePruner>(options);
}

}  // namespace vitserve
