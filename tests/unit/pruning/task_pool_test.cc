#include "server/pruning/task_pool.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

TEST(TaskPoolTest, RunsEveryTaskOnceAcrossThreads) {
  for (int threads : {1, 2, 3}) {
    std::vector<std::atomic<int>> runs(1000);
    ParallelTasks(1000, threads, [&](int64_t i) { runs[i].fetch_add(1); });
    for (const std::atomic<int>& r : runs) ASSERT_EQ(r.load(), 1) << threads;
  }
  ParallelTasks(0, 2, [](int64_t) { FAIL() << "no task to run"; });
}

TEST(TaskPoolTest, ScopedIntraOpThreadsIsPerThreadAndNests) {
  EXPECT_EQ(IntraOpThreads(), 0);
  {
    ScopedIntraOpThreads two(2);
    EXPECT_EQ(IntraOpThreads(), 2);
    {
      ScopedIntraOpThreads one(0);  // clamped to 1
      EXPECT_EQ(IntraOpThreads(), 1);
    }
    EXPECT_EQ(IntraOpThreads(), 2);
    int other_thread = -1;
    std::thread([&] { other_thread = IntraOpThreads(); }).join();
    EXPECT_EQ(other_thread, 0);  // another batch thread keeps its own
  }
  EXPECT_EQ(IntraOpThreads(), 0);
}

TEST(TaskPoolTest, NestedAndConcurrentCallsComplete) {
  std::atomic<int> total{0};
  auto outer = [&] {
    ParallelTasks(8, 2, [&](int64_t) {
      ParallelTasks(4, 2, [&](int64_t) { total.fetch_add(1); });  // runs inline
    });
  };
  std::thread other(outer);
  outer();
  other.join();
  EXPECT_EQ(total.load(), 2 * 8 * 4);
}

// ATen resets a thread's OpenMP count to its own (at::set_num_threads) the first time the
// thread runs a parallel ATen op, and at::init_num_threads does so on demand. A worker that
// kept that count ran every oneDNN sgemm with an extra OpenMP thread. Every task, on the
// caller and on the workers, must see one OpenMP thread, also in the jobs after a task
// reset it.
TEST(TaskPoolTest, TasksSeeOneOpenMpThreadEvenAfterATaskResetIt) {
  at::set_num_threads(2);
  const std::thread::id caller = std::this_thread::get_id();
  // Runs 40 tasks on 2 threads; returns what at::get_num_threads() said in each
  // (read_count) after checking that the worker ran some of them. The caller's tasks wait
  // (up to 5 s) until the worker has started one, so a busy machine that schedules the
  // worker late does not leave every task to the caller.
  auto run_job = [&](bool read_count, bool reset_count) {
    std::mutex mu;
    std::vector<int> seen;
    int off_caller = 0;
    std::atomic<bool> worker_ran{false};
    ParallelTasks(40, 2, [&](int64_t) {
      const int threads = read_count ? at::get_num_threads() : 0;  // ATen's lazy init
      if (std::this_thread::get_id() != caller) {
        worker_ran = true;
      } else {
        for (int i = 0; i < 5000 && !worker_ran; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      if (reset_count) at::init_num_threads();  // what ATen code in a task may do
      std::lock_guard<std::mutex> lock(mu);
      if (read_count) seen.push_back(threads);
      if (std::this_thread::get_id() != caller) ++off_caller;
    });
    EXPECT_GT(off_caller, 0) << "no task ran on a worker";
    return seen;
  };
  // A fresh worker's first ATen call.
  for (int threads : run_job(/*read_count=*/true, /*reset_count=*/false)) EXPECT_EQ(threads, 1);
  // A job whose tasks set the count back to ATen's, then the next job.
  run_job(/*read_count=*/false, /*reset_count=*/true);
  for (int threads : run_job(/*read_count=*/true, /*reset_count=*/false)) EXPECT_EQ(threads, 1);
}

TEST(TaskPoolTest, RethrowsATaskExceptionAfterTheOthersRan) {
  std::atomic<int> ran{0};
  EXPECT_THROW(ParallelTasks(50, 2,
                             [&](int64_t i) {
                               ran.fetch_add(1);
                               if (i == 7) throw std::runtime_error("task 7");
                             }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 50);
  // The pool is usable afterwards.
  std::atomic<int> again{0};
  ParallelTasks(10, 2, [&](int64_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 10);
}

}  // namespace
}  // namespace vitserve
