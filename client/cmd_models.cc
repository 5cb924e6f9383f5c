// vitclient models: ListModels.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "client/client_flags.h"
#include "client/commands.h"
#include "client/output.h"
#include "client/unary_command.h"

namespace vitserve::client {

int RunModels(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "vitclient models: takes no arguments (got \"%s\")\n", args[0].c_str());
    return kExitUsage;
  }
  vitserve::v1::ListModelsResponse response;
  return RunUnaryCommand(
      [&](vitserve::v1::InferenceService::Stub* stub, grpc::ClientContext* ctx) {
        return stub->ListModels(ctx, vitserve::v1::ListModelsRequest(), &response);
      },
      [&] { return absl::GetFlag(FLAGS_json) ? ModelsJson(response) : ModelsText(response); });
}

}  // namespace vitserve::client
