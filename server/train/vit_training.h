// Training-time forward passes and losses for the token-reduction methods, composed from
// the public building blocks of server/vit/vit_module.h (no second ViT implementation):
//
//  * DynamicViT (raoyongming/DynamicViT models/dyvit.py, losses.py): predictors before
//    the blocks at `locations`; Gumbel-softmax hard keep decisions (straight-through),
//    multiplied with the previous stage's decisions; attention masked so that dropped
//    tokens receive no attention from any query (each token keeps its self-loop), using
//    DynamicViT's `softmax_with_policy` (exp · mask, then (a + eps/N) / (Σa + eps)); the
//    predictor's global feature is the policy-weighted mean over the kept tokens.
//    Loss = CE + 2·mean_p (mean_tokens(decision_p) − ρ^(p+1))² + 0.5·KL(student‖teacher
//    logits) + 0.5·MSE(student, teacher final tokens over the tokens kept at the end).
//  * TNT (mx-ethan-rao/tnt models.py): after each block i ≤ max(locations), the noise
//    allocator α = softmax(alpha_heads[i](patch tokens)) over the tokens; the residual
//    stream is passed through `alpha_norm` and Gaussian noise scaled by 0.02·(1 − α) is
//    added to the patch tokens (CLS gets none). No token is dropped. Loss: CE with label
//    smoothing. The official fine-tuning freezes the backbone and (through a quirk of its
//    code, `model.alpha_norm.requires_grad = True` on a Module) also alpha_norm's affine
//    parameters: only the alpha heads learn. We do the same.
//
// Also: timm-style initialisation and reading / writing a model directory (safetensors +
// config.pbtxt + labels.txt) that the server loads as is.
//
// Thread-safety: none; the functions mutate modules or run autograd on them.
// Errors: the torch functions throw c10::Error on shape mismatches (the tool's main and
// the trainer catch it at their boundary); the directory functions return absl::Status.
#ifndef VITSERVE_SERVER_TRAIN_VIT_TRAINING_H_
#define VITSERVE_SERVER_TRAIN_VIT_TRAINING_H_

#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/spec/model_spec.h"
#include "server/vit/vit_module.h"

namespace vitserve {
namespace train {

// timm's ViT initialisation: Linear weights ~ N(0, 0.02²) truncated at ±2σ, biases 0,
// LayerNorm 1 / 0, cls_token and pos_embed ~ N(0, 0.02²) truncated; the patch-embedding
// conv keeps PyTorch's default. Deterministic for a given torch::manual_seed.
void InitTimm(VitImpl& vit);

// The Vit shape for `arch` with DynamicViT predictors at `num_predictors` locations and,
// when `tnt_heads`, the TNT alpha heads — so one checkpoint serves every method.
VitOptions CombinedOptions(const Architecture& arch, int num_predictors, bool tnt_heads);

// Names of the parameters that belong to the backbone (not a method head).
bool IsBackboneParameter(const std::string& name);

// One block with an optional keep policy [B, N, 1] (1 = kept, CLS included; undefined =
// plain attention): dropped tokens get no attention, every token keeps its self-loop.
torch::Tensor BlockWithPolicy(BlockImpl& block, const torch::Tensor& x,
                              const torch::Tensor& policy);

// DynamicViT's softmax_with_policy on logits [B, H, N, N] with policy [B, N, 1].
torch::Tensor SoftmaxWithPolicy(const torch::Tensor& logits, const torch::Tensor& policy);

// PredictorLG in training mode: patch tokens [B, P, C] and the previous decisions
// [B, P, 1] -> log-probabilities [B, P, 2] (column 0 = keep); the global feature is the
// policy-weighted mean.
torch::Tensor PredictorWithPolicy(ScorePredictorImpl& predictor, const torch::Tensor& x,
                                  const torch::Tensor& policy);

struct DenseOutput {
  torch::Tensor logits;  // [B, classes]
  torch::Tensor tokens;  // final normed patch tokens [B, P, C]
};

// Dense forward that also returns the final normed patch tokens (the teacher's side of
// DynamicViT's token distillation).
DenseOutput DenseForwardWithTokens(VitImpl& vit, const torch::Tensor& images);

enum class DecisionMode {
  kGumbel,  // training: hard Gumbel-softmax samples (tau 1), straight-through gradients
  kTopK,    // validation: deterministic, keep exactly int(P·ρ^(p+1)) tokens by score,
            // as the eval forward does (tokens masked instead of removed)
};

struct DynamicVitOutput {
  torch::Tensor logits;                  // [B, classes]
  torch::Tensor tokens;                  // final normed patch tokens [B, P, C]
  std::vector<torch::Tensor> decisions;  // per stage [B, P] in {0, 1}
};

// The DynamicViT training forward. `locations` are the blocks the predictors precede
// (predictor p before block locations[p]); `keep_rate` is ρ (only used by kTopK).
DynamicVitOutput DynamicVitForward(VitImpl& vit, const torch::Tensor& images,
                                   const std::vector<int>& locations, float keep_rate,
                                   DecisionMode mode);

struct DynamicVitLossWeights {
  double ratio = 2.0;          // λ ratio MSE (divided by the number of stages, as official)
  double distill_kl = 0.5;     // λ KL to the dense teacher's logits
  double distill_token = 0.5;  // λ MSE to the teacher's tokens, over finally kept tokens
  double label_smoothing = 0.1;
};

struct DynamicVitLoss {
  torch::Tensor total;
  torch::Tensor ce, ratio, kl, token;
};

// The DistillDiffPruningLoss of DynamicViT. Stage p's target keep fraction is ρ^(p+1).
DynamicVitLoss ComputeDynamicVitLoss(const DynamicVitOutput& student, const DenseOutput& teacher,
                                     const torch::Tensor& labels, float keep_rate,
                                     const DynamicVitLossWeights& weights);

struct TntOptions {
  double noise_scale = 0.02;  // official constant multiplying the unit Gaussian
  // Blocks after which noise is injected: 0 .. last_noise_block (official: blocks 0-4 of
  // 12, the range where it prunes). We use max(locations).
  int last_noise_block = 0;
};

// TNT training forward: noise injection, no token dropped -> logits.
torch::Tensor TntTrainForward(VitImpl& vit, const torch::Tensor& images, const TntOptions& options);

// TNT eval schedule with masking instead of removal (validation during training): after
// block i in `locations`, keep the top int(current patch count · rate) tokens by α.
torch::Tensor TntMaskedForward(VitImpl& vit, const torch::Tensor& images,
                               const std::vector<int>& locations, float keep_rate);

// Copies matching tensors from `state` into `vit` (names are timm keys). Parameters of
// `vit` missing from `state` are left as they are when `allow_missing_heads` and they are
// method heads; any other missing key, an unknown key or a shape mismatch is
// INVALID_ARGUMENT naming the key. Returns the names that were missing.
absl::StatusOr<std::vector<std::string>> LoadStateDict(
    VitImpl& vit, const std::map<std::string, torch::Tensor>& state, bool allow_missing_heads);

// All parameters by timm key, detached, contiguous, on the CPU.
std::map<std::string, torch::Tensor> StateDictOf(VitImpl& vit);

// Writes <dir>/model.safetensors (every parameter except the names in `exclude`, e.g.
// heads that were never trained), <dir>/labels.txt and <dir>/config.pbtxt for `spec`
// (spec.weights_path / labels_path are set to those files; a calibration file is not
// carried over: it describes other weights). Creates `dir`.
absl::Status ExportModelDir(VitImpl& vit, ModelSpec spec, const std::string& dir,
                            const std::vector<std::string>& exclude);

// Reads <dir>/config.pbtxt and its weights into a Vit that also has DynamicViT
// predictors (at the spec's DynamicViT locations) and TNT heads; heads absent from the
// checkpoint are timm-initialised. Returns the spec too.
struct LoadedModel {
  ModelSpec spec;
  Vit vit{nullptr};
  std::vector<std::string> missing_heads;
};
absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir);

// DynamicViT locations for `spec`: its own when it is a DynamicViT spec with locations,
// else the method default for the depth.
std::vector<int> DynamicVitLocations(const ModelSpec& spec);
// TNT locations likewise.
std::vector<int> TntLocations(const ModelSpec& spec);
// Pruning locations from a flag: comma-separated block indices in [0, depth), strictly
// increasing ("1,3,5"); empty `text` returns `fallback`. InvalidArgument names the bad entry.
absl::StatusOr<std::vector<int>> ParseLocations(absl::string_view text, int depth,
                                                std::vector<int> fallback);

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_VIT_TRAINING_H_
