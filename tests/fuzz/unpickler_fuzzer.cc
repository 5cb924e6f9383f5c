// Fuzzes Unpickle(), the restricted unpickler that reads data.pkl of a torch.save
// checkpoint. Properties: no crash, leak, stack overflow or out-of-bounds read on any
// input; every failure is INVALID_ARGUMENT; the value tree of a success can be walked
// completely (no dangling pointer, no cycle) and its tensors name a storage.
#include <cstddef>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/unpickler.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using vitserve::PickleValue;
using Kind = PickleValue::Kind;

// Visits every node reachable from `root` once (the tree is a DAG: the memo shares nodes).
void Walk(const PickleValue* root) {
  std::vector<const PickleValue*> todo = {root};
  std::unordered_set<const PickleValue*> seen;
  while (!todo.empty()) {
    const PickleValue* v = todo.back();
    todo.pop_back();
    FUZZ_CHECK(v != nullptr);
    if (!seen.insert(v).second) continue;
    FUZZ_CHECK(!v->KindName().empty() && v->KindName() != "?");
    switch (v->kind) {
      case Kind::kTensor:
        FUZZ_CHECK(v->tensor.shape.size() == v->tensor.stride.size());
        FUZZ_CHECK(v->tensor.storage_offset >= 0 && v->tensor.storage.numel >= 0);
        break;
      case Kind::kStorage:
        FUZZ_CHECK(v->storage.numel >= 0);
        break;
      case Kind::kDict:
      case Kind::kObject:
        (void)v->Find("state_dict");
        break;
      default:
        break;
    }
    for (const vitserve::PickleValuePtr& c : v->items) todo.push_back(c.get());
    for (const auto& [k, val] : v->entries) {
      todo.push_back(k.get());
      todo.push_back(val.get());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<vitserve::PickleValuePtr> value = vitserve::Unpickle(bytes);
  if (!value.ok()) {
    FUZZ_CHECK(value.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(*value != nullptr);
  Walk(value->get());
  return 0;
}
