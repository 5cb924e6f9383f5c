// --help for the project's binaries.
//
// absl lists under --help only flags defined in a source file named after the binary
// (vitserve.cc, vitserve_main.cc, ...). Ours live elsewhere (server/main.cc,
// server/train/main.cc, client/client_flags.cc), so without this --help printed "No flags
// matched". Call once at the top of main(), before absl::ParseCommandLine.
#ifndef VITSERVE_SERVER_UTIL_CLI_USAGE_H_
#define VITSERVE_SERVER_UTIL_CLI_USAGE_H_

#include <string>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// Sets the program's usage message and makes --help list the flags defined in the source
// file whose path ends with `flags_file` (e.g. "server/main.cc").
inline void SetCommandLineUsage(absl::string_view flags_file, absl::string_view message) {
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [file_suffix = std::string(flags_file)](absl::string_view file) {
    return absl::EndsWith(file, file_suffix);
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(message);
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_UTIL_CLI_USAGE_H_
