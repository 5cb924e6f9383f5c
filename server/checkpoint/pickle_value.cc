#include "server/checkpoint/pickle_value.h"

#include <memory>
#include <utility>
#include <vector>

#include "server/util/enum_names.h"

namespace vitserve {
namespace {

using Kind = PickleValue::Kind;

// Python's type names (a big int is an int too).
constexpr EnumNameEntry<Kind> kKindNames[] = {
    {Kind::kNone, "None"},       {Kind::kBool, "bool"},     {Kind::kInt, "int"},
    {Kind::kBigInt, "int"},      {Kind::kFloat, "float"},   {Kind::kString, "str"},
    {Kind::kBytes, "bytes"},     {Kind::kTuple, "tuple"},   {Kind::kList, "list"},
    {Kind::kDict, "dict"},       {Kind::kGlobal, "global"}, {Kind::kObject, "object"},
    {Kind::kStorage, "storage"}, {Kind::kTensor, "tensor"},
};

}  // namespace

PickleValuePtr MakePickleValue(PickleValue::Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

PickleValue::~PickleValue() {
  // shared_ptr's destructor would recurse once per nesting level (TUPLE1 nests one level
  // per input byte). Instead, children are moved out, and a child whose last owner is this
  // loop is emptied the same way before it dies, so each destructor frees a leaf.
  std::vector<PickleValuePtr> pending;
  const auto detach_children = [&pending](PickleValue& v) {
    for (PickleValuePtr& c : v.items) {
      if (c != nullptr) pending.push_back(std::move(c));
    }
    v.items.clear();
    for (auto& [k, val] : v.entries) {
      if (k != nullptr) pending.push_back(std::move(k));
      if (val != nullptr) pending.push_back(std::move(val));
    }
    v.entries.clear();
  };
  detach_children(*this);
  while (!pending.empty()) {
    PickleValuePtr v = std::move(pending.back());
    pending.pop_back();
    if (v.use_count() == 1) detach_children(*v);
  }
}

const PickleValue* PickleValue::Find(absl::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k->kind == Kind::kString && k->str == key) return v.get();
  }
  return nullptr;
}

absl::string_view PickleValue::KindName() const { return EnumName(kKindNames, kind, "?"); }

}  // namespace vitserve
