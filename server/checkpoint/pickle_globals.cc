#include "server/checkpoint/pickle_globals.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

using Kind = PickleValue::Kind;

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

constexpr absl::string_view kOrderedDict = "collections.OrderedDict";
constexpr absl::string_view kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr absl::string_view kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr absl::string_view kRebuildParameterWithState =
    "torch._utils._rebuild_parameter_with_state";
constexpr absl::string_view kNamespace = "argparse.Namespace";

constexpr std::array<absl::string_view, 8> kStorageTypes = {"Float", "Half", "BFloat16", "Double",
                                                            "Long",  "Int",  "Bool",     "Byte"};

bool IsStorageGlobal(absl::string_view name, std::string* type) {
  for (const absl::string_view t : kStorageTypes) {
    if (name == absl::StrCat("torch.", t, "Storage")) {
      if (type != nullptr) *type = std::string(t);
      return true;
    }
  }
  return false;
}

bool AsInt(const PickleValue& v, int64_t* out) {
  if (v.kind == Kind::kInt) {
    *out = v.integer;
    return true;
  }
  return false;
}

absl::Status IntTuple(const PickleValue& v, absl::string_view what, std::vector<int64_t>* out) {
  if (v.kind != Kind::kTuple) return Invalid(absl::StrCat(what, " is not a tuple"));
  for (const PickleValuePtr& item : v.items) {
    int64_t x;
    if (!AsInt(*item, &x)) return Invalid(absl::StrCat(what, " holds a non-integer"));
    out->push_back(x);
  }
  return absl::OkStatus();
}

absl::StatusOr<PickleValuePtr> RebuildTensor(const PickleValue& args) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (args.items.size() < 4) return Invalid("_rebuild_tensor_v2 with too few arguments");
  const PickleValue& storage = *args.items[0];
  if (storage.kind != Kind::kStorage) {
    return Invalid("_rebuild_tensor_v2: first argument is not a storage");
  }
  PickleValuePtr t = MakePickleValue(Kind::kTensor);
  t->tensor.storage = storage.storage;
  if (!AsInt(*args.items[1], &t->tensor.storage_offset) || t->tensor.storage_offset < 0) {
    return Invalid("_rebuild_tensor_v2: bad storage offset");
  }
  if (absl::Status s = IntTuple(*args.items[2], "tensor size", &t->tensor.shape); !s.ok()) {
    return s;
  }
  if (absl::Status s = IntTuple(*args.items[3], "tensor stride", &t->tensor.stride); !s.ok()) {
    return s;
  }
  if (t->tensor.shape.size() != t->tensor.stride.size()) {
    return Invalid("_rebuild_tensor_v2: size and stride differ in length");
  }
  if (args.items.size() > 4 && args.items[4]->kind == Kind::kBool) {
    t->tensor.requires_grad = args.items[4]->boolean;
  }
  return t;
}

}  // namespace

bool IsAllowedPickleGlobal(absl::string_view name) {
  return name == kOrderedDict || name == kRebuildTensorV2 || name == kRebuildParameter ||
         name == kRebuildParameterWithState || name == kNamespace || IsStorageGlobal(name, nullptr);
}

absl::StatusOr<PickleValuePtr> CallPickleGlobal(const PickleValue& callable,
                                                const PickleValue& args) {
  if (callable.kind != Kind::kGlobal) return Invalid("REDUCE on something not callable");
  if (args.kind != Kind::kTuple) return Invalid("REDUCE arguments are not a tuple");
  const std::string& name = callable.str;
  const std::vector<PickleValuePtr>& a = args.items;
  if (name == kOrderedDict) {
    if (!a.empty()) return Invalid("OrderedDict called with arguments");
    return MakePickleValue(Kind::kDict);
  }
  if (name == kNamespace) {
    if (!a.empty()) return Invalid("Namespace called with arguments");
    PickleValuePtr obj = MakePickleValue(Kind::kObject);
    obj->str = name;
    return obj;
  }
  if (name == kRebuildTensorV2) return RebuildTensor(args);
  if (name == kRebuildParameter || name == kRebuildParameterWithState) {
    // (data, requires_grad, backward_hooks[, state])
    if (a.empty() || a[0]->kind != Kind::kTensor) {
      return Invalid(absl::StrCat(name, ": first argument is not a tensor"));
    }
    return a[0];
  }
  return Invalid(absl::StrCat("'", name, "' cannot be called"));
}

absl::StatusOr<PickleValuePtr> NewPickleObject(const PickleValue& cls, const PickleValue& args) {
  if (cls.kind != Kind::kGlobal || args.kind != Kind::kTuple || !args.items.empty()) {
    return Invalid("NEWOBJ needs a class and an empty argument tuple");
  }
  if (cls.str == kOrderedDict) return MakePickleValue(Kind::kDict);
  if (cls.str == kNamespace) {
    PickleValuePtr obj = MakePickleValue(Kind::kObject);
    obj->str = cls.str;
    return obj;
  }
  return Invalid(absl::StrCat("'", cls.str, "' cannot be instantiated"));
}

absl::StatusOr<PickleValuePtr> StorageFromPersistentId(const PickleValue& p) {
  // ('storage', torch.<Type>Storage, key, location, numel)
  if (p.kind != Kind::kTuple || p.items.size() != 5 || p.items[0]->kind != Kind::kString ||
      p.items[0]->str != "storage" || p.items[1]->kind != Kind::kGlobal ||
      p.items[2]->kind != Kind::kString || p.items[3]->kind != Kind::kString ||
      p.items[4]->kind != Kind::kInt) {
    return Invalid("persistent id is not ('storage', type, key, location, numel)");
  }
  PickleValuePtr s = MakePickleValue(Kind::kStorage);
  if (!IsStorageGlobal(p.items[1]->str, &s->storage.type)) {
    return Invalid(absl::StrCat("persistent id names '", p.items[1]->str, "', not a storage type"));
  }
  s->storage.key = p.items[2]->str;
  s->storage.location = p.items[3]->str;
  s->storage.numel = p.items[4]->integer;
  if (s->storage.numel < 0) return Invalid("negative storage size");
  return s;
}

}  // namespace vitserve
