// PyTorch zip checkpoints (torch.save since 1.6): the archive holds <name>/data.pkl (a
// pickle, protocol 2) and one record <name>/data/<key> per storage. The pickle is decoded
// by the restricted, torch-free Unpickle() (unpickler.h); this layer maps storages and
// _rebuild_tensor_v2 calls onto LibTorch tensors.
#ifndef VITSERVE_SERVER_CHECKPOINT_TORCH_CHECKPOINT_H_
#define VITSERVE_SERVER_CHECKPOINT_TORCH_CHECKPOINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/checkpoint/checkpoint.h"

namespace vitserve {

// Reads the torch.save zip archive at `path` and picks its state dict: the top-level dict
// itself when all its values are tensors, else its 'model' or 'state_dict' entry; other
// top-level entries that are non-empty dicts of tensors go to Checkpoint::extra. Keys are
// returned as stored ('module.' prefixes are not stripped here). Float tensors become
// contiguous float32, integer/bool tensors keep their type.
// Errors: INVALID_ARGUMENT (not a zip archive, truncated, forbidden pickle global,
// malformed pickle, storage out of range, no state dict found).
// Thread-safety: reentrant.
absl::StatusOr<Checkpoint> ReadTorchZipCheckpoint(const std::string& path);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_TORCH_CHECKPOINT_H_
