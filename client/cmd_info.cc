// vitclient info [MODEL]: GetModelInfo.
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

int RunInfo(const std::vector<std::string>& args) {
  if (args.size() > 1) {
    std::fprintf(stderr, "vitclient info: at most one MODEL argument (got %zu)\n", args.size());
    return kExitUsage;
  }
  const std::string server = absl::GetFlag(FLAGS_server);
  const std::unique_ptr<vitserve::v1::InferenceService::Stub> stub = MakeStubOrReport(server);
  if (stub == nullptr) return kExitUsage;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  vitserve::v1::GetModelInfoRequest request;
  request.set_model(args.empty() ? absl::GetFlag(FLAGS_model) : args[0]);
  vitserve::v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&ctx, request, &info);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", RpcErrorText(server, status).c_str());
    return kExitFailed;
  }
  const std::string out = absl::GetFlag(FLAGS_json)
                              ? ModelInfoJson(info, absl::GetFlag(FLAGS_labels))
                              : ModelInfoText(info);
  std::printf("%s\n", out.c_str());
  return kExitOk;
}

}  // namespace vitserve::client
