// A bounded pool of worker threads for the slow step of admission (image decoding and
// preprocessing, then the hand-off to the batching queue), so that the front ends' threads
// (gRPC reactions, the REST workers) only do cheap checks and return.
//
// Behaviour
//   * Submit(job): the job waits in one FIFO queue for a free worker and then runs exactly
//     once, as job(OkStatus()). Workers take jobs in submission order; jobs on different
//     workers run concurrently, so they may finish in any order.
//   * Bounded: at most Options::max_queued jobs wait (not counting the ones running). A
//     Submit beyond that is refused at once with RESOURCE_EXHAUSTED and the job is destroyed
//     without being called; the caller still owns the request and answers it.
//   * Shutdown(): from then on Submit refuses with UNAVAILABLE. Every job still waiting is
//     called exactly once with UNAVAILABLE (on the thread calling Shutdown, in order), so it
//     can answer its request instead of being dropped; jobs already running finish; then the
//     workers are joined. Idempotent; the destructor runs it.
//   * So every job accepted by Submit is called exactly once: with OK on a worker, or with
//     UNAVAILABLE at Shutdown.
//
// Thread-safety: Submit, pending() and Shutdown may be called from any thread; a job must
// not call Shutdown (it would wait for itself). No global state; no clock (the pool makes
// no decision that depends on time: a job checks its own deadline when it runs).
#ifndef VITSERVE_SERVER_SERVING_DECODE_POOL_H_
#define VITSERVE_SERVER_SERVING_DECODE_POOL_H_

#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace vitserve {

class DecodePool {
 public:
  struct Options {
    // Worker threads (>= 1).
    int num_threads = 2;
    // Jobs that may wait for a worker (>= 1); more are refused with RESOURCE_EXHAUSTED.
    int max_queued = 256;
  };
  // Called once with OK (run it) or UNAVAILABLE (the pool shut down before it ran).
  using Job = absl::AnyInvocable<void(absl::Status)>;

  // Starts the workers. INVALID_ARGUMENT for options out of range.
  static absl::StatusOr<std::unique_ptr<DecodePool>> Create(const Options& options);
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Queues `job`. OK: it will be called exactly once. RESOURCE_EXHAUSTED (queue full) or
  // UNAVAILABLE (shut down): it was destroyed without being called.
  absl::Status Submit(Job job);
  // Waiting and running jobs together (0 once everything submitted has finished).
  int pending() const;
  void Shutdown();

 private:
  explicit DecodePool(const Options& options);
  void Work();

  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex shutdown_mu_;  // serialises Shutdown() callers
  std::vector<std::thread> workers_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_DECODE_POOL_H_
