// Hugging Face config.json / preprocessor_config.json parsing (hf_config.h) and the model
// repository's Hugging Face directories (hf_model_dir.h via LoadModelSpec). Torch-free.
#include "server/checkpoint/hf_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_replace.h"
#include "server/checkpoint/model_repository.h"

namespace vitserve {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// A ViT-Ti-like config as transformers writes it (abridged).
constexpr char kVitConfig[] = R"json({
  "architectures": ["ViTForImageClassification"],
  "model_type": "vit",
  "hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3,
  "intermediate_size": 768, "image_size": 224, "patch_size": 16, "num_channels": 3,
  "layer_norm_eps": 1e-12, "hidden_act": "gelu", "qkv_bias": true,
  "hidden_dropout_prob": 0.0, "encoder_stride": 16,
  "id2label": {"0": "cat", "1": "dog", "2": "bird"},
  "label2id": {"cat": 0, "dog": 1, "bird": 2}
})json";

constexpr char kVitPreprocessor[] = R"json({
  "do_normalize": true, "do_rescale": true, "do_resize": true,
  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
  "image_processor_type": "ViTImageProcessor", "resample": 2,
  "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}
})json";

std::string Replace(const std::string& text, const std::string& from, const std::string& to) {
  return absl::StrReplaceAll(text, {{from, to}});
}

TEST(HfConfigTest, ReadsVit) {
  absl::StatusOr<HfModelConfig> c = ParseHfConfig(kVitConfig);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hf_class, kHfVit);
  EXPECT_EQ(c->arch.embed_dim, 192);
  EXPECT_EQ(c->arch.depth, 12);
  EXPECT_EQ(c->arch.num_heads, 3);
  EXPECT_EQ(c->arch.mlp_hidden(), 768);
  EXPECT_EQ(c->arch.num_classes, 3);
  EXPECT_FALSE(c->arch.distilled);
  EXPECT_DOUBLE_EQ(c->arch.norm_eps, 1e-12);
  EXPECT_THAT(c->labels, ElementsAre("cat", "dog", "bird"));
  EXPECT_THAT(c->sources,
              testing::Contains(Pair("architecture.norm_eps", "config.json layer_norm_eps")));
}

TEST(HfConfigTest, DeitClassesAreDistilled) {
  for (const char* cls : {"DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"}) {
    std::string text = Replace(kVitConfig, "ViTForImageClassification", cls);
    text = Replace(text, "\"vit\"", "\"deit\"");
    absl::StatusOr<HfModelConfig> c = ParseHfConfig(text);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->arch.distilled) << cls;
    EXPECT_EQ(c->hf_class, cls);
  }
}

TEST(HfConfigTest, QkvBiasFalseAndAbsent) {
  absl::StatusOr<HfModelConfig> off =
      ParseHfConfig(Replace(kVitConfig, "\"qkv_bias\": true", "\"qkv_bias\": false"));
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->arch.qkv_bias);
  absl::StatusOr<HfModelConfig> absent =
      ParseHfConfig(Replace(kVitConfig, "\"qkv_bias\": true,", ""));
  ASSERT_TRUE(absent.ok()) << absent.status();
  EXPECT_TRUE(absent->arch.qkv_bias);
  EXPECT_THAT(absent->sources, testing::Contains(Pair("qkv_bias", HasSubstr("default"))));
}

// Each unsupported or malformed config names what is wrong.
TEST(HfConfigTest, RefusesWithClearMessages) {
  const struct {
    std::string from, to, message;
  } cases[] = {
      {"\"gelu\"", "\"gelu_new\"", "hidden_act: 'gelu_new' is not supported"},
      {"\"gelu\"", "\"gelu_pytorch_tanh\"", "tanh approximations"},
      {"\"gelu\"", "\"relu\"", "hidden_act: 'relu'"},
      {"\"encoder_stride\": 16", "\"layerscale_value\": 1e-5", "layerscale_value"},
      {"\"encoder_stride\": 16", "\"use_mean_pooling\": true", "use_mean_pooling"},
      {"ViTForImageClassification", "BeitForImageClassification", "not supported; supported"},
      {"\"vit\"", "\"deit\"", "model_type: 'deit' does not match"},
      {"\"hidden_size\": 192,", "", "hidden_size: missing"},
      {"\"num_attention_heads\": 3", "\"num_attention_heads\": 5", "not divisible"},
      {"\"patch_size\": 16", "\"patch_size\": 15", "not divisible by patch_size"},
      {"\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": \"small\"", "must be a number"},
      {"\"2\": \"bird\"", "\"7\": \"bird\"", "id2label: entry \"7\""},
      {"\"image_size\": 224", "\"image_size\": 224,,", "not valid JSON"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<HfModelConfig> r = ParseHfConfig(Replace(kVitConfig, c.from, c.to));
    ASSERT_FALSE(r.ok()) << c.to;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.to;
  }
}

TEST(HfPreprocessorTest, SquashWithoutCrop) {
  Architecture arch;
  absl::StatusOr<HfPreprocessConfig> p = ParseHfPreprocessorConfig(kVitPreprocessor, arch);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->preprocess.resize_height, 224);
  EXPECT_EQ(p->preprocess.resize_width, 224);
  EXPECT_EQ(p->preprocess.crop, "none");
  EXPECT_EQ(p->preprocess.interpolation, "bilinear");
  EXPECT_THAT(p->preprocess.mean, ElementsAre(0.5f, 0.5f, 0.5f));
  EXPECT_DOUBLE_EQ(p->preprocess.rescale_factor, 1.0 / 255.0);
}

// DeiT's processor: resize to 256x256 (an int size is a square), bicubic, crop 224.
TEST(HfPreprocessorTest, IntSizeAndCenterCrop) {
  std::string text = Replace(kVitPreprocessor, "{\"height\": 224, \"width\": 224}", "256");
  text = Replace(text, "\"resample\": 2",
                 "\"resample\": 3, \"do_center_crop\": true, "
                 "\"crop_size\": {\"height\": 224, \"width\": 224}");
  absl::StatusOr<HfPreprocessConfig> p = ParseHfPreprocessorConfig(text, Architecture{});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->preprocess.resize_height, 256);
  EXPECT_EQ(p->preprocess.crop, "center_floor");
  EXPECT_EQ(p->preprocess.interpolation, "bicubic");
}

TEST(HfPreprocessorTest, ShortestEdgeNoNormaliseNoRescale) {
  std::string text =
      Replace(kVitPreprocessor, "{\"height\": 224, \"width\": 224}", "{\"shortest_edge\": 256}");
  text = Replace(text, "\"resample\": 2",
                 "\"resample\": 2, \"do_center_crop\": true, "
                 "\"crop_size\": 224");
  text = Replace(text, "\"do_normalize\": true", "\"do_normalize\": false");
  text = Replace(text, "\"do_rescale\": true", "\"do_rescale\": false");
  absl::StatusOr<HfPreprocessConfig> p = ParseHfPreprocessorConfig(text, Architecture{});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->preprocess.resize, 256);
  EXPECT_EQ(p->preprocess.resize_height, 0);
  EXPECT_THAT(p->preprocess.mean, ElementsAre(0.0f, 0.0f, 0.0f));
  EXPECT_THAT(p->preprocess.std, ElementsAre(1.0f, 1.0f, 1.0f));
  EXPECT_DOUBLE_EQ(p->preprocess.rescale_factor, 1.0);
}

TEST(HfPreprocessorTest, RefusesWithClearMessages) {
  const struct {
    std::string from, to, message;
  } cases[] = {
      {"\"do_resize\": true,", "", "do_resize: missing"},
      {"\"resample\": 2", "\"resample\": 9", "resample: 9 is outside"},
      {"{\"height\": 224, \"width\": 224}", "{\"longest_edge\": 224}", "size: "},
      {"{\"height\": 224, \"width\": 224}", "{\"height\": 256, \"width\": 224}",
       "without a center crop"},
      {"\"resample\": 2", "\"resample\": 2, \"do_center_crop\": true, \"crop_size\": 192",
       "crop_size: 192x192 differs"},
      {"[0.5, 0.5, 0.5], \"image_std\"", "[0.5, 0.5], \"image_std\"", "image_mean: must be a list"},
      {"\"image_std\": [0.5, 0.5, 0.5]", "\"image_std\": [0.5, 0, 0.5]", "must be positive"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<HfPreprocessConfig> r =
        ParseHfPreprocessorConfig(Replace(kVitPreprocessor, c.from, c.to), Architecture{});
    ASSERT_FALSE(r.ok()) << c.to;
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.to;
  }
}

// --- Model directories through the repository -------------------------------------------

class HfRepoTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/vitserve_hf_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    repo_ = tmpl;
    dir_ = repo_ + "/hf_vit";
    fs::create_directories(dir_);
    Write("config.json", kVitConfig);
    Write("preprocessor_config.json", kVitPreprocessor);
    Write("model.safetensors", "placeholder: only checked to exist here");
  }
  void TearDown() override { fs::remove_all(repo_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << text;
  }
  std::string repo_, dir_;
};

TEST_F(HfRepoTest, LoadsWithoutConfigPbtxt) {
  absl::StatusOr<std::vector<std::string>> models = ListModels(repo_);
  ASSERT_TRUE(models.ok());
  EXPECT_THAT(*models, ElementsAre("hf_vit"));
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->weights_layout, "huggingface");
  EXPECT_EQ(spec->hf_architecture, kHfVit);
  EXPECT_EQ(spec->pruning.method, Method::kDense);
  EXPECT_THAT(spec->labels, ElementsAre("cat", "dog", "bird"));
  EXPECT_THAT(spec->weights_path, testing::EndsWith("/hf_vit/model.safetensors"));
  EXPECT_THAT(spec->sources, testing::Contains(Pair("pruning", HasSubstr("default"))));
}

TEST_F(HfRepoTest, SmallConfigPbtxtChoosesPruning) {
  Write("config.pbtxt", "pruning { method: \"evit\" min_keep_rate: 0.5 default_keep_rate: 0.7 }");
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pruning.method, Method::kEViT);
  EXPECT_FLOAT_EQ(spec->pruning.min_keep_rate, 0.5f);
  EXPECT_EQ(spec->weights_layout, "huggingface");
}

TEST_F(HfRepoTest, ConfigPbtxtMayNotOverrideTheHfFiles) {
  Write("config.pbtxt", "architecture { depth: 6 }");
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("architecture: comes from config.json"));
}

TEST_F(HfRepoTest, MissingFilesAreNamed) {
  fs::remove(dir_ + "/preprocessor_config.json");
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("preprocessor_config.json"));
  Write("preprocessor_config.json", kVitPreprocessor);
  fs::remove(dir_ + "/model.safetensors");
  spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("no model.safetensors or pytorch_model.bin"));
  Write("pytorch_model.bin", "zip");
  spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->weights_path, testing::EndsWith("pytorch_model.bin"));
  Write("model.safetensors.index.json", "{}");
  spec = LoadModelSpec(repo_, "hf_vit");
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("sharded checkpoints are not supported"));
}

}  // namespace
}  // namespace vitserve
