// Reading and writing weights. Two formats, chosen by content (not extension):
//   * safetensors (timm key names), read with a strict header parser;
//   * PyTorch zip checkpoints (.pth/.pt) as published: a bare state dict, or a dict with
//     'model' / 'state_dict' (other entries such as an argparse.Namespace or an epoch are
//     tolerated). Read with a restricted unpickler that accepts only the globals a state
//     dict needs and refuses everything else: loading a checkpoint never executes code.
// All tensors come back as contiguous float32 on the CPU (integer tensors keep their type).
#ifndef VITSERVE_SERVER_CHECKPOINT_CHECKPOINT_H_
#define VITSERVE_SERVER_CHECKPOINT_CHECKPOINT_H_

#include <torch/types.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace vitserve {

using StateDict = std::map<std::string, torch::Tensor>;

struct Checkpoint {
  // The model's weights, 'module.' prefixes (DDP) stripped.
  StateDict model;
  // Other top-level entries that are dicts of tensors, by their key, prefixes stripped
  // (SViTE: "atten_mask", "other_mask").
  std::map<std::string, StateDict> extra;
};

// Loads the weights at `path`; the format is chosen by the first bytes ("PK\3\4": a
// torch.save zip archive, otherwise safetensors). The returned tensors own their memory
// (no views of each other or of the file). Legacy (pre-1.6, non-zip) torch.save files and
// TorchScript archives are refused. docs/model-repository.md lists what is accepted.
// Errors: NOT_FOUND (no file), INVALID_ARGUMENT (not a checkpoint, a forbidden pickle
// global such as os.system, a malformed header; the message says what and where),
// RESOURCE_EXHAUSTED (a corrupt archive claiming more memory than there is).
// Thread-safety: reentrant; reads only `path`.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path);

// Writes `tensors` (float32 / float16 / bfloat16 / float64 / int64 / int32 / uint8 / bool;
// any device, any layout) as safetensors with optional string metadata: keys sorted, the
// JSON header padded with spaces so the data starts 8-byte aligned, as the reference
// writer does. The file is written under a temporary name and renamed into place.
// Errors: INVALID_ARGUMENT (unsupported dtype, undefined tensor), PERMISSION_DENIED /
// DATA_LOSS (I/O), INTERNAL (LibTorch failure).
absl::Status SaveSafetensors(const StateDict& tensors, const std::string& path,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_CHECKPOINT_H_
