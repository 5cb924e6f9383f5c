// The one place where absl::Status becomes grpc::Status (absl::StatusCode values equal
// grpc::StatusCode values, so the code is carried over unchanged; the message is kept).
#ifndef VITSERVE_SERVER_RPC_STATUS_UTIL_H_
#define VITSERVE_SERVER_RPC_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace vitserve {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_STATUS_UTIL_H_
