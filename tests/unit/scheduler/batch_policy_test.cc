#include "server/scheduler/batch_policy.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr absl::Duration kDelay = absl::Milliseconds(10);
const absl::Time kT0 = absl::FromUnixSeconds(1000);

std::unique_ptr<SizeOrDelayPolicy> MakePolicy(int max_batch_size, float default_keep_rate = 0.7f) {
  SizeOrDelayPolicy::Options options;
  options.max_batch_size = max_batch_size;
  options.max_queue_delay = kDelay;
  options.default_keep_rate = default_keep_rate;
  auto policy = SizeOrDelayPolicy::Create(options);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return std::move(*policy);
}

QueuedTask Task(absl::Time enqueued, float keep_rate = 0.0f) {
  QueuedTask t;
  t.enqueue_time = enqueued;
  t.attributes.keep_rate = keep_rate;
  return t;
}

TEST(SizeOrDelayPolicyTest, WaitsUntilFirstTaskDelayWhenNotFull) {
  auto policy = MakePolicy(4);
  std::vector<QueuedTask> tasks = {Task(kT0), Task(kT0 + absl::Milliseconds(6))};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0 + absl::Milliseconds(9));
  EXPECT_THAT(d.batch, IsEmpty());
  EXPECT_THAT(d.reject, IsEmpty());
  // Counted from the first task, not the last.
  EXPECT_EQ(d.wake_at, kT0 + kDelay);
}

TEST(SizeOrDelayPolicyTest, RunsAllWaitingTasksOnceFirstTaskDelayElapsed) {
  auto policy = MakePolicy(4);
  std::vector<QueuedTask> tasks = {Task(kT0), Task(kT0 + absl::Milliseconds(6))};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0 + kDelay);
  EXPECT_THAT(d.batch, ElementsAre(0, 1));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.7f);  // requested 0 -> the default keep-rate
}

TEST(SizeOrDelayPolicyTest, FullBatchRunsAtOnceAndIsCappedAtMaxBatchSize) {
  auto policy = MakePolicy(2);
  std::vector<QueuedTask> tasks = {Task(kT0, 0.5f), Task(kT0, 0.5f), Task(kT0, 0.5f)};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0);
  EXPECT_THAT(d.batch, ElementsAre(0, 1));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.5f);
}

TEST(SizeOrDelayPolicyTest, NeverMixesKeepRatesInOneBatch) {
  auto policy = MakePolicy(8);
  std::vector<QueuedTask> tasks = {Task(kT0, 0.5f), Task(kT0, 0.9f), Task(kT0, 0.5f),
                                   Task(kT0, 0.0f)};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0 + kDelay);
  EXPECT_THAT(d.batch, ElementsAre(0, 2));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.5f);
}

TEST(SizeOrDelayPolicyTest, AFullBatchAtAnotherKeepRateRunsBeforeTheOlderOneIsDue) {
  // One queue per model holds every keep-rate: the oldest task's group (0.5) is neither
  // full nor due, the younger group (0.9) is full, so it runs now; then the policy waits
  // for the oldest task's delay.
  auto policy = MakePolicy(2);
  std::vector<QueuedTask> tasks = {Task(kT0, 0.5f), Task(kT0 + absl::Milliseconds(1), 0.9f),
                                   Task(kT0 + absl::Milliseconds(2), 0.9f)};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0 + absl::Milliseconds(3));
  EXPECT_THAT(d.batch, ElementsAre(1, 2));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.9f);
  std::vector<QueuedTask> rest = {tasks[0]};
  d = policy->Decide(QueueSnapshot{"m", rest, false}, kT0 + absl::Milliseconds(3));
  EXPECT_TRUE(d.batch.empty());
  EXPECT_EQ(d.wake_at, kT0 + kDelay);
}

TEST(SizeOrDelayPolicyTest, RequestForDefaultKeepRateBatchesWithExplicitDefault) {
  auto policy = MakePolicy(8, 0.7f);
  std::vector<QueuedTask> tasks = {Task(kT0, 0.0f), Task(kT0, 0.7f), Task(kT0, 1.0f)};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, false}, kT0 + kDelay);
  EXPECT_THAT(d.batch, ElementsAre(0, 1));
  EXPECT_FLOAT_EQ(d.keep_rate, 0.7f);
}

TEST(SizeOrDelayPolicyTest, DrainingRunsWithoutWaiting) {
  auto policy = MakePolicy(4);
  std::vector<QueuedTask> tasks = {Task(kT0)};
  BatchDecision d = policy->Decide(QueueSnapshot{"m", tasks, true}, kT0);
  EXPECT_THAT(d.batch, ElementsAre(0));
}

TEST(SizeOrDelayPolicyTest, CreateRejectsBadOptions) {
  SizeOrDelayPolicy::Options options;
  options.max_batch_size = 0;
  EXPECT_EQ(SizeOrDelayPolicy::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.max_queue_delay = absl::Milliseconds(-1);
  EXPECT_EQ(SizeOrDelayPolicy::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.default_keep_rate = 1.5f;
  EXPECT_EQ(SizeOrDelayPolicy::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.default_keep_rate = 0.0f;
  EXPECT_EQ(SizeOrDelayPolicy::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve
