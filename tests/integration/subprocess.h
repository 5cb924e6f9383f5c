// A child process for tests that run the real binaries (vitserve, vitclient): stdout
// captured through a pipe, stderr to a file, killed with SIGKILL when the object dies or
// when the test process dies (PR_SET_PDEATHSIG), so no server outlives a failed test.
//
// Thread-safety: one thread per object.
#ifndef VITSERVE_TESTS_INTEGRATION_SUBPROCESS_H_
#define VITSERVE_TESTS_INTEGRATION_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vitserve {

class Subprocess {
 public:
  // Starts argv[0] (a path) with argv[1..]. stderr goes to `stderr_path` (truncated);
  // empty = inherited. INTERNAL when the process cannot be started.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& stderr_path);
  ~Subprocess();  // SIGKILL and reap when still running

  // Reads stdout until a line starting with `prefix` arrives and returns that line (without
  // the newline). DEADLINE_EXCEEDED after `timeout`; NOT_FOUND when stdout closes first.
  absl::StatusOr<std::string> WaitForLine(absl::string_view prefix, absl::Duration timeout);

  // Everything the process wrote on stdout until it closed it (or `timeout`).
  absl::StatusOr<std::string> ReadAll(absl::Duration timeout);

  void Signal(int signal_number);

  // Waits for the process to exit. Returns the exit code; INTERNAL when it died from a
  // signal (the message names it); DEADLINE_EXCEEDED after `timeout` (still running).
  absl::StatusOr<int> Wait(absl::Duration timeout);

  pid_t pid() const { return pid_; }

 private:
  Subprocess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  // Appends available stdout to buffer_; false on EOF or timeout.
  bool ReadMore(absl::Time deadline, bool* eof);

  pid_t pid_;
  int stdout_fd_;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::string buffer_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
};

// vitserve's startup line on stdout: "vitserve listening on <host>:<port>".
inline constexpr char kListeningPrefix[] = "vitserve listening on ";

// The whole file at `path` (e.g. a child's stderr for a failure message); "" if unreadable.
std::string ReadFileOrEmpty(const std::string& path);

// Runs argv to completion (killed after `timeout`), stdout captured, stderr inherited.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout);

}  // namespace vitserve

#endif  // VITSERVE_TESTS_INTEGRATION_SUBPROCESS_H_
