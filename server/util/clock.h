// Injected time. Production uses RealClock; tests use FakeClock and advance it by hand.
#ifndef VITSERVE_SERVER_UTIL_CLOCK_H_
#define VITSERVE_SERVER_UTIL_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vitserve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // Waits on `mu` (held) until `cond` holds or `deadline` passes; returns cond's value.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                 absl::Time deadline) const = 0;
};

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) const override {
    return mu->AwaitWithDeadline(cond, deadline);
  }
};

// A clock that moves only when told to. AwaitWithDeadline returns once `cond` holds or
// the fake time has passed the deadline (checked whenever Advance is called).
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() const override {
    absl::MutexLock l(&time_mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock l(&time_mu_);
    now_ += d;
  }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) const override {
    // Poll in short real-time slices so Advance() from another thread is observed.
    while (!cond.Eval()) {
      if (Now() >= deadline) return false;
      mu->AwaitWithTimeout(cond, absl::Milliseconds(1));
    }
    return true;
  }

 private:
  mutable absl::Mutex time_mu_;
  absl::Time now_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_UTIL_CLOCK_H_
