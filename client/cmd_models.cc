// vitclient models: ListModels.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/call_runner.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "client/output.h"

namespace vitserve::client {

int RunModels(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "vitclient models: takes no arguments (got \"%s\")\n", args[0].c_str());
    return kExitUsage;
  }
  const std::string server = absl::GetFlag(FLAGS_server);
  const std::unique_ptr<vitserve::v1::InferenceService::Stub> stub = MakeStubOrReport(server);
  if (stub == nullptr) return kExitUsage;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  vitserve::v1::ListModelsResponse response;
  const grpc::Status status = stub->ListModels(&ctx, vitserve::v1::ListModelsRequest(), &response);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", RpcErrorText(server, status).c_str());
    return kExitFailed;
  }
  const std::string out = absl::GetFlag(FLAGS_json) ? ModelsJson(response) : ModelsText(response);
  std::printf("%s\n", out.c_str());
  return kExitOk;
}

}  // namespace vitserve::client
