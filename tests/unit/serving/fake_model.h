// Test fixtures for the serving core and its front ends: a small deterministic in-test
// model (the real LibTorch model is covered by tests/integration) and request builders.
#ifndef VITSERVE_TESTS_UNIT_SERVING_FAKE_MODEL_H_
#define VITSERVE_TESTS_UNIT_SERVING_FAKE_MODEL_H_

#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/executor/inference_model.h"
#include "server/spec/cost_model.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {
namespace testing_fixtures {

using vitserve::v1::ClassifyRequest;

// Upper bound for anything the test waits on; reached only when something is broken.
inline constexpr absl::Duration kTestTimeout = absl::Seconds(30);
inline constexpr int kImageSize = 16;
inline constexpr int kChannels = 3;
inline constexpr int kNumClasses = 4;

inline ModelSpec TinySpec() {
  ModelSpec spec;
  spec.name = "tiny";
  spec.version = "7";
  spec.arch.image_size = kImageSize;
  spec.arch.patch_size = 4;
  spec.arch.in_chans = kChannels;
  spec.arch.embed_dim = 16;
  spec.arch.depth = 4;
  spec.arch.num_heads = 2;
  spec.arch.num_classes = kNumClasses;
  spec.pruning.method = Method::kEViT;
  spec.pruning.default_keep_rate = 0.7f;
  spec.pruning.min_keep_rate = 0.5f;
  spec.pruning.max_keep_rate = 1.0f;
  spec.labels = {"zero", "one", "two", "three"};
  spec.calibration = {{"evit", 0.5f, 0.6, 0.9, 0}, {"evit", 1.0f, 0.8, 1.0, 0}};
  return spec;
}

// Deterministic stand-in for the LibTorch model: logit c = (c + 1) * x0 - c where x0 is
// the image's first value, token counts and MACs from the real cost model. Records every
// batch; can hold Run() until released so tests control when the batch thread is busy.
class FakeModel : public InferenceModel {
 public:
  explicit FakeModel(ModelSpec spec) : spec_(std::move(spec)) {}
  ~FakeModel() override {
    if (on_destroy_) on_destroy_();
  }

  // Called from the destructor (on whichever thread drops the last reference): lets a test
  // see a version released without touching the model afterwards.
  void OnDestroy(std::function<void()> f) { on_destroy_ = std::move(f); }

  const ModelSpec& spec() const override { return spec_; }
  std::vector<BlockShape> block_shapes() const override { return {}; }
  std::string device() const override { return "cpu"; }
  // Changes with every run, like the real model's one-image split line.
  std::vector<std::string> kernel_choices() const override {
    absl::MutexLock l(&mu_);
    return {"fake kernel", "runs " + std::to_string(runs_)};
  }

  absl::StatusOr<std::vector<ImageResult>> Run(absl::Span<const ImageTensor* const> images,
                                               float keep_rate) override {
    absl::MutexLock l(&mu_);
    for (const ImageTensor* image : images) seen_.push_back(image->data[0]);
    batch_sizes_.push_back(static_cast<int>(images.size()));
    keep_rates_.push_back(keep_rate);
    threads_.push_back(std::this_thread::get_id());
    ++runs_;
    auto released = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !hold_; };
    mu_.AwaitWithTimeout(absl::Condition(&released), kTestTimeout);
    absl::StatusOr<CostEstimate> cost = EstimateCost(spec_.arch, spec_.pruning, keep_rate);
    if (!cost.ok()) return cost.status();
    std::vector<ImageResult> out;
    for (const ImageTensor* image : images) {
      ImageResult r;
      for (int c = 0; c < kNumClasses; ++c) r.logits.push_back((c + 1) * image->data[0] - c);
      r.tokens_per_stage = cost->tokens_per_stage;
      r.macs = cost->macs;
      out.push_back(std::move(r));
    }
    return out;
  }

  void Hold() {
    absl::MutexLock l(&mu_);
    hold_ = true;
  }
  void Release() {
    absl::MutexLock l(&mu_);
    hold_ = false;
  }
  // Waits until Run() has been entered `n` times.
  bool WaitForRuns(int n) {
    absl::MutexLock l(&mu_);
    auto reached = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return runs_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kTestTimeout);
  }
  std::vector<float> seen() {
    absl::MutexLock l(&mu_);
    return seen_;
  }
  std::vector<int> batch_sizes() {
    absl::MutexLock l(&mu_);
    return batch_sizes_;
  }
  std::vector<float> keep_rates() {
    absl::MutexLock l(&mu_);
    return keep_rates_;
  }
  std::vector<std::thread::id> threads() {
    absl::MutexLock l(&mu_);
    return threads_;
  }
  // Forgets every run so far (the service's warm-up runs, for tests about traffic).
  void ClearRuns() {
    absl::MutexLock l(&mu_);
    runs_ = 0;
    seen_.clear();
    batch_sizes_.clear();
    keep_rates_.clear();
    threads_.clear();
  }

 private:
  std::function<void()> on_destroy_;
  const ModelSpec spec_;
  mutable absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  int runs_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<float> seen_ ABSL_GUARDED_BY(mu_);
  std::vector<int> batch_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<float> keep_rates_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

// A preprocessed tensor whose every value is `value` (the fake model reads the first).
inline vitserve::v1::Tensor Tensor(float value) {
  vitserve::v1::Tensor t;
  t.add_shape(kChannels);
  t.add_shape(kImageSize);
  t.add_shape(kImageSize);
  for (int i = 0; i < kChannels * kImageSize * kImageSize; ++i) t.add_data(value);
  return t;
}

inline ClassifyRequest Request(float value, const std::string& id = "") {
  ClassifyRequest r;
  *r.mutable_tensor() = Tensor(value);
  r.set_request_id(id);
  return r;
}

}  // namespace testing_fixtures
}  // namespace vitserve

#endif  // VITSERVE_TESTS_UNIT_SERVING_FAKE_MODEL_H_
