#include "server/model/cuda_inference_model.h"

#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/spec/cost_model.h"

namespace vitserve {
namespace {

// One queued Run() call; the caller waits on `done`.
struct Job {
  absl::Span<const ImageTensor* const> images;
  float keep_rate = 1.0f;
  absl::StatusOr<std::vector<ImageResult>> result;
  absl::Notification done;
};

// A captured forward: replaying `graph` reads `input` and writes `logits`.
struct CapturedForward {
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor input;   // [B, C, H, W] float32, device
  torch::Tensor logits;  // [B, classes] float32, device
};

// What the eager run of one (keep-rate, batch) key taught: its token counts and whether
// a graph may stand in for it.
struct KeyState {
  bool seen = false;  // the key ran once (eagerly)
  std::vector<int> tokens_per_stage;
  bool graphable = false;
  std::unique_ptr<CapturedForward> captured;  // null until captured
};

class CudaInferenceModel : public InferenceModel {
 public:
  explicit CudaInferenceModel(CudaModelParts parts)
      : parts_(std::move(parts)),
        stream_(c10::cuda::getStreamFromPool(false, parts_.device.index())) {
    for (int i = 0; i < parts_.spec.arch.depth; ++i) {
      blocks_.push_back(parts_.vit->options().block_shape(i));
    }
    worker_ = std::thread([this] { WorkerLoop(); });
  }

  ~CudaInferenceModel() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    worker_.join();
  }

  const ModelSpec& spec() const override { return parts_.spec; }
  std::vector<BlockShape> block_shapes() const override { return blocks_; }
  double weight_zero_fraction() const override { return parts_.weight_zero_fraction; }
  std::string device() const override { return parts_.device.str(); }

  absl::StatusOr<std::vector<ImageResult>> Run(absl::Span<const ImageTensor* const> images,
                                               float keep_rate) override {
    if (absl::Status s = Validate(images, keep_rate); !s.ok()) return s;
    if (images.empty()) return std::vector<ImageResult>();
    Job job;
    job.images = images;
    job.keep_rate = keep_rate;
    {
      absl::MutexLock lock(&mu_);
      queue_.push_back(&job);
    }
    job.done.WaitForNotification();
    return std::move(job.result);
  }

 private:
  absl::Status Validate(absl::Span<const ImageTensor* const> images, float keep_rate) const;
  void WorkerLoop();
  absl::StatusOr<std::vector<ImageResult>> Execute(const Job& job);
  // Packs the images into the pinned buffer; returns its [n, C, H, W] view.
  torch::Tensor Stage(absl::Span<const ImageTensor* const> images);
  // The captured work: dtype conversion, the method's forward, float32 logits.
  PrunedOutput Forward(const torch::Tensor& input, float keep_rate);
  // Captures `key`'s forward on the worker's stream; false (and eager from then on) when
  // the forward cannot be captured.
  bool Capture(KeyState& state, int64_t batch, float keep_rate);

  CudaModelParts parts_;  // the worker alone runs the module
  std::vector<BlockShape> blocks_;
  c10::cuda::CUDAStream stream_;

  // Worker-thread state (no lock: only the worker touches it).
  torch::Tensor host_in_;   // pinned [capacity, C, H, W] float32
  torch::Tensor host_out_;  // pinned [capacity, classes] float32
  std::map<std::pair<float, int64_t>, KeyState> keys_;
  int captured_ = 0;

  absl::Mutex mu_;
  std::deque<Job*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

absl::Status CudaInferenceModel::Validate(absl::Span<const ImageTensor* const> images,
                                          float keep_rate) const {
  if (!std::isfinite(keep_rate) || keep_rate <= 0.0f || keep_rate > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("keep_rate ", keep_rate, " is outside (0, 1]"));
  }
  const Architecture& a = parts_.spec.arch;
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageTensor* img = images[i];
    if (img == nullptr || img->channels != a.in_chans || img->height != a.image_size ||
        img->width != a.image_size ||
        img->data.size() != static_cast<size_t>(a.in_chans) * a.image_size * a.image_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("image ", i, " does not have model '", parts_.spec.name, "''s input shape [",
                       a.in_chans, ", ", a.image_size, ", ", a.image_size, "]"));
    }
  }
  return absl::OkStatus();
}

void CudaInferenceModel::WorkerLoop() {
  c10::cuda::CUDAGuard device_guard(parts_.device.index());
  c10::cuda::CUDAStreamGuard stream_guard(stream_);
  for (;;) {
    Job* job = nullptr;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](CudaInferenceModel* m)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(m->mu_) { return m->stopping_ || !m->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping, nothing left
      job = queue_.front();
      queue_.pop_front();
    }
    job->result = Execute(*job);
    job->done.Notify();
  }
}

torch::Tensor CudaInferenceModel::Stage(absl::Span<const ImageTensor* const> images) {
  const Architecture& a = parts_.spec.arch;
  const int64_t n = static_cast<int64_t>(images.size());
  if (!host_in_.defined() || host_in_.size(0) < n) {
    const auto pinned = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(true);
    host_in_ = torch::empty({n, a.in_chans, a.image_size, a.image_size}, pinned);
    host_out_ = torch::empty({n, a.num_classes}, pinned);
  }
  const int64_t per_image = static_cast<int64_t>(a.in_chans) * a.image_size * a.image_size;
  float* dst = host_in_.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * per_image, images[i]->data.data(), per_image * sizeof(float));
  }
  return host_in_.narrow(0, 0, n);
}

PrunedOutput CudaInferenceModel::Forward(const torch::Tensor& input, float keep_rate) {
  PrunedOutput out = parts_.pruner->Forward(*parts_.vit, input.to(parts_.dtype), keep_rate);
  out.logits = out.logits.to(torch::kFloat32);
  return out;
}

bool CudaInferenceModel::Capture(KeyState& state, int64_t batch, float keep_rate) {
  const Architecture& a = parts_.spec.arch;
  auto captured = std::make_unique<CapturedForward>();
  captured->input =
      torch::empty({batch, a.in_chans, a.image_size, a.image_size},
                   torch::TensorOptions().dtype(torch::kFloat32).device(parts_.device));
  captured->graph = std::make_unique<at::cuda::CUDAGraph>();
  try {
    captured->graph->capture_begin();
    try {
      captured->logits = Forward(captured->input, keep_rate).logits;
    } catch (...) {
      captured->graph->capture_end();  // ends the (invalidated) capture; throws too
      throw;
    }
    captured->graph->capture_end();
  } catch (const std::exception& e) {
    (void)cudaGetLastError();  // clear the failed capture's (non-sticky) error
    state.graphable = false;
    return false;
  }
  state.captured = std::move(captured);
  ++captured_;
  return true;
}

absl::StatusOr<std::vector<ImageResult>> CudaInferenceModel::Execute(const Job& job) {
  const int64_t n = static_cast<int64_t>(job.images.size());
  absl::StatusOr<CostEstimate> cost =
      EstimateCost(parts_.spec.arch, parts_.spec.pruning, job.keep_rate, blocks_);
  if (!cost.ok()) return cost.status();
  try {
    c10::InferenceMode guard;
    const torch::Tensor staged = Stage(job.images);
    KeyState& state = keys_[{job.keep_rate, n}];
    torch::Tensor logits;
    std::vector<std::vector<int>> per_image;  // SViTE: token counts per image
    if (state.captured != nullptr) {
      state.captured->input.copy_(staged, /*non_blocking=*/true);
      state.captured->graph->replay();
      logits = state.captured->logits;
    } else {
      PrunedOutput out =
          Forward(staged.to(parts_.device, torch::kFloat32, /*non_blocking=*/true), job.keep_rate);
      logits = out.logits;
      per_image = std::move(out.image_tokens_per_stage);
      if (!state.seen) {  // the warm-up run of this key
        state.seen = true;
        state.tokens_per_stage = out.tokens_per_stage;
        state.graphable = parts_.cuda_graphs && per_image.empty();
      } else if (state.graphable && captured_ < kMaxCudaGraphs) {
        Capture(state, n, job.keep_rate);  // replayed from the next batch of this key on
      }
    }
    torch::Tensor host = host_out_.narrow(0, 0, n);
    host.copy_(logits, /*non_blocking=*/true);
    stream_.synchronize();
    std::vector<ImageResult> results(n);
    const int64_t classes = host.size(1);
    const float* l = host.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      results[i].logits.assign(l + i * classes, l + (i + 1) * classes);
      results[i].tokens_per_stage = per_image.empty() ? state.tokens_per_stage : per_image[i];
      results[i].macs = cost->macs;
    }
    return results;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch/CUDA failure running model '",
                                            parts_.spec.name, "': ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("failure running model '", parts_.spec.name, "': ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceModel>> CreateCudaInferenceModel(CudaModelParts parts) {
  if (!parts.device.is_cuda()) {
    return absl::FailedPreconditionError(
        absl::StrCat("CreateCudaInferenceModel: device ", parts.device.str(), " is not CUDA"));
  }
  if (!parts.vit || parts.pruner == nullptr) {
    return absl::InvalidArgumentError("CreateCudaInferenceModel: no module or pruner");
  }
  return std::unique_ptr<InferenceModel>(new CudaInferenceModel(std::move(parts)));
}

}  // namespace vitserve
