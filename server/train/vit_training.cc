#include "server/train/vit_training.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/model_repository.h"

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

// timm's init std for Linear weights and the learned embeddings.
constexpr double kInitStd = 0.02;
// DynamicViT's softmax_with_policy eps.
constexpr double kPolicyEps = 1e-6;
// File names inside an exported model directory.
constexpr char kWeightsFile[] = "model.safetensors";
constexpr char kLabelsFile[] = "labels.txt";
constexpr char kConfigFile[] = "config.pbtxt";

void TruncNormal(torch::Tensor& t, double std) {
  t.normal_(0.0, std).clamp_(-2.0 * std, 2.0 * std);
}

torch::Tensor LayerNorm(const torch::nn::LayerNorm& n, const torch::Tensor& x) {
  return torch::layer_norm(x, n->options.normalized_shape(), n->weight, n->bias, n->options.eps());
}

// [B, P, 1] of ones in x's dtype / device.
torch::Tensor Ones(const torch::Tensor& x, int64_t b, int64_t n) {
  return torch::ones({b, n, 1}, x.options());
}

}  // namespace

void InitTimm(VitImpl& vit) {
  torch::NoGradGuard no_grad;
  for (auto& item : vit.named_modules()) {
    const std::string& name = item.key();
    if (auto* linear = item.value()->as<torch::nn::LinearImpl>()) {
      TruncNormal(linear->weight, kInitStd);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* ln = item.value()->as<torch::nn::LayerNormImpl>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
    (void)name;
  }
  TruncNormal(vit.cls_token, kInitStd);
  TruncNormal(vit.pos_embed, kInitStd);
  if (vit.dist_token.defined()) TruncNormal(vit.dist_token, kInitStd);
}

VitOptions CombinedOptions(const Architecture& arch, int num_predictors, bool tnt_heads) {
  VitOptions o = VitOptions::FromArchitecture(arch);
  o.num_score_predictors = num_predictors;
  o.tnt_heads = tnt_heads;
  return o;
}

bool IsBackboneParameter(const std::string& name) {
  return !(absl::StartsWith(name, "score_predictor.") || absl::StartsWith(name, "alpha_heads.") ||
           absl::StartsWith(name, "alpha_norm.") || absl::StartsWith(name, "gumbel."));
}

torch::Tensor SoftmaxWithPolicy(const torch::Tensor& logits, const torch::Tensor& policy) {
  const int64_t b = policy.size(0);
  const int64_t n = policy.size(1);
  torch::Tensor attn_policy = policy.reshape({b, 1, 1, n});
  torch::Tensor eye = torch::eye(n, logits.options()).view({1, 1, n, n});
  attn_policy = attn_policy + (1.0 - attn_policy) * eye;
  torch::Tensor max_logit = std::get<0>(logits.max(-1, /*keepdim=*/true));
  torch::Tensor a = (logits - max_logit).exp() * attn_policy;
  return (a + kPolicyEps / static_cast<double>(n)) / (a.sum(-1, /*keepdim=*/true) + kPolicyEps);
}

torch::Tensor BlockWithPolicy(BlockImpl& block, const torch::Tensor& x,
                              const torch::Tensor& policy) {
  if (!policy.defined()) return block.forward(x);
  auto [q, k, v] = block.attn->QKV(LayerNorm(block.norm1, x));
  torch::Tensor logits = torch::matmul(q, k.transpose(-2, -1)) * block.attn->scale();
  torch::Tensor y = x + block.attn->Output(SoftmaxWithPolicy(logits, policy), v);
  return y + block.mlp->forward(LayerNorm(block.norm2, y));
}

torch::Tensor PredictorWithPolicy(ScorePredictorImpl& predictor, const torch::Tensor& x,
                                  const torch::Tensor& policy) {
  torch::Tensor h = torch::gelu(predictor.in_fc->forward(LayerNorm(predictor.in_norm, x)));
  const int64_t c = h.size(-1);
  const int64_t half = c / 2;
  torch::Tensor local = h.narrow(-1, 0, half);
  // The policy is 0/1, so clamping its mass at 1 changes nothing while a token is kept and
  // gives a zero global feature (instead of 0/0 = NaN) for an image whose tokens are all
  // dropped — frequent with few patches and random predictors.
  torch::Tensor global = (h.narrow(-1, half, c - half) * policy).sum(1, /*keepdim=*/true) /
                         policy.sum(1, /*keepdim=*/true).clamp_min(1.0);
  h = torch::cat({local, global.expand({h.size(0), h.size(1), c - half})}, -1);
  h = torch::gelu(predictor.out_fc0->forward(h));
  h = torch::gelu(predictor.out_fc2->forward(h));
  return torch::log_softmax(predictor.out_fc4->forward(h), -1);
}

DenseOutput DenseForwardWithTokens(VitImpl& vit, const torch::Tensor& images) {
  torch::Tensor x = vit.Embed(images);
  for (int i = 0; i < vit.options().depth; ++i) x = vit.block(i).forward(x);
  x = LayerNorm(vit.norm, x);
  const int64_t prefix = vit.options().num_prefix_tokens();
  DenseOutput out;
  out.logits = vit.head->forward(x.select(1, 0));
  out.tokens = x.narrow(1, prefix, x.size(1) - prefix);
  return out;
}

DynamicVitOutput DynamicVitForward(VitImpl& vit, const torch::Tensor& images,
                                   const std::vector<int>& locations, float keep_rate,
                                   DecisionMode mode) {
  const int64_t prefix = vit.options().num_prefix_tokens();
  torch::Tensor x = vit.Embed(images);
  const int64_t b = x.size(0);
  const int64_t p0 = x.size(1) - prefix;
  torch::Tensor prev = Ones(x, b, p0);  // [B, P, 1]
  torch::Tensor policy;                 // undefined until the first stage
  DynamicVitOutput out;
  size_t stage = 0;
  for (int i = 0; i < vit.options().depth; ++i) {
    if (stage < locations.size() && locations[stage] == i) {
      torch::Tensor patches = x.narrow(1, prefix, p0);
      torch::Tensor log_probs =
          PredictorWithPolicy(vit.predictor(static_cast<int>(stage)), patches, prev);
      torch::Tensor decision;
      if (mode == DecisionMode::kGumbel) {
        decision = F::gumbel_softmax(log_probs, F::GumbelSoftmaxFuncOptions().tau(1.0).hard(true))
                       .narrow(-1, 0, 1) *
                   prev;
      } else {
        const auto keep = static_cast<int64_t>(
            static_cast<double>(p0) *
            std::pow(static_cast<double>(keep_rate), static_cast<double>(stage + 1)));
        torch::Tensor score =
            log_probs.select(-1, 0).masked_fill(prev.squeeze(-1) < 0.5, -INFINITY);
        torch::Tensor idx = std::get<1>(score.topk(std::max<int64_t>(keep, 1), -1));
        decision = torch::zeros({b, p0}, x.options()).scatter_(1, idx, 1.0).unsqueeze(-1);
      }
      out.decisions.push_back(decision.squeeze(-1));
      policy = torch::cat({Ones(x, b, prefix), decision}, 1);
      prev = decision;
      ++stage;
    }
    x = BlockWithPolicy(vit.block(i), x, policy);
  }
  x = LayerNorm(vit.norm, x);
  out.logits = vit.head->forward(x.select(1, 0));
  out.tokens = x.narrow(1, prefix, p0);
  return out;
}

DynamicVitLoss ComputeDynamicVitLoss(const DynamicVitOutput& student, const DenseOutput& teacher,
                                     const torch::Tensor& labels, float keep_rate,
                                     const DynamicVitLossWeights& weights) {
  DynamicVitLoss loss;
  loss.ce = F::cross_entropy(student.logits, labels,
                             F::CrossEntropyFuncOptions().label_smoothing(weights.label_smoothing));
  loss.ratio = torch::zeros({}, student.logits.options());
  double target = 1.0;
  for (const torch::Tensor& d : student.decisions) {
    target *= keep_rate;
    loss.ratio = loss.ratio + (d.mean(1) - target).pow(2).mean();
  }
  if (!student.decisions.empty()) {
    loss.ratio = loss.ratio / static_cast<double>(student.decisions.size());
  }
  loss.kl = F::kl_div(torch::log_softmax(student.logits, -1),
                      torch::log_softmax(teacher.logits.detach(), -1),
                      F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
  // Token distillation over the tokens kept at the last stage (all tokens if none).
  torch::Tensor mask =
      student.decisions.empty()
          ? torch::ones({student.tokens.size(0), student.tokens.size(1)}, student.tokens.options())
          : student.decisions.back();
  torch::Tensor bool_mask = (mask > 0.5).reshape({-1});
  const int64_t c = student.tokens.size(-1);
  if (bool_mask.sum().item<int64_t>() > 0) {
    torch::Tensor s = student.tokens.reshape({-1, c}).index({bool_mask});
    torch::Tensor t = teacher.tokens.detach().reshape({-1, c}).index({bool_mask});
    loss.token = F::mse_loss(s, t);
  } else {
    loss.token = torch::zeros({}, student.logits.options());
  }
  loss.total = loss.ce + weights.ratio * loss.ratio + weights.distill_kl * loss.kl +
               weights.distill_token * loss.token;
  return loss;
}

torch::Tensor TntTrainForward(VitImpl& vit, const torch::Tensor& images,
                              const TntOptions& options) {
  const int64_t prefix = vit.options().num_prefix_tokens();
  torch::Tensor x = vit.Embed(images);
  for (int i = 0; i < vit.options().depth; ++i) {
    x = vit.block(i).forward(x);
    if (i <= options.last_noise_block) {
      torch::Tensor patches = x.narrow(1, prefix, x.size(1) - prefix);
      torch::Tensor alpha =
          torch::softmax(vit.alpha_head(i).forward(patches).squeeze(-1), -1);  // [B, P]
      torch::Tensor noise = torch::randn_like(patches) * (1.0 - alpha).unsqueeze(-1);
      noise = torch::cat({torch::zeros({x.size(0), prefix, x.size(2)}, x.options()), noise}, 1);
      x = LayerNorm(vit.alpha_norm, x) + options.noise_scale * noise;
    }
  }
  return vit.Head(x);
}

torch::Tensor TntMaskedForward(VitImpl& vit, const torch::Tensor& images,
                               const std::vector<int>& locations, float keep_rate) {
  const int64_t prefix = vit.options().num_prefix_tokens();
  torch::Tensor x = vit.Embed(images);
  const int64_t b = x.size(0);
  const int64_t p0 = x.size(1) - prefix;
  torch::Tensor kept = torch::ones({b, p0}, x.options());
  int64_t current = p0;
  torch::Tensor policy;
  for (int i = 0; i < vit.options().depth; ++i) {
    x = BlockWithPolicy(vit.block(i), x, policy);
    if (std::find(locations.begin(), locations.end(), i) != locations.end() && keep_rate < 1.0f) {
      const auto keep = std::max<int64_t>(
          1, static_cast<int64_t>(static_cast<double>(current) * static_cast<double>(keep_rate)));
      torch::Tensor alpha = vit.alpha_head(i).forward(x.narrow(1, prefix, p0)).squeeze(-1);
      // Softmax over the kept tokens only is monotone in the logit: rank by the logit.
      alpha = alpha.masked_fill(kept < 0.5, -INFINITY);
      torch::Tensor idx = std::get<1>(alpha.topk(keep, -1));
      kept = torch::zeros_like(kept).scatter_(1, idx, 1.0);
      current = keep;
      policy = torch::cat({torch::ones({b, prefix}, x.options()), kept}, 1).unsqueeze(-1);
    }
  }
  // Dropped tokens do not reach CLS any more; the head reads only CLS.
  return vit.Head(x);
}

absl::StatusOr<std::vector<std::string>> LoadStateDict(
    VitImpl& vit, const std::map<std::string, torch::Tensor>& state, bool allow_missing_heads) {
  torch::NoGradGuard no_grad;
  auto params = vit.named_parameters(/*recurse=*/true);
  for (const auto& [key, tensor] : state) {
    if (params.find(key) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint key '", key, "' has no parameter in the model"));
    }
  }
  std::vector<std::string> missing;
  for (auto& item : params) {
    auto it = state.find(item.key());
    if (it == state.end()) {
      if (allow_missing_heads && !IsBackboneParameter(item.key())) {
        missing.push_back(item.key());
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint lacks parameter '", item.key(), "'"));
    }
    if (it->second.sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint key '", item.key(), "' has shape ", c10::str(it->second.sizes()),
                       ", the model expects ", c10::str(item.value().sizes())));
    }
    item.value().copy_(it->second.to(item.value().dtype()));
  }
  return missing;
}

std::map<std::string, torch::Tensor> StateDictOf(VitImpl& vit) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : vit.named_parameters(/*recurse=*/true)) {
    out[item.key()] = item.value().detach().to(torch::kCPU).contiguous().clone();
  }
  return out;
}

absl::Status ExportModelDir(VitImpl& vit, ModelSpec spec, const std::string& dir,
                            const std::vector<std::string>& exclude) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  const fs::path root = fs::absolute(dir);
  spec.dir = root.string();
  spec.weights_path = (root / kWeightsFile).string();
  spec.labels_path = (root / kLabelsFile).string();
  if (spec.name.empty()) spec.name = root.filename().string();
  spec.calibration_path.clear();
  spec.calibration.clear();

  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"producer", "vitserve_train"}};
  std::map<std::string, torch::Tensor> state = StateDictOf(vit);
  for (const std::string& name : exclude) state.erase(name);
  absl::Status st = SaveSafetensors(state, spec.weights_path, metadata);
  if (!st.ok()) return st;
  {
    std::ofstream labels(spec.labels_path);
    for (const std::string& l : spec.labels) labels << l << "\n";
    if (!labels) return absl::InternalError(absl::StrCat(spec.labels_path, ": write failed"));
  }
  return WriteModelConfig(spec, (root / kConfigFile).string());
}

std::vector<int> DynamicVitLocations(const ModelSpec& spec) {
  if (spec.pruning.method == Method::kDynamicViT && !spec.pruning.locations.empty()) {
    return spec.pruning.locations;
  }
  return DefaultLocations(Method::kDynamicViT, spec.arch.depth);
}

std::vector<int> TntLocations(const ModelSpec& spec) {
  if (spec.pruning.method == Method::kTNT && !spec.pruning.locations.empty()) {
    return spec.pruning.locations;
  }
  return DefaultLocations(Method::kTNT, spec.arch.depth);
}

absl::StatusOr<std::vector<int>> ParseLocations(absl::string_view text, int depth,
                                                std::vector<int> fallback) {
  if (text.empty()) return fallback;
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int loc = 0;
    if (!absl::SimpleAtoi(part, &loc) || loc < 0 || loc >= depth ||
        (!out.empty() && loc <= out.back())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--locations=", text, ": want strictly increasing block indices in [0, ",
                       depth, "), e.g. 1,3,5; bad entry '", part, "'"));
    }
    out.push_back(loc);
  }
  return out;
}

absl::StatusOr<LoadedModel> LoadModelDir(const std::string& dir) {
  const fs::path root = fs::absolute(fs::path(dir).lexically_normal());
  fs::path clean = root;
  if (clean.filename().empty()) clean = clean.parent_path();  // trailing slash
  absl::StatusOr<ModelSpec> spec =
      LoadModelSpec(clean.parent_path().string(), clean.filename().string());
  if (!spec.ok()) return spec.status();
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(spec->weights_path);
  if (!ckpt.ok()) return ckpt.status();
  LoadedModel out;
  out.spec = *std::move(spec);
  const int num_predictors = static_cast<int>(DynamicVitLocations(out.spec).size());
  out.vit = Vit(CombinedOptions(out.spec.arch, num_predictors, /*tnt_heads=*/true));
  InitTimm(*out.vit);
  absl::StatusOr<std::vector<std::string>> missing =
      LoadStateDict(*out.vit, ckpt->model, /*allow_missing_heads=*/true);
  if (!missing.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(out.spec.weights_path, ": ", missing.status().message()));
  }
  out.missing_heads = *std::move(missing);
  return out;
}

}  // namespace train
}  // namespace vitserve
