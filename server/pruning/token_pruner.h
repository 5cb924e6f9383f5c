// The eval-mode forward pass of each token-reduction method, behind one interface.
// One implementation file per method (dense_pruner.cc, dynamicvit_pruner.cc,
// evit_pruner.cc, tome_pruner.cc, tnt_pruner.cc, svite_pruner.cc, trilevel_pruner.cc);
// each restates the eval-mode behaviour of the method's official code
// (tests/golden/reference.py names each source) and really removes tokens (gather), never
// masks.
//
// Token counts: every image of a batch keeps the same number of tokens at every stage
// (all methods use fixed keep counts), so a batch has one tokens_per_stage vector, equal
// to EstimateCost(...).tokens_per_stage for the same spec and keep-rate (tests check it).
// SViTE is the exception: its selector keeps k or k + 1 real tokens per image (CLS is
// forced on), reported per image in image_tokens_per_stage; the batch runs on a layout
// of the same size for every image.
// A reduction point that would keep every token is skipped (same tokens, same logits).
//
// Thread-safety: a TokenPruner is immutable after creation; Forward() may run from many
// threads at once on one shared Vit, which it only reads. Callers run it under
// torch::InferenceMode (or NoGradGuard) with the module in eval().
// Errors: Forward throws c10::Error on LibTorch failures (shape mismatch, OOM); callers
// catch it at the module boundary (server/model/inference_model.cc).
#ifndef VITSERVE_SERVER_PRUNING_TOKEN_PRUNER_H_
#define VITSERVE_SERVER_PRUNING_TOKEN_PRUNER_H_

#include <torch/types.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"
#include "server/vit/vit_module.h"

namespace vitserve {

struct PrunedOutput {
  torch::Tensor logits;               // [B, num_classes]
  std::vector<int> tokens_per_stage;  // tokens (incl. prefix / fused) at input and per stage
  // When non-empty: one entry per image, overriding tokens_per_stage for that image.
  std::vector<std::vector<int>> image_tokens_per_stage;
};

struct PrunerOptions {
  // ToMe only: merge exactly this many tokens per block, ignoring the keep-rate
  // (benchmarks at the published r = 13). -1 = r from ToMeMergeCountForKeepRate.
  int tome_r = -1;
  // The last block's output feeds the head only through the prefix tokens (CLS, dist),
  // so its attention queries, proj and MLP run on those rows alone. Exact (keys and
  // values still cover every token); saves ~7% of a dense DeiT-S. MACs reported by the
  // cost model remain those of the full block.
  bool last_block_prefix_only = true;
};

class TokenPruner {
 public:
  virtual ~TokenPruner() = default;

  virtual Method method() const = 0;

  // Runs `vit` on `images` [B, in_chans, H, W] (float32, on the module's device) at
  // `keep_rate` in (0, 1] (validated by the caller).
  virtual PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images,
                               float keep_rate) const = 0;
};

// The pruner for `spec.method` on `arch` (locations default to DefaultLocations()).
// INVALID_ARGUMENT for locations outside [0, depth) or not increasing, and for SViTE /
// Tri-Level on a distilled architecture (their official models have no dist token);
// UNIMPLEMENTED for TNT's random pre-prune (tnt_seed != 0).
absl::StatusOr<std::unique_ptr<TokenPruner>> CreateTokenPruner(const Architecture& arch,
                                                               const PruningSpec& spec,
                                                               const PrunerOptions& options = {});

// Per-method constructors (the factory above validates, then calls one of these).
std::unique_ptr<TokenPruner> MakeDensePruner(const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeDynamicVitPruner(std::vector<int> locations,
                                                  const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeEvitPruner(std::vector<int> locations,
                                            const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeToMePruner(const Architecture& arch, const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeTntPruner(std::vector<int> locations,
                                           const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeSvitePruner(bool plain_removal, const PrunerOptions& options);
std::unique_ptr<TokenPruner> MakeTriLevelPruner(std::vector<int> locations, float attn_ratio,
                                                const PrunerOptions& options);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_TOKEN_PRUNER_H_
