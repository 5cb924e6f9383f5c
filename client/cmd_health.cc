// vitclient health: grpc.health.v1.Health/Check; exit 0 only when SERVING.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/call_runner.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace vitserve::client {

int RunHealth(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "vitclient health: takes no arguments (use --service=NAME)\n");
    return kExitUsage;
  }
  const std::string server = absl::GetFlag(FLAGS_server);
  const std::shared_ptr<grpc::Channel> channel = MakeChannelOrReport(server);
  if (channel == nullptr) return kExitUsage;
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&ctx, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", RpcErrorText(server, status).c_str());
    return kExitFailed;
  }
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  std::printf("%s\n", name.c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                             : kExitFailed;
}

}  // namespace vitserve::client
