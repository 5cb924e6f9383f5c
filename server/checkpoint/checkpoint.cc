#include "server/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/checkpoint/safetensors.h"
#include "server/checkpoint/torch_checkpoint.h"

namespace vitserve {
namespace {

// Local file header signature of a zip archive ("PK\3\4"): torch.save since PyTorch 1.6.
constexpr absl::string_view kZipMagic = "PK\x03\x04";
// A pickle protocol-2 stream starts with PROTO 2; torch.save before 1.6 (or with
// _use_new_zipfile_serialization=False) wrote such a bare pickle stream.
constexpr absl::string_view kLegacyPickleMagic = "\x80\x02";
// Prefix DistributedDataParallel / DataParallel add to every key.
constexpr absl::string_view kDdpPrefix = "module.";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::InvalidArgumentError(absl::StrCat("cannot size '", path, "'"));
  in.seekg(0, std::ios::beg);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), size);
  if (!in) return absl::DataLossError(absl::StrCat("short read on '", path, "'"));
  return bytes;
}

absl::StatusOr<StateDict> StripDdpPrefix(StateDict in, absl::string_view what) {
  StateDict out;
  for (auto& [key, tensor] : in) {
    absl::string_view k = key;
    while (absl::ConsumePrefix(&k, kDdpPrefix)) {
    }
    if (!out.emplace(std::string(k), std::move(tensor)).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": key '", key, "' collides with '", k,
                                                     "' once the 'module.' prefix is stripped"));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint '", path, "' not found: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint '", path, "' is not a file"));
  }
  std::string magic(kZipMagic.size(), '\0');
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
    in.read(magic.data(), static_cast<std::streamsize>(magic.size()));
    magic.resize(static_cast<size_t>(in.gcount()));
  }

  Checkpoint ckpt;
  if (magic == kZipMagic) {
    absl::StatusOr<Checkpoint> zip = ReadTorchZipCheckpoint(path);
    if (!zip.ok()) {
      return absl::Status(zip.status().code(),
                          absl::StrCat("'", path, "': ", zip.status().message()));
    }
    ckpt = *std::move(zip);
  } else if (absl::StartsWith(magic, kLegacyPickleMagic)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path,
        "' is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; re-save it "
        "with a current PyTorch (torch.save(torch.load(f), g)) or convert it to safetensors"));
  } else {
    absl::StatusOr<std::string> bytes = ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<StateDict> tensors = ReadSafetensors(*bytes);
    if (!tensors.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path,
          "' is not a checkpoint vitserve can read (expected a torch.save zip archive or "
          "safetensors): ",
          tensors.status().message()));
    }
    ckpt.model = *std::move(tensors);
  }

  absl::StatusOr<StateDict> model = StripDdpPrefix(std::move(ckpt.model), path);
  if (!model.ok()) return model.status();
  ckpt.model = *std::move(model);
  for (auto& [name, dict] : ckpt.extra) {
    absl::StatusOr<StateDict> stripped = StripDdpPrefix(std::move(dict), path);
    if (!stripped.ok()) return stripped.status();
    dict = *std::move(stripped);
  }
  return ckpt;
}

}  // namespace vitserve
