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

absl::StatusOr<SviteCompaction> CompactSvite(const Architecture& arch, const StateDict& weights) {
  const int64_t c = arch.embed_dim;
  const int64_t heads = arch.num_heads;
  const int64_t d = arch.head_dim();
  const int64_t hidden = arch.mlp_hidden();
  SviteCompaction out;
  out.weights = weights;
  double zeros = 0.0;
  double entries = 0.0;
  try {
    for (int i = 0; i < arch.depth; ++i) {
      const std::string p = absl::StrCat("blocks.", i, ".");
      absl::StatusOr<at::Tensor> qkv_w = Get(weights, p + "attn.qkv.weight", {3 * c, c});
      if (!qkv_w.ok()) return qkv_w.status();
      absl::StatusOr<at::Tensor> qkv_b = Get(weights, p + "attn.qkv.bias", {3 * c});
      if (!qkv_b.ok()) return qkv_b.status();
      absl::StatusOr<at::Tensor> proj_w = Get(weights, p + "attn.proj.weight", {c, c});
      if (!proj_w.ok()) return proj_w.status();
      absl::StatusOr<at::Tensor> proj_b = Get(weights, p + "attn.proj.bias", {c});
      if (!proj_b.ok()) return proj_b.status();
      absl::StatusOr<at::Tensor> fc1_w = Get(weights, p + "mlp.fc1.weight", {hidden, c});
      if (!fc1_w.ok()) return fc1_w.status();
      absl::StatusOr<at::Tensor> fc1_b = Get(weights, p + "mlp.fc1.bias", {hidden});
      if (!fc1_b.ok()) return fc1_b.status();
      absl::StatusOr<at::Tensor> fc2_w = Get(weights, p + "mlp.fc2.weight", {c, hidden});
      if (!fc2_w.ok()) return fc2_w.status();
      absl::StatusOr<at::Tensor> fc2_b = Get(weights, p + "mlp.fc2.bias", {c});
      if (!fc2_b.ok()) return fc2_b.status();

      // Heads: removable when the v rows are all zero. Fold in double.
      at::Tensor proj_bias = proj_b->to(at::kDouble);
      std::vector<int64_t> kept;
      for (int64_t h = 0; h < heads; ++h) {
        const bool silent = qkv_w->narrow(0, 2 * c + h * d, d).abs().max().item<float>() == 0.0f;
        const bool last_chance = kept.empty() && h == heads - 1;
        if (!silent || last_chance) {
          kept.push_back(h);
          continue;
        }
        proj_bias += at::mv(proj_w->narrow(1, h * d, d).to(at::kDouble),
                            qkv_b->narrow(0, 2 * c + h * d, d).to(at::kDouble));
        ++out.heads_removed;
      }
      std::vector<int64_t> q_starts, qkv_starts;
      for (int part = 0; part < 3; ++part) {
        for (int64_t h : kept) qkv_starts.push_back(part * c + h * d);
      }
      for (int64_t h : kept) q_starts.push_back(h * d);
      at::Tensor new_qkv_w = Rows(*qkv_w, qkv_starts, d);
      at::Tensor new_qkv_b = Rows(*qkv_b, qkv_starts, d);
      at::Tensor new_proj_w = Rows(proj_w->t(), q_starts, d).t().contiguous();

      // MLP units: removable when the fc2 column is zero, or the fc1 row is zero (fold).
      at::Tensor fc2_bias = fc2_b->to(at::kDouble);
      at::Tensor col_zero = (fc2_w->abs().amax(0) == 0);  // [hidden]
      at::Tensor row_zero = (fc1_w->abs().amax(1) == 0);  // [hidden]
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
          const at::Tensor act = at::gelu(fc1_b->narrow(0, j, 1).to(at::kDouble));
          fc2_bias += fc2_w->select(1, j).to(at::kDouble) * act;
        }
        ++out.mlp_units_removed;
      }
      at::Tensor idx = at::tensor(units, at::kLong);
      at::Tensor new_fc1_w = fc1_w->index_select(0, idx).contiguous();
      at::Tensor new_fc1_b = fc1_b->index_select(0, idx).contiguous();
      at::Tensor new_fc2_w = fc2_w->index_select(1, idx).contiguous();

      out.weights[p + "attn.qkv.weight"] = new_qkv_w;
      out.weights[p + "attn.qkv.bias"] = new_qkv_b;
      out.weights[p + "attn.proj.weight"] = new_proj_w;
      out.weights[p + "attn.proj.bias"] = proj_bias.to(at::kFloat);
      out.weights[p + "mlp.fc1.weight"] = new_fc1_w;
      out.weights[p + "mlp.fc1.bias"] = new_fc1_b;
      out.weights[p + "mlp.fc2.weight"] = new_fc2_w;
      out.weights[p + "mlp.fc2.bias"] = fc2_bias.to(at::kFloat);
      out.blocks.push_back(BlockShape{static_cast<int>(kept.size()), static_cast<int>(d),
                                      static_cast<int>(units.size())});
      for (const at::Tensor* t : {&new_qkv_w, &new_proj_w, &new_fc1_w, &new_fc2_w}) {
        zeros += CountZeros(*t);
        entries += static_cast<double>(t->numel());
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
