#include "server/spec/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

// Width of one block: attention width (heads x head_dim) and MLP hidden size.
struct Widths {
  uint64_t attn = 0;
  uint64_t mlp = 0;
};

Widths BlockWidths(const Architecture& arch, const std::vector<BlockShape>& blocks, int i) {
  if (static_cast<int>(blocks.size()) == arch.depth) {
    const BlockShape& s = blocks[i];
    return {static_cast<uint64_t>(s.num_heads) * s.head_dim, static_cast<uint64_t>(s.mlp_hidden)};
  }
  return {static_cast<uint64_t>(arch.embed_dim), static_cast<uint64_t>(arch.mlp_hidden())};
}

// qkv (N·C·3A) + proj (N·A·C) + QKᵀ and AV (2·N²·A) + fc1, fc2 (2·N_mlp·C·H).
uint64_t BlockMacs(uint64_t c, const Widths& w, uint64_t n_attn, uint64_t n_mlp) {
  return 4 * n_attn * c * w.attn + 2 * n_attn * n_attn * w.attn + 2 * n_mlp * c * w.mlp;
}

uint64_t EmbedAndHeadMacs(const Architecture& arch) {
  const uint64_t c = arch.embed_dim;
  const uint64_t patch_in =
      static_cast<uint64_t>(arch.in_chans) * arch.patch_size * arch.patch_size;
  const uint64_t heads = arch.distilled ? 2 : 1;
  return static_cast<uint64_t>(arch.num_patches()) * c * patch_in +
         heads * c * static_cast<uint64_t>(arch.num_classes);
}

// DynamicViT PredictorLG on n tokens: in_conv Linear(C,C), out_conv C→C/2→C/4→2.
uint64_t PredictorMacs(uint64_t n, uint64_t c) {
  return n * (c * c + c * (c / 2) + (c / 2) * (c / 4) + (c / 4) * 2);
}

bool Contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// Backbone MACs (no method overheads) of a token schedule.
uint64_t ScheduleMacs(const Architecture& arch, const std::vector<BlockTokens>& tokens,
                      const std::vector<BlockShape>& blocks) {
  uint64_t macs = 0;
  for (int i = 0; i < arch.depth; ++i) {
    macs += BlockMacs(arch.embed_dim, BlockWidths(arch, blocks, i), tokens[i].attn_tokens,
                      tokens[i].mlp_tokens);
  }
  return macs;
}

// The DynamicViT-style 3-stage schedule at `rho` on the method-default locations.
std::vector<BlockTokens> ThreeStageSchedule(const Architecture& arch, double rho) {
  const std::vector<int> locs = DefaultLocations(Method::kDynamicViT, arch.depth);
  const int prefix = arch.num_prefix_tokens();
  int cur = arch.num_patches();
  std::vector<BlockTokens> out(arch.depth);
  int stage = 0;
  for (int i = 0; i < arch.depth; ++i) {
    if (Contains(locs, i)) {
      cur = std::min(cur, DynamicVitKeep(arch.num_patches(), rho, stage));
      ++stage;
    }
    out[i] = {cur + prefix, cur + prefix};
  }
  return out;
}

// ToMe schedule for merge count r; `similarity_macs` gets the matching overhead.
std::vector<BlockTokens> ToMeSchedule(const Architecture& arch, int r,
                                      std::vector<int>* tokens_per_stage,
                                      uint64_t* similarity_macs) {
  const int prefix = arch.num_prefix_tokens();
  const uint64_t head_dim = arch.head_dim();
  int t = arch.num_patches() + prefix;
  std::vector<BlockTokens> out(arch.depth);
  for (int i = 0; i < arch.depth; ++i) {
    out[i].attn_tokens = t;
    const int merged = ToMeMergeCount(r, t, prefix);
    if (merged > 0 && similarity_macs != nullptr) {
      // Similarity of the |A| = ceil(t/2) and |B| = floor(t/2) head-averaged keys.
      *similarity_macs += static_cast<uint64_t>((t + 1) / 2) * (t / 2) * head_dim;
    }
    t -= merged;
    out[i].mlp_tokens = t;
    if (tokens_per_stage != nullptr) tokens_per_stage->push_back(t);
  }
  return out;
}

absl::Status ValidateArchitecture(const Architecture& arch) {
  if (arch.patch_size <= 0 || arch.image_size <= 0 || arch.image_size % arch.patch_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("image_size ", arch.image_size,
                                                   " must be a positive multiple of patch_size ",
                                                   arch.patch_size));
  }
  if (arch.depth <= 0 || arch.embed_dim <= 0 || arch.num_heads <= 0 ||
      arch.embed_dim % arch.num_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad architecture: depth ", arch.depth, ", embed_dim ", arch.embed_dim,
                     ", num_heads ", arch.num_heads, " (embed_dim must divide by num_heads)"));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t DenseMacs(const Architecture& arch, const std::vector<BlockShape>& blocks) {
  const uint64_t n = static_cast<uint64_t>(arch.num_patches()) + arch.num_prefix_tokens();
  uint64_t macs = EmbedAndHeadMacs(arch);
  for (int i = 0; i < arch.depth; ++i) {
    macs += BlockMacs(arch.embed_dim, BlockWidths(arch, blocks, i), n, n);
  }
  return macs;
}

int ToMeMergeCountForKeepRate(const Architecture& arch, float keep_rate) {
  const double rho = DecimalKeepRate(keep_rate);
  if (!(rho > 0.0) || rho >= 1.0 || arch.depth <= 0) return 0;
  const uint64_t target = ScheduleMacs(arch, ThreeStageSchedule(arch, rho), {});
  const int max_r = (arch.num_patches() + arch.num_prefix_tokens()) / 2;
  int best_r = 0;
  uint64_t best_diff = UINT64_MAX;
  for (int r = 0; r <= max_r; ++r) {
    const uint64_t macs = ScheduleMacs(arch, ToMeSchedule(arch, r, nullptr, nullptr), {});
    const uint64_t diff = macs > target ? macs - target : target - macs;
    if (diff < best_diff) {  // strict: ties keep the smaller r (fewer merges)
      best_diff = diff;
      best_r = r;
    }
  }
  return best_r;
}

absl::StatusOr<CostEstimate> EstimateToMeCost(const Architecture& arch, int r) {
  if (r < 0) return absl::InvalidArgumentError(absl::StrCat("ToMe r ", r, " is negative"));
  if (absl::Status s = ValidateArchitecture(arch); !s.ok()) return s;
  CostEstimate est;
  est.tome_r = r;
  est.dense_macs = DenseMacs(arch);
  est.tokens_per_stage.push_back(arch.num_patches() + arch.num_prefix_tokens());
  uint64_t overhead = 0;
  est.blocks = ToMeSchedule(arch, r, &est.tokens_per_stage, &overhead);
  est.macs = EmbedAndHeadMacs(arch) + ScheduleMacs(arch, est.blocks, {}) + overhead;
  return est;
}

namespace {

// What the per-method schedules below read. Each fills est->blocks (sized to the depth)
// and appends to est->tokens_per_stage (which holds the input count) at keep-rate `rho`
// (DecimalKeepRate), and adds the method's own multiply-adds (predictors, selectors,
// fusion) to *overhead.
struct ScheduleInput {
  const Architecture& arch;
  const std::vector<int>& locations;
  double rho;
  int prefix;
  int n0;      // patch tokens at the input
  uint64_t c;  // embedding width
};

void DynamicVitSchedule(const ScheduleInput& in, CostEstimate* est, uint64_t* overhead) {
  int cur = in.n0;
  int stage = 0;
  for (int i = 0; i < in.arch.depth; ++i) {
    if (Contains(in.locations, i)) {
      const int keep = DynamicVitKeep(in.n0, in.rho, stage);
      // A stage that would keep every token is skipped (same tokens, same logits).
      if (keep < cur) {
        *overhead += PredictorMacs(cur, in.c);
        cur = keep;
      }
      est->tokens_per_stage.push_back(cur + in.prefix);
      ++stage;
    }
    est->blocks[i] = {cur + in.prefix, cur + in.prefix};
  }
}

void EvitSchedule(const ScheduleInput& in, CostEstimate* est, uint64_t* overhead) {
  int cur = in.n0;  // non-prefix tokens, the fused token included once it exists
  for (int i = 0; i < in.arch.depth; ++i) {
    est->blocks[i].attn_tokens = cur + in.prefix;
    if (Contains(in.locations, i)) {
      const int left = EvitKeep(cur, in.rho);
      if (left < cur) {
        *overhead += static_cast<uint64_t>(cur - left) * in.c;  // fused-token weighted sum
        cur = left + 1;
      }
      est->tokens_per_stage.push_back(cur + in.prefix);
    }
    est->blocks[i].mlp_tokens = cur + in.prefix;
  }
}

void TntSchedule(const ScheduleInput& in, CostEstimate* est, uint64_t* overhead) {
  int cur = in.n0;
  for (int i = 0; i < in.arch.depth; ++i) {
    est->blocks[i] = {cur + in.prefix, cur + in.prefix};
    if (Contains(in.locations, i)) {  // pruning happens after block i
      const int keep = TntKeep(cur, in.rho);
      if (keep < cur) {
        *overhead += static_cast<uint64_t>(cur) * in.c;  // alpha head Linear(C, 1)
        cur = keep;
      }
      est->tokens_per_stage.push_back(cur + in.prefix);
    }
  }
}

void TriLevelSchedule(const ScheduleInput& in, CostEstimate* est) {
  int cur = in.n0;
  for (int i = 0; i < in.arch.depth; ++i) {
    est->blocks[i].attn_tokens = cur + in.prefix;
    if (Contains(in.locations, i)) {
      cur = std::min(cur, TriLevelKeep(cur, in.rho));
      est->tokens_per_stage.push_back(cur + in.prefix);
    }
    est->blocks[i].mlp_tokens = cur + in.prefix;
  }
}

void SviteSchedule(const ScheduleInput& in, bool plain_removal, CostEstimate* est,
                   uint64_t* overhead) {
  // svite_pruner.cc: [CLS, k patches, one zero token of multiplicity N - 1 - k].
  const int n = in.n0 + in.prefix;
  const int k = SviteSelectCount(n, in.rho);
  int slots = n;
  if (k >= n) est->tokens_per_stage.push_back(n);  // the selector keeps everything
  if (k < n) {
    *overhead += static_cast<uint64_t>(n) * in.c;  // the selector Linear(C, 1)
    const bool zero_token = !plain_removal && n - 1 - k > 0;
    slots = 1 + k + (zero_token ? 1 : 0);
    est->tokens_per_stage.push_back(k + 1);  // real tokens: k + 1 at most (k if CLS ranked)
  }
  for (auto& b : est->blocks) b = {slots, slots};
}

}  // namespace

absl::StatusOr<CostEstimate> EstimateCost(const Architecture& arch, const PruningSpec& spec,
                                          float keep_rate, const std::vector<BlockShape>& blocks) {
  if (!(keep_rate > 0.0f) || keep_rate > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("keep_rate ", keep_rate, " is outside (0, 1]"));
  }
  if (absl::Status s = ValidateArchitecture(arch); !s.ok()) return s;
  if (!blocks.empty() && static_cast<int>(blocks.size()) != arch.depth) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", blocks.size(), " block shapes for depth ", arch.depth));
  }
  const std::vector<int> locations =
      spec.locations.empty() ? DefaultLocations(spec.method, arch.depth) : spec.locations;
  for (int loc : locations) {
    if (loc < 0 || loc >= arch.depth) {
      return absl::InvalidArgumentError(
          absl::StrCat("pruning location ", loc, " is outside [0, depth=", arch.depth, ")"));
    }
  }
  const ScheduleInput in{arch,
                         locations,
                         DecimalKeepRate(keep_rate),
                         arch.num_prefix_tokens(),
                         arch.num_patches(),
                         static_cast<uint64_t>(arch.embed_dim)};

  CostEstimate est;
  est.keep_rate = keep_rate;
  est.dense_macs = DenseMacs(arch, blocks);
  est.blocks.resize(arch.depth);
  est.tokens_per_stage.push_back(in.n0 + in.prefix);
  uint64_t overhead = 0;
  switch (spec.method) {
    case Method::kDense:
      for (auto& b : est.blocks) b = {in.n0 + in.prefix, in.n0 + in.prefix};
      break;
    case Method::kDynamicViT:
      DynamicVitSchedule(in, &est, &overhead);
      break;
    case Method::kEViT:
      EvitSchedule(in, &est, &overhead);
      break;
    case Method::kToMe:
      est.tome_r = ToMeMergeCountForKeepRate(arch, keep_rate);
      est.tokens_per_stage.clear();
      est.tokens_per_stage.push_back(in.n0 + in.prefix);
      est.blocks = ToMeSchedule(arch, est.tome_r, &est.tokens_per_stage, &overhead);
      break;
    case Method::kTNT:
      TntSchedule(in, &est, &overhead);
      break;
    case Method::kTriLevel:
      TriLevelSchedule(in, &est);
      break;
    case Method::kSViTE:
      SviteSchedule(in, spec.svite_plain_removal, &est, &overhead);
      break;
  }
  est.macs = EmbedAndHeadMacs(arch) + ScheduleMacs(arch, est.blocks, blocks) + overhead;
  return est;
}

}  // namespace vitserve
