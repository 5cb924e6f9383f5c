// Reads a small side file (configs, labels, calibration) whole, refusing anything over
// kMaxSideFileBytes so that a wrong path cannot exhaust memory.
// Errors: NOT_FOUND (missing or unopenable), INVALID_ARGUMENT (too large). `what` names
// the file's role in the messages ("labels file", ...). Reentrant.
#ifndef VITSERVE_SERVER_CHECKPOINT_SMALL_FILE_H_
#define VITSERVE_SERVER_CHECKPOINT_SMALL_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

inline constexpr uintmax_t kMaxSideFileBytes = 64ull << 20;

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, absl::string_view what);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_SMALL_FILE_H_
