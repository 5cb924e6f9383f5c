// BudgetPolicy inside the real BatchScheduler: one queue per model, batches formed at one
// keep-rate inside it, wake-ups at the latest safe start, hopeless requests rejected.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/budget/budget_policy.h"
#include "server/scheduler/batch_scheduler.h"
#include "server/util/clock.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

// Real time a test waits for the batch thread (never reached when things work; it turns
// a hang into a failure).
constexpr absl::Duration kReactionTimeout = absl::Seconds(20);
constexpr int kMaxBatch = 4;

struct TestTask {
  int id = 0;
  TaskAttributes attrs;
  const TaskAttributes& attributes() const { return attrs; }
  bool IsCancelled() const { return false; }
};

struct Batch {
  float keep_rate;
  std::vector<int> ids;
};

class Recorder {
 public:
  BatchScheduler<TestTask>::Callbacks Callbacks() {
    return {
        [this](const std::string&, float keep_rate, std::vector<std::unique_ptr<TestTask>> batch) {
          Batch b{keep_rate, {}};
          for (const auto& t : batch) b.ids.push_back(t->id);
          absl::MutexLock l(&mu_);
          answered_ += static_cast<int>(b.ids.size());
          batches_.push_back(std::move(b));
        },
        [this](std::unique_ptr<TestTask> task, absl::Status status) {
          absl::MutexLock l(&mu_);
          ++answered_;
          rejected_[task->id] = status;
        }};
  }
  bool WaitForAnswers(int n) {
    absl::MutexLock l(&mu_);
    auto done = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return answered_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kReactionTimeout);
  }
  std::vector<Batch> batches() {
    absl::MutexLock l(&mu_);
    return batches_;
  }
  std::map<int, absl::Status> rejected() {
    absl::MutexLock l(&mu_);
    return rejected_;
  }

 private:
  absl::Mutex mu_;
  int answered_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Batch> batches_ ABSL_GUARDED_BY(mu_);
  std::map<int, absl::Status> rejected_ ABSL_GUARDED_BY(mu_);
};

class BudgetSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // t(k, b) = base(k) + 1 ms · (b − 1); base 10 / 8 / 6 ms at 1.0 / 0.8 / 0.6.
    LatencyModel::Options lm;
    lm.keep_rate_levels = {1.0f, 0.8f, 0.6f};
    lm.batch_sizes = {1, 2, 4};
    std::vector<LatencyPoint> points;
    for (auto [k, base] : std::vector<std::pair<float, int>>{{1.0f, 10}, {0.8f, 8}, {0.6f, 6}}) {
      for (int b : lm.batch_sizes) points.push_back({k, b, absl::Milliseconds(base + b - 1)});
    }
    auto model = LatencyModel::Create(lm, points);
    ASSERT_TRUE(model.ok()) << model.status();
    BudgetPolicy::Options po;
    po.max_batch_size = kMaxBatch;
    po.max_queue_delay = absl::Milliseconds(5);
    po.safety_fraction = 0.0;
    po.safety_margin = absl::ZeroDuration();
    auto policy = BudgetPolicy::Create(po, std::shared_ptr<LatencyModel>(std::move(*model)));
    ASSERT_TRUE(policy.ok()) << policy.status();
    BatchScheduler<TestTask>::Options so;
    so.max_batch_size = kMaxBatch;
    auto scheduler = BatchScheduler<TestTask>::Create(so, recorder_.Callbacks(), &clock_);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);
    auto queue = scheduler_->AddQueue("model", std::move(*policy));
    ASSERT_TRUE(queue.ok()) << queue.status();
    queue_ = *queue;
  }

  void Schedule(int id, absl::Duration budget, float keep_rate = 0.0f) {
    auto task = std::make_unique<TestTask>();
    task->id = id;
    task->attrs.keep_rate = keep_rate;
    if (budget > absl::ZeroDuration()) {
      task->attrs.latency_budget = budget;
      task->attrs.deadline = clock_.Now() + budget;
    }
    ASSERT_TRUE(scheduler_->Schedule(queue_, &task).ok());
  }

  FakeClock clock_{absl::FromUnixSeconds(1000)};
  Recorder recorder_;
  std::unique_ptr<BatchScheduler<TestTask>> scheduler_;
  BatchScheduler<TestTask>::Queue* queue_ = nullptr;  // one model's queue
};

TEST_F(BudgetSchedulerTest, HopelessRequestIsAnsweredWithoutTimePassing) {
  Schedule(1, absl::Milliseconds(5));  // 0.6 alone needs 6 ms
  ASSERT_TRUE(recorder_.WaitForAnswers(1));
  ASSERT_EQ(recorder_.rejected().count(1), 1u);
  EXPECT_EQ(recorder_.rejected()[1].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(clock_.Now(), absl::FromUnixSeconds(1000));
}

TEST_F(BudgetSchedulerTest, TightRequestsRunTogetherAtTheLevelThatFitsAtTheLatestSafeStart) {
  Schedule(1, absl::Microseconds(9500));
  Schedule(2, absl::Microseconds(9500));
  // Together at 0.8 they take 9 ms: the batch starts at 0.5 ms, on the policy's wake-up.
  clock_.Advance(absl::Microseconds(500));
  ASSERT_TRUE(recorder_.WaitForAnswers(2));
  const std::vector<Batch> batches = recorder_.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_FLOAT_EQ(batches[0].keep_rate, 0.8f);
  EXPECT_THAT(batches[0].ids, UnorderedElementsAre(1, 2));
}

TEST_F(BudgetSchedulerTest, OneQueuePerModelStillRunsEachBatchAtOneKeepRate) {
  Schedule(1, absl::ZeroDuration(), 0.6f);
  Schedule(2, absl::ZeroDuration());  // server chooses, no budget: 1.0
  Schedule(3, absl::ZeroDuration(), 0.6f);
  clock_.Advance(absl::Milliseconds(5));  // the queue delay
  ASSERT_TRUE(recorder_.WaitForAnswers(3));
  std::map<float, std::vector<int>> by_rate;
  for (const Batch& b : recorder_.batches()) {
    for (int id : b.ids) by_rate[b.keep_rate].push_back(id);
  }
  EXPECT_THAT(by_rate[0.6f], ElementsAre(1, 3));
  EXPECT_THAT(by_rate[1.0f], ElementsAre(2));
  EXPECT_EQ(by_rate.size(), 2u);
}

}  // namespace
}  // namespace vitserve
