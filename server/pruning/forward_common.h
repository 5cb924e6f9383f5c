// Helpers shared by the per-method forward passes. Internal to server/pruning/.
#ifndef VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_
#define VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_

#include <torch/types.h>

#include <algorithm>
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

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_FORWARD_COMMON_H_
