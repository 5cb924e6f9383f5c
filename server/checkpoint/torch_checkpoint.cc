#include "server/checkpoint/torch_checkpoint.h"

#include "absl/status/status.h"

namespace vitserve {

absl::StatusOr<Checkpoint> ReadTorchZipCheckpoint(const std::string& path) {
  return absl::UnimplementedError("torch.save zip checkpoints: not implemented yet");
}

}  // namespace vitserve
