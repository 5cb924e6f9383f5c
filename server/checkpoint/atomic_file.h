// Writing a file so that a crash never leaves a half-written one under its name: the
// contents go to `path + ".tmp"`, which is renamed over `path` once complete; on any
// failure the temporary file is removed and `path` is untouched. Reentrant (two writers
// of the same path race on the one temporary name; callers do not do that).
#ifndef VITSERVE_SERVER_CHECKPOINT_ATOMIC_FILE_H_
#define VITSERVE_SERVER_CHECKPOINT_ATOMIC_FILE_H_

#include <functional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// `write` streams the contents into the (binary) temporary file; it may return early on
// its own error, which is returned after the temporary file is removed.
// Errors: PERMISSION_DENIED (cannot create the temporary file or rename it), DATA_LOSS (a
// write failed), or `write`'s own.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<absl::Status(std::ostream&)>& write);

// The same for contents already in memory.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_ATOMIC_FILE_H_
