#include "server/checkpoint/safetensors.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/checkpoint/safetensors_header.h"

namespace vitserve {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

torch::ScalarType ToTorch(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF32:
      return torch::kFloat32;
    case SafetensorsDtype::kF16:
      return torch::kFloat16;
    case SafetensorsDtype::kBF16:
      return torch::kBFloat16;
    case SafetensorsDtype::kF64:
      return torch::kFloat64;
    case SafetensorsDtype::kI64:
      return torch::kInt64;
    case SafetensorsDtype::kI32:
      return torch::kInt32;
    case SafetensorsDtype::kU8:
      return torch::kUInt8;
    case SafetensorsDtype::kBool:
      return torch::kBool;
  }
  return torch::kFloat32;
}

absl::StatusOr<SafetensorsDtype> FromTorch(torch::ScalarType t, const std::string& name) {
  switch (t) {
    case torch::kFloat32:
      return SafetensorsDtype::kF32;
    case torch::kFloat16:
      return SafetensorsDtype::kF16;
    case torch::kBFloat16:
      return SafetensorsDtype::kBF16;
    case torch::kFloat64:
      return SafetensorsDtype::kF64;
    case torch::kInt64:
      return SafetensorsDtype::kI64;
    case torch::kInt32:
      return SafetensorsDtype::kI32;
    case torch::kUInt8:
      return SafetensorsDtype::kU8;
    case torch::kBool:
      return SafetensorsDtype::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has dtype ", c10::toString(t),
                       " which safetensors writing does not support here; accepted: float32, "
                       "float16, bfloat16, float64, int64, int32, uint8, bool"));
  }
}

bool IsFloat(SafetensorsDtype d) {
  return d == SafetensorsDtype::kF32 || d == SafetensorsDtype::kF16 ||
         d == SafetensorsDtype::kBF16 || d == SafetensorsDtype::kF64;
}

}  // namespace

absl::StatusOr<StateDict> ReadSafetensors(absl::string_view file,
                                          std::map<std::string, std::string>* metadata) {
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(file);
  if (!header.ok()) return header.status();
  StateDict out;
  try {
    for (const SafetensorsEntry& e : header->tensors) {
      const char* src = file.data() + header->data_start + e.begin;
      const size_t bytes = e.end - e.begin;
      if (e.dtype == SafetensorsDtype::kBool) {
        for (size_t i = 0; i < bytes; ++i) {
          if (src[i] != 0 && src[i] != 1) {
            return absl::InvalidArgumentError(absl::StrCat("safetensors: BOOL tensor '", e.name,
                                                           "' holds a byte other than 0 or 1"));
          }
        }
      }
      torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(ToTorch(e.dtype)));
      if (bytes > 0) std::memcpy(t.data_ptr(), src, bytes);
      if (IsFloat(e.dtype) && e.dtype != SafetensorsDtype::kF32) t = t.to(torch::kFloat32);
      out.emplace(e.name, std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("safetensors: LibTorch failed: ", e.what_without_backtrace()));
  }
  if (metadata != nullptr) *metadata = std::move(header->metadata);
  return out;
}

absl::Status SaveSafetensors(const StateDict& tensors, const std::string& path,
                             const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsEntry> entries;
  std::vector<torch::Tensor> contiguous;
  entries.reserve(tensors.size());
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  try {
    for (const auto& [name, tensor] : tensors) {  // std::map: sorted by name
      if (!tensor.defined()) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
      }
      absl::StatusOr<SafetensorsDtype> dtype = FromTorch(tensor.scalar_type(), name);
      if (!dtype.ok()) return dtype.status();
      torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
      SafetensorsEntry e;
      e.name = name;
      e.dtype = *dtype;
      e.shape.assign(t.sizes().begin(), t.sizes().end());
      e.begin = offset;
      offset += static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(t.element_size());
      e.end = offset;
      entries.push_back(std::move(e));
      contiguous.push_back(std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("SaveSafetensors: LibTorch failed: ", e.what_without_backtrace()));
  }
  absl::StatusOr<std::string> header = SerializeSafetensorsHeader(entries, metadata);
  if (!header.ok()) return header.status();

  // Write to a temporary name first so that a crash never leaves a half-written file
  // under `path`.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tmp, "'"));
    out.write(header->data(), static_cast<std::streamsize>(header->size()));
    for (size_t i = 0; i < contiguous.size(); ++i) {
      const uint64_t n = entries[i].end - entries[i].begin;
      if (n > 0) {
        out.write(static_cast<const char*>(contiguous[i].data_ptr()),
                  static_cast<std::streamsize>(n));
      }
    }
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat("write to '", tmp, "' failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(absl::StrCat("cannot rename '", tmp, "' to '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace vitserve
