#include "server/checkpoint/small_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, absl::string_view what) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(what, " '", path, "' not found"));
  if (size > kMaxSideFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is too large"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", what, " '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace vitserve
