// vitserve_train: the model toolchain.
//
//   vitserve_train dense      --output_dir=DIR [--resume] [architecture and schedule flags]
//   vitserve_train dynamicvit --teacher=DIR --output_dir=DIR [--keep_rate=0.7] [--locations=1,3,5]
//   vitserve_train tnt        --teacher=DIR --output_dir=DIR
//   vitserve_train eval       --model_dir=DIR [--split=test]
//
// Data: Fashion-MNIST IDX files under --data_dir (default the Debian package's), or an
// ImageFolder tree with --image_folder=ROOT (root/<class>/<image>; --test_folder for
// eval). The training set is split into train / validation (--val_size, --split_seed);
// the test set is used only by `eval`. Every training subcommand writes a model
// directory the server loads as is: model.safetensors (timm keys), config.pbtxt,
// labels.txt; its training state (model + optimizer + epoch) goes to
// DIR/train_state.pt after every epoch, which --resume continues from.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/train/dataset.h"
#include "server/train/evaluate.h"
#include "server/train/objectives.h"
#include "server/train/trainer.h"
#include "server/train/vit_training.h"
#include "server/util/cli_usage.h"

// Data.
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "Fashion-MNIST directory (gzipped IDX files)");
ABSL_FLAG(std::string, image_folder, "", "train on ROOT/<class>/<image> instead of Fashion-MNIST");
ABSL_FLAG(std::string, test_folder, "", "eval: test images as ROOT/<class>/<image>");
ABSL_FLAG(int64_t, val_size, 5000, "validation images carved from the training set");
ABSL_FLAG(uint64_t, split_seed, 0, "seed of the train/validation split");
// Output / input.
ABSL_FLAG(std::string, output_dir, "", "model directory to write");
ABSL_FLAG(std::string, teacher, "", "dynamicvit / tnt: the dense model directory");
ABSL_FLAG(std::string, model_dir, "", "eval: the model directory");
ABSL_FLAG(std::string, name, "", "model name in config.pbtxt (default: directory name)");
ABSL_FLAG(std::string, version, "1", "model version in config.pbtxt");
ABSL_FLAG(std::string, heads_from, "",
          "dynamicvit / tnt: copy the other method's heads from this model directory (same "
          "backbone) into the exported model, read at export time");
ABSL_FLAG(bool, resume, false, "continue from OUTPUT_DIR/train_state.pt");
// Architecture (dense).
ABSL_FLAG(int, image_size, 28, "input side");
ABSL_FLAG(int, patch_size, 4, "patch side");
ABSL_FLAG(int, embed_dim, 64, "width C");
ABSL_FLAG(int, depth, 8, "blocks");
ABSL_FLAG(int, num_heads, 4, "attention heads");
ABSL_FLAG(double, mlp_ratio, 4.0, "MLP hidden / C");
// Schedule.
ABSL_FLAG(int, epochs, 10, "epochs");
ABSL_FLAG(int, batch_size, 128, "batch size");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate (AdamW)");
ABSL_FLAG(double, min_lr, 1e-5, "cosine floor");
ABSL_FLAG(double, weight_decay, 0.05, "AdamW weight decay (matrices only)");
ABSL_FLAG(double, warmup_epochs, 1.0, "linear warm-up epochs");
ABSL_FLAG(double, label_smoothing, 0.1, "label smoothing of the CE loss");
ABSL_FLAG(int, pad, 4, "random-crop padding (0 = off)");
ABSL_FLAG(bool, hflip, true, "random horizontal flips");
ABSL_FLAG(uint64_t, seed, 0, "seed of init, data order, augmentation, Gumbel / noise draws");
ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int64_t, max_steps_per_epoch, 0, "truncate epochs (timing, smoke tests); 0 = full");
ABSL_FLAG(bool, progress, true, "progress bar on stderr");
// Methods.
ABSL_FLAG(double, keep_rate, 0.7, "dynamicvit: trained keep-rate ρ; tnt: validation keep-rate");
ABSL_FLAG(double, backbone_lr_scale, 0.0, "dynamicvit / tnt: backbone lr multiplier; 0 = frozen");
ABSL_FLAG(double, dense_loss_weight, 0.0,
          "dynamicvit: weight of the dense-path loss (CE + KL to the teacher on all tokens) "
          "that keeps the shared backbone's dense accuracy; 0 = official loss only");
ABSL_FLAG(double, noise_scale, 0.02, "tnt: noise std multiplier (official 0.02)");
ABSL_FLAG(std::string, locations, "",
          "dynamicvit: pruning locations, comma-separated block indices, strictly increasing "
          "(e.g. 1,3,5); empty = the teacher's when it is a DynamicViT model, else the "
          "method default");
// Eval.
ABSL_FLAG(std::string, split, "test", "eval: test | val");
ABSL_FLAG(std::string, methods, "dense,dynamicvit,evit,tome,tnt", "eval: methods");
ABSL_FLAG(std::string, keep_rates, "1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3", "eval: keep-rates");
ABSL_FLAG(int64_t, limit, 0, "eval: first N images only (0 = all)");

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFile[] = "train_state.pt";

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

TrainOptions TrainOptionsFromFlags(const std::string& output_dir) {
  TrainOptions o;
  o.epochs = absl::GetFlag(FLAGS_epochs);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.min_lr = absl::GetFlag(FLAGS_min_lr);
  o.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  o.augment.pad = absl::GetFlag(FLAGS_pad);
  o.augment.hflip = absl::GetFlag(FLAGS_hflip);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.checkpoint_path = (fs::path(output_dir) / kStateFile).string();
  o.resume = absl::GetFlag(FLAGS_resume);
  o.progress = absl::GetFlag(FLAGS_progress);
  o.max_steps_per_epoch = absl::GetFlag(FLAGS_max_steps_per_epoch);
  return o;
}

// The training set and its validation part.
absl::StatusOr<std::pair<ImageDataset, ImageDataset>> LoadTrainVal(int image_size, bool grayscale) {
  absl::StatusOr<ImageDataset> all;
  if (!absl::GetFlag(FLAGS_image_folder).empty()) {
    ImageFolderOptions fo;
    fo.image_size = image_size;
    fo.grayscale = grayscale;
    all = ReadImageFolder(absl::GetFlag(FLAGS_image_folder), fo);
  } else {
    all = ReadFashionMnist(absl::GetFlag(FLAGS_data_dir), IdxSplit::kTrain);
  }
  if (!all.ok()) return all.status();
  return SplitTrainValidation(*all, absl::GetFlag(FLAGS_val_size), absl::GetFlag(FLAGS_split_seed));
}

Normalization NormalizationOf(const ModelSpec& spec) {
  Normalization n;
  n.mean = spec.preprocess.mean;
  n.std = spec.preprocess.std;
  return n;
}

void PrintSummary(const TrainResult& r, const std::string& what) {
  std::printf("%s: %zu epochs in %.1f s", what.c_str(), r.epochs.size(), r.seconds);
  if (!r.epochs.empty()) {
    std::printf(", final val acc %.2f%%", 100.0 * r.epochs.back().val_accuracy);
  }
  std::printf("\n");
}

absl::Status RunDense() {
  const std::string out_dir = absl::GetFlag(FLAGS_output_dir);
  if (out_dir.empty()) return absl::InvalidArgumentError("--output_dir is required");
  ModelSpec spec;
  spec.name = absl::GetFlag(FLAGS_name);
  spec.version = absl::GetFlag(FLAGS_version);
  spec.arch.image_size = absl::GetFlag(FLAGS_image_size);
  spec.arch.patch_size = absl::GetFlag(FLAGS_patch_size);
  spec.arch.in_chans = 1;
  spec.arch.embed_dim = absl::GetFlag(FLAGS_embed_dim);
  spec.arch.depth = absl::GetFlag(FLAGS_depth);
  spec.arch.num_heads = absl::GetFlag(FLAGS_num_heads);
  spec.arch.mlp_ratio = absl::GetFlag(FLAGS_mlp_ratio);
  spec.arch.distilled = false;
  if (spec.arch.image_size % spec.arch.patch_size != 0 ||
      spec.arch.embed_dim % spec.arch.num_heads != 0) {
    return absl::InvalidArgumentError(
        "image_size must be a multiple of patch_size and embed_dim of num_heads");
  }
  absl::StatusOr<std::pair<ImageDataset, ImageDataset>> data =
      LoadTrainVal(spec.arch.image_size, /*grayscale=*/true);
  if (!data.ok()) return data.status();
  const auto& [train_set, val_set] = *data;
  spec.arch.num_classes = static_cast<int>(train_set.class_names.size());
  spec.labels = train_set.class_names;
  const Normalization norm = ComputeNormalization(train_set);
  spec.preprocess.resize = spec.arch.image_size;
  spec.preprocess.crop_pct = 1.0f;
  spec.preprocess.interpolation = "area";
  spec.preprocess.mean = norm.mean;
  spec.preprocess.std = norm.std;
  spec.preprocess.grayscale = true;
  spec.preprocess.invert = false;
  spec.pruning.method = Method::kDense;
  spec.pruning.default_keep_rate = 1.0f;
  spec.pruning.min_keep_rate = 1.0f;  // a dense model serves keep-rate 1 only

  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  Vit vit(VitOptions::FromArchitecture(spec.arch));
  InitTimm(*vit);
  int64_t params = 0;
  for (const auto& p : vit->parameters()) params += p.numel();
  std::fprintf(stderr,
               "dense ViT: %d blocks, C=%d, %d heads, patch %d, %lld parameters; %lld train / %lld "
               "val images\n",
               spec.arch.depth, spec.arch.embed_dim, spec.arch.num_heads, spec.arch.patch_size,
               static_cast<long long>(params), static_cast<long long>(train_set.size()),
               static_cast<long long>(val_set.size()));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  DenseObjective objective(vit, absl::GetFlag(FLAGS_label_smoothing));
  absl::StatusOr<TrainResult> r =
      Train(objective, train_set, val_set, norm, TrainOptionsFromFlags(out_dir));
  if (!r.ok()) return r.status();
  PrintSummary(*r, "dense");
  vit->eval();
  return ExportModelDir(*vit, spec, out_dir, {});
}

// Loads the teacher directory twice: the frozen teacher and the student to train.
absl::StatusOr<std::pair<LoadedModel, LoadedModel>> LoadTeacherAndStudent() {
  const std::string teacher_dir = absl::GetFlag(FLAGS_teacher);
  if (teacher_dir.empty()) return absl::InvalidArgumentError("--teacher=DIR is required");
  if (absl::GetFlag(FLAGS_output_dir).empty()) {
    return absl::InvalidArgumentError("--output_dir is required");
  }
  absl::StatusOr<LoadedModel> teacher = LoadModelDir(teacher_dir);
  if (!teacher.ok()) return teacher.status();
  absl::StatusOr<LoadedModel> student = LoadModelDir(teacher_dir);
  if (!student.ok()) return student.status();
  return std::make_pair(*std::move(teacher), *std::move(student));
}

// --heads_from: copies the method heads that `dir` has and `vit` lacks (names in
// `missing`) into `vit`, after checking both share the backbone bit for bit (heads trained
// on another backbone would be meaningless). Returns the names still missing.
absl::StatusOr<std::vector<std::string>> CopyHeadsFrom(const std::string& dir, VitImpl& vit,
                                                       const std::vector<std::string>& missing) {
  if (dir.empty()) return missing;
  absl::StatusOr<LoadedModel> other = LoadModelDir(dir);
  if (!other.ok()) return other.status();
  const std::map<std::string, torch::Tensor> theirs = StateDictOf(*other->vit);
  const std::map<std::string, torch::Tensor> ours = StateDictOf(vit);
  for (const auto& [name, tensor] : ours) {
    if (IsBackboneParameter(name) && !torch::equal(tensor, theirs.at(name))) {
      return absl::FailedPreconditionError(
          absl::StrCat("--heads_from=", dir, ": backbone parameter '", name,
                       "' differs; heads only transfer "
                       "between models with the same (frozen) backbone"));
    }
  }
  std::vector<std::string> still_missing;
  torch::NoGradGuard no_grad;
  auto params = vit.named_parameters();
  for (const std::string& name : missing) {
    const bool they_have = std::find(other->missing_heads.begin(), other->missing_heads.end(),
                                     name) == other->missing_heads.end();
    if (they_have) {
      params[name].copy_(theirs.at(name));
    } else {
      still_missing.push_back(name);
    }
  }
  std::fprintf(stderr, "copied %zu head tensors from %s\n", missing.size() - still_missing.size(),
               dir.c_str());
  return still_missing;
}

// The pruning section of a trained model's spec: `method` at `locations`. Requests without
// a keep-rate or budget get full accuracy; the trained ratio is a training target, not a
// serving default (the calibration curve shows its cost).
PruningSpec TrainedPruningSpec(Method method, std::vector<int> locations) {
  PruningSpec p;
  p.method = method;
  p.locations = std::move(locations);
  p.default_keep_rate = 1.0f;
  p.min_keep_rate = 0.3f;
  p.max_keep_rate = 1.0f;
  return p;
}

// The end of a head-training run: the student in eval mode, heads it still lacks copied
// from --heads_from, exported to `out_dir` with `spec`. Missing heads whose names start
// with one of `trained_prefixes` were trained (or set) by this run; the others are
// exported as untrained.
absl::Status ExportStudent(LoadedModel& student, const ModelSpec& spec, const std::string& out_dir,
                           const std::vector<std::string>& trained_prefixes) {
  student.vit->eval();
  absl::StatusOr<std::vector<std::string>> missing =
      CopyHeadsFrom(absl::GetFlag(FLAGS_heads_from), *student.vit, student.missing_heads);
  if (!missing.ok()) return missing.status();
  std::vector<std::string> untrained;
  for (const std::string& m : *missing) {
    const bool trained =
        std::any_of(trained_prefixes.begin(), trained_prefixes.end(),
                    [&m](const std::string& prefix) { return m.rfind(prefix, 0) == 0; });
    if (!trained) untrained.push_back(m);
  }
  return ExportModelDir(*student.vit, spec, out_dir, untrained);
}

// The data of a distillation run: training and validation sets in the student's input
// format. Seeds LibTorch from --seed (after loading, as before any parameter is drawn).
struct TrainingData {
  ImageDataset train_set;
  ImageDataset val_set;
  Normalization norm;
};

absl::StatusOr<TrainingData> LoadTrainingData(const ModelSpec& student) {
  absl::StatusOr<std::pair<ImageDataset, ImageDataset>> data =
      LoadTrainVal(student.arch.image_size, student.preprocess.grayscale);
  if (!data.ok()) return data.status();
  TrainingData out{std::move(data->first), std::move(data->second), NormalizationOf(student)};
  torch::manual_seed(absl::GetFlag(FLAGS_seed));
  return out;
}

// Trains `objective` with the flags' options, checkpointing into `out_dir`, and prints the
// summary under `label`.
absl::Status TrainInto(Objective& objective, const TrainingData& data, const std::string& out_dir,
                       const std::string& label) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  absl::StatusOr<TrainResult> r =
      Train(objective, data.train_set, data.val_set, data.norm, TrainOptionsFromFlags(out_dir));
  if (!r.ok()) return r.status();
  PrintSummary(*r, label);
  return absl::OkStatus();
}

absl::Status RunDynamicVit() {
  absl::StatusOr<std::pair<LoadedModel, LoadedModel>> models = LoadTeacherAndStudent();
  if (!models.ok()) return models.status();
  auto& [teacher, student] = *models;
  const std::string out_dir = absl::GetFlag(FLAGS_output_dir);
  absl::StatusOr<TrainingData> data = LoadTrainingData(student.spec);
  if (!data.ok()) return data.status();
  DynamicVitObjectiveOptions o;
  absl::StatusOr<std::vector<int>> locations = ParseLocations(
      absl::GetFlag(FLAGS_locations), student.spec.arch.depth, DynamicVitLocations(student.spec));
  if (!locations.ok()) return locations.status();
  o.locations = *std::move(locations);
  o.keep_rate = static_cast<float>(absl::GetFlag(FLAGS_keep_rate));
  o.backbone_lr_scale = absl::GetFlag(FLAGS_backbone_lr_scale);
  o.weights.label_smoothing = absl::GetFlag(FLAGS_label_smoothing);
  o.dense_loss_weight = absl::GetFlag(FLAGS_dense_loss_weight);
  if (o.dense_loss_weight < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dense_loss_weight must be >= 0, got ", o.dense_loss_weight));
  }
  teacher.vit->eval();
  const double teacher_acc =
      Accuracy([&](const torch::Tensor& x) { return teacher.vit->forward(x); }, data->val_set,
               data->norm, 256);
  std::fprintf(stderr, "teacher val acc %.2f%%\n", 100.0 * teacher_acc);
  DynamicVitObjective objective(student.vit, teacher.vit, o);
  if (absl::Status st =
          TrainInto(objective, *data, out_dir, absl::StrCat("dynamicvit keep ", o.keep_rate));
      !st.ok()) {
    return st;
  }

  ModelSpec spec = student.spec;
  spec.name = absl::GetFlag(FLAGS_name);
  spec.pruning = TrainedPruningSpec(Method::kDynamicViT, o.locations);
  return ExportStudent(student, spec, out_dir, {"score_predictor."});
}

absl::Status RunTnt() {
  absl::StatusOr<std::pair<LoadedModel, LoadedModel>> models = LoadTeacherAndStudent();
  if (!models.ok()) return models.status();
  LoadedModel& student = models->second;
  const std::string out_dir = absl::GetFlag(FLAGS_output_dir);
  absl::StatusOr<TrainingData> data = LoadTrainingData(student.spec);
  if (!data.ok()) return data.status();
  TntObjectiveOptions o;
  o.locations = TntLocations(student.spec);
  o.validation_keep_rate = static_cast<float>(absl::GetFlag(FLAGS_keep_rate));
  o.noise_scale = absl::GetFlag(FLAGS_noise_scale);
  o.backbone_lr_scale = absl::GetFlag(FLAGS_backbone_lr_scale);
  o.label_smoothing = absl::GetFlag(FLAGS_label_smoothing);
  TntObjective objective(student.vit, o);
  if (absl::Status st = TrainInto(objective, *data, out_dir, "tnt"); !st.ok()) return st;

  ModelSpec spec = student.spec;
  spec.name = absl::GetFlag(FLAGS_name);
  // A teacher that is already a DynamicViT model stays one (its predictors are carried);
  // otherwise the directory becomes a TNT model.
  if (spec.pruning.method != Method::kDynamicViT) {
    spec.pruning = TrainedPruningSpec(Method::kTNT, o.locations);
  }
  // alpha_norm is frozen at identity but is part of the TNT head set: export it as set.
  return ExportStudent(student, spec, out_dir, {"alpha_heads.", "alpha_norm."});
}

absl::Status RunEvalCommand() {
  EvalOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model_dir);
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model_dir=DIR is required");
  o.split = absl::GetFlag(FLAGS_split);
  o.limit = absl::GetFlag(FLAGS_limit);
  o.methods.clear();
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_methods), ',', absl::SkipEmpty())) {
    absl::StatusOr<Method> method = ParseMethod(m);
    if (!method.ok()) return method.status();
    o.methods.push_back(*method);
  }
  o.keep_rates.clear();
  for (absl::string_view k :
       absl::StrSplit(absl::GetFlag(FLAGS_keep_rates), ',', absl::SkipEmpty())) {
    o.keep_rates.push_back(std::stof(std::string(k)));
  }
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.test_folder = absl::GetFlag(FLAGS_test_folder);
  o.val_size = absl::GetFlag(FLAGS_val_size);
  o.split_seed = absl::GetFlag(FLAGS_split_seed);
  absl::StatusOr<EvalReport> report = RunEval(o);
  if (!report.ok()) return report.status();
  std::printf("%s", FormatEvalTable(*report).c_str());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  SetCommandLineUsage(
      "server/train/main.cc",
      "vitserve_train COMMAND [flags]: the model toolchain (docs/training.md).\n"
      "  dense      --output_dir=DIR [--resume]        train a ViT from scratch\n"
      "  dynamicvit --teacher=DIR --output_dir=DIR     train DynamicViT predictors\n"
      "  tnt        --teacher=DIR --output_dir=DIR     train TNT noise allocators\n"
      "  eval       --model_dir=DIR [--split=test]     accuracy curve -> calibration.pbtxt");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(
        stderr,
        "usage: vitserve_train dense|dynamicvit|tnt|eval [flags]; --help lists the flags\n");
    return 2;
  }
  const std::string command = args[1];
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  const double start = Now();
  absl::Status st;
  try {
    if (command == "dense") {
      st = RunDense();
    } else if (command == "dynamicvit") {
      st = RunDynamicVit();
    } else if (command == "tnt") {
      st = RunTnt();
    } else if (command == "eval") {
      st = RunEvalCommand();
    } else {
      std::fprintf(stderr, "unknown subcommand '%s'\n", command.c_str());
      return 2;
    }
  } catch (const c10::Error& e) {
    st = absl::InternalError(e.what_without_backtrace());
  }
  if (!st.ok()) {
    std::fprintf(stderr, "vitserve_train %s: %s\n", command.c_str(), st.ToString().c_str());
    return 1;
  }
  std::printf("vitserve_train %s: done in %.1f s wall\n", command.c_str(), Now() - start);
  return 0;
}

}  // namespace
}  // namespace train
}  // namespace vitserve

int main(int argc, char** argv) { return vitserve::train::Main(argc, argv); }
