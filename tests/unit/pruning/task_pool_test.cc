#include "server/pruning/task_pool.h"

#include <atomic>
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
