// vitclient info [MODEL]: GetModelInfo.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "client/output.h"
#include "client/unary_command.h"

namespace vitserve::client {

int RunInfo(const std::vector<std::string>& args) {
  if (args.size() > 1) {
    std::fprintf(stderr, "vitclient info: at most one MODEL argument (got %zu)\n", args.size());
    return kExitUsage;
  }
  vitserve::v1::GetModelInfoRequest request;
  request.set_model(args.empty() ? absl::GetFlag(FLAGS_model) : args[0]);
  vitserve::v1::ModelInfo info;
  return RunUnaryCommand(
      [&](vitserve::v1::InferenceService::Stub* stub, grpc::ClientContext* ctx) {
        return stub->GetModelInfo(ctx, request, &info);
      },
      [&] {
        return absl::GetFlag(FLAGS_json) ? ModelInfoJson(info, absl::GetFlag(FLAGS_labels))
                                         : ModelInfoText(info);
      });
}

}  // namespace vitserve::client
