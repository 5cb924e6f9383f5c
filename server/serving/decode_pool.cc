#include "server/serving/decode_pool.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::unique_ptr<DecodePool>> DecodePool::Create(const Options& options) {
  if (options.num_threads < 1 || options.max_queued < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode pool: threads and queue size must be >= 1, got ", options.num_threads,
                     " and ", options.max_queued));
  }
  std::unique_ptr<DecodePool> pool(new DecodePool(options));
  pool->workers_.reserve(static_cast<size_t>(options.num_threads));
  for (int i = 0; i < options.num_threads; ++i) {
    pool->workers_.emplace_back([p = pool.get()] { p->Work(); });
  }
  return pool;
}

DecodePool::DecodePool(const Options& options) : options_(options) {}

DecodePool::~DecodePool() { Shutdown(); }

absl::Status DecodePool::Submit(Job job) {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("server is shutting down; not accepting requests");
  }
  if (static_cast<int>(queue_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(absl::StrCat("decode queue full: ", queue_.size(),
                                                     " requests waiting to be decoded (max ",
                                                     options_.max_queued, "); retry later"));
  }
  queue_.push_back(std::move(job));
  return absl::OkStatus();
}

int DecodePool::pending() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size()) + running_;
}

void DecodePool::Work() {
  for (;;) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      // Shutdown() answers whatever is still queued; a worker only finishes its own job.
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    job(absl::OkStatus());
    job = nullptr;  // the job's captures are released before it counts as finished
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void DecodePool::Shutdown() {
  absl::MutexLock serial(&shutdown_mu_);
  std::deque<Job> left;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    left.swap(queue_);
  }
  for (Job& job : left) {
    job(absl::UnavailableError("server shut down before the request was decoded"));
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

}  // namespace vitserve
