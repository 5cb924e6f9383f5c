// Helpers shared by the per-method forward passes. Internal to server/pruning/.
#ifndef VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_
#define VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_

#include <torch/types.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "server/pruning/block_ops.h"
#include "server/pruning/token_pruner.h"
#include "server/vit/vit_module.h"

namespace vitserve {

inline bool IsLocation(const std::vector<int>& locations, int block) {
  return std::find(locations.begin(), locations.end(), block) != locations.end();
}

// Runs block `i` of `vit` on x, using the prefix-only shortcut for the last block when
// `options` allow it (the head reads only the prefix tokens).
inline torch::Tensor RunPlainBlock(VitImpl& vit, int i, const torch::Tensor& x,
                                   const PrunerOptions& options) {
  const VitOptions& o = vit.options();
  if (options.last_block_prefix_only && i == o.depth - 1) {
    return PrefixOnlyBlock(vit.block(i), x, o.num_prefix_tokens());
  }
  return DenseBlock(vit.block(i), x);
}

// [prefix tokens of x, kept] along the token axis.
inline torch::Tensor WithPrefix(const torch::Tensor& x, int prefix, const torch::Tensor& kept) {
  return at::cat({x.narrow(1, 0, prefix), kept}, 1);
}

// Embeds `images` and records the initial token count in `out`: how every forward starts.
inline torch::Tensor EmbedAndCount(VitImpl& vit, const torch::Tensor& images, PrunedOutput* out) {
  torch::Tensor x = EmbedTokens(vit, images);
  out->tokens_per_stage.push_back(static_cast<int>(x.size(1)));
  return x;
}

// Keeps the `keep` tokens of `patches` (x's tokens after its `prefix` ones) with the
// highest `score` ([B, patches]), best first, behind the prefix: [prefix, kept...].
inline torch::Tensor KeepTopScored(const torch::Tensor& x, int prefix, const torch::Tensor& patches,
                                   const torch::Tensor& score, int keep) {
  torch::Tensor order =
      std::get<1>(at::topk(score, keep, /*dim=*/1, /*largest=*/true, /*sorted=*/true));
  return WithPrefix(x, prefix, GatherTokens(patches, order));
}

// Base of the pruners that prune at a list of block locations (DynamicViT, EViT, TNT,
// Tri-Level).
class LocatedPruner : public TokenPruner {
 public:
  LocatedPruner(std::vector<int> locations, const PrunerOptions& options)
      : locations_(std::move(locations)), options_(options) {}

 protected:
  bool AtLocation(int block) const { return IsLocation(locations_, block); }
  const PrunerOptions& options() const { return options_; }

 private:
  const std::vector<int> locations_;
  const PrunerOptions options_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_
