// DecodePool on its own: every accepted job runs exactly once, a full queue refuses at
// once without running the job, Shutdown answers the jobs still waiting.
#include "server/serving/decode_pool.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(30);

// Records how each job was called (by index), and how often.
class Calls {
 public:
  explicit Calls(int n) : codes_(static_cast<size_t>(n)), counts_(static_cast<size_t>(n), 0) {}
  DecodePool::Job Job(int i) {
    return [this, i](absl::Status status) {
      absl::MutexLock l(&mu_);
      codes_[static_cast<size_t>(i)] = status.code();
      ++counts_[static_cast<size_t>(i)];
      ++total_;
    };
  }
  bool WaitForTotal(int n) {
    absl::MutexLock l(&mu_);
    auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return total_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kTimeout);
  }
  absl::StatusCode code(int i) {
    absl::MutexLock l(&mu_);
    return codes_[static_cast<size_t>(i)];
  }
  int count(int i) {
    absl::MutexLock l(&mu_);
    return counts_[static_cast<size_t>(i)];
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::StatusCode> codes_ ABSL_GUARDED_BY(mu_);
  std::vector<int> counts_ ABSL_GUARDED_BY(mu_);
  int total_ ABSL_GUARDED_BY(mu_) = 0;
};

// A job that holds its worker until released.
struct Blocker {
  absl::Notification started;
  absl::Notification release;
  // Submits the job and waits until a worker runs it.
  bool Occupy(DecodePool& pool) {
    absl::Status submitted = pool.Submit([this](absl::Status) {
      started.Notify();
      release.WaitForNotificationWithTimeout(kTimeout);
    });
    return submitted.ok() && started.WaitForNotificationWithTimeout(kTimeout);
  }
};

std::unique_ptr<DecodePool> MakePool(int threads, int max_queued) {
  DecodePool::Options options;
  options.num_threads = threads;
  options.max_queued = max_queued;
  absl::StatusOr<std::unique_ptr<DecodePool>> pool = DecodePool::Create(options);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? *std::move(pool) : nullptr;
}

TEST(DecodePoolTest, RefusesOptionsOutOfRange) {
  DecodePool::Options options;
  options.num_threads = 0;
  EXPECT_EQ(DecodePool::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.num_threads = 1;
  options.max_queued = 0;
  EXPECT_EQ(DecodePool::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecodePoolTest, EveryAcceptedJobRunsExactlyOnceOffTheCallersThread) {
  std::unique_ptr<DecodePool> pool = MakePool(3, 1000);
  constexpr int kJobs = 200;
  Calls calls(kJobs);
  std::atomic<int> on_caller{0};
  const std::thread::id caller = std::this_thread::get_id();
  for (int i = 0; i < kJobs; ++i) {
    DecodePool::Job inner = calls.Job(i);
    ASSERT_TRUE(pool->Submit([&, inner = std::move(inner)](absl::Status s) mutable {
                      if (std::this_thread::get_id() == caller) ++on_caller;
                      inner(std::move(s));
                    })
                    .ok());
  }
  ASSERT_TRUE(calls.WaitForTotal(kJobs));
  pool->Shutdown();
  EXPECT_EQ(on_caller.load(), 0);
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_EQ(calls.count(i), 1) << i;
    EXPECT_EQ(calls.code(i), absl::StatusCode::kOk) << i;
  }
  EXPECT_EQ(pool->pending(), 0);
}

TEST(DecodePoolTest, FullQueueIsRefusedAtOnceAndTheJobNeverRuns) {
  std::unique_ptr<DecodePool> pool = MakePool(1, 2);
  Blocker blocker;
  ASSERT_TRUE(blocker.Occupy(*pool));
  Calls calls(3);
  ASSERT_TRUE(pool->Submit(calls.Job(0)).ok());
  ASSERT_TRUE(pool->Submit(calls.Job(1)).ok());
  EXPECT_EQ(pool->pending(), 3);  // one running, two waiting
  // The refused job is destroyed unrun: its capture goes with it.
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> watch = alive;
  DecodePool::Job refused = [inner = calls.Job(2), alive = std::move(alive)](
                                absl::Status s) mutable { inner(std::move(s)); };
  absl::Status full = pool->Submit(std::move(refused));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("decode queue full"));
  EXPECT_TRUE(watch.expired());
  blocker.release.Notify();
  ASSERT_TRUE(calls.WaitForTotal(2));
  pool->Shutdown();
  EXPECT_EQ(calls.count(0), 1);
  EXPECT_EQ(calls.count(1), 1);
  EXPECT_EQ(calls.count(2), 0);
}

TEST(DecodePoolTest, ShutdownAnswersEveryWaitingJobAndJoins) {
  std::unique_ptr<DecodePool> pool = MakePool(1, 10);
  Blocker blocker;
  ASSERT_TRUE(blocker.Occupy(*pool));
  Calls calls(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool->Submit(calls.Job(i)).ok());
  // Shutdown answers the waiting jobs, then waits for the running one.
  std::thread stopper([&] { pool->Shutdown(); });
  ASSERT_TRUE(calls.WaitForTotal(3));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(calls.count(i), 1) << i;
    EXPECT_EQ(calls.code(i), absl::StatusCode::kUnavailable) << i;
  }
  blocker.release.Notify();
  stopper.join();
  EXPECT_EQ(pool->pending(), 0);
  Calls late(1);
  EXPECT_EQ(pool->Submit(late.Job(0)).code(), absl::StatusCode::kUnavailable);
  pool->Shutdown();  // idempotent
  EXPECT_EQ(late.count(0), 0);
}

}  // namespace
}  // namespace vitserve
