// Fuzzes ParseSafetensorsHeader(), the first thing done with a .safetensors weights file.
// Properties: no crash, leak or out-of-bounds read on any input; every failure is
// INVALID_ARGUMENT; a parsed header keeps its promises (tensors sorted by name, offsets
// tiling the data section, sizes equal to shape x dtype); and serialising it again gives
// a file that parses to the same header (SerializeSafetensorsHeader round trip).
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/safetensors_header.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using vitserve::SafetensorsEntry;
using vitserve::SafetensorsHeader;

void CheckInvariants(const SafetensorsHeader& h, absl::string_view file) {
  FUZZ_CHECK(h.data_start >= 8 && h.data_start <= file.size());
  const uint64_t data_size = file.size() - h.data_start;
  uint64_t covered = 0;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const SafetensorsEntry& e = h.tensors[i];
    if (i > 0) FUZZ_CHECK(h.tensors[i - 1].name < e.name);
    FUZZ_CHECK(e.begin <= e.end && e.end <= data_size);
    uint64_t bytes = static_cast<uint64_t>(vitserve::SafetensorsDtypeSize(e.dtype));
    for (const int64_t d : e.shape) {
      FUZZ_CHECK(d >= 0);
      bytes *= static_cast<uint64_t>(d);  // cannot overflow: the parser checked
    }
    FUZZ_CHECK(bytes == e.end - e.begin);
    covered += e.end - e.begin;
  }
  FUZZ_CHECK(covered == data_size);
}

bool SameEntries(const SafetensorsHeader& a, const SafetensorsHeader& b) {
  if (a.tensors.size() != b.tensors.size() || a.metadata != b.metadata) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const SafetensorsEntry& x = a.tensors[i];
    const SafetensorsEntry& y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || x.begin != y.begin ||
        x.end != y.end) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view file(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<SafetensorsHeader> header = vitserve::ParseSafetensorsHeader(file);
  if (!header.ok()) {
    FUZZ_CHECK(header.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  CheckInvariants(*header, file);

  const absl::StatusOr<std::string> prefix =
      vitserve::SerializeSafetensorsHeader(header->tensors, header->metadata);
  FUZZ_CHECK(prefix.ok());
  const std::string again = *prefix + std::string(file.substr(header->data_start));
  const absl::StatusOr<SafetensorsHeader> reparsed = vitserve::ParseSafetensorsHeader(again);
  FUZZ_CHECK(reparsed.ok());
  FUZZ_CHECK(reparsed->data_start == prefix->size());
  FUZZ_CHECK(SameEntries(*header, *reparsed));
  return 0;
}
