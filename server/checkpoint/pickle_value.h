// The inert value tree the restricted unpickler (unpickler.h) decodes a pickle into: plain
// data, no code. Nested values are shared (shared_ptr) the way the pickle's memo shares
// them; the tree is acyclic, and destroying it is iterative (a million-deep tuple frees
// without a stack overflow).
#ifndef VITSERVE_SERVER_CHECKPOINT_PICKLE_VALUE_H_
#define VITSERVE_SERVER_CHECKPOINT_PICKLE_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace vitserve {

struct PickleValue;
using PickleValuePtr = std::shared_ptr<PickleValue>;

// A storage named by torch.save's persistent id
// ('storage', torch.<Type>Storage, key, location, numel).
struct PickleStorageRef {
  std::string type;      // "Float", "Half", "BFloat16", "Double", "Long", "Int", "Bool", "Byte"
  std::string key;       // record name under <archive>/data/
  std::string location;  // e.g. "cpu", "cuda:0" (informational)
  int64_t numel = 0;     // elements of the storage
};

// torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...): a view of
// the storage, offsets and strides in elements. Not yet bounds-checked against numel.
struct PickleTensorRef {
  PickleStorageRef storage;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
  bool requires_grad = false;
};

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,     // fits int64
    kBigInt,  // LONG1/LONG4 beyond int64: `str` holds the little-endian two's complement
    kFloat,
    kString,  // unicode (UTF-8) or py2 str
    kBytes,
    kTuple,
    kList,
    kDict,    // dict or OrderedDict; insertion order kept
    kGlobal,  // an allowed global, `str` = "module.name"
    kObject,  // an inert instance (argparse.Namespace): `str` = class, `entries` = attributes
    kStorage,
    kTensor,
  };

  PickleValue() = default;
  PickleValue(const PickleValue&) = default;
  PickleValue& operator=(const PickleValue&) = default;
  PickleValue(PickleValue&&) = default;
  PickleValue& operator=(PickleValue&&) = default;
  // Releases nested values in a loop rather than recursively (see the file comment).
  ~PickleValue();

  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0.0;
  std::string str;
  std::vector<PickleValuePtr> items;                               // kTuple, kList
  std::vector<std::pair<PickleValuePtr, PickleValuePtr>> entries;  // kDict, kObject
  PickleStorageRef storage;                                        // kStorage
  PickleTensorRef tensor;                                          // kTensor

  // The value of string key `key` in a kDict / kObject, or null.
  const PickleValue* Find(absl::string_view key) const;
  // "dict", "tensor", ... for messages.
  absl::string_view KindName() const;
};

// A new value of `kind`, every field at its default.
PickleValuePtr MakePickleValue(PickleValue::Kind kind);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_PICKLE_VALUE_H_
