#include "server/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/checkpoint/atomic_file.h"

namespace vitserve {
namespace train {
namespace {

using Clock = std::chrono::steady_clock;

// Seconds between progress-bar redraws.
constexpr double kProgressInterval = 0.5;
// Width of the bar in characters.
constexpr int kBarWidth = 24;
// Eval batch size for validation.
constexpr int kEvalBatch = 256;
// Multiplier separating the epochs' RNG streams.
constexpr uint64_t kEpochSeedStride = 0x9E3779B97F4A7C15ULL;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string FormatDuration(double s) {
  const auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  return absl::StrFormat("%dm%02ds", t / 60, t % 60);
}

void DrawBar(int epoch, int epochs, int64_t step, int64_t steps, double loss, double acc, double lr,
             double eta, const std::map<std::string, double>& metrics) {
  const int filled = static_cast<int>(kBarWidth * static_cast<double>(step) /
                                      static_cast<double>(std::max<int64_t>(steps, 1)));
  std::string bar(kBarWidth, ' ');
  for (int i = 0; i < filled && i < kBarWidth; ++i) bar[i] = '=';
  if (filled < kBarWidth) bar[filled] = '>';
  std::string extra;
  for (const auto& [k, v] : metrics) extra += absl::StrFormat(" %s %.3f", k, v);
  std::fprintf(stderr, "\r[epoch %d/%d] %5lld/%lld [%s] loss %.4f acc %5.2f%% lr %.2e%s ETA %s  ",
               epoch, epochs, static_cast<long long>(step), static_cast<long long>(steps),
               bar.c_str(), loss, 100.0 * acc, lr, extra.c_str(), FormatDuration(eta).c_str());
  std::fflush(stderr);
}

struct OptimizerSetup {
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::vector<double> lr_multipliers;  // per optimizer group
};

// Splits each objective group into decayed (matrices) and non-decayed (biases, norms,
// embeddings of rank < 2 ... and cls/pos tokens) parameter groups, timm style.
OptimizerSetup MakeOptimizer(Objective& objective, const TrainOptions& o) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  OptimizerSetup setup;
  for (auto& [params, mult] : objective.ParameterGroups()) {
    std::vector<torch::Tensor> decay, no_decay;
    for (const torch::Tensor& p : params) (p.dim() >= 2 ? decay : no_decay).push_back(p);
    for (int g = 0; g < 2; ++g) {
      std::vector<torch::Tensor>& ps = g == 0 ? decay : no_decay;
      if (ps.empty()) continue;
      auto opts = std::make_unique<torch::optim::AdamWOptions>(o.lr * mult);
      opts->weight_decay(g == 0 ? o.weight_decay : 0.0);
      groups.emplace_back(ps, std::move(opts));
      setup.lr_multipliers.push_back(mult);
    }
  }
  setup.optimizer = std::make_unique<torch::optim::AdamW>(
      groups, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  return setup;
}

void SetLr(OptimizerSetup& setup, double lr) {
  auto& groups = setup.optimizer->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    static_cast<torch::optim::AdamWOptions&>(groups[g].options()).lr(lr * setup.lr_multipliers[g]);
  }
}

absl::Status SaveTrainingCheckpoint(const std::string& path, torch::nn::Module& module,
                                    torch::optim::Optimizer& optimizer, int epochs_done) {
  torch::serialize::OutputArchive archive, model_archive, optim_archive;
  module.save(model_archive);
  optimizer.save(optim_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optim_archive);
  archive.write("epochs_done", torch::tensor(static_cast<int64_t>(epochs_done)));
  return WriteFileAtomically(path, [&archive](std::ostream& out) {
    archive.save_to(out);
    return absl::OkStatus();
  });
}

int LoadTrainingCheckpoint(const std::string& path, torch::nn::Module& module,
                           torch::optim::Optimizer& optimizer) {
  torch::serialize::InputArchive archive, model_archive, optim_archive;
  archive.load_from(path);
  archive.read("model", model_archive);
  archive.read("optimizer", optim_archive);
  module.load(model_archive);
  optimizer.load(optim_archive);
  torch::Tensor epochs_done;
  archive.read("epochs_done", epochs_done);
  return static_cast<int>(epochs_done.item<int64_t>());
}

}  // namespace

Normalization ComputeNormalization(const ImageDataset& data) {
  Normalization norm;
  norm.mean.assign(data.channels, 0.0f);
  norm.std.assign(data.channels, 1.0f);
  const int64_t pixels_per_channel = data.size() * data.height * data.width;
  if (pixels_per_channel == 0) return norm;
  for (int c = 0; c < data.channels; ++c) {
    double sum = 0, sq = 0;
    for (size_t i = c; i < data.pixels.size(); i += data.channels) {
      const double v = data.pixels[i] / 255.0;
      sum += v;
      sq += v * v;
    }
    const double mean = sum / static_cast<double>(pixels_per_channel);
    norm.mean[c] = static_cast<float>(mean);
    norm.std[c] = static_cast<float>(
        std::sqrt(std::max(0.0, sq / static_cast<double>(pixels_per_channel) - mean * mean)));
  }
  return norm;
}

torch::Tensor MakeBatch(const ImageDataset& data, const std::vector<int64_t>& indices,
                        const Normalization& norm, const AugmentOptions* augment,
                        std::mt19937_64* rng) {
  const int h = data.height, w = data.width, ch = data.channels;
  const auto b = static_cast<int64_t>(indices.size());
  torch::Tensor out = torch::empty({b, ch, h, w}, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  std::vector<float> scale(ch), shift(ch);
  for (int c = 0; c < ch; ++c) {
    scale[c] = 1.0f / (255.0f * norm.std[c]);
    shift[c] = -norm.mean[c] / norm.std[c];
  }
  for (int64_t n = 0; n < b; ++n) {
    const uint8_t* src = data.image(indices[n]);
    int dx = 0, dy = 0;
    bool flip = false;
    if (augment != nullptr && rng != nullptr) {
      const int pad = augment->pad;
      if (pad > 0) {
        dx = static_cast<int>((*rng)() % static_cast<uint64_t>(2 * pad + 1)) - pad;
        dy = static_cast<int>((*rng)() % static_cast<uint64_t>(2 * pad + 1)) - pad;
      }
      flip = augment->hflip && ((*rng)() & 1ULL);
    }
    for (int c = 0; c < ch; ++c) {
      float* plane = dst + ((n * ch + c) * h) * w;
      for (int y = 0; y < h; ++y) {
        const int sy = y + dy;
        for (int x = 0; x < w; ++x) {
          const int xx = flip ? w - 1 - x : x;
          const int sx = xx + dx;
          const uint8_t v = (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                ? src[(static_cast<int64_t>(sy) * w + sx) * ch + c]
                                : uint8_t{0};
          plane[y * w + x] = static_cast<float>(v) * scale[c] + shift[c];
        }
      }
    }
  }
  return out;
}

torch::Tensor MakeLabels(const ImageDataset& data, const std::vector<int64_t>& indices) {
  torch::Tensor out = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  int64_t* p = out.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) p[i] = data.labels[indices[i]];
  return out;
}

double ScheduledLr(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr,
                   double min_lr) {
  if (warmup_steps > 0 && step < warmup_steps) {
    return min_lr +
           (lr - min_lr) * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  const double span = static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  const double t = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

double Accuracy(const std::function<torch::Tensor(const torch::Tensor&)>& logits_fn,
                const ImageDataset& data, const Normalization& norm, int batch_size,
                int64_t limit) {
  const int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  if (n == 0) return 0.0;
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += batch_size) {
    std::vector<int64_t> idx(std::min<int64_t>(batch_size, n - start));
    std::iota(idx.begin(), idx.end(), start);
    torch::Tensor pred = logits_fn(MakeBatch(data, idx, norm, nullptr, nullptr)).argmax(-1);
    correct += pred.eq(MakeLabels(data, idx)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

namespace {

// What every epoch of one Train() call shares.
struct TrainRun {
  Objective& objective;
  const ImageDataset& train_set;
  const Normalization& norm;
  const TrainOptions& o;
  OptimizerSetup& opt;
  int64_t steps_per_epoch;
  int64_t total_steps;
  int64_t warmup_steps;
  int start_epoch;
  Clock::time_point run_start;
};

// The training images of `epoch` in a seeded random order (Fisher-Yates).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int epoch, std::mt19937_64& rng) {
  rng.seed(seed + kEpochSeedStride * static_cast<uint64_t>(epoch + 1));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
    std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
  }
  return order;
}

// One optimizer step on `images`; returns the objective's output.
StepOutput OptimizerStep(const TrainRun& r, const torch::Tensor& images,
                         const torch::Tensor& labels) {
  StepOutput out = r.objective.Step(images, labels);
  r.opt.optimizer->zero_grad();
  out.loss.backward();
  if (r.o.grad_clip_norm > 0) {
    std::vector<torch::Tensor> params;
    for (auto& g : r.opt.optimizer->param_groups()) {
      params.insert(params.end(), g.params().begin(), g.params().end());
    }
    torch::nn::utils::clip_grad_norm_(params, r.o.grad_clip_norm);
  }
  r.opt.optimizer->step();
  return out;
}

// Trains one epoch; fills the epoch number, training loss and accuracy of the stats.
EpochStats TrainEpoch(const TrainRun& r, int epoch) {
  const TrainOptions& o = r.o;
  const Clock::time_point epoch_start = Clock::now();
  std::mt19937_64 rng;
  const std::vector<int64_t> order = EpochOrder(r.train_set.size(), o.seed, epoch, rng);
  r.objective.module().train();
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
  std::map<std::string, double> metric_sums;
  Clock::time_point last_draw = epoch_start;
  for (int64_t step = 0; step < r.steps_per_epoch; ++step) {
    const int64_t global = static_cast<int64_t>(epoch) * r.steps_per_epoch + step;
    const double lr = ScheduledLr(global, r.total_steps, r.warmup_steps, o.lr, o.min_lr);
    SetLr(r.opt, lr);
    std::vector<int64_t> idx(order.begin() + step * o.batch_size,
                             order.begin() + (step + 1) * o.batch_size);
    torch::Tensor images = MakeBatch(r.train_set, idx, r.norm, &o.augment, &rng);
    torch::Tensor labels = MakeLabels(r.train_set, idx);
    StepOutput out = OptimizerStep(r, images, labels);
    loss_sum += out.loss.item<double>();
    correct += out.logits.argmax(-1).eq(labels).sum().item<int64_t>();
    seen += labels.size(0);
    std::map<std::string, double> shown;
    for (const auto& [k, v] : out.metrics) {
      metric_sums[k] += v;
      shown[k] = metric_sums[k] / static_cast<double>(step + 1);
    }
    const Clock::time_point now = Clock::now();
    if (o.progress &&
        (Seconds(last_draw, now) >= kProgressInterval || step + 1 == r.steps_per_epoch)) {
      last_draw = now;
      const double per_step = Seconds(r.run_start, now) /
                              static_cast<double>(global - r.start_epoch * r.steps_per_epoch + 1);
      const double eta = per_step * static_cast<double>(r.total_steps - global - 1);
      DrawBar(epoch + 1, o.epochs, step + 1, r.steps_per_epoch, loss_sum / (step + 1),
              static_cast<double>(correct) / static_cast<double>(seen), lr, eta, shown);
    }
  }
  EpochStats stats;
  stats.epoch = epoch + 1;
  stats.train_loss = loss_sum / static_cast<double>(r.steps_per_epoch);
  stats.train_accuracy =
      static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(seen, 1));
  return stats;
}

}  // namespace

absl::StatusOr<TrainResult> Train(Objective& objective, const ImageDataset& train_set,
                                  const ImageDataset& val_set, const Normalization& norm,
                                  const TrainOptions& o) {
  if (train_set.size() < o.batch_size || o.batch_size <= 0 || o.epochs <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("need epochs > 0 and 0 < batch_size (",
                                                   o.batch_size, ") <= training images (",
                                                   train_set.size(), ")"));
  }
  TrainResult result;
  try {
    OptimizerSetup opt = MakeOptimizer(objective, o);
    int64_t steps_per_epoch = train_set.size() / o.batch_size;  // drop_last
    if (o.max_steps_per_epoch > 0) {
      steps_per_epoch = std::min(steps_per_epoch, o.max_steps_per_epoch);
    }
    const auto warmup_steps =
        static_cast<int64_t>(o.warmup_epochs * static_cast<double>(steps_per_epoch));
    int start_epoch = 0;
    if (o.resume && !o.checkpoint_path.empty() && std::filesystem::exists(o.checkpoint_path)) {
      start_epoch = LoadTrainingCheckpoint(o.checkpoint_path, objective.module(), *opt.optimizer);
      std::fprintf(stderr, "resumed from %s after epoch %d\n", o.checkpoint_path.c_str(),
                   start_epoch);
    }
    const TrainRun run{
        objective,    train_set,   norm,        o, opt, steps_per_epoch, steps_per_epoch * o.epochs,
        warmup_steps, start_epoch, Clock::now()};
    for (int epoch = run.start_epoch; epoch < o.epochs; ++epoch) {
      const Clock::time_point epoch_start = Clock::now();
      EpochStats stats = TrainEpoch(run, epoch);
      objective.module().eval();
      if (val_set.size() > 0) {
        stats.val_accuracy =
            Accuracy([&](const torch::Tensor& x) { return objective.ValidationLogits(x); }, val_set,
                     norm, kEvalBatch, o.max_validation);
      }
      stats.seconds = Seconds(epoch_start, Clock::now());
      if (o.progress) std::fprintf(stderr, "\n");
      std::fprintf(stderr,
                   "epoch %d/%d: train loss %.4f, train acc %.2f%%, val acc %.2f%%, %.1f s\n",
                   stats.epoch, o.epochs, stats.train_loss, 100.0 * stats.train_accuracy,
                   100.0 * stats.val_accuracy, stats.seconds);
      result.epochs.push_back(stats);
      if (!o.checkpoint_path.empty()) {
        absl::Status st = SaveTrainingCheckpoint(o.checkpoint_path, objective.module(),
                                                 *opt.optimizer, epoch + 1);
        if (!st.ok()) return st;
      }
    }
    result.seconds = Seconds(run.run_start, Clock::now());
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("LibTorch error during training: ", e.what_without_backtrace()));
  }
  return result;
}

}  // namespace train
}  // namespace vitserve
