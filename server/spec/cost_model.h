// Token schedules and multiply-add counts per method and keep-rate. Pure functions,
// no LibTorch: the scheduler, GetModelInfo and the metrics use them, and the executor's
// actual token counts are checked against them in tests.
//
// Cost model: a block with N_attn tokens in attention and N_mlp tokens in
// the MLP costs 4·N_attn·C² + 2·N_attn²·C (qkv, proj, QKᵀ, AV) + 2·N_mlp·C·H_mlp (fc1, fc2)
// multiply-adds; with H_mlp = 4C a dense block is 12·N·C² + 2·N²·C. Patch embed
// P·C·(in_chans·patch²), head C·classes (×2 heads when distilled). Method overheads
// (DynamicViT predictors, ToMe similarity, TNT/SViTE score heads) are added.
#ifndef VITSERVE_SERVER_SPEC_COST_MODEL_H_
#define VITSERVE_SERVER_SPEC_COST_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"

namespace vitserve {

struct BlockTokens {
  int attn_tokens = 0;  // tokens entering the block's attention
  int mlp_tokens = 0;   // tokens entering the block's MLP
};

struct CostEstimate {
  float keep_rate = 1.0f;
  // Token count (incl. CLS / dist / fused) at the input and after each reduction
  // point, e.g. EViT 0.7 on DeiT-S: {197, 140, 100, 72}; dense: {197}. SViTE: {N, k + 1},
  // the most real tokens its selector keeps (blocks[] counts the zero token it adds).
  std::vector<int> tokens_per_stage;
  std::vector<BlockTokens> blocks;  // one entry per block
  int tome_r = 0;                   // ToMe: tokens merged per block
  uint64_t macs = 0;                // this keep-rate, overheads included
  uint64_t dense_macs = 0;          // the dense model
};

// MACs of one dense forward pass of `arch` (with per-block shapes when non-empty).
uint64_t DenseMacs(const Architecture& arch, const std::vector<BlockShape>& blocks = {});

// Schedule and MACs for `spec.method` at `keep_rate` in (0, 1]. INVALID_ARGUMENT if the
// keep-rate is out of (0, 1] or the method cannot run on this architecture.
absl::StatusOr<CostEstimate> EstimateCost(const Architecture& arch, const PruningSpec& spec,
                                          float keep_rate,
                                          const std::vector<BlockShape>& blocks = {});

// ToMe: the per-block merge count r whose MACs come closest to the 3-stage
// (DynamicViT-style) schedule at `keep_rate`. Documented in the README.
//
// The rule exactly: target = backbone MACs (blocks only, no method overheads) of the
// schedule that keeps prefix + int(N0 * rho^(p+1)) tokens from the p-th DynamicViT default
// location on (blocks depth/4, 2*depth/4, 3*depth/4), rho = the keep-rate as a decimal
// (keep_counts.h). For every r in [0, (N0 + prefix) / 2], ToMe's backbone MACs are
// computed with r_eff = min(r, (t - prefix) / 2) merged in every block; the r with the
// smallest |MACs - target| wins, ties going to the smaller r. keep_rate >= 1 -> 0.
// DeiT-S: 0.9 -> 5, 0.7 -> 12, 0.5 -> 17 (see cost_model_test.cc).
int ToMeMergeCountForKeepRate(const Architecture& arch, float keep_rate);

// ToMe at an explicit merge count `r` (r >= 0), e.g. the published r = 13; the
// estimate's keep_rate is left at 1. INVALID_ARGUMENT for r < 0 or a bad architecture.
absl::StatusOr<CostEstimate> EstimateToMeCost(const Architecture& arch, int r);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SPEC_COST_MODEL_H_
