// SViTE load-time compaction: a head- and MLP-pruned checkpoint becomes a smaller dense
// model with the same logits (SViTE: VITA-Group/SViTE).
//
// SViTE checkpoints store their weights already masked (and may carry the masks too:
// Checkpoint::extra "atten_mask" / "other_mask", keys `blocks.{i}.attn.qkv.weight_mask`,
// `blocks.{i}.mlp.fc{1,2}.weight_mask`). Only weights are masked, never biases, so a
// pruned unit is not silent; it contributes a constant, which compaction folds into the
// next bias:
//   * head h of block i is removable when its v rows of qkv.weight are all zero: its
//     output is then Σ_j attn_ij · b_v = b_v for every query (a softmax row sums to 1),
//     whatever q and k are, so it is removed (its q/k/v rows and bias, its proj columns)
//     and W_proj[:, h] · b_v[h] is added to proj.bias;
//   * MLP unit j is removable when its fc2 column is all zero (it contributes nothing),
//     or its fc1 row is all zero (it contributes fc2[:, j] · GELU(fc1.bias[j]), folded
//     into fc2.bias).
// A block keeps at least one head and one MLP unit (if everything was pruned, the last
// unit stays as stored: still exact, just not removed), so every block stays a valid
// Linear stack. Folding is exact in real arithmetic; in float32 the logits move by
// rounding only (tests bound it).
//
// Pure function of tensors (CPU float32), no module; thread-safe.
#ifndef VITSERVE_SERVER_MODEL_SVITE_COMPACTION_H_
#define VITSERVE_SERVER_MODEL_SVITE_COMPACTION_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/checkpoint/checkpoint.h"
#include "server/spec/model_spec.h"

namespace vitserve {

struct SviteCompaction {
  StateDict weights;               // compacted: blocks.{i}.attn.*, blocks.{i}.mlp.* resized
  std::vector<BlockShape> blocks;  // per-block heads (of the original head_dim), MLP width
  int heads_removed = 0;
  int mlp_units_removed = 0;
  // Unstructured sparsity left after compaction: the fraction of exact zeros among the
  // entries of the remaining block matrices (qkv, proj, fc1, fc2 weights).
  double weight_zero_fraction = 0.0;
};

// Multiplies the masks in `extra` (the checkpoint's "atten_mask" / "other_mask" dicts;
// keys `<parameter>_mask`) into the matching weights of `weights`, as the official
// Masking.apply_mask does, so a checkpoint whose weights were saved unmasked is served
// as trained. INVALID_ARGUMENT for a mask whose parameter is missing or whose shape
// differs. Other entries of `extra` are ignored.
absl::Status ApplySviteMasks(const std::map<std::string, StateDict>& extra, StateDict* weights);

// Compacts the blocks of `weights` (timm keys, the shapes of `arch`). Non-block
// parameters are copied unchanged. INVALID_ARGUMENT when a block parameter is missing or
// has the wrong shape.
absl::StatusOr<SviteCompaction> CompactSvite(const Architecture& arch, const StateDict& weights);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_MODEL_SVITE_COMPACTION_H_
