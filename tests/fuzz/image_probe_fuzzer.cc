// Fuzzes ProbeImageSize(), the header check every encoded image passes before a decoder
// sees it. Properties: no crash or out-of-bounds read on any input; a success has a known
// format and positive dimensions; every failure is INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/preprocess/image_probe.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<vitserve::ImageHeaderInfo> info = vitserve::ProbeImageSize(bytes);
  if (!info.ok()) {
    FUZZ_CHECK(info.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(info->width > 0 && info->height > 0);
  FUZZ_CHECK(vitserve::ImageFormatName(info->format) != "unknown");
  return 0;
}
