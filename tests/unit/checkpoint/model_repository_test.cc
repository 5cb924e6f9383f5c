// The model repository: config.pbtxt parsing, defaults, validation, path-traversal
// safety, labels and calibration files, and the writers' round trip. Torch-free.
#include "server/checkpoint/model_repository.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace vitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/vitserve_repo_XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string Labels(int n, const std::string& trailer = "") {
  std::string s;
  for (int i = 0; i < n; ++i) s += "  class_" + std::to_string(i) + " \r\n";
  return s + trailer;
}

// DeiT-S with EViT on a 10-class head (small labels file).
constexpr char kGoodConfig[] = R"pb(
  version: "2"
  architecture {
    image_size: 224
    patch_size: 16
    in_chans: 3
    embed_dim: 384
    depth: 12
    num_heads: 6
    mlp_ratio: 4
    num_classes: 10
  }
  preprocessing { interpolation: "bilinear" crop_pct: 0.9 }
  pruning { method: "EViT" default_keep_rate: 0.7 min_keep_rate: 0.5 max_keep_rate: 1 }
  weights: "deit_small_evit.pth"
  labels: "labels.txt"
  calibration: "calibration.pbtxt"
)pb";

constexpr char kCalibration[] = R"pb(
  dataset: "imagenet-val"
  num_examples: 50000
  points { method: "evit" keep_rate: 0.7 top1: 0.795 agreement: 0.93 macs: 3000000000 }
  points { method: "evit" keep_rate: 1 top1: 0.798 agreement: 1 macs: 4600000000 }
)pb";

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    repo_ = tmp_.path();
    model_dir_ = repo_ + "/deit_s_evit";
    WriteFile(model_dir_ + "/deit_small_evit.pth", "weights are not opened here");
    WriteFile(model_dir_ + "/labels.txt", Labels(10, "\n\n  \n"));
    WriteFile(model_dir_ + "/calibration.pbtxt", kCalibration);
  }

  absl::StatusOr<ModelSpec> Parse(const std::string& text) {
    return ParseModelSpec(text, model_dir_);
  }

  TempDir tmp_;
  std::string repo_;
  std::string model_dir_;
};

TEST_F(RepositoryTest, GoodConfigIsParsedWithDefaults) {
  WriteFile(model_dir_ + "/config.pbtxt", kGoodConfig);
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "deit_s_evit");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "deit_s_evit");
  EXPECT_EQ(spec->version, "2");
  EXPECT_EQ(spec->dir, fs::absolute(model_dir_).lexically_normal().string());
  EXPECT_EQ(spec->arch.embed_dim, 384);
  EXPECT_EQ(spec->arch.num_classes, 10);
  EXPECT_FALSE(spec->arch.distilled);
  EXPECT_EQ(spec->pruning.method, Method::kEViT);
  EXPECT_THAT(spec->pruning.locations, ElementsAre(3, 6, 9));
  EXPECT_FLOAT_EQ(spec->pruning.default_keep_rate, 0.7f);
  EXPECT_FLOAT_EQ(spec->pruning.min_keep_rate, 0.5f);
  EXPECT_EQ(spec->preprocess.interpolation, "bilinear");
  EXPECT_FLOAT_EQ(spec->preprocess.crop_pct, 0.9f);
  EXPECT_EQ(spec->preprocess.resize, 0);
  EXPECT_THAT(spec->preprocess.mean, ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_THAT(spec->preprocess.std, ElementsAre(0.229f, 0.224f, 0.225f));
  EXPECT_EQ(spec->weights_path, spec->dir + "/deit_small_evit.pth");
  EXPECT_EQ(spec->labels_path, spec->dir + "/labels.txt");
  ASSERT_EQ(spec->labels.size(), 10u);
  EXPECT_EQ(spec->labels[0], "class_0");  // trimmed, CR removed
  EXPECT_EQ(spec->labels[9], "class_9");
  ASSERT_EQ(spec->calibration.size(), 2u);
  EXPECT_EQ(spec->calibration[0].method, "evit");
  EXPECT_FLOAT_EQ(spec->calibration[0].keep_rate, 0.7f);
  EXPECT_DOUBLE_EQ(spec->calibration[0].top1, 0.795);
  EXPECT_EQ(spec->calibration[1].macs, 4600000000ull);
}

TEST_F(RepositoryTest, MinimalConfigGetsEveryDefault) {
  absl::StatusOr<ModelSpec> spec = Parse(R"pb(weights: "deit_small_evit.pth")pb");
  ASSERT_TRUE(spec.ok()) << spec.status();
  const Architecture arch;
  const PreprocessSpec pre;
  const PruningSpec pruning;
  EXPECT_EQ(spec->name, "deit_s_evit");
  EXPECT_EQ(spec->version, "1");
  EXPECT_EQ(spec->arch.image_size, arch.image_size);
  EXPECT_EQ(spec->arch.embed_dim, arch.embed_dim);
  EXPECT_EQ(spec->arch.num_classes, arch.num_classes);
  EXPECT_EQ(spec->arch.mlp_ratio, arch.mlp_ratio);
  EXPECT_EQ(spec->preprocess.crop_pct, pre.crop_pct);
  EXPECT_EQ(spec->preprocess.interpolation, pre.interpolation);
  EXPECT_EQ(spec->pruning.method, Method::kDense);
  EXPECT_TRUE(spec->pruning.locations.empty());
  // Dense: keep-rate 1.0 only, whatever PruningSpec's defaults are.
  EXPECT_EQ(spec->pruning.default_keep_rate, 1.0f);
  EXPECT_EQ(spec->pruning.min_keep_rate, 1.0f);
  EXPECT_EQ(spec->pruning.max_keep_rate, 1.0f);
  EXPECT_LT(pruning.min_keep_rate, 1.0f);  // so the line above tests the dense rule
  EXPECT_TRUE(spec->labels.empty());
  EXPECT_TRUE(spec->labels_path.empty());
  EXPECT_TRUE(spec->calibration.empty());
}

TEST_F(RepositoryTest, DenseModelServesKeepRateOneWhateverTheConfigSays) {
  // vitserve_train wrote min_keep_rate 0.1 into dense configs before the rule existed.
  absl::StatusOr<ModelSpec> spec = Parse(R"pb(
    pruning { method: "dense" default_keep_rate: 1 min_keep_rate: 0.1 max_keep_rate: 1 }
    weights: "deit_small_evit.pth"
  )pb");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pruning.min_keep_rate, 1.0f);
  EXPECT_EQ(spec->pruning.max_keep_rate, 1.0f);
  EXPECT_EQ(spec->pruning.default_keep_rate, 1.0f);
}

TEST_F(RepositoryTest, ToMeDefaultsToEveryBlockAndGrayscaleTakesOneChannel) {
  absl::StatusOr<ModelSpec> spec = Parse(R"pb(
    architecture { depth: 4 in_chans: 1 image_size: 28 patch_size: 7 embed_dim: 64 num_heads: 4 }
    preprocessing { grayscale: true invert: true mean: 0.1307 std: 0.3081 }
    pruning { method: "tome" }
    weights: "deit_small_evit.pth"
  )pb");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->pruning.locations, ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(spec->preprocess.mean, ElementsAre(0.1307f));
  EXPECT_TRUE(spec->preprocess.invert);
}

struct BadConfig {
  std::string name;
  std::string config;  // appended to a valid base naming the weights
  std::string expected;
};

void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.name; }

class RepositoryBadConfigTest : public RepositoryTest,
                                public ::testing::WithParamInterface<BadConfig> {};

TEST_P(RepositoryBadConfigTest, IsInvalidArgumentNamingTheField) {
  absl::StatusOr<ModelSpec> spec = Parse(GetParam().config);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(GetParam().expected));
}

const std::string kWeights = "weights: \"deit_small_evit.pth\"\n";

INSTANTIATE_TEST_SUITE_P(
    Cases, RepositoryBadConfigTest,
    ::testing::Values(
        BadConfig{"unknown_field", kWeights + "\n  archtecture { depth: 3 }",
                  "line 3, column 15: Message type \"vitserve.v1.ModelConfig\" has no field named "
                  "\"archtecture\""},
        BadConfig{"syntax", kWeights + "pruning { method: evit", "line 2"},
        BadConfig{"unknown_method", kWeights + "pruning { method: \"topk\" }",
                  "pruning.method: unknown method 'topk'; accepted: dense"},
        BadConfig{"heads", kWeights + "architecture { embed_dim: 384 num_heads: 5 }",
                  "architecture.embed_dim: 384 is not divisible by num_heads 5"},
        BadConfig{"patch", kWeights + "architecture { image_size: 224 patch_size: 15 }",
                  "architecture.image_size: 224 is not divisible by patch_size 15"},
        BadConfig{"mlp_ratio", kWeights + "architecture { mlp_ratio: -1 }",
                  "architecture.mlp_ratio"},
        // Regressions (fuzzing): uint32 sizes of 2^31 and more became negative ints, so
        // 2^31 / (2^32 - 1) heads computed INT_MIN % -1 (a trap) and a negative image_size
        // passed; huge patch counts and MLP sizes overflowed int downstream.
        BadConfig{"heads_int_min",
                  kWeights + "architecture { embed_dim: 2147483648 num_heads: 4294967295 }",
                  "architecture: a dimension is implausibly large"},
        BadConfig{"negative_image",
                  kWeights + "architecture { image_size: 4294967280 patch_size: 16 }",
                  "architecture: a dimension is implausibly large"},
        BadConfig{"patches", kWeights + "architecture { image_size: 65536 patch_size: 1 }",
                  "architecture.image_size: 65536 / patch_size 1 gives 4294967296 patches"},
        BadConfig{"mlp_huge", kWeights + "architecture { mlp_ratio: 1e30 }",
                  "architecture.mlp_ratio: 1e+30 x embed_dim 384 is an implausibly large MLP"},
        BadConfig{"mean_len", kWeights + "preprocessing { mean: [0.5, 0.5] }",
                  "preprocessing.mean: has 2 values, in_chans is 3"},
        BadConfig{"std_len", kWeights + "preprocessing { std: [0.5] }",
                  "preprocessing.std: has 1 values, in_chans is 3"},
        BadConfig{"std_zero", kWeights + "preprocessing { std: [0.5, 0, 0.5] }",
                  "preprocessing.std: values must be positive"},
        BadConfig{"gray_rgb", kWeights + "preprocessing { grayscale: true }",
                  "preprocessing.grayscale"},
        BadConfig{"one_chan_no_mean",
                  kWeights + "architecture { in_chans: 1 } preprocessing { grayscale: true }",
                  "preprocessing.mean: must be given (1 values)"},
        BadConfig{"crop", kWeights + "preprocessing { crop_pct: 1.5 }", "preprocessing.crop_pct"},
        BadConfig{"resize", kWeights + "preprocessing { resize: 100 }",
                  "preprocessing.resize: 100 is smaller than image_size 224"},
        BadConfig{"interp", kWeights + "preprocessing { interpolation: \"mitchell\" }",
                  "preprocessing.interpolation: unknown 'mitchell'"},
        BadConfig{
            "min_gt_default",
            kWeights + "pruning { method: \"evit\" min_keep_rate: 0.8 default_keep_rate: 0.7 }",
            "0 < min_keep_rate (0.8) <= default_keep_rate (0.7)"},
        BadConfig{
            "default_gt_max",
            kWeights + "pruning { method: \"evit\" default_keep_rate: 0.9 max_keep_rate: 0.8 }",
            "default_keep_rate (0.9) <= max_keep_rate (0.8)"},
        BadConfig{"max_gt_1", kWeights + "pruning { method: \"evit\" max_keep_rate: 1.5 }",
                  "pruning.max_keep_rate: 1.5 is outside (0, 1]"},
        BadConfig{"negative_min", kWeights + "pruning { method: \"evit\" min_keep_rate: -0.1 }",
                  "pruning.min_keep_rate"},
        BadConfig{"location_depth", kWeights + "pruning { method: \"evit\" locations: [3, 12] }",
                  "pruning.locations: block 12 does not exist (depth 12)"},
        BadConfig{"location_order", kWeights + "pruning { method: \"evit\" locations: [6, 3] }",
                  "pruning.locations: must be strictly increasing"},
        BadConfig{"dense_locations", kWeights + "pruning { locations: [3] }",
                  "a dense model has no reduction locations"},
        BadConfig{"attn_ratio", kWeights + "pruning { method: \"evit\" attn_ratio: 0.5 }",
                  "pruning.attn_ratio: applies only to method trilevel"},
        BadConfig{"tnt_seed", kWeights + "pruning { method: \"evit\" tnt_seed: 3 }",
                  "pruning.tnt_seed: applies only to method tnt"},
        BadConfig{"svite_flag", kWeights + "pruning { svite_plain_removal: true }",
                  "pruning.svite_plain_removal"},
        BadConfig{"no_weights", "version: \"1\"", "weights: missing"},
        BadConfig{"weights_missing", "weights: \"nope.pth\"", "weights: file '"},
        BadConfig{"weights_escape", "weights: \"../deit_s_evit/deit_small_evit.pth\"",
                  "weights: '../deit_s_evit/deit_small_evit.pth' may not leave the model"},
        BadConfig{"weights_absolute", "weights: \"/etc/passwd\"",
                  "weights: '/etc/passwd' must be relative"},
        BadConfig{"labels_missing", kWeights + "labels: \"nope.txt\"", "labels: file '"},
        BadConfig{"labels_count", kWeights + "labels: \"labels.txt\"",
                  "labels: 'labels.txt' has 10 labels, architecture.num_classes is 1000"},
        BadConfig{"name_mismatch", kWeights + "name: \"other\"",
                  "name: 'other' differs from the directory name 'deit_s_evit'"},
        BadConfig{"calibration_missing", kWeights + "calibration: \"nope.pbtxt\"",
                  "calibration: file '"}));

TEST_F(RepositoryTest, EmptyLabelLineInTheMiddleIsRefused) {
  WriteFile(model_dir_ + "/labels.txt", "a\n\nc\n");
  absl::StatusOr<ModelSpec> spec =
      Parse(kWeights + "labels: \"labels.txt\" architecture { num_classes: 3 }");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("line 2 of"));
}

TEST_F(RepositoryTest, BadCalibrationIsRefused) {
  WriteFile(model_dir_ + "/calibration.pbtxt", "points { method: \"fast\" keep_rate: 0.5 }");
  absl::StatusOr<ModelSpec> spec = Parse(kWeights + "calibration: \"calibration.pbtxt\"");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("points[0]: unknown method 'fast'"));
  WriteFile(model_dir_ + "/calibration.pbtxt",
            "points { method: \"evit\" keep_rate: 0.5 top1: 79.5 }");
  spec = Parse(kWeights + "calibration: \"calibration.pbtxt\"");
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("fractions in [0, 1]"));
}

TEST_F(RepositoryTest, TraversalNamesAreRefused) {
  WriteFile(model_dir_ + "/config.pbtxt", kGoodConfig);
  WriteFile(repo_ + "/.hidden/config.pbtxt", kGoodConfig);
  for (const std::string name :
       {"../x", "a/b", ".hidden", "", ".", "..", "../deit_s_evit", "deit_s_evit/", "/etc"}) {
    absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, name);
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << "'" << name << "'";
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr("invalid model name")) << name;
  }
}

TEST_F(RepositoryTest, UnknownModelIsNotFound) {
  EXPECT_EQ(LoadModelSpec(repo_, "deit_b").status().code(), absl::StatusCode::kNotFound);
  // A directory without config.pbtxt is not a model either.
  EXPECT_EQ(LoadModelSpec(repo_, "deit_s_evit").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RepositoryTest, LoadErrorsNameTheConfigFile) {
  WriteFile(model_dir_ + "/config.pbtxt", kWeights + "pruning { method: \"x\" }");
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "deit_s_evit");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("deit_s_evit/config.pbtxt: pruning.method"));
}

TEST_F(RepositoryTest, ListModelsFindsConfiguredDirectoriesSorted) {
  WriteFile(model_dir_ + "/config.pbtxt", kGoodConfig);
  WriteFile(repo_ + "/a_model/config.pbtxt", kWeights);
  WriteFile(repo_ + "/.hidden/config.pbtxt", kWeights);
  WriteFile(repo_ + "/no_config/readme.txt", "x");
  WriteFile(repo_ + "/stray_file", "x");
  absl::StatusOr<std::vector<std::string>> names = ListModels(repo_);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_THAT(*names, ElementsAre("a_model", "deit_s_evit"));
  EXPECT_EQ(ListModels(repo_ + "/missing").status().code(), absl::StatusCode::kNotFound);
}

void ExpectSameSpec(const ModelSpec& a, const ModelSpec& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.dir, b.dir);
  EXPECT_EQ(a.arch.image_size, b.arch.image_size);
  EXPECT_EQ(a.arch.patch_size, b.arch.patch_size);
  EXPECT_EQ(a.arch.in_chans, b.arch.in_chans);
  EXPECT_EQ(a.arch.embed_dim, b.arch.embed_dim);
  EXPECT_EQ(a.arch.depth, b.arch.depth);
  EXPECT_EQ(a.arch.num_heads, b.arch.num_heads);
  EXPECT_EQ(a.arch.mlp_ratio, b.arch.mlp_ratio);
  EXPECT_EQ(a.arch.num_classes, b.arch.num_classes);
  EXPECT_EQ(a.arch.distilled, b.arch.distilled);
  EXPECT_EQ(a.preprocess.resize, b.preprocess.resize);
  EXPECT_EQ(a.preprocess.crop_pct, b.preprocess.crop_pct);
  EXPECT_EQ(a.preprocess.interpolation, b.preprocess.interpolation);
  EXPECT_EQ(a.preprocess.mean, b.preprocess.mean);
  EXPECT_EQ(a.preprocess.std, b.preprocess.std);
  EXPECT_EQ(a.preprocess.grayscale, b.preprocess.grayscale);
  EXPECT_EQ(a.preprocess.invert, b.preprocess.invert);
  EXPECT_EQ(a.pruning.method, b.pruning.method);
  EXPECT_EQ(a.pruning.locations, b.pruning.locations);
  EXPECT_EQ(a.pruning.default_keep_rate, b.pruning.default_keep_rate);
  EXPECT_EQ(a.pruning.min_keep_rate, b.pruning.min_keep_rate);
  EXPECT_EQ(a.pruning.max_keep_rate, b.pruning.max_keep_rate);
  EXPECT_EQ(a.pruning.attn_ratio, b.pruning.attn_ratio);
  EXPECT_EQ(a.pruning.svite_plain_removal, b.pruning.svite_plain_removal);
  EXPECT_EQ(a.pruning.tnt_seed, b.pruning.tnt_seed);
  EXPECT_EQ(a.weights_path, b.weights_path);
  EXPECT_EQ(a.labels_path, b.labels_path);
  EXPECT_EQ(a.calibration_path, b.calibration_path);
  EXPECT_EQ(a.labels, b.labels);
  ASSERT_EQ(a.calibration.size(), b.calibration.size());
  for (size_t i = 0; i < a.calibration.size(); ++i) {
    EXPECT_EQ(a.calibration[i].method, b.calibration[i].method);
    EXPECT_EQ(a.calibration[i].keep_rate, b.calibration[i].keep_rate);
    EXPECT_EQ(a.calibration[i].top1, b.calibration[i].top1);
    EXPECT_EQ(a.calibration[i].agreement, b.calibration[i].agreement);
    EXPECT_EQ(a.calibration[i].macs, b.calibration[i].macs);
  }
}

TEST_F(RepositoryTest, WriteModelConfigRoundTrips) {
  absl::StatusOr<ModelSpec> spec = Parse(kGoodConfig);
  ASSERT_TRUE(spec.ok()) << spec.status();
  // Non-default values everywhere the writer could drop them.
  spec->arch.distilled = true;
  spec->arch.mlp_ratio = 2.5;
  spec->preprocess.resize = 256;
  spec->preprocess.mean = {0.5f, 0.25f, 0.125f};
  spec->pruning.method = Method::kTriLevel;
  spec->pruning.locations = {2, 5, 8};
  spec->pruning.attn_ratio = 0.3f;
  spec->pruning.min_keep_rate = 0.3f;
  ASSERT_TRUE(WriteModelConfig(*spec, model_dir_ + "/config.pbtxt").ok());
  absl::StatusOr<ModelSpec> back = LoadModelSpec(repo_, "deit_s_evit");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSpec(*spec, *back);

  spec->pruning = PruningSpec();
  spec->pruning.method = Method::kTNT;
  spec->pruning.locations = {6};
  spec->pruning.tnt_seed = 1234567890123ull;
  spec->labels_path.clear();
  spec->labels.clear();
  ASSERT_TRUE(WriteModelConfig(*spec, model_dir_ + "/config.pbtxt").ok());
  back = LoadModelSpec(repo_, "deit_s_evit");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameSpec(*spec, *back);
}

TEST_F(RepositoryTest, WriteCalibrationRoundTrips) {
  std::vector<CalibrationPoint> points(2);
  points[0] = {"dynamicvit", 0.7f, 0.793, 0.9412345678901, 2900000000ull};
  points[1] = {"dynamicvit", 1.0f, 0.798, 1.0, 18446744073709551615ull};
  const std::string path = model_dir_ + "/calib.pbtxt";
  ASSERT_TRUE(WriteCalibration(points, "imagenet-val", 50000, path).ok());
  absl::StatusOr<std::vector<CalibrationPoint>> back = ReadCalibration(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*back)[i].method, points[i].method);
    EXPECT_EQ((*back)[i].keep_rate, points[i].keep_rate);
    EXPECT_EQ((*back)[i].top1, points[i].top1);
    EXPECT_EQ((*back)[i].agreement, points[i].agreement);
    EXPECT_EQ((*back)[i].macs, points[i].macs);
  }
  EXPECT_EQ(ReadCalibration(model_dir_ + "/none.pbtxt").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve
