// A restricted, torch-free unpickler for the pickles torch.save writes (protocol 2; the
// few protocol 3/4 opcodes newer writers use are understood too). It never executes
// code: the pickle is decoded into an inert value tree, and only the globals a state
// dict needs may be named at all:
//   collections.OrderedDict                       -> a dict
//   torch._utils._rebuild_tensor_v2               -> a tensor reference
//   torch._utils._rebuild_parameter               -> the tensor it wraps
//   torch._utils._rebuild_parameter_with_state    -> the tensor it wraps
//   torch.{Float,Half,BFloat16,Double,Long,Int,Bool,Byte}Storage (persistent ids only)
//   argparse.Namespace                            -> an inert object holding its attributes
// Any other GLOBAL / STACK_GLOBAL (os.system, builtins.eval, subprocess.Popen, a pickled
// nn.Module class, ...) is refused with INVALID_ARGUMENT:
//   "checkpoint refers to forbidden global 'posix.system'; only state-dict types are allowed"
//
// Every read, memo index, stack access and length is bounds-checked: malformed input
// yields INVALID_ARGUMENT naming the opcode and byte offset, never a crash. The value tree
// is acyclic (an insertion that would create a cycle is refused).
// Nesting depth is bounded only by the input's size (TUPLE1 nests one level per byte);
// values are destroyed iteratively, so a million-deep pickle is refused or returned, never
// a stack overflow.
//
// Thread-safety: Unpickle() is reentrant. Values are plain data, shared (shared_ptr) the
// way the pickle's memo shares them; do not mutate them from several threads.
#ifndef VITSERVE_SERVER_CHECKPOINT_UNPICKLER_H_
#define VITSERVE_SERVER_CHECKPOINT_UNPICKLER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
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

struct UnpickleOptions {
  // Largest memo index accepted by BINPUT / LONG_BINPUT (a memo is a sparse map; this
  // only bounds what a hostile file can ask for). Default: 2^24.
  uint32_t max_memo_index = 1u << 24;
  // Most values allowed on the stack at once. Default: 2^24.
  size_t max_stack = 1u << 24;
};

// Decodes `bytes` (a complete pickle, e.g. data.pkl of a torch.save archive) up to its
// STOP opcode and returns the value it produced. Errors: INVALID_ARGUMENT.
absl::StatusOr<PickleValuePtr> Unpickle(absl::string_view bytes,
                                        const UnpickleOptions& options = {});

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_UNPICKLER_H_
