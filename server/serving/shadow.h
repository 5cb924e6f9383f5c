// The accuracy proxy's arithmetic (ServingOptions::shadow_fraction): which images of a
// batch are sampled, and how a pruned answer compares with the dense one. Pure.
#ifndef VITSERVE_SERVER_SERVING_SHADOW_H_
#define VITSERVE_SERVER_SERVING_SHADOW_H_

#include <cstdint>
#include <vector>

namespace vitserve {

// Images [before, before + n) of a model's stream of pruned images are sampled where
// floor(i * fraction) steps up: how many of these n (the first ones of the batch) are.
uint64_t ShadowSampleCount(uint64_t before, uint64_t n, double fraction);

struct ShadowComparison {
  bool top1_agrees = false;
  double kl_nats = 0.0;  // KL(dense || pruned) of the two softmaxes, >= 0
};

// Compares the dense logits with the pruned ones (same classes).
ShadowComparison CompareWithDense(const std::vector<float>& dense,
                                  const std::vector<float>& pruned);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_SHADOW_H_
