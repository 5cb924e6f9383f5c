#include "server/checkpoint/safetensors.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/checkpoint/atomic_file.h"
#include "server/checkpoint/safetensors_header.h"

namespace vitserve {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

// Every safetensors dtype with its LibTorch scalar type: one table for both directions.
struct DtypePair {
  SafetensorsDtype safetensors;
  torch::ScalarType scalar_type;
};
constexpr DtypePair kDtypes[] = {
    {SafetensorsDtype::kF32, torch::kFloat32},   {SafetensorsDtype::kF16, torch::kFloat16},
    {SafetensorsDtype::kBF16, torch::kBFloat16}, {SafetensorsDtype::kF64, torch::kFloat64},
    {SafetensorsDtype::kI64, torch::kInt64},     {SafetensorsDtype::kI32, torch::kInt32},
    {SafetensorsDtype::kU8, torch::kUInt8},      {SafetensorsDtype::kBool, torch::kBool},
};

torch::ScalarType ToTorch(SafetensorsDtype d) {
  for (const DtypePair& p : kDtypes) {
    if (p.safetensors == d) return p.scalar_type;
  }
  return torch::kFloat32;
}

absl::StatusOr<SafetensorsDtype> FromTorch(torch::ScalarType t, const std::string& name) {
  for (const DtypePair& p : kDtypes) {
    if (p.scalar_type == t) return p.safetensors;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", name, "' has dtype ", c10::toString(t),
                   " which safetensors writing does not support here; accepted: float32, "
                   "float16, bfloat16, float64, int64, int32, uint8, bool"));
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

  // Through a temporary name, so that a crash never leaves a half-written file under
  // `path`.
  return WriteFileAtomically(path, [&](std::ostream& out) {
    out.write(header->data(), static_cast<std::streamsize>(header->size()));
    for (size_t i = 0; i < contiguous.size(); ++i) {
      const uint64_t n = entries[i].end - entries[i].begin;
      if (n > 0) {
        out.write(static_cast<const char*>(contiguous[i].data_ptr()),
                  static_cast<std::streamsize>(n));
      }
    }
    return absl::OkStatus();
  });
}

}  // namespace vitserve
