#include "server/pruning/task_pool.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#ifdef VITSERVE_HAVE_OPENMP
#include <omp.h>
#endif

namespace vitserve {
namespace {

// How long an idle worker polls for the next job before sleeping: a forward issues a
// job every few microseconds to milliseconds, and waking a sleeping thread costs ~50 us.
constexpr auto kSpin = std::chrono::microseconds(200);

thread_local bool in_task = false;
thread_local int intra_op_threads = 0;  // ScopedIntraOpThreads

int OmpMaxThreads();
void SetOmpThreads(int threads);

// OpenMP (and so oneDNN's sgemm) single-threaded on this thread while alive.
class SingleThreadedOmp {
 public:
  SingleThreadedOmp() : previous_(OmpMaxThreads()) { SetOmpThreads(1); }
  ~SingleThreadedOmp() { SetOmpThreads(previous_); }

 private:
  int previous_ = 1;
};

struct Job {
  const std::function<void(int64_t)>* task = nullptr;
  int64_t tasks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex error_mu;
  std::exception_ptr error;

  // Claims and runs tasks until none are left.
  void Work() {
    for (int64_t i = next.fetch_add(1); i < tasks; i = next.fetch_add(1)) {
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class TaskPool {
 public:
  ~TaskPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  // False if another call holds the workers (the caller then runs the tasks itself).
  bool TryRun(int64_t tasks, int threads, const std::function<void(int64_t)>& task) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    auto job = std::make_shared<Job>();
    job->task = &task;
    job->tasks = tasks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < threads - 1) {
        workers_.emplace_back([this] { WorkerLoop(); });
      }
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    job->Work();
    while (job->done.load(std::memory_order_acquire) < tasks) std::this_thread::yield();
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_.reset();  // a late worker finds no job
    }
    if (job->error) std::rethrow_exception(job->error);
    return true;
  }

 private:
  void WorkerLoop() {
    in_task = true;
    uint64_t seen = 0;
    while (true) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();  // gives the core away if the machine is busy
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
        if (stop_) return;
        seen = generation_.load();
        job = job_;
      }
      if (job != nullptr) {
        SingleThreadedOmp omp;  // per job: a task may have reset it (at::set_num_threads)
        job->Work();
      }
    }
  }

  std::mutex run_mu_;  // held by the call using the workers
  std::mutex mu_;      // guards job_, workers_, stop_
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::shared_ptr<Job> job_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

TaskPool& Pool() {
  static TaskPool* pool = new TaskPool();  // never destroyed: workers may outlive statics
  return *pool;
}

// This thread's OpenMP count, read before it is set. ATen sets a thread's OpenMP count to
// its own intra-op count (at::set_num_threads) the first time that thread runs a parallel
// ATen op (its lazy per-thread init). Left to happen inside a task, that undid the count
// of 1 set here for the rest of the worker's life: every oneDNN sgemm a worker ran then
// started a second OpenMP thread, a third thread on a 2-core machine spinning next to the
// pool's two. at::get_num_threads() runs that init first, so the count set here sticks.
int OmpMaxThreads() {
  (void)at::get_num_threads();
#ifdef VITSERVE_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void SetOmpThreads(int threads) {
#ifdef VITSERVE_HAVE_OPENMP
  omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

}  // namespace

ScopedIntraOpThreads::ScopedIntraOpThreads(int threads)
    : previous_threads_(intra_op_threads), previous_omp_threads_(OmpMaxThreads()) {
  intra_op_threads = threads < 1 ? 1 : threads;
  SetOmpThreads(1);
}

ScopedIntraOpThreads::~ScopedIntraOpThreads() {
  intra_op_threads = previous_threads_;
  SetOmpThreads(previous_omp_threads_);
}

int IntraOpThreads() { return intra_op_threads; }

void ParallelTasks(int64_t tasks, int threads, const std::function<void(int64_t)>& task) {
  if (tasks <= 0) return;
  SingleThreadedOmp omp;
  if (threads > 1 && tasks > 1 && !in_task) {
    struct InTask {
      InTask() { in_task = true; }
      ~InTask() { in_task = false; }
    } scope;
    if (Pool().TryRun(tasks, threads, task)) return;
  }
  for (int64_t i = 0; i < tasks; ++i) task(i);
}

}  // namespace vitserve
