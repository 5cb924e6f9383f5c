#include "tests/integration/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

// Poll slice while waiting for a child to exit when pidfd_open is unavailable.
constexpr absl::Duration kExitPollSlice = absl::Milliseconds(5);

int RemainingMillis(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const std::string& stderr_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  int err_fd = -1;
  if (!stderr_path.empty()) {
    err_fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      return absl::InternalError(absl::StrCat("open ", stderr_path, ": ", std::strerror(errno)));
    }
  }
  // Everything the child needs is prepared before fork (only async-signal-safe calls after).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(out_pipe[1], STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  if (err_fd >= 0) close(err_fd);
  return std::unique_ptr<Subprocess>(new Subprocess(pid, out_pipe[0]));
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &wait_status_, 0);
  }
  close(stdout_fd_);
}

bool Subprocess::ReadMore(absl::Time deadline, bool* eof) {
  *eof = false;
  pollfd p{stdout_fd_, POLLIN, 0};
  const int ready = poll(&p, 1, RemainingMillis(deadline));
  if (ready <= 0) return false;
  char chunk[4096];
  const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
  if (n <= 0) {
    *eof = true;
    return false;
  }
  buffer_.append(chunk, static_cast<size_t>(n));
  return true;
}

absl::StatusOr<std::string> Subprocess::WaitForLine(absl::string_view prefix,
                                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    size_t newline;
    while ((newline = buffer_.find('\n')) != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (absl::StartsWith(line, prefix)) return line;
    }
    bool eof = false;
    if (!ReadMore(deadline, &eof)) {
      if (eof) {
        return absl::NotFoundError(
            absl::StrCat("stdout closed before a line starting with '", prefix, "'"));
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "no line starting with '", prefix, "' within ", absl::FormatDuration(timeout)));
      }
    }
  }
}

absl::StatusOr<std::string> Subprocess::ReadAll(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  bool eof = false;
  while (!eof) {
    if (!ReadMore(deadline, &eof) && !eof && absl::Now() >= deadline) {
      return absl::DeadlineExceededError("stdout still open");
    }
  }
  std::string out;
  out.swap(buffer_);
  return out;
}

void Subprocess::Signal(int signal_number) {
  if (!reaped_) kill(pid_, signal_number);
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (!reaped_) {
    const absl::Time deadline = absl::Now() + timeout;
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    while (true) {
      const pid_t r = waitpid(pid_, &wait_status_, WNOHANG);
      if (r == pid_) break;
      if (absl::Now() >= deadline) {
        if (pidfd >= 0) close(pidfd);
        return absl::DeadlineExceededError(
            absl::StrCat("process ", pid_, " still running after ", absl::FormatDuration(timeout)));
      }
      if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        poll(&p, 1, RemainingMillis(deadline));
      } else {
        absl::SleepFor(kExitPollSlice);
      }
    }
    if (pidfd >= 0) close(pidfd);
    reaped_ = true;
  }
  if (WIFSIGNALED(wait_status_)) {
    return absl::InternalError(absl::StrCat("process died from signal ", WTERMSIG(wait_status_),
                                            " (", strsignal(WTERMSIG(wait_status_)), ")"));
  }
  return WEXITSTATUS(wait_status_);
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<Subprocess>> p = Subprocess::Start(argv, "");
  if (!p.ok()) return p.status();
  const absl::Time deadline = absl::Now() + timeout;
  CommandResult result;
  absl::StatusOr<std::string> out = (*p)->ReadAll(timeout);
  if (!out.ok()) return out.status();  // the destructor kills it
  result.out = *out;
  absl::StatusOr<int> code = (*p)->Wait(deadline - absl::Now());
  if (!code.ok()) return code.status();
  result.exit_code = *code;
  return result;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace vitserve
