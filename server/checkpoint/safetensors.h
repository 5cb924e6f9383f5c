// safetensors <-> LibTorch tensors. The container parsing itself is torch-free
// (safetensors_header.h); this layer copies tensor bytes out and converts them.
#ifndef VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_H_
#define VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/checkpoint.h"

namespace vitserve {

// Decodes a complete safetensors file held in memory. F32/F16/BF16/F64 tensors come back
// as contiguous float32, I64/I32/U8/BOOL keep their type. The returned tensors own their
// memory (`file` may be freed afterwards). Keys are returned as stored (no prefix
// stripping). `metadata`, if not null, receives "__metadata__".
// Errors: INVALID_ARGUMENT (malformed header, BOOL bytes other than 0/1).
// Thread-safety: reentrant.
absl::StatusOr<StateDict> ReadSafetensors(absl::string_view file,
                                          std::map<std::string, std::string>* metadata = nullptr);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_H_
