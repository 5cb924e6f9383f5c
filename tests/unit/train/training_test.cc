// Training forward passes, losses and the loop on tiny models (seconds, real LibTorch).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <random>

#include "server/checkpoint/model_repository.h"
#include "server/train/dataset.h"
#include "server/train/objectives.h"
#include "server/train/trainer.h"
#include "server/train/vit_training.h"

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;

Architecture TinyArch(int image_size, int depth) {
  Architecture a;
  a.image_size = image_size;
  a.patch_size = 4;
  a.in_chans = 1;
  a.embed_dim = 16;
  a.depth = depth;
  a.num_heads = 2;
  a.mlp_ratio = 2.0;
  a.num_classes = 3;
  return a;
}

// Three learnable classes: a bright square in the top-left, the bottom-right, or none,
// on noise.
ImageDataset Synthetic(int n, int size, uint64_t seed) {
  ImageDataset d;
  d.height = d.width = size;
  d.channels = 1;
  d.class_names = {"tl", "br", "none"};
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n; ++i) {
    const int label = i % 3;
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        int v = static_cast<int>(rng() % 60);
        if (label == 0 && y < size / 2 && x < size / 2) v += 180;
        if (label == 1 && y >= size / 2 && x >= size / 2) v += 180;
        d.pixels.push_back(static_cast<uint8_t>(std::min(v, 255)));
      }
    }
    d.labels.push_back(label);
  }
  return d;
}

// The first n images of `data`, normalised with its own statistics, and their labels.
struct Batch {
  torch::Tensor x, y;
};
Batch FirstImages(const ImageDataset& data, int64_t n) {
  const Normalization norm = ComputeNormalization(data);
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  return {MakeBatch(data, idx, norm, nullptr, nullptr), MakeLabels(data, idx)};
}

TrainOptions QuickOptions() {
  TrainOptions o;
  o.epochs = 4;
  o.batch_size = 16;
  o.lr = 3e-3;
  o.warmup_epochs = 0.25;
  o.augment.pad = 0;
  o.augment.hflip = false;
  o.progress = false;
  return o;
}

TEST(TrainerTest, ScheduleWarmsUpThenDecays) {
  EXPECT_NEAR(ScheduledLr(0, 100, 10, 1e-3, 0.0), 1e-4, 1e-12);
  EXPECT_NEAR(ScheduledLr(9, 100, 10, 1e-3, 0.0), 1e-3, 1e-12);
  EXPECT_NEAR(ScheduledLr(55, 100, 10, 1e-3, 0.0), 5e-4, 1e-12);
  EXPECT_NEAR(ScheduledLr(100, 100, 10, 1e-3, 1e-5), 1e-5, 1e-12);
}

TEST(TrainerTest, AugmentedBatchIsAShiftedFlippedCopy) {
  ImageDataset d = Synthetic(1, 8, 1);
  Normalization identity;
  identity.mean = {0.0f};
  identity.std = {1.0f / 255.0f};  // so the tensor holds raw pixel values
  torch::Tensor plain = MakeBatch(d, {0}, identity, nullptr, nullptr);
  EXPECT_FLOAT_EQ(plain[0][0][3][5].item<float>(), d.image(0)[3 * 8 + 5]);
  AugmentOptions flip_only;
  flip_only.pad = 0;
  flip_only.hflip = true;
  std::mt19937_64 rng(0);
  bool saw_flip = false;
  for (int i = 0; i < 8 && !saw_flip; ++i) {
    torch::Tensor t = MakeBatch(d, {0}, identity, &flip_only, &rng);
    if (!torch::equal(t, plain)) {
      EXPECT_TRUE(torch::equal(t, plain.flip({3})));
      saw_flip = true;
    }
  }
  EXPECT_TRUE(saw_flip);
}

TEST(TrainerTest, DenseTrainingLowersTheLoss) {
  torch::manual_seed(0);
  Vit vit(VitOptions::FromArchitecture(TinyArch(8, 2)));
  InitTimm(*vit);
  const ImageDataset data = Synthetic(96, 8, 1);
  const Normalization norm = ComputeNormalization(data);
  const Batch batch = FirstImages(data, 96);
  const torch::Tensor& x = batch.x;
  const torch::Tensor& y = batch.y;
  auto loss_now = [&] {
    torch::NoGradGuard no_grad;
    vit->eval();
    return torch::nn::functional::cross_entropy(vit->forward(x), y).item<double>();
  };
  const double before = loss_now();
  DenseObjective objective(vit, /*label_smoothing=*/0.0);
  TrainOptions o = QuickOptions();
  o.epochs = 15;  // 90 steps of 16 images
  absl::StatusOr<TrainResult> r = Train(objective, data, ImageDataset(), norm, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->epochs.size(), 15u);
  const double after = loss_now();
  EXPECT_LT(after, 0.5 * before) << "before " << before << " after " << after;
}

TEST(TrainerTest, ResumeContinuesFromTheCheckpoint) {
  const fs::path state = fs::temp_directory_path() / "vitserve_train_resume_test.pt";
  fs::remove(state);
  const ImageDataset data = Synthetic(48, 8, 2);
  const Normalization norm = ComputeNormalization(data);
  TrainOptions o = QuickOptions();
  o.checkpoint_path = state.string();
  o.epochs = 2;
  torch::manual_seed(0);
  Vit vit(VitOptions::FromArchitecture(TinyArch(8, 2)));
  InitTimm(*vit);
  DenseObjective objective(vit, 0.0);
  ASSERT_TRUE(Train(objective, data, ImageDataset(), norm, o).ok());
  // A fresh model resumed with epochs = 3 runs exactly one more epoch from the saved
  // weights (the loaded weights equal the trained ones before it steps).
  Vit resumed(VitOptions::FromArchitecture(TinyArch(8, 2)));
  InitTimm(*resumed);
  DenseObjective objective2(resumed, 0.0);
  o.epochs = 3;
  o.resume = true;
  absl::StatusOr<TrainResult> r = Train(objective2, data, ImageDataset(), norm, o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->epochs.size(), 1u);
  EXPECT_EQ(r->epochs[0].epoch, 3);
  fs::remove(state);
}

TEST(DynamicVitTrainingTest, PolicySoftmaxGivesDroppedTokensNoAttention) {
  torch::manual_seed(0);
  torch::Tensor logits = torch::randn({2, 3, 5, 5});
  torch::Tensor policy = torch::tensor({1.f, 1.f, 0.f, 1.f, 0.f}).view({1, 5, 1}).repeat({2, 1, 1});
  torch::Tensor a = SoftmaxWithPolicy(logits, policy);
  // Rows sum to one; column 2 receives (almost) nothing except from token 2 itself.
  EXPECT_TRUE(torch::allclose(a.sum(-1), torch::ones({2, 3, 5}), 1e-5, 1e-5));
  EXPECT_LT(a.select(-1, 2).select(-1, 0).abs().max().item<float>(), 1e-5f);
  EXPECT_LT(a.select(-1, 4).select(-1, 3).abs().max().item<float>(), 1e-5f);
  EXPECT_GT(a.select(-2, 2).select(-1, 2).min().item<float>(), 1e-3f);  // self-loop kept
  // With everything kept it is the plain softmax.
  torch::Tensor all = SoftmaxWithPolicy(logits, torch::ones({2, 5, 1}));
  EXPECT_TRUE(torch::allclose(all, torch::softmax(logits, -1), 1e-5, 1e-5));
}

TEST(DynamicVitTrainingTest, RatioLossDrivesKeptFractionsToTheTarget) {
  torch::manual_seed(0);
  const Architecture arch = TinyArch(16, 4);  // 16 patches
  const std::vector<int> locations = {1, 2, 3};
  Vit teacher(CombinedOptions(arch, 3, false));
  InitTimm(*teacher);
  Vit student(CombinedOptions(arch, 3, false));
  InitTimm(*student);
  ASSERT_TRUE(LoadStateDict(*student, StateDictOf(*teacher), true).ok());
  const Batch batch = FirstImages(Synthetic(64, 16, 3), 32);
  const torch::Tensor& x = batch.x;
  const torch::Tensor& y = batch.y;

  // Targets 0.7, 0.49, 0.343; random predictors keep ~0.5, 0.25, 0.125 (each stage halves).
  constexpr float kKeep = 0.7f;
  DynamicVitObjectiveOptions o;
  o.locations = locations;
  o.keep_rate = kKeep;
  DynamicVitObjective objective(student, teacher, o);
  auto fractions = [&] {
    torch::NoGradGuard no_grad;
    DynamicVitOutput out = DynamicVitForward(*student, x, locations, kKeep, DecisionMode::kGumbel);
    std::vector<double> f;
    for (const auto& d : out.decisions) f.push_back(d.mean().item<double>());
    return f;
  };
  const std::vector<double> before = fractions();
  // Random predictors are far from every target.
  double t = 1.0;
  for (double b : before) {
    t *= kKeep;
    EXPECT_GT(std::abs(b - t), 0.15);
  }
  auto groups = objective.ParameterGroups();
  ASSERT_EQ(groups.size(), 1u);  // backbone frozen: predictors only
  torch::optim::Adam adam(groups[0].first, torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 60; ++step) {
    StepOutput s = objective.Step(x, y);
    adam.zero_grad();
    s.loss.backward();
    adam.step();
  }
  const std::vector<double> after = fractions();
  double target = 1.0;
  for (size_t p = 0; p < after.size(); ++p) {
    target *= kKeep;
    EXPECT_NEAR(after[p], target, 0.08) << "stage " << p << " before " << before[p];
  }
  // The backbone did not move.
  for (const auto& item : student->named_parameters()) {
    if (IsBackboneParameter(item.key())) {
      EXPECT_TRUE(torch::equal(item.value(), teacher->named_parameters()[item.key()]))
          << item.key();
    }
  }
}

TEST(DynamicVitTrainingTest, DenseLossWeightAddsTheDensePathCeAndKl) {
  torch::manual_seed(4);
  const Architecture arch = TinyArch(16, 4);
  Vit teacher(CombinedOptions(arch, 3, false));
  InitTimm(*teacher);
  Vit student(CombinedOptions(arch, 3, false));
  InitTimm(*student);  // different weights: the KL term is not zero
  const Batch batch = FirstImages(Synthetic(16, 16, 5), 16);
  const torch::Tensor& x = batch.x;
  const torch::Tensor& y = batch.y;

  DynamicVitObjectiveOptions o;
  o.locations = {1, 2, 3};
  o.keep_rate = 0.5f;
  o.weights.label_smoothing = 0.1;
  o.weights.distill_kl = 0.5;
  auto loss_with = [&](double dense_weight, std::map<std::string, double>* metrics) {
    DynamicVitObjectiveOptions with = o;
    with.dense_loss_weight = dense_weight;
    DynamicVitObjective objective(student, teacher, with);
    torch::manual_seed(11);  // the same Gumbel draws for both
    StepOutput s = objective.Step(x, y);
    if (metrics != nullptr) *metrics = s.metrics;
    return s.loss.item<double>();
  };
  const double official = loss_with(0.0, nullptr);
  std::map<std::string, double> metrics;
  const double with_dense = loss_with(2.0, &metrics);

  // The dense-path term written out from the softmax: label-smoothed CE plus 0.5 times
  // KL(teacher || student), both over every token of the student's dense forward.
  torch::NoGradGuard no_grad;
  const torch::Tensor log_s = torch::log_softmax(student->forward(x), -1).to(torch::kDouble);
  const torch::Tensor log_t = torch::log_softmax(teacher->forward(x), -1).to(torch::kDouble);
  const int64_t k = log_s.size(1);
  const torch::Tensor nll = -log_s.gather(1, y.view({-1, 1})).squeeze(1);
  const double ce = (0.9 * nll - 0.1 / k * log_s.sum(1)).mean().item<double>();
  const double kl = (log_t.exp() * (log_t - log_s)).sum(1).mean().item<double>();
  ASSERT_GT(kl, 1e-4);
  EXPECT_FALSE(metrics.count("dense_ce") == 0);
  EXPECT_NEAR(metrics["dense_ce"], ce, 1e-4);
  EXPECT_NEAR(with_dense - official, 2.0 * (ce + 0.5 * kl), 1e-4);
}

TEST(DynamicVitTrainingTest, TopKDecisionsKeepTheEvalCounts) {
  torch::manual_seed(1);
  const Architecture arch = TinyArch(16, 4);
  Vit vit(CombinedOptions(arch, 3, false));
  InitTimm(*vit);
  torch::NoGradGuard no_grad;
  DynamicVitOutput out =
      DynamicVitForward(*vit, torch::randn({2, 1, 16, 16}), {1, 2, 3}, 0.7f, DecisionMode::kTopK);
  ASSERT_EQ(out.decisions.size(), 3u);
  // int(16 * 0.7^k): 11, 7, 5 — and each stage keeps a subset of the previous one.
  const int64_t want[] = {11, 7, 5};
  for (int p = 0; p < 3; ++p) {
    EXPECT_EQ(out.decisions[p].sum(1).eq(want[p]).all().item<bool>(), true) << p;
    if (p > 0) {
      EXPECT_EQ((out.decisions[p] > out.decisions[p - 1]).any().item<bool>(), false);
    }
  }
}

TEST(DynamicVitTrainingTest, ParseLocationsAcceptsIncreasingIndicesAndNamesTheBadEntry) {
  EXPECT_THAT(ParseLocations("", 8, {2, 4, 6}).value(), ::testing::ElementsAre(2, 4, 6));
  EXPECT_THAT(ParseLocations("1,3,5", 8, {2, 4, 6}).value(), ::testing::ElementsAre(1, 3, 5));
  EXPECT_THAT(ParseLocations("0", 8, {}).value(), ::testing::ElementsAre(0));
  for (const char* bad : {"3,2", "1,1", "1,8", "-1", "1,,3", "a", "1,3,"}) {
    absl::StatusOr<std::vector<int>> r = ParseLocations(bad, 8, {2, 4, 6});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("bad entry")) << bad;
  }
}

TEST(TntTrainingTest, NoiseTrainingUpdatesOnlyTheAlphaHeads) {
  torch::manual_seed(0);
  const Architecture arch = TinyArch(8, 3);
  Vit vit(CombinedOptions(arch, 0, true));
  InitTimm(*vit);
  const auto before = StateDictOf(*vit);
  TntObjectiveOptions o;
  o.locations = {1};
  TntObjective objective(vit, o);
  const ImageDataset data = Synthetic(32, 8, 4);
  TrainOptions t = QuickOptions();
  t.epochs = 1;
  ASSERT_TRUE(Train(objective, data, ImageDataset(), ComputeNormalization(data), t).ok());
  const auto after = StateDictOf(*vit);
  for (const auto& [name, tensor] : before) {
    const bool trained =
        name.rfind("alpha_heads.0.", 0) == 0 || name.rfind("alpha_heads.1.", 0) == 0;
    EXPECT_EQ(!torch::equal(tensor, after.at(name)), trained) << name;
  }
}

TEST(ModelDirTest, ExportThenLoadRoundTripsWeightsAndSpec) {
  const fs::path dir = fs::temp_directory_path() / "vitserve_train_export_test" / "tiny";
  fs::remove_all(dir.parent_path());
  torch::manual_seed(0);
  ModelSpec spec;
  spec.arch = TinyArch(8, 4);
  spec.version = "3";
  spec.labels = {"tl", "br", "none"};
  spec.preprocess.grayscale = true;
  spec.preprocess.mean = {0.25f};
  spec.preprocess.std = {0.5f};
  spec.preprocess.resize = 8;
  spec.preprocess.crop_pct = 1.0f;
  spec.pruning.method = Method::kDynamicViT;
  spec.pruning.locations = {1, 2, 3};
  spec.pruning.default_keep_rate = 0.7f;
  Vit vit(CombinedOptions(spec.arch, 3, true));
  InitTimm(*vit);
  // Leave the TNT heads out, as a DynamicViT-only run does.
  std::vector<std::string> exclude;
  for (const auto& item : vit->named_parameters()) {
    if (item.key().rfind("alpha_", 0) == 0) exclude.push_back(item.key());
  }
  ASSERT_TRUE(ExportModelDir(*vit, spec, dir.string(), exclude).ok());
  absl::StatusOr<LoadedModel> loaded = LoadModelDir(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->spec.name, "tiny");
  EXPECT_EQ(loaded->spec.pruning.method, Method::kDynamicViT);
  EXPECT_EQ(loaded->spec.labels, spec.labels);
  EXPECT_EQ(loaded->missing_heads.size(), exclude.size());
  const auto want = StateDictOf(*vit);
  for (const auto& [name, tensor] : StateDictOf(*loaded->vit)) {
    if (name.rfind("alpha_", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(tensor, want.at(name))) << name;
  }
  fs::remove_all(dir.parent_path());
}

TEST(CalibrationTest, WriteThenReadRoundTrips) {
  const fs::path path = fs::temp_directory_path() / "vitserve_train_calibration_test.pbtxt";
  std::vector<CalibrationPoint> points(2);
  points[0].method = "dense";
  points[0].keep_rate = 1.0f;
  points[0].top1 = 0.9012;
  points[0].agreement = 1.0;
  points[0].macs = 6200000;
  points[1].method = "dynamicvit";
  points[1].keep_rate = 0.7f;
  points[1].top1 = 0.8951;
  points[1].agreement = 0.97;
  points[1].macs = 4100000;
  ASSERT_TRUE(WriteCalibration(points, "fashion-mnist/test", 10000, path.string()).ok());
  absl::StatusOr<std::vector<CalibrationPoint>> back = ReadCalibration(path.string());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*back)[i].method, points[i].method);
    EXPECT_FLOAT_EQ((*back)[i].keep_rate, points[i].keep_rate);
    EXPECT_DOUBLE_EQ((*back)[i].top1, points[i].top1);
    EXPECT_DOUBLE_EQ((*back)[i].agreement, points[i].agreement);
    EXPECT_EQ((*back)[i].macs, points[i].macs);
  }
  fs::remove(path);
}

}  // namespace
}  // namespace train
}  // namespace vitserve
