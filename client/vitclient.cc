// vitclient: command-line client and load generator for vitserve. See docs/client.md.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "client/commands.h"
#include "server/util/cli_usage.h"

namespace {

constexpr char kUsage[] =
    "vitclient: client for the vitserve inference server.\n"
    "\n"
    "usage: vitclient COMMAND [ARGS] [--flags]\n"
    "\n"
    "commands:\n"
    "  classify FILE_OR_DIR...  classify images (directories are searched recursively)\n"
    "                           flags: --server --model --keep_rate --min_keep_rate\n"
    "                           --min_expected_accuracy --budget_ms --top_k --json\n"
    "                           --concurrency --timeout_ms --logits --progress\n"
    "  models                   list the served models (--server --json)\n"
    "  info [MODEL]             model details and keep-rate grid (--server --json --labels)\n"
    "  health                   grpc.health.v1 check; exit 0 only if SERVING\n"
    "                           (--server --service)\n"
    "  bench                    load generator: --rate (open loop) or --concurrency\n"
    "                           (closed loop), --duration_s --requests --budget_ms=DIST\n"
    "                           --keep_rate --min_keep_rate --min_expected_accuracy\n"
    "                           --input=FILE_OR_DIR | --random_tensor\n"
    "                           --json_out --seed --max_inflight\n"
    "\n"
    "exit status: 0 success, 1 a request failed, 2 usage error.\n"
    "Run with --help for every flag.";

}  // namespace

int main(int argc, char** argv) {
  // The flags live in client_flags.cc, so --help must be told to list that file's flags.
  vitserve::SetCommandLineUsage("client/client_flags.cc", kUsage);
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::fprintf(stderr, "%s\n", kUsage);
    return vitserve::client::kExitUsage;
  }
  const std::string command = positional[1];
  const std::vector<std::string> args(positional.begin() + 2, positional.end());
  if (command == "classify") return vitserve::client::RunClassify(args);
  if (command == "models") return vitserve::client::RunModels(args);
  if (command == "info") return vitserve::client::RunInfo(args);
  if (command == "health") return vitserve::client::RunHealth(args);
  if (command == "bench") return vitserve::client::RunBench(args);
  std::fprintf(stderr,
               "vitclient: unknown command \"%s\"; accepted: classify, models, info, health, "
               "bench\n",
               command.c_str());
  return vitserve::client::kExitUsage;
}
