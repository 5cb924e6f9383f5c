#include "client/unary_command.h"

#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "client/call_runner.h"
#include "client/client_flags.h"
#include "client/commands.h"

namespace vitserve::client {

int RunUnaryCommand(const UnaryRpc& rpc, const std::function<std::string()>& output) {
  const std::string server = absl::GetFlag(FLAGS_server);
  const std::unique_ptr<vitserve::v1::InferenceService::Stub> stub = MakeStubOrReport(server);
  if (stub == nullptr) return kExitUsage;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  const grpc::Status status = rpc(stub.get(), &ctx);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", RpcErrorText(server, status).c_str());
    return kExitFailed;
  }
  std::printf("%s\n", output().c_str());
  return kExitOk;
}

}  // namespace vitserve::client
