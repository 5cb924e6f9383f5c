// Finding and reading the image files vitclient sends.
//
// Thread-safety: pure functions over the filesystem; safe from any thread.
#ifndef VITSERVE_CLIENT_IMAGE_FILES_H_
#define VITSERVE_CLIENT_IMAGE_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve::client {

// Extensions (lower case, with the dot) picked up when a directory is searched.
inline constexpr absl::string_view kImageExtensions[] = {".jpg",  ".jpeg", ".png", ".bmp",
                                                         ".webp", ".tif",  ".tiff"};

// True when `path` ends with one of kImageExtensions, case-insensitively.
bool HasImageExtension(absl::string_view path);

// Expands command-line arguments into files, in argument order:
//  * a regular file (or a link to one) is taken as is, whatever its extension (the
//    server says if it is not an image);
//  * a directory is searched recursively (directory links are not followed, so there are
//    no cycles) for files with an image extension; its files are sorted by path.
// Errors: NOT_FOUND for an argument that does not exist; INVALID_ARGUMENT for an
// argument that is neither a file nor a directory; PERMISSION_DENIED / INTERNAL for
// filesystem errors (the message names the path). Duplicates are kept.
absl::StatusOr<std::vector<std::string>> DiscoverImageFiles(const std::vector<std::string>& args);

// Reads a whole file. Errors: NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT when larger
// than `max_bytes` (named), INTERNAL for read errors.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes);

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_IMAGE_FILES_H_
