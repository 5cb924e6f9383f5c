#include "server/checkpoint/hf_weights.h"

#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/checkpoint/hf_config.h"

namespace vitserve {
namespace {

constexpr size_t kMaxListed = 8;

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// Looks up expected keys, recording what is missing or misshapen and what was used.
class KeyReader {
 public:
  explicit KeyReader(const StateDict& hf) : hf_(hf) {}

  // The tensor at `key` if it has `shape`; an undefined tensor (and a recorded problem)
  // otherwise.
  torch::Tensor Take(const std::string& key, std::vector<int64_t> shape) {
    auto it = hf_.find(key);
    if (it == hf_.end()) {
      missing_.push_back(absl::StrCat(key, " ", ShapeString(shape)));
      return {};
    }
    used_.insert(key);
    if (it->second.sizes() != at::IntArrayRef(shape)) {
      mismatched_.push_back(absl::StrCat(key, ": expected ", ShapeString(shape), ", got ",
                                         ShapeString(it->second.sizes())));
      return {};
    }
    return it->second;
  }

  absl::Status Finish(absl::string_view ignored_prefix) const {
    std::vector<std::string> unexpected;
    for (const auto& [key, tensor] : hf_) {
      if (!used_.count(key) && !absl::StartsWith(key, ignored_prefix)) unexpected.push_back(key);
    }
    if (missing_.empty() && mismatched_.empty() && unexpected.empty()) return absl::OkStatus();
    std::string msg = "Hugging Face weights do not match config.json:";
    auto list = [&msg](absl::string_view what, const std::vector<std::string>& items) {
      if (items.empty()) return;
      std::vector<std::string> shown(items.begin(),
                                     items.begin() + std::min(items.size(), kMaxListed));
      absl::StrAppend(&msg, " ", items.size(), " ", what, ": ", absl::StrJoin(shown, "; "),
                      items.size() > kMaxListed ? "; ..." : "", ".");
    };
    list("missing", missing_);
    list("with the wrong shape", mismatched_);
    list("unexpected", unexpected);
    return absl::InvalidArgumentError(msg);
  }

 private:
  const StateDict& hf_;
  std::set<std::string> used_;
  std::vector<std::string> missing_;
  std::vector<std::string> mismatched_;
};

void MapLinear(KeyReader& r, const std::string& from, const std::string& to, int64_t out,
               int64_t in, StateDict* sd) {
  (*sd)[to + ".weight"] = r.Take(from + ".weight", {out, in});
  (*sd)[to + ".bias"] = r.Take(from + ".bias", {out});
}

void MapNorm(KeyReader& r, const std::string& from, const std::string& to, int64_t c,
             StateDict* sd) {
  (*sd)[to + ".weight"] = r.Take(from + ".weight", {c});
  (*sd)[to + ".bias"] = r.Take(from + ".bias", {c});
}

void MapBlock(KeyReader& r, const std::string& prefix, int i, const Architecture& arch,
              StateDict* sd) {
  const int64_t c = arch.embed_dim;
  const std::string from = absl::StrCat(prefix, "encoder.layer.", i, ".");
  const std::string to = absl::StrCat("blocks.", i, ".");
  MapNorm(r, from + "layernorm_before", to + "norm1", c, sd);
  std::vector<torch::Tensor> weights;
  std::vector<torch::Tensor> biases;
  for (const char* part : {"query", "key", "value"}) {
    const std::string key = absl::StrCat(from, "attention.attention.", part);
    weights.push_back(r.Take(key + ".weight", {c, c}));
    biases.push_back(arch.qkv_bias ? r.Take(key + ".bias", {c}) : torch::zeros({c}));
  }
  auto defined = [](const std::vector<torch::Tensor>& v) {
    for (const torch::Tensor& t : v) {
      if (!t.defined()) return false;
    }
    return true;
  };
  if (defined(weights)) (*sd)[to + "attn.qkv.weight"] = torch::cat(weights, 0);
  if (defined(biases)) (*sd)[to + "attn.qkv.bias"] = torch::cat(biases, 0);
  MapLinear(r, from + "attention.output.dense", to + "attn.proj", c, c, sd);
  MapNorm(r, from + "layernorm_after", to + "norm2", c, sd);
  MapLinear(r, from + "intermediate.dense", to + "mlp.fc1", arch.mlp_hidden(), c, sd);
  MapLinear(r, from + "output.dense", to + "mlp.fc2", c, arch.mlp_hidden(), sd);
}

void MapHeads(KeyReader& r, absl::string_view hf_class, const Architecture& arch, StateDict* sd) {
  const int64_t c = arch.embed_dim;
  const int64_t k = arch.num_classes;
  if (hf_class == kHfDeitTeacher) {
    MapLinear(r, "cls_classifier", "head", k, c, sd);
    MapLinear(r, "distillation_classifier", "head_dist", k, c, sd);
    return;
  }
  MapLinear(r, "classifier", "head", k, c, sd);
  if (hf_class == kHfDeit) {  // CLS head only: see the header
    for (const char* part : {".weight", ".bias"}) {
      torch::Tensor& t = (*sd)[absl::StrCat("head", part)];
      if (t.defined()) {
        (*sd)[absl::StrCat("head_dist", part)] = torch::zeros_like(t);
        t = t * 2;
      }
    }
  }
}

}  // namespace

absl::StatusOr<StateDict> HfToTimmStateDict(const StateDict& hf, const Architecture& arch,
                                            absl::string_view hf_class) {
  if (hf_class != kHfVit && hf_class != kHfDeit && hf_class != kHfDeitTeacher) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported Hugging Face class '", hf_class, "'"));
  }
  const std::string prefix = hf_class == kHfVit ? "vit." : "deit.";
  const int64_t c = arch.embed_dim;
  const int64_t tokens = arch.num_patches() + arch.num_prefix_tokens();
  KeyReader r(hf);
  StateDict sd;
  try {
    const std::string emb = prefix + "embeddings.";
    sd["cls_token"] = r.Take(emb + "cls_token", {1, 1, c});
    if (arch.distilled) sd["dist_token"] = r.Take(emb + "distillation_token", {1, 1, c});
    sd["pos_embed"] = r.Take(emb + "position_embeddings", {1, tokens, c});
    const std::string proj = emb + "patch_embeddings.projection";
    sd["patch_embed.proj.weight"] =
        r.Take(proj + ".weight", {c, arch.in_chans, arch.patch_size, arch.patch_size});
    sd["patch_embed.proj.bias"] = r.Take(proj + ".bias", {c});
    for (int i = 0; i < arch.depth; ++i) MapBlock(r, prefix, i, arch, &sd);
    MapNorm(r, prefix + "layernorm", "norm", c, &sd);
    MapHeads(r, hf_class, arch, &sd);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch failure renaming Hugging Face weights: ",
                                            e.what_without_backtrace()));
  }
  if (absl::Status s = r.Finish(prefix + "pooler."); !s.ok()) return s;
  return sd;
}

}  // namespace vitserve
