// The globals a state-dict pickle may name (the list in unpickler.h) and what the pickle
// may build with them: REDUCE (a call), NEWOBJ (an instance) and BINPERSID (a storage by
// persistent id). Pure functions over the inert value tree (pickle_value.h).
//
// Errors: INVALID_ARGUMENT whose message says only what is wrong; the unpickler adds the
// opcode and byte offset.
#ifndef VITSERVE_SERVER_CHECKPOINT_PICKLE_GLOBALS_H_
#define VITSERVE_SERVER_CHECKPOINT_PICKLE_GLOBALS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/pickle_value.h"

namespace vitserve {

// True for "module.name" a state dict needs (OrderedDict, the tensor rebuilders, the
// storage types, argparse.Namespace); every other global is refused.
bool IsAllowedPickleGlobal(absl::string_view name);

// REDUCE: `callable` applied to `args` (must be a kGlobal and a kTuple).
absl::StatusOr<PickleValuePtr> CallPickleGlobal(const PickleValue& callable,
                                                const PickleValue& args);

// NEWOBJ: an empty instance of class `cls` (a kGlobal) with no arguments.
absl::StatusOr<PickleValuePtr> NewPickleObject(const PickleValue& cls, const PickleValue& args);

// BINPERSID: ('storage', torch.<Type>Storage, key, location, numel) -> a kStorage.
absl::StatusOr<PickleValuePtr> StorageFromPersistentId(const PickleValue& pid);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_PICKLE_GLOBALS_H_
