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

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/pickle_value.h"

namespace vitserve {

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
