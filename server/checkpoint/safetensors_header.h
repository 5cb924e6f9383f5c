// The safetensors container, torch-free: a strict parser for its header and the
// serialiser the writer uses. Kept apart from the tensor conversion so that a fuzzer can
// target ParseSafetensorsHeader() without LibTorch.
//
// Format (https://github.com/huggingface/safetensors, "Format"):
//   8 bytes   N, unsigned little-endian: the header length
//   N bytes   a UTF-8 JSON object:
//               {"__metadata__": {"k": "v", ...},                       (optional)
//                "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [B, E]}, ...}
//             possibly padded at the end with spaces
//   rest      the data section; tensor bytes are [B, E) relative to its start
//
// The parser accepts exactly that: objects, strings (with JSON escapes), arrays of
// non-negative integers. Like the reference implementation it requires the tensors to
// tile the data section exactly (sorted by offset, no gap, no overlap, nothing left over)
// and E - B == numel * dtype size.
//
// Thread-safety: all functions are pure and reentrant.
#ifndef VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_HEADER_H_
#define VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// The element types vitserve reads and writes.
enum class SafetensorsDtype { kF32, kF16, kBF16, kF64, kI64, kI32, kU8, kBool };

// "F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL".
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);
// INVALID_ARGUMENT for anything else (e.g. "F8_E4M3"), naming the accepted ones.
absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(absl::string_view name);
// Bytes per element.
int SafetensorsDtypeSize(SafetensorsDtype dtype);

// One tensor of the header.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // empty = scalar
  uint64_t begin = 0;          // byte offsets relative to the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  // Absolute byte offset of the data section in the file (8 + N).
  uint64_t data_start = 0;
  // Tensors sorted by name.
  std::vector<SafetensorsEntry> tensors;
  // The "__metadata__" object (string values only), empty if absent.
  std::map<std::string, std::string> metadata;
};

// Largest header accepted (the reference implementation's limit): 100 MB.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Parses and validates the header of the safetensors file whose complete contents are
// `file`. Errors: INVALID_ARGUMENT with a message saying what is wrong and, for JSON
// errors, at which byte of the header.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file);

// Builds the 8-byte length prefix plus the JSON header for `tensors` (written in the
// given order; callers pass them sorted by name and with offsets that tile the data
// section) and `metadata` (written first as "__metadata__" when non-empty). The JSON is
// padded with spaces to a multiple of 8 bytes so that the data section is 8-byte aligned,
// as the reference writer does. INVALID_ARGUMENT for a name "__metadata__" or a negative
// dimension.
absl::StatusOr<std::string> SerializeSafetensorsHeader(
    const std::vector<SafetensorsEntry>& tensors,
    const std::map<std::string, std::string>& metadata);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_SAFETENSORS_HEADER_H_
