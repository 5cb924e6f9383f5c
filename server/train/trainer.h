// The training loop shared by `vitserve_train dense | dynamicvit | tnt`: batching and
// augmentation of an ImageDataset, AdamW with linear warm-up + cosine decay, a progress
// bar on stderr (loss / accuracy / ETA, validation accuracy per epoch), a checkpoint at
// the end of every epoch and resuming from it.
//
// What is optimised is an Objective (one per method): it owns the loss of a batch, the
// parameter groups and the validation forward. The loop knows nothing about methods.
//
// Determinism: the data order and augmentation of epoch e come from
// mt19937_64(seed, e), so a resumed run sees the same batches as an uninterrupted one
// (Gumbel / noise draws come from torch's generator, seeded once per run).
// Thread-safety: none. Errors: absl::Status; LibTorch errors are caught here (module
// boundary) and returned as INTERNAL with the c10 message.
#ifndef VITSERVE_SERVER_TRAIN_TRAINER_H_
#define VITSERVE_SERVER_TRAIN_TRAINER_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/train/dataset.h"

namespace vitserve {
namespace train {

// Per-channel normalisation applied after /255 (the config's preprocessing mean / std).
struct Normalization {
  std::vector<float> mean = {0.5f};
  std::vector<float> std = {0.5f};
};

// Mean and std of the pixels (/255) of `data`, per channel.
Normalization ComputeNormalization(const ImageDataset& data);

struct AugmentOptions {
  int pad = 4;        // random crop with this zero padding on every side (0 = off)
  bool hflip = true;  // random horizontal flip with probability 1/2
};

// Images `indices` of `data` as a normalised float tensor [B, C, H, W]. With `augment`
// (and `rng`), each image is randomly shifted by up to ±pad pixels (the border filled
// with raw pixel 0, the Fashion-MNIST background) and flipped.
torch::Tensor MakeBatch(const ImageDataset& data, const std::vector<int64_t>& indices,
                        const Normalization& norm, const AugmentOptions* augment,
                        std::mt19937_64* rng);
torch::Tensor MakeLabels(const ImageDataset& data, const std::vector<int64_t>& indices);

struct StepOutput {
  torch::Tensor loss;                     // scalar, requires grad
  torch::Tensor logits;                   // [B, classes] for the running accuracy
  std::map<std::string, double> metrics;  // extra values shown on the bar (e.g. "keep")
};

class Objective {
 public:
  virtual ~Objective() = default;
  // Loss of one training batch (modules in train mode).
  virtual StepOutput Step(const torch::Tensor& images, const torch::Tensor& labels) = 0;
  // Logits used for validation accuracy (called under NoGradGuard, eval mode).
  virtual torch::Tensor ValidationLogits(const torch::Tensor& images) = 0;
  // Parameter groups: (parameters, lr multiplier). Parameters not listed are frozen.
  virtual std::vector<std::pair<std::vector<torch::Tensor>, double>> ParameterGroups() = 0;
  // The module whose state is checkpointed.
  virtual torch::nn::Module& module() = 0;
};

struct TrainOptions {
  int epochs = 10;
  int batch_size = 128;
  double lr = 1e-3;      // peak learning rate (AdamW), before group multipliers
  double min_lr = 1e-5;  // cosine floor
  double weight_decay = 0.05;
  double warmup_epochs = 1.0;   // linear warm-up from min_lr, in epochs (fractions allowed)
  double grad_clip_norm = 1.0;  // global gradient-norm clip; 0 = off
  AugmentOptions augment;
  uint64_t seed = 0;
  // Checkpoint written after every epoch ("" = none); resume continues from it when
  // `resume` and the file exists (model, optimizer, completed epochs).
  std::string checkpoint_path;
  bool resume = false;
  bool progress = true;             // progress bar on stderr
  int64_t max_steps_per_epoch = 0;  // 0 = whole epochs; > 0 truncates (tests, timing)
  int64_t max_validation = 0;       // 0 = whole validation set
};

struct EpochStats {
  int epoch = 0;  // 1-based
  double train_loss = 0;
  double train_accuracy = 0;  // 0..1, on augmented batches
  double val_accuracy = 0;    // 0..1; 0 if no validation set
  double seconds = 0;
};

struct TrainResult {
  std::vector<EpochStats> epochs;  // the epochs run in this call
  double seconds = 0;
};

// Trains `objective` on `train_set`, validating on `val_set` (may be empty).
absl::StatusOr<TrainResult> Train(Objective& objective, const ImageDataset& train_set,
                                  const ImageDataset& val_set, const Normalization& norm,
                                  const TrainOptions& options);

// Top-1 accuracy of `logits_fn` over `data` (eval batches of `batch_size`).
double Accuracy(const std::function<torch::Tensor(const torch::Tensor&)>& logits_fn,
                const ImageDataset& data, const Normalization& norm, int batch_size,
                int64_t limit = 0);

// Learning rate at global step `step` of `total_steps` with linear warm-up over
// `warmup_steps` from min_lr to lr, then cosine to min_lr.
double ScheduledLr(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr,
                   double min_lr);

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_TRAINER_H_
