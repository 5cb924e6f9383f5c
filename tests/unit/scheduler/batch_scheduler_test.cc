#include "server/scheduler/batch_scheduler.h"

#include <atomic>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/util/clock.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kDelay = absl::Milliseconds(10);
// Upper bound on real time a test waits for batch threads to react (never reached when
// the scheduler is correct; it only turns a hang into a failure).
constexpr absl::Duration kReactionTimeout = absl::Seconds(20);

struct TestTask {
  int id = 0;
  TaskAttributes attrs;
  std::atomic<bool> cancelled{false};

  const TaskAttributes& attributes() const { return attrs; }
  bool IsCancelled() const { return cancelled.load(); }
};

struct Batch {
  std::string key;
  float keep_rate;
  std::vector<int> ids;
};

// Records what the scheduler hands back; lets a test wait for a number of answers.
class Recorder {
 public:
  BatchScheduler<TestTask>::Callbacks Callbacks() {
    return {[this](const std::string& key, float keep_rate,
                   std::vector<std::unique_ptr<TestTask>> batch) {
              Batch b{key, keep_rate, {}};
              for (const auto& t : batch) b.ids.push_back(t->id);
              absl::MutexLock l(&mu_);
              answered_ += static_cast<int>(b.ids.size());
              batches_.push_back(std::move(b));
            },
            [this](std::unique_ptr<TestTask> task, absl::Status status) {
              absl::MutexLock l(&mu_);
              ++answered_;
              rejected_[task->id] = status.code();
            }};
  }
  // True once `n` tasks have been answered (run or rejected).
  bool WaitForAnswers(int n) {
    absl::MutexLock l(&mu_);
    auto done = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return answered_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), kReactionTimeout);
  }
  std::vector<Batch> batches() {
    absl::MutexLock l(&mu_);
    return batches_;
  }
  std::map<int, absl::StatusCode> rejected() {
    absl::MutexLock l(&mu_);
    return rejected_;
  }
  int answered() {
    absl::MutexLock l(&mu_);
    return answered_;
  }

 private:
  absl::Mutex mu_;
  int answered_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Batch> batches_ ABSL_GUARDED_BY(mu_);
  std::map<int, absl::StatusCode> rejected_ ABSL_GUARDED_BY(mu_);
};

class BatchSchedulerTest : public ::testing::Test {
 protected:
  BatchScheduler<TestTask>::Options DefaultOptions() {
    BatchScheduler<TestTask>::Options options;
    options.max_batch_size = 4;
    options.max_queue_delay = kDelay;
    options.default_keep_rate = 1.0f;
    options.max_enqueued = 100;
    options.num_batch_threads = 1;
    return options;
  }

  void Start(const BatchScheduler<TestTask>::Options& options) {
    auto s = BatchScheduler<TestTask>::Create(options, recorder_.Callbacks(), &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    scheduler_ = std::move(*s);
  }

  std::unique_ptr<TestTask> NewTask(int id, float keep_rate = 0.0f,
                                    absl::Time deadline = absl::InfiniteFuture()) {
    auto t = std::make_unique<TestTask>();
    t->id = id;
    t->attrs.keep_rate = keep_rate;
    t->attrs.deadline = deadline;
    return t;
  }

  // The queue named `name` of `s`, added on first use.
  BatchScheduler<TestTask>::Queue* QueueOf(BatchScheduler<TestTask>& s, const std::string& name) {
    BatchScheduler<TestTask>::Queue*& queue = queues_[{&s, name}];
    if (queue == nullptr) {
      auto added = s.AddQueue(name);
      EXPECT_TRUE(added.ok()) << added.status();
      if (added.ok()) queue = *added;
    }
    return queue;
  }

  void ScheduleOk(const std::string& key, std::unique_ptr<TestTask> task) {
    ASSERT_TRUE(scheduler_->Schedule(QueueOf(*scheduler_, key), &task).ok());
    EXPECT_EQ(task, nullptr);  // ownership moved
  }

  FakeClock clock_{absl::FromUnixSeconds(1000)};
  Recorder recorder_;
  std::unique_ptr<BatchScheduler<TestTask>> scheduler_;
  std::map<std::pair<const void*, std::string>, BatchScheduler<TestTask>::Queue*> queues_;
};

TEST_F(BatchSchedulerTest, FullBatchRunsWithoutWaitingForTheDelay) {
  Start(DefaultOptions());
  for (int id = 0; id < 4; ++id) ScheduleOk("m", NewTask(id, 0.5f));
  // The fake clock never moves: only the batch size can trigger this batch, and a
  // scheduler that ran early would have split it.
  ASSERT_TRUE(recorder_.WaitForAnswers(4));
  std::vector<Batch> batches = recorder_.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(batches[0].ids, ElementsAre(0, 1, 2, 3));
  EXPECT_FLOAT_EQ(batches[0].keep_rate, 0.5f);
  EXPECT_EQ(batches[0].key, "m");
}

TEST_F(BatchSchedulerTest, PartialBatchRunsAfterDelayCountedFromFirstTask) {
  Start(DefaultOptions());
  ScheduleOk("m", NewTask(0));
  clock_.Advance(absl::Milliseconds(6));
  ScheduleOk("m", NewTask(1));
  EXPECT_EQ(scheduler_->NumEnqueued(), 2);
  // 10 ms after the first task, 4 ms after the second: due now.
  clock_.Advance(absl::Milliseconds(4));
  ASSERT_TRUE(recorder_.WaitForAnswers(2));
  std::vector<Batch> batches = recorder_.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(batches[0].ids, ElementsAre(0, 1));
  EXPECT_FLOAT_EQ(batches[0].keep_rate, 1.0f);  // requested 0 -> default
  EXPECT_EQ(scheduler_->NumEnqueued(), 0);
}

TEST_F(BatchSchedulerTest, SeparateKeysAreNeverMixed) {
  Start(DefaultOptions());
  ScheduleOk("a", NewTask(0));
  ScheduleOk("b", NewTask(1));
  ScheduleOk("a", NewTask(2));
  ScheduleOk("b", NewTask(3));
  ScheduleOk("b", NewTask(4));
  clock_.Advance(kDelay);
  ASSERT_TRUE(recorder_.WaitForAnswers(5));
  std::map<std::string, std::vector<int>> by_key;
  for (const Batch& b : recorder_.batches()) {
    EXPECT_TRUE(by_key.emplace(b.key, b.ids).second) << "two batches for key " << b.key;
  }
  EXPECT_THAT(by_key["a"], ElementsAre(0, 2));
  EXPECT_THAT(by_key["b"], ElementsAre(1, 3, 4));
}

TEST_F(BatchSchedulerTest, FullQueueRefusesAtOnceAndCallerKeepsTask) {
  auto options = DefaultOptions();
  options.max_enqueued = 2;
  options.max_queue_delay = absl::Hours(1);
  Start(options);
  ScheduleOk("a", NewTask(0));
  ScheduleOk("b", NewTask(1));  // the bound is over all queues together
  auto third = NewTask(2);
  absl::Status status = scheduler_->Schedule(QueueOf(*scheduler_, "a"), &third);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("max 2"));
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(third->id, 2);
  scheduler_->Shutdown();
  EXPECT_EQ(recorder_.answered(), 2);
}

TEST_F(BatchSchedulerTest, ExpiredTaskLeavesQueueWithoutRunning) {
  Start(DefaultOptions());
  const absl::Time t0 = clock_.Now();
  ScheduleOk("m", NewTask(0, 0.0f, t0 + absl::Milliseconds(5)));
  ScheduleOk("m", NewTask(1));
  clock_.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(recorder_.WaitForAnswers(1));
  EXPECT_THAT(recorder_.rejected(),
              ElementsAre(std::make_pair(0, absl::StatusCode::kDeadlineExceeded)));
  EXPECT_THAT(recorder_.batches(), IsEmpty());
  clock_.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(recorder_.WaitForAnswers(2));
  std::vector<Batch> batches = recorder_.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_THAT(batches[0].ids, ElementsAre(1));
}

TEST_F(BatchSchedulerTest, TaskPastDeadlineIsRefusedAtSchedule) {
  Start(DefaultOptions());
  auto task = NewTask(0, 0.0f, clock_.Now());
  EXPECT_EQ(scheduler_->Schedule(QueueOf(*scheduler_, "m"), &task).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(task, nullptr);
}

TEST_F(BatchSchedulerTest, CancelledTaskIsAnsweredCancelledAfterKick) {
  auto options = DefaultOptions();
  options.max_queue_delay = absl::Hours(1);
  Start(options);
  auto task = NewTask(7);
  TestTask* raw = task.get();
  ScheduleOk("m", std::move(task));
  ScheduleOk("m", NewTask(8));
  raw->cancelled = true;
  scheduler_->Kick();
  ASSERT_TRUE(recorder_.WaitForAnswers(1));
  EXPECT_THAT(recorder_.rejected(), ElementsAre(std::make_pair(7, absl::StatusCode::kCancelled)));
  EXPECT_EQ(scheduler_->NumEnqueued(), 1);
  EXPECT_THAT(recorder_.batches(), IsEmpty());
}

TEST_F(BatchSchedulerTest, ShutdownDrainsEveryAcceptedTaskAndRefusesNewOnes) {
  auto options = DefaultOptions();
  options.max_queue_delay = absl::Hours(1);
  options.num_batch_threads = 2;
  Start(options);
  ScheduleOk("a", NewTask(0));
  ScheduleOk("b", NewTask(1, 0.5f));
  ScheduleOk("b", NewTask(2, 0.9f));
  scheduler_->Shutdown();  // returns only after every callback returned
  EXPECT_EQ(recorder_.answered(), 3);
  EXPECT_THAT(recorder_.rejected(), IsEmpty());
  std::vector<int> ran;
  for (const Batch& b : recorder_.batches()) {
    EXPECT_EQ(b.ids.size(), 1u);  // different keys / keep-rates: three batches
    ran.insert(ran.end(), b.ids.begin(), b.ids.end());
  }
  EXPECT_THAT(ran, UnorderedElementsAre(0, 1, 2));
  auto late = NewTask(3);
  EXPECT_EQ(scheduler_->Schedule(QueueOf(*scheduler_, "a"), &late).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_NE(late, nullptr);
}

TEST_F(BatchSchedulerTest, BatchThreadsRunBatchesConcurrently) {
  auto options = DefaultOptions();
  options.max_batch_size = 1;
  options.num_batch_threads = 2;
  absl::Mutex mu;
  int running = 0;
  int max_running = 0;
  BatchScheduler<TestTask>::Callbacks callbacks{
      [&](const std::string&, float, std::vector<std::unique_ptr<TestTask>>) {
        absl::MutexLock l(&mu);
        ++running;
        max_running = std::max(max_running, running);
        // Hold this batch until a second one is running too (or give up).
        auto two = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return max_running >= 2; };
        mu.AwaitWithTimeout(absl::Condition(&two), kReactionTimeout);
        --running;
      },
      [](std::unique_ptr<TestTask>, absl::Status) {}};
  auto s = BatchScheduler<TestTask>::Create(options, callbacks, &clock_);
  ASSERT_TRUE(s.ok()) << s.status();
  for (int id = 0; id < 2; ++id) {
    auto t = NewTask(id);
    ASSERT_TRUE((*s)->Schedule(QueueOf(**s, "m"), &t).ok());
  }
  (*s)->Shutdown();
  absl::MutexLock l(&mu);
  EXPECT_EQ(max_running, 2);
}

TEST_F(BatchSchedulerTest, EveryBatchThreadRunsThreadStartBeforeCreateReturns) {
  auto options = DefaultOptions();
  options.max_batch_size = 1;
  options.num_batch_threads = 3;
  absl::Mutex mu;
  std::set<std::thread::id> started;
  std::set<std::thread::id> ran_batches;
  BatchScheduler<TestTask>::Callbacks callbacks{
      [&](const std::string&, float, std::vector<std::unique_ptr<TestTask>>) {
        absl::MutexLock l(&mu);
        ran_batches.insert(std::this_thread::get_id());
      },
      [](std::unique_ptr<TestTask>, absl::Status) {},
      [&] {
        absl::SleepFor(absl::Milliseconds(20));  // a slow warm-up: Create() must wait
        absl::MutexLock l(&mu);
        started.insert(std::this_thread::get_id());
      }};
  auto s = BatchScheduler<TestTask>::Create(options, callbacks, &clock_);
  ASSERT_TRUE(s.ok()) << s.status();
  {
    absl::MutexLock l(&mu);
    EXPECT_EQ(started.size(), 3u);
    EXPECT_EQ(started.count(std::this_thread::get_id()), 0u);
  }
  for (int id = 0; id < 6; ++id) {
    auto t = NewTask(id);
    ASSERT_TRUE((*s)->Schedule(QueueOf(**s, "m"), &t).ok());
  }
  (*s)->Shutdown();
  absl::MutexLock l(&mu);
  EXPECT_FALSE(ran_batches.empty());
  for (const std::thread::id& id : ran_batches) EXPECT_EQ(started.count(id), 1u);
}

// What a test policy saw, appended from the policy's const methods (on batch threads and
// Schedule() callers) and read from the test thread.
template <typename T>
class SeenLog {
 public:
  void Add(T value) const {
    absl::MutexLock l(&mu_);
    values_.push_back(std::move(value));
  }
  std::vector<T> Get() const {
    absl::MutexLock l(&mu_);
    return values_;
  }

 private:
  mutable absl::Mutex mu_;
  mutable std::vector<T> values_ ABSL_GUARDED_BY(mu_);
};

// Runs the oldest task alone, predicting 30 ms; admits a task only if its deadline is
// after the time the device is predicted to be free. Records every Admit() call.
class BusyAdmissionPolicy : public BatchPolicy {
 public:
  static constexpr absl::Duration kPredicted = absl::Milliseconds(30);
  struct Call {
    absl::Time now;
    absl::Time free_at;
    size_t queue_size;
    absl::Time last_deadline;
    double arrival_rate;
  };
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time) const override {
    BatchDecision d;
    d.batch = {0};
    d.predicted_compute = kPredicted;
    return d;
  }
  absl::Status Admit(const QueueSnapshot& queue, absl::Time now,
                     absl::Time free_at) const override {
    calls_.Add({now, free_at, queue.tasks.size(), queue.tasks.back().attributes.deadline,
                queue.arrival_rate});
    if (queue.tasks.back().attributes.deadline < free_at) {
      return absl::DeadlineExceededError("device busy past the deadline");
    }
    return absl::OkStatus();
  }
  std::vector<Call> calls() const { return calls_.Get(); }

 private:
  SeenLog<Call> calls_;
};

TEST_F(BatchSchedulerTest, WhileEveryThreadIsBusyThePolicyAdmitsArrivals) {
  auto policy = std::make_unique<BusyAdmissionPolicy>();
  const BusyAdmissionPolicy* admission = policy.get();
  absl::Mutex mu;
  bool running = false;
  bool release = false;
  std::vector<int> ran;
  BatchScheduler<TestTask>::Callbacks callbacks{
      [&](const std::string&, float, std::vector<std::unique_ptr<TestTask>> batch) {
        absl::MutexLock l(&mu);
        for (const auto& t : batch) ran.push_back(t->id);
        running = true;
        auto released = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return release; };
        mu.AwaitWithTimeout(absl::Condition(&released), kReactionTimeout);
      },
      [](std::unique_ptr<TestTask>, absl::Status) {}};
  auto s =
      BatchScheduler<TestTask>::Create(DefaultOptions(), callbacks, &clock_, std::move(policy));
  ASSERT_TRUE(s.ok()) << s.status();
  const absl::Time t0 = clock_.Now();
  auto first = NewTask(0);
  ASSERT_TRUE((*s)->Schedule(QueueOf(**s, "m"), &first).ok());
  {
    absl::MutexLock l(&mu);
    auto started = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return running; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&started), kReactionTimeout));
  }
  EXPECT_THAT(admission->calls(), IsEmpty());  // a free thread: no admission test

  // The only thread is busy until t0 + 30 ms (the policy's prediction).
  auto tight = NewTask(1, 0.0f, t0 + absl::Milliseconds(10));
  absl::Status refused = (*s)->Schedule(QueueOf(**s, "m"), &tight);
  EXPECT_EQ(refused.code(), absl::StatusCode::kDeadlineExceeded) << refused;
  ASSERT_NE(tight, nullptr);  // refused: the caller keeps it
  auto loose = NewTask(2, 0.0f, t0 + absl::Milliseconds(40));
  ASSERT_TRUE((*s)->Schedule(QueueOf(**s, "m"), &loose).ok());

  std::vector<BusyAdmissionPolicy::Call> calls = admission->calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].free_at, t0 + BusyAdmissionPolicy::kPredicted);
  EXPECT_EQ(calls[0].queue_size, 1u);  // the new task alone (task 0 left the queue)
  EXPECT_EQ(calls[0].last_deadline, t0 + absl::Milliseconds(10));
  EXPECT_EQ(calls[1].queue_size, 1u);
  // Every arrival counts towards the offered load, the refused one too (all at t0, so each
  // adds 1 / time constant).
  const double per_arrival = 1.0 / absl::ToDoubleSeconds(DefaultOptions().arrival_rate_window);
  EXPECT_DOUBLE_EQ(calls[0].arrival_rate, 2.0 * per_arrival);
  EXPECT_DOUBLE_EQ(calls[1].arrival_rate, 3.0 * per_arrival);
  {
    absl::MutexLock l(&mu);
    release = true;
  }
  (*s)->Shutdown();
  absl::MutexLock l(&mu);
  EXPECT_THAT(ran, ElementsAre(0, 2));
}

// Runs every queued task at once and records the arrival rate each decision was told.
class RateRecordingPolicy : public BatchPolicy {
 public:
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time) const override {
    rates_.Add(queue.arrival_rate);
    BatchDecision d;
    for (size_t i = 0; i < queue.tasks.size(); ++i) d.batch.push_back(i);
    return d;
  }
  std::vector<double> rates() const { return rates_.Get(); }

 private:
  SeenLog<double> rates_;
};

TEST_F(BatchSchedulerTest, PolicySeesTheQueuesRecentArrivalRate) {
  auto policy = std::make_unique<RateRecordingPolicy>();
  const RateRecordingPolicy* recording = policy.get();
  auto options = DefaultOptions();
  options.arrival_rate_window = absl::Seconds(1);
  auto s =
      BatchScheduler<TestTask>::Create(options, recorder_.Callbacks(), &clock_, std::move(policy));
  ASSERT_TRUE(s.ok()) << s.status();
  // Three arrivals 100 ms apart; each is decided (and answered) before the clock moves.
  for (int id = 0; id < 3; ++id) {
    if (id > 0) clock_.Advance(absl::Milliseconds(100));
    auto task = NewTask(id);
    ASSERT_TRUE((*s)->Schedule(QueueOf(**s, "m"), &task).ok());
    ASSERT_TRUE(recorder_.WaitForAnswers(id + 1));
  }
  (*s)->Shutdown();
  const std::vector<double> rates = recording->rates();
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_NEAR(rates[0], 1.0, 1e-9);
  EXPECT_NEAR(rates[1], 1.0 + std::exp(-0.1), 1e-9);
  EXPECT_NEAR(rates[2], 1.0 + std::exp(-0.1) + std::exp(-0.2), 1e-9);
}

// Runs every queued task at once at a fixed keep-rate.
class FixedRatePolicy : public BatchPolicy {
 public:
  explicit FixedRatePolicy(float keep_rate) : keep_rate_(keep_rate) {}
  BatchDecision Decide(const QueueSnapshot& queue, absl::Time) const override {
    BatchDecision d;
    for (size_t i = 0; i < queue.tasks.size(); ++i) d.batch.push_back(i);
    d.keep_rate = keep_rate_;
    return d;
  }

 private:
  const float keep_rate_;
};

TEST_F(BatchSchedulerTest, EachQueueIsDecidedByItsOwnPolicyAndNamesAreUnique) {
  Start(DefaultOptions());
  auto fixed = scheduler_->AddQueue("fixed", std::make_unique<FixedRatePolicy>(0.3f));
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(scheduler_->AddQueue("fixed").status().code(), absl::StatusCode::kInvalidArgument);
  auto task = NewTask(0, 0.0f);
  ASSERT_TRUE(scheduler_->Schedule(*fixed, &task).ok());
  ASSERT_TRUE(recorder_.WaitForAnswers(1));
  ScheduleOk("default", NewTask(1, 0.0f));  // the default policy: 1.0 for "server chooses"
  clock_.Advance(kDelay);
  ASSERT_TRUE(recorder_.WaitForAnswers(2));
  const std::vector<Batch> batches = recorder_.batches();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].key, "fixed");
  EXPECT_FLOAT_EQ(batches[0].keep_rate, 0.3f);
  EXPECT_EQ(batches[1].key, "default");
  EXPECT_FLOAT_EQ(batches[1].keep_rate, 1.0f);
  auto none = NewTask(2);
  EXPECT_EQ(scheduler_->Schedule(nullptr, &none).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BatchSchedulerTest, CreateValidatesOptions) {
  auto options = DefaultOptions();
  options.num_batch_threads = 0;
  EXPECT_EQ(
      BatchScheduler<TestTask>::Create(options, recorder_.Callbacks(), &clock_).status().code(),
      absl::StatusCode::kInvalidArgument);
  options = DefaultOptions();
  options.max_enqueued = 0;
  EXPECT_EQ(
      BatchScheduler<TestTask>::Create(options, recorder_.Callbacks(), &clock_).status().code(),
      absl::StatusCode::kInvalidArgument);
  options = DefaultOptions();
  options.arrival_rate_window = absl::ZeroDuration();
  EXPECT_EQ(
      BatchScheduler<TestTask>::Create(options, recorder_.Callbacks(), &clock_).status().code(),
      absl::StatusCode::kInvalidArgument);
  options = DefaultOptions();
  EXPECT_EQ(BatchScheduler<TestTask>::Create(options, {}, &clock_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve
