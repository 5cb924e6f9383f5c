// The deadline of a callback RPC as absl::Time (InfiniteFuture() = none). gRPC reports a
// missing deadline as time_point::max(); deadlines further away than a year count as none.
#ifndef VITSERVE_SERVER_RPC_GRPC_DEADLINE_H_
#define VITSERVE_SERVER_RPC_GRPC_DEADLINE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/time/time.h"

namespace vitserve {

inline absl::Time ClientDeadline(const grpc::CallbackServerContext* context) {
  constexpr absl::Duration kNoDeadlineHorizon = absl::Hours(24 * 365);
  const auto deadline = context->deadline();
  const auto now = std::chrono::system_clock::now();
  if (deadline == std::chrono::system_clock::time_point::max() ||
      deadline - now > absl::ToChronoSeconds(kNoDeadlineHorizon)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_GRPC_DEADLINE_H_
