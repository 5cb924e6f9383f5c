// The three training objectives of `vitserve_train` (dense, DynamicViT, TNT) as Trainer
// Objectives over a Vit from server/vit/vit_module.h. See vit_training.h for the
// forward passes and losses, trainer.h for the loop.
//
// Parameter policy (measured choice, docs/training.md): the DynamicViT and TNT
// objectives train only their heads by default (backbone frozen, `backbone_lr_scale` 0),
// so one backbone serves dense, EViT, ToMe, DynamicViT and TNT from one checkpoint; a
// positive scale fine-tunes the backbone at lr·scale.
// Thread-safety: none (training).
#ifndef VITSERVE_SERVER_TRAIN_OBJECTIVES_H_
#define VITSERVE_SERVER_TRAIN_OBJECTIVES_H_

#include <string>
#include <utility>
#include <vector>

#include "server/train/trainer.h"
#include "server/train/vit_training.h"
#include "server/vit/vit_module.h"

namespace vitserve {
namespace train {

// Plain supervised training of every parameter: label-smoothed CE.
class DenseObjective : public Objective {
 public:
  DenseObjective(Vit vit, double label_smoothing);
  StepOutput Step(const torch::Tensor& images, const torch::Tensor& labels) override;
  torch::Tensor ValidationLogits(const torch::Tensor& images) override;
  std::vector<std::pair<std::vector<torch::Tensor>, double>> ParameterGroups() override;
  torch::nn::Module& module() override { return *vit_; }

 private:
  Vit vit_;
  double label_smoothing_;
};

struct DynamicVitObjectiveOptions {
  std::vector<int> locations;      // predictor p precedes block locations[p]
  float keep_rate = 0.7f;          // ρ; stage targets ρ, ρ², ρ³
  double backbone_lr_scale = 0.0;  // 0 = frozen backbone
  DynamicVitLossWeights weights;
  // Weight of a dense-path term added to DynamicViT's loss: the student's own dense
  // forward (every token) scored by label-smoothed CE + weights.distill_kl · KL to the
  // teacher. One checkpoint serves dense and every pruned method, so fine-tuning the
  // backbone for pruning alone costs dense accuracy (0.9 points on the C = 96 model,
  // docs/training.md); this term keeps the dense path trained. 0 = off (official loss).
  double dense_loss_weight = 0.0;
};

// DynamicViT: Gumbel decisions + masked attention, distilled from a frozen dense teacher,
// plus the optional dense-path term. Validation runs the deterministic top-k schedule at
// keep_rate.
class DynamicVitObjective : public Objective {
 public:
  DynamicVitObjective(Vit student, Vit teacher, DynamicVitObjectiveOptions options);
  StepOutput Step(const torch::Tensor& images, const torch::Tensor& labels) override;
  torch::Tensor ValidationLogits(const torch::Tensor& images) override;
  std::vector<std::pair<std::vector<torch::Tensor>, double>> ParameterGroups() override;
  torch::nn::Module& module() override { return *student_; }

 private:
  Vit student_;
  Vit teacher_;
  DynamicVitObjectiveOptions options_;
};

struct TntObjectiveOptions {
  std::vector<int> locations;  // TNT pruning blocks (prune after these)
  float validation_keep_rate = 0.7f;
  double noise_scale = 0.02;
  double backbone_lr_scale = 0.0;  // 0 = frozen backbone (official)
  double label_smoothing = 0.1;
};

// TNT: noise allocator training on alpha_heads[0..max(locations)], CE loss. Validation
// runs the masked top-k schedule at validation_keep_rate.
class TntObjective : public Objective {
 public:
  TntObjective(Vit vit, TntObjectiveOptions options);
  StepOutput Step(const torch::Tensor& images, const torch::Tensor& labels) override;
  torch::Tensor ValidationLogits(const torch::Tensor& images) override;
  std::vector<std::pair<std::vector<torch::Tensor>, double>> ParameterGroups() override;
  torch::nn::Module& module() override { return *vit_; }

 private:
  Vit vit_;
  TntObjectiveOptions options_;
};

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_OBJECTIVES_H_
