// vitclient's commands. Each takes the positional arguments after the command name,
// reads its flags (client_flags.h), prints to stdout/stderr and returns the exit code:
// 0 success, 1 a request failed (or health not SERVING), 2 usage error.
#ifndef VITSERVE_CLIENT_COMMANDS_H_
#define VITSERVE_CLIENT_COMMANDS_H_

#include <string>
#include <vector>

namespace vitserve::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

int RunClassify(const std::vector<std::string>& args);
int RunModels(const std::vector<std::string>& args);
int RunInfo(const std::vector<std::string>& args);
int RunHealth(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);

// Decides whether to draw the progress bar from --progress (auto/true/false) and whether
// stderr is a terminal. Returns false with a message on stderr for a bad value.
bool ProgressEnabled(bool* enabled);

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_COMMANDS_H_
