#include "server/checkpoint/torch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/checkpoint/unpickler.h"

namespace vitserve {
namespace {

using Kind = PickleValue::Kind;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "torch.save storages are read as little-endian");

// Top-level keys under which training scripts (DeiT, DynamicViT, EViT, TNT, SViTE) store
// the model's state dict, in order of preference.
constexpr std::array<absl::string_view, 2> kStateDictKeys = {"model", "state_dict"};

absl::StatusOr<torch::ScalarType> StorageDtype(const std::string& type) {
  static constexpr std::array<std::pair<absl::string_view, torch::ScalarType>, 8> kTypes = {{
      {"Float", torch::kFloat32},
      {"Half", torch::kFloat16},
      {"BFloat16", torch::kBFloat16},
      {"Double", torch::kFloat64},
      {"Long", torch::kInt64},
      {"Int", torch::kInt32},
      {"Bool", torch::kBool},
      {"Byte", torch::kUInt8},
  }};
  for (const auto& [name, dtype] : kTypes) {
    if (name == type) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported storage type ", type, "Storage"));
}

// Materialises tensors from the archive's storage records, each record read once.
class TensorBuilder {
 public:
  explicit TensorBuilder(caffe2::serialize::PyTorchStreamReader* reader) : reader_(reader) {}

  absl::StatusOr<torch::Tensor> Build(const PickleTensorRef& ref, const std::string& name) {
    absl::StatusOr<torch::Tensor> storage = Storage(ref.storage);
    if (!storage.ok()) return storage.status();
    // Bounds: every element the view can address must lie inside the storage.
    int64_t max_index = ref.storage_offset;
    bool empty = false;
    for (size_t d = 0; d < ref.shape.size(); ++d) {
      if (ref.shape[d] < 0 || ref.stride[d] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "' has a negative size or stride"));
      }
      if (ref.shape[d] == 0) {
        empty = true;
        continue;
      }
      const int64_t extent = ref.shape[d] - 1;
      if (ref.stride[d] != 0 &&
          extent > (std::numeric_limits<int64_t>::max() - max_index) / ref.stride[d]) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' view overflows"));
      }
      max_index += extent * ref.stride[d];
    }
    if (!empty && max_index >= ref.storage.numel) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' reaches element ",
                                                     max_index, " of storage '", ref.storage.key,
                                                     "' which holds only ", ref.storage.numel));
    }
    torch::Tensor t = empty ? torch::empty(ref.shape, storage->options())
                            : storage->as_strided(ref.shape, ref.stride, ref.storage_offset);
    if (t.is_floating_point()) {
      // .to() returns `t` itself for float32: clone so the result owns compact memory
      // and never aliases a shared storage.
      return t.scalar_type() == torch::kFloat32 ? t.clone(at::MemoryFormat::Contiguous)
                                                : t.to(torch::kFloat32).contiguous();
    }
    return t.clone(at::MemoryFormat::Contiguous);
  }

 private:
  absl::StatusOr<torch::Tensor> Storage(const PickleStorageRef& ref) {
    absl::StatusOr<torch::ScalarType> dtype = StorageDtype(ref.type);
    if (!dtype.ok()) return dtype.status();
    auto it = storages_.find(ref.key);
    if (it != storages_.end()) {
      if (it->second.scalar_type() != *dtype || it->second.numel() != ref.numel) {
        return absl::InvalidArgumentError(
            absl::StrCat("storage '", ref.key, "' is referenced with different types or sizes"));
      }
      return it->second;
    }
    const std::string record = absl::StrCat("data/", ref.key);
    if (ref.key.find('/') != std::string::npos || !reader_->hasRecord(record)) {
      return absl::InvalidArgumentError(
          absl::StrCat("storage record '", record, "' is missing from the archive"));
    }
    auto [data, size] = reader_->getRecord(record);
    const uint64_t elem = c10::elementSize(*dtype);
    if (static_cast<uint64_t>(ref.numel) > std::numeric_limits<uint64_t>::max() / elem ||
        size != static_cast<uint64_t>(ref.numel) * elem) {
      return absl::InvalidArgumentError(absl::StrCat("storage record '", record, "' holds ", size,
                                                     " bytes, expected ", ref.numel, " x ", elem));
    }
    torch::Tensor t = torch::empty({ref.numel}, torch::TensorOptions().dtype(*dtype));
    if (size > 0) std::memcpy(t.data_ptr(), data.get(), size);
    if (*dtype == torch::kBool) {
      const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
      for (size_t i = 0; i < size; ++i) {
        if (bytes[i] > 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("bool storage '", ref.key, "' holds a byte other than 0 or 1"));
        }
      }
    }
    storages_.emplace(ref.key, t);
    return t;
  }

  caffe2::serialize::PyTorchStreamReader* reader_;
  std::map<std::string, torch::Tensor> storages_;
};

bool IsTensorDict(const PickleValue& v) {
  if (v.kind != Kind::kDict || v.entries.empty()) return false;
  for (const auto& [k, val] : v.entries) {
    if (k->kind != Kind::kString || val->kind != Kind::kTensor) return false;
  }
  return true;
}

absl::StatusOr<StateDict> ToStateDict(const PickleValue& dict, absl::string_view where,
                                      TensorBuilder& builder) {
  if (dict.kind != Kind::kDict) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " is a ", dict.KindName(), ", not a dict of tensors"));
  }
  StateDict out;
  for (const auto& [k, v] : dict.entries) {
    if (k->kind != Kind::kString) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has a non-string key"));
    }
    if (v->kind != Kind::kTensor) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " entry '", k->str, "' is a ", v->KindName(), ", not a tensor"));
    }
    absl::StatusOr<torch::Tensor> t = builder.Build(v->tensor, k->str);
    if (!t.ok()) return t.status();
    out.emplace(k->str, *std::move(t));
  }
  return out;
}

absl::StatusOr<Checkpoint> Extract(const PickleValue& root, TensorBuilder& builder) {
  if (root.kind != Kind::kDict) {
    return absl::InvalidArgumentError(
        absl::StrCat("the pickled object is a ", root.KindName(),
                     "; expected a state dict or a dict with 'model' / 'state_dict'"));
  }
  Checkpoint ckpt;
  absl::string_view model_key;
  const PickleValue* model = nullptr;
  for (const absl::string_view key : kStateDictKeys) {
    if (const PickleValue* v = root.Find(key); v != nullptr && v->kind == Kind::kDict) {
      model_key = key;
      model = v;
      break;
    }
  }
  if (model == nullptr) {
    if (!IsTensorDict(root)) {
      std::vector<std::string> keys;
      for (const auto& [k, v] : root.entries) {
        keys.push_back(k->kind == Kind::kString ? k->str : std::string(k->KindName()));
      }
      return absl::InvalidArgumentError(
          absl::StrCat("no state dict found: expected a dict of tensors or a dict with 'model' or "
                       "'state_dict'; top-level keys: ",
                       keys.empty() ? "(none)" : absl::StrJoin(keys, ", ")));
    }
    absl::StatusOr<StateDict> sd = ToStateDict(root, "the state dict", builder);
    if (!sd.ok()) return sd.status();
    ckpt.model = *std::move(sd);
    return ckpt;
  }
  absl::StatusOr<StateDict> sd = ToStateDict(*model, absl::StrCat("'", model_key, "'"), builder);
  if (!sd.ok()) return sd.status();
  ckpt.model = *std::move(sd);
  for (const auto& [k, v] : root.entries) {
    if (k->kind != Kind::kString || k->str == model_key || !IsTensorDict(*v)) continue;
    absl::StatusOr<StateDict> extra = ToStateDict(*v, absl::StrCat("'", k->str, "'"), builder);
    if (!extra.ok()) return extra.status();
    ckpt.extra.emplace(k->str, *std::move(extra));
  }
  return ckpt;
}

}  // namespace

absl::StatusOr<Checkpoint> ReadTorchZipCheckpoint(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (reader.hasRecord("byteorder")) {
      auto [data, size] = reader.getRecord("byteorder");
      const std::string order(static_cast<const char*>(data.get()), size);
      if (order != "little") {
        return absl::InvalidArgumentError(
            absl::StrCat("storages are in '", order, "' byte order; only little is supported"));
      }
    }
    if (!reader.hasRecord("data.pkl")) {
      return absl::InvalidArgumentError(
          "zip archive has no data.pkl: not a torch.save checkpoint (a TorchScript archive "
          "holds code, which vitserve does not load)");
    }
    auto [pkl, pkl_size] = reader.getRecord("data.pkl");
    absl::StatusOr<PickleValuePtr> root =
        Unpickle(absl::string_view(static_cast<const char*>(pkl.get()), pkl_size));
    if (!root.ok()) return root.status();
    TensorBuilder builder(&reader);
    return Extract(**root, builder);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a readable torch.save zip archive (truncated or corrupt?): ",
                     e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    // A corrupt zip directory can claim a record size larger than memory.
    return absl::ResourceExhaustedError(
        "out of memory reading the archive (corrupt record sizes, or the model does not fit)");
  }
}

}  // namespace vitserve
