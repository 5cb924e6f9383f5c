// The shared body of vitclient's one-call commands (info, models): one InferenceService
// RPC against --server with the --timeout_ms deadline, then its output or its error.
#ifndef VITSERVE_CLIENT_UNARY_COMMAND_H_
#define VITSERVE_CLIENT_UNARY_COMMAND_H_

#include <functional>
#include <string>

#include "grpcpp/grpcpp.h"
#include "vitserve/v1/inference.grpc.pb.h"

namespace vitserve::client {

// Issues the RPC on the given stub and context (the context already has the deadline).
using UnaryRpc =
    std::function<grpc::Status(vitserve::v1::InferenceService::Stub* stub, grpc::ClientContext*)>;

// Runs `rpc` on a stub for --server (kExitUsage, after printing why, when no channel can
// be made). On failure prints RpcErrorText to stderr and returns kExitFailed; on success
// prints `output()` and a newline to stdout and returns kExitOk.
int RunUnaryCommand(const UnaryRpc& rpc, const std::function<std::string()>& output);

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_UNARY_COMMAND_H_
