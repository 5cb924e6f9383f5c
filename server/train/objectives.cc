#include "server/train/objectives.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace train {
namespace {

namespace F = torch::nn::functional;

// Backbone parameters at `scale` (frozen when 0) and the parameters whose names start
// with one of `head_prefixes` at 1; everything else frozen.
std::vector<std::pair<std::vector<torch::Tensor>, double>> HeadAndBackboneGroups(
    VitImpl& vit, const std::vector<std::string>& head_prefixes, double backbone_scale) {
  std::vector<torch::Tensor> heads, backbone;
  for (auto& item : vit.named_parameters(/*recurse=*/true)) {
    const bool is_head =
        std::any_of(head_prefixes.begin(), head_prefixes.end(),
                    [&](const std::string& p) { return absl::StartsWith(item.key(), p); });
    const bool train = is_head || (backbone_scale > 0 && IsBackboneParameter(item.key()));
    item.value().set_requires_grad(train);
    if (is_head) {
      heads.push_back(item.value());
    } else if (train) {
      backbone.push_back(item.value());
    }
  }
  std::vector<std::pair<std::vector<torch::Tensor>, double>> groups = {{heads, 1.0}};
  if (!backbone.empty()) groups.emplace_back(backbone, backbone_scale);
  return groups;
}

}  // namespace

DenseObjective::DenseObjective(Vit vit, double label_smoothing)
    : vit_(std::move(vit)), label_smoothing_(label_smoothing) {}

StepOutput DenseObjective::Step(const torch::Tensor& images, const torch::Tensor& labels) {
  StepOutput out;
  out.logits = vit_->forward(images);
  out.loss = F::cross_entropy(out.logits, labels,
                              F::CrossEntropyFuncOptions().label_smoothing(label_smoothing_));
  return out;
}

torch::Tensor DenseObjective::ValidationLogits(const torch::Tensor& images) {
  return vit_->forward(images);
}

std::vector<std::pair<std::vector<torch::Tensor>, double>> DenseObjective::ParameterGroups() {
  std::vector<torch::Tensor> all;
  for (auto& item : vit_->named_parameters(/*recurse=*/true)) {
    // The method heads (if the module has any) are not part of dense training.
    const bool train = IsBackboneParameter(item.key());
    item.value().set_requires_grad(train);
    if (train) all.push_back(item.value());
  }
  return {{all, 1.0}};
}

DynamicVitObjective::DynamicVitObjective(Vit student, Vit teacher,
                                         DynamicVitObjectiveOptions options)
    : student_(std::move(student)), teacher_(std::move(teacher)), options_(std::move(options)) {
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
}

StepOutput DynamicVitObjective::Step(const torch::Tensor& images, const torch::Tensor& labels) {
  DenseOutput teacher;
  {
    torch::NoGradGuard no_grad;
    teacher = DenseForwardWithTokens(*teacher_, images);
  }
  DynamicVitOutput student = DynamicVitForward(*student_, images, options_.locations,
                                               options_.keep_rate, DecisionMode::kGumbel);
  DynamicVitLoss loss =
      ComputeDynamicVitLoss(student, teacher, labels, options_.keep_rate, options_.weights);
  StepOutput out;
  out.loss = loss.total;
  if (options_.dense_loss_weight > 0) {
    const torch::Tensor dense_logits = student_->forward(images);
    const torch::Tensor dense_ce = F::cross_entropy(
        dense_logits, labels,
        F::CrossEntropyFuncOptions().label_smoothing(options_.weights.label_smoothing));
    const torch::Tensor dense_kl =
        F::kl_div(torch::log_softmax(dense_logits, -1), torch::log_softmax(teacher.logits, -1),
                  F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
    out.loss =
        out.loss + options_.dense_loss_weight * (dense_ce + options_.weights.distill_kl * dense_kl);
    out.metrics["dense_ce"] = dense_ce.item<double>();
  }
  out.logits = student.logits.detach();
  out.metrics["ratio"] = loss.ratio.item<double>();
  out.metrics["kl"] = loss.kl.item<double>();
  if (!student.decisions.empty()) {
    out.metrics["keep"] = student.decisions.back().mean().item<double>();
  }
  return out;
}

torch::Tensor DynamicVitObjective::ValidationLogits(const torch::Tensor& images) {
  return DynamicVitForward(*student_, images, options_.locations, options_.keep_rate,
                           DecisionMode::kTopK)
      .logits;
}

std::vector<std::pair<std::vector<torch::Tensor>, double>> DynamicVitObjective::ParameterGroups() {
  return HeadAndBackboneGroups(*student_, {"score_predictor."}, options_.backbone_lr_scale);
}

TntObjective::TntObjective(Vit vit, TntObjectiveOptions options)
    : vit_(std::move(vit)), options_(std::move(options)) {}

StepOutput TntObjective::Step(const torch::Tensor& images, const torch::Tensor& labels) {
  TntOptions tnt;
  tnt.noise_scale = options_.noise_scale;
  tnt.last_noise_block = options_.locations.empty() ? 0
                                                    : *std::max_element(options_.locations.begin(),
                                                                        options_.locations.end());
  StepOutput out;
  out.logits = TntTrainForward(*vit_, images, tnt);
  out.loss = F::cross_entropy(
      out.logits, labels, F::CrossEntropyFuncOptions().label_smoothing(options_.label_smoothing));
  out.logits = out.logits.detach();
  return out;
}

torch::Tensor TntObjective::ValidationLogits(const torch::Tensor& images) {
  return TntMaskedForward(*vit_, images, options_.locations, options_.validation_keep_rate);
}

std::vector<std::pair<std::vector<torch::Tensor>, double>> TntObjective::ParameterGroups() {
  const int last = options_.locations.empty()
                       ? 0
                       : *std::max_element(options_.locations.begin(), options_.locations.end());
  std::vector<std::string> prefixes;
  for (int i = 0; i <= last; ++i) prefixes.push_back(absl::StrCat("alpha_heads.", i, "."));
  // alpha_norm stays frozen (identity affine), as in the official fine-tuning.
  return HeadAndBackboneGroups(*vit_, prefixes, options_.backbone_lr_scale);
}

}  // namespace train
}  // namespace vitserve
