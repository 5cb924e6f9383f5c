#include "server/model/svite_compaction.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace vitserve {
namespace {

constexpr const char* kMaskDicts[] = {"atten_mask", "other_mask"};
constexpr absl::string_view kMaskSuffix = "_mask";

absl::StatusOr<at::Tensor> Get(const StateDict& w, const std::string& key,
                               std::vector<int64_t> shape) {
  auto it = w.find(key);
  if (it == w.end()) {
    return absl::InvalidArgumentError(absl::StrCat("SViTE checkpoint is missing '", key, "'"));
  }
  if (it->second.sizes() != at::IntArrayRef(shape)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SViTE checkpoint key '", key, "' has shape [", absl::StrJoin(it->second.sizes(), ", "),
        "], expected [", absl::StrJoin(shape, ", "), "]"));
  }
  return it->second.to(at::kFloat).contiguous();
}

// Row blocks [start, start + len) of dim 0 for each start.
at::Tensor Rows(const at::Tensor& t, const std::vector<int64_t>& starts, int64_t len) {
  std::vector<at::Tensor> parts;
  for (int64_t s : starts) parts.push_back(t.narrow(0, s, len));
  return at::cat(parts, 0).contiguous();
}

double CountZeros(const at::Tensor& t) {
  return static_cast<double>((t == 0).sum().item<int64_t>());
}

}  // namespace

absl::Status ApplySviteMasks(const std::map<std::string, StateDict>& extra, StateDict* weights) {
  for (const char* dict : kMaskDicts) {
    auto d = extra.find(dict);
    if (d == extra.end()) continue;
    for (const auto& [mask_key, mask] : d->second) {
      absl::string_view param = mask_key;
      if (!absl::ConsumeSuffix(&param, kMaskSuffix)) continue;
      auto it = weights->find(std::string(param));
      if (it == weights->end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("SViTE mask '", dict, "/", mask_key, "' has no parameter '", param, "'"));
      }
      if (it->second.sizes() != mask.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "SViTE mask '", dict, "/", mask_key, "' has shape [", absl::StrJoin(mask.sizes(), ", "),
            "], parameter [", absl::StrJoin(it->second.sizes(), ", "), "]"));
      }
      it->second = it->second * (mask != 0).to(it->second.scalar_type());
    }
  }
  return absl::OkStatus();
}

namespace {

// The weights of one block, checked against the architecture, as contiguous float32.
struct BlockWeights {
  at::Tensor qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

absl::StatusOr<BlockWeights> GetBlock(const StateDict& weights, const Architecture& arch,
                                      const std::string& p) {
  const int64_t c = arch.embed_dim;
  const int64_t hidden = arch.mlp_hidden();
  const struct {
    const char* key;
    std::vector<int64_t> shape;
    at::Tensor BlockWeights::*field;
  } parts[] = {
      {"attn.qkv.weight", {3 * c, c}, &BlockWeights::qkv_w},
      {"attn.qkv.bias", {3 * c}, &BlockWeights::qkv_b},
      {"attn.proj.weight", {c, c}, &BlockWeights::proj_w},
      {"attn.proj.bias", {c}, &BlockWeights::proj_b},
      {"mlp.fc1.weight", {hidden, c}, &BlockWeights::fc1_w},
      {"mlp.fc1.bias", {hidden}, &BlockWeights::fc1_b},
      {"mlp.fc2.weight", {c, hidden}, &BlockWeights::fc2_w},
      {"mlp.fc2.bias", {c}, &BlockWeights::fc2_b},
  };
  BlockWeights b;
  for (const auto& part : parts) {
    absl::StatusOr<at::Tensor> t = Get(weights, p + part.key, part.shape);
    if (!t.ok()) return t.status();
    b.*part.field = *std::move(t);
  }
  return b;
}

// The block's attention without its silent heads (v rows all zero: their v bias is folded
// into the proj bias, in double; one head always stays). Writes the attn.* weights under
// `p` into out->weights; returns the heads kept.
int64_t CompactHeads(const BlockWeights& b, const Architecture& arch, const std::string& p,
                     SviteCompaction* out) {
  const int64_t c = arch.embed_dim;
  const int64_t heads = arch.num_heads;
  const int64_t d = arch.head_dim();
  at::Tensor proj_bias = b.proj_b.to(at::kDouble);
  std::vector<int64_t> kept;
  for (int64_t h = 0; h < heads; ++h) {
    const bool silent = b.qkv_w.narrow(0, 2 * c + h * d, d).abs().max().item<float>() == 0.0f;
    const bool last_chance = kept.empty() && h == heads - 1;
    if (!silent || last_chance) {
      kept.push_back(h);
      continue;
    }
    proj_bias += at::mv(b.proj_w.narrow(1, h * d, d).to(at::kDouble),
                        b.qkv_b.narrow(0, 2 * c + h * d, d).to(at::kDouble));
    ++out->heads_removed;
  }
  std::vector<int64_t> q_starts, qkv_starts;
  for (int part = 0; part < 3; ++part) {
    for (int64_t h : kept) qkv_starts.push_back(part * c + h * d);
  }
  for (int64_t h : kept) q_starts.push_back(h * d);
  out->weights[p + "attn.qkv.weight"] = Rows(b.qkv_w, qkv_starts, d);
  out->weights[p + "attn.qkv.bias"] = Rows(b.qkv_b, qkv_starts, d);
  out->weights[p + "attn.proj.weight"] = Rows(b.proj_w.t(), q_starts, d).t().contiguous();
  out->weights[p + "attn.proj.bias"] = proj_bias.to(at::kFloat);
  return static_cast<int64_t>(kept.size());
}

// The block's MLP without its removable units: a zero fc2 column, or a zero fc1 row (the
// unit then outputs GELU(b1_j) for every token, folded into the fc2 bias in double); one
// unit always stays. Writes the mlp.* weights under `p`; returns the units kept.
int64_t CompactMlpUnits(const BlockWeights& b, int64_t hidden, const std::string& p,
                        SviteCompaction* out) {
  at::Tensor fc2_bias = b.fc2_b.to(at::kDouble);
  at::Tensor col_zero = (b.fc2_w.abs().amax(0) == 0);  // [hidden]
  at::Tensor row_zero = (b.fc1_w.abs().amax(1) == 0);  // [hidden]
  std::vector<int64_t> units;
  const auto* cz = col_zero.data_ptr<bool>();
  const auto* rz = row_zero.data_ptr<bool>();
  for (int64_t j = 0; j < hidden; ++j) {
    const bool last_chance = units.empty() && j == hidden - 1;
    if ((!cz[j] && !rz[j]) || last_chance) {
      units.push_back(j);
      continue;
    }
    if (!cz[j]) {  // fc1 row zero: the unit outputs GELU(b1_j) for every token
      const at::Tensor act = at::gelu(b.fc1_b.narrow(0, j, 1).to(at::kDouble));
      fc2_bias += b.fc2_w.select(1, j).to(at::kDouble) * act;
    }
    ++out->mlp_units_removed;
  }
  at::Tensor idx = at::tensor(units, at::kLong);
  out->weights[p + "mlp.fc1.weight"] = b.fc1_w.index_select(0, idx).contiguous();
  out->weights[p + "mlp.fc1.bias"] = b.fc1_b.index_select(0, idx).contiguous();
  out->weights[p + "mlp.fc2.weight"] = b.fc2_w.index_select(1, idx).contiguous();
  out->weights[p + "mlp.fc2.bias"] = fc2_bias.to(at::kFloat);
  return static_cast<int64_t>(units.size());
}

}  // namespace

absl::StatusOr<SviteCompaction> CompactSvite(const Architecture& arch, const StateDict& weights) {
  SviteCompaction out;
  out.weights = weights;
  double zeros = 0.0;
  double entries = 0.0;
  try {
    for (int i = 0; i < arch.depth; ++i) {
      const std::string p = absl::StrCat("blocks.", i, ".");
      absl::StatusOr<BlockWeights> block = GetBlock(weights, arch, p);
      if (!block.ok()) return block.status();
      const int64_t heads = CompactHeads(*block, arch, p, &out);
      const int64_t units = CompactMlpUnits(*block, arch.mlp_hidden(), p, &out);
      out.blocks.push_back(
          BlockShape{static_cast<int>(heads), arch.head_dim(), static_cast<int>(units)});
      for (const char* key :
           {"attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"}) {
        const at::Tensor& t = out.weights.at(p + key);
        zeros += CountZeros(t);
        entries += static_cast<double>(t.numel());
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("LibTorch failure compacting SViTE weights: ", e.what_without_backtrace()));
  }
  out.weight_zero_fraction = entries > 0 ? zeros / entries : 0.0;
  return out;
}

}  // namespace vitserve
