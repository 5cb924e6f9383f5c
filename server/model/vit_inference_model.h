// The LibTorch implementation of InferenceModel (server/executor/inference_model.h):
// a Vit (vit_module.h) with checkpoint weights, a TokenPruner for the spec's method, and
// the cost model for per-image MACs. LoadInferenceModel() is defined here.
//
// Loading: the module for spec.arch + spec.pruning is built, then every parameter is
// filled from the checkpoint. Every required key must be present with its exact shape
// (INVALID_ARGUMENT naming the key and both shapes). Unexpected keys are an error too
// (INVALID_ARGUMENT listing them: they mean the spec does not describe the checkpoint,
// e.g. head_dist without distilled, blocks.12.* with depth 12), except the heads of other
// token-reduction methods (score_predictor.*, alpha_heads.*, alpha_norm.*, gumbel.*),
// which are ignored and listed in ignored_keys() — a DynamicViT checkpoint may be served
// dense for comparison.
//
// SViTE: the masks a .pth carries (Checkpoint::extra) are applied, then the pruned heads
// and MLP units are removed and their constant contributions folded into the next bias
// (svite_compaction.h); the module is built with the compacted per-block widths, which
// block_shapes() reports and the MACs are computed from.
//
// Running: images are stacked into one [B, C, H, W] tensor, split into sub-batches of at
// most max_sub_batch (CPU attention is memory-bound at large batch), each run under
// torch::InferenceMode. Run() is thread-safe: the weights are read-only after loading
// and all per-call state is local. c10::Error is caught here and returned as INTERNAL.
#ifndef VITSERVE_SERVER_MODEL_VIT_INFERENCE_MODEL_H_
#define VITSERVE_SERVER_MODEL_VIT_INFERENCE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/checkpoint/checkpoint.h"
#include "server/executor/inference_model.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/model_spec.h"
#include "server/vit/vit_module.h"

namespace vitserve {

// Copies `weights` into `vit`'s parameters after checking keys and shapes (see above).
// Returns the ignored keys (other methods' heads), sorted. `vit` is unchanged on error.
absl::StatusOr<std::vector<std::string>> LoadStateDict(VitImpl& vit, const StateDict& weights);

// LoadInferenceModel without a file: weights already in memory (tests, benchmarks,
// training tools). `pruner_options` reach the method's forward (e.g. an explicit ToMe r
// for benchmarks). Same errors as LoadInferenceModel, minus NOT_FOUND.
absl::StatusOr<std::unique_ptr<InferenceModel>> CreateInferenceModel(
    const ModelSpec& spec, const StateDict& weights, const ModelLoadOptions& opts,
    const PrunerOptions& pruner_options = {});

// The keys and shapes a checkpoint for `spec` must hold (what LoadStateDict checks).
std::vector<std::pair<std::string, std::vector<int64_t>>> RequiredKeys(const ModelSpec& spec);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_MODEL_VIT_INFERENCE_MODEL_H_
