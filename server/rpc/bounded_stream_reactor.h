// A bidirectional-streaming gRPC reactor with bounded in-flight work, independent of the
// message types: every request read is handed to `start`, which must call its `answer`
// exactly once (from any thread, possibly before `start` returns) with the response to
// write; responses are written one at a time in completion order. At most `max_in_flight`
// requests are unanswered (started, or waiting to be written); the reactor stops reading
// until one is written (back-pressure through HTTP/2 flow control). It finishes once the
// client has half-closed (or gone) and every started request has been answered; OK, or
// CANCELLED when the client cancelled. On cancellation `on_cancel` runs once (e.g. to
// cancel the started work); answers still arrive and are dropped.
//
// Used by ClassifyStream (inference_service.cc) and ModelStreamInfer (oip_grpc_service.cc).
// All Start*/Finish calls are made without mu_ held; Finish happens only when no read,
// write or answer is outstanding.
#ifndef VITSERVE_SERVER_RPC_BOUNDED_STREAM_REACTOR_H_
#define VITSERVE_SERVER_RPC_BOUNDED_STREAM_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <utility>

#include "absl/synchronization/mutex.h"

namespace vitserve {

template <typename Request, typename Response>
class BoundedStreamReactor final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  using Answer = std::function<void(Response)>;
  using Start = std::function<void(const Request&, Answer)>;

  BoundedStreamReactor(int max_in_flight, Start start, std::function<void()> on_cancel)
      : max_in_flight_(max_in_flight), start_(std::move(start)), on_cancel_(std::move(on_cancel)) {
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      {
        absl::MutexLock lock(&mu_);
        ++pending_;
        ++started_;
      }
      start_(request_, [this](Response response) { OnAnswer(std::move(response)); });
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) reads_done_ = true;
      actions = NextActionsLocked();
    }
    Execute(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      --pending_;
      if (!ok) {  // the client is gone: drop what is still to be written
        write_failed_ = true;
        pending_ -= static_cast<int>(write_queue_.size());
        write_queue_.clear();
      }
      actions = NextActionsLocked();
    }
    Execute(actions);
  }

  void OnCancel() override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      reads_done_ = true;
      actions = NextActionsLocked();
    }
    if (on_cancel_) on_cancel_();
    Execute(actions);
  }

  void OnDone() override { delete this; }

 private:
  struct Actions {
    const Response* write = nullptr;
    bool read = false;
    bool finish = false;
    grpc::Status finish_status;
  };

  void OnAnswer(Response response) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --started_;
      if (write_failed_) {
        --pending_;
      } else {
        write_queue_.push_back(std::move(response));
      }
      actions = NextActionsLocked();
    }
    Execute(actions);
  }

  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    if (!writing_ && !write_queue_.empty()) {
      current_write_ = std::move(write_queue_.front());
      write_queue_.pop_front();
      writing_ = true;
      a.write = &current_write_;
    }
    if (!reading_ && !reads_done_ && pending_ < max_in_flight_) {
      reading_ = true;
      a.read = true;
    }
    if (reads_done_ && !reading_ && !writing_ && started_ == 0 && write_queue_.empty()) {
      finished_ = true;
      a.finish = true;
      a.finish_status = cancelled_ ? grpc::Status::CANCELLED : grpc::Status::OK;
    }
    return a;
  }

  // Finish last: after it the reactor may be deleted at any moment.
  void Execute(const Actions& a) {
    if (a.write != nullptr) this->StartWrite(a.write);
    if (a.read) this->StartRead(&request_);
    if (a.finish) this->Finish(a.finish_status);
  }

  const int max_in_flight_;
  const Start start_;
  const std::function<void()> on_cancel_;
  Request request_;  // only touched by the one outstanding read

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // Started requests not yet written (running, or waiting in write_queue_).
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  // Started requests not yet answered.
  int started_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<Response> write_queue_ ABSL_GUARDED_BY(mu_);
  Response current_write_;  // owned by the outstanding write
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_BOUNDED_STREAM_REACTOR_H_
