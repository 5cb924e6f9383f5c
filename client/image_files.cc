#include "client/image_files.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vitserve::client {
namespace {

namespace fs = std::filesystem;

absl::Status FromErrorCode(const std::error_code& ec, absl::string_view path) {
  const std::string msg = absl::StrCat(path, ": ", ec.message());
  if (ec == std::errc::no_such_file_or_directory) return absl::NotFoundError(msg);
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

}  // namespace

bool HasImageExtension(absl::string_view path) {
  for (absl::string_view ext : kImageExtensions) {
    if (absl::EndsWithIgnoreCase(path, ext)) return true;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> DiscoverImageFiles(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (const std::string& arg : args) {
    std::error_code ec;
    const fs::file_status st = fs::status(arg, ec);
    if (ec || !fs::exists(st)) {
      if (ec && ec != std::errc::no_such_file_or_directory) return FromErrorCode(ec, arg);
      return absl::NotFoundError(absl::StrCat(arg, ": no such file or directory"));
    }
    if (fs::is_regular_file(st)) {
      files.push_back(arg);
      continue;
    }
    if (!fs::is_directory(st)) {
      return absl::InvalidArgumentError(
          absl::StrCat(arg,
                       ": not a regular file or a directory; give image files or "
                       "directories of images"));
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(arg, fs::directory_options::skip_permission_denied, ec);
    if (ec) return FromErrorCode(ec, arg);
    for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
      if (ec) return FromErrorCode(ec, it->path().string());
      const std::string path = it->path().string();
      std::error_code file_ec;
      if (HasImageExtension(path) && it->is_regular_file(file_ec)) found.push_back(path);
    }
    if (ec) return FromErrorCode(ec, arg);
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return FromErrorCode(ec, path);
  if (static_cast<int64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes, more than the ", max_bytes, "-byte limit"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return errno == EACCES ? absl::PermissionDeniedError(absl::StrCat(path, ": permission denied"))
                           : absl::InternalError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return absl::InternalError(absl::StrCat(path, ": short read (file changed while reading?)"));
  }
  return bytes;
}

}  // namespace vitserve::client
