// Hugging Face -> timm key renaming (hf_weights.h): the mapping itself (q/k/v order,
// heads), and the load errors for missing keys, unexpected keys and wrong shapes.
#include "server/checkpoint/hf_weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "server/checkpoint/hf_config.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

Architecture TinyArch(bool distilled) {
  Architecture a;
  a.image_size = 8;
  a.patch_size = 4;
  a.embed_dim = 6;
  a.depth = 2;
  a.num_heads = 2;
  a.mlp_ratio = 2.0;
  a.num_classes = 5;
  a.distilled = distilled;
  return a;
}

// A complete Hugging Face state dict for `arch` with random values.
StateDict HfDict(const Architecture& a, const std::string& prefix, const std::string& cls) {
  const int64_t c = a.embed_dim, h = a.mlp_hidden(), k = a.num_classes;
  const int64_t n = a.num_patches() + a.num_prefix_tokens();
  StateDict sd;
  const std::string e = prefix + "embeddings.";
  sd[e + "cls_token"] = torch::randn({1, 1, c});
  if (a.distilled) sd[e + "distillation_token"] = torch::randn({1, 1, c});
  sd[e + "position_embeddings"] = torch::randn({1, n, c});
  sd[e + "patch_embeddings.projection.weight"] =
      torch::randn({c, a.in_chans, a.patch_size, a.patch_size});
  sd[e + "patch_embeddings.projection.bias"] = torch::randn({c});
  auto linear = [&sd](const std::string& name, int64_t out, int64_t in) {
    sd[name + ".weight"] = torch::randn({out, in});
    sd[name + ".bias"] = torch::randn({out});
  };
  auto norm = [&sd, c](const std::string& name) {
    sd[name + ".weight"] = torch::randn({c});
    sd[name + ".bias"] = torch::randn({c});
  };
  for (int i = 0; i < a.depth; ++i) {
    const std::string l = absl::StrCat(prefix, "encoder.layer.", i, ".");
    norm(l + "layernorm_before");
    norm(l + "layernorm_after");
    for (const char* p : {"query", "key", "value"}) linear(l + "attention.attention." + p, c, c);
    linear(l + "attention.output.dense", c, c);
    linear(l + "intermediate.dense", h, c);
    linear(l + "output.dense", c, h);
  }
  norm(prefix + "layernorm");
  if (cls == kHfDeitTeacher) {
    linear("cls_classifier", k, c);
    linear("distillation_classifier", k, c);
  } else {
    linear("classifier", k, c);
  }
  return sd;
}

TEST(HfWeightsTest, VitMapping) {
  const Architecture a = TinyArch(false);
  StateDict hf = HfDict(a, "vit.", std::string(kHfVit));
  absl::StatusOr<StateDict> sd = HfToTimmStateDict(hf, a, kHfVit);
  ASSERT_TRUE(sd.ok()) << sd.status();
  const std::string l = "vit.encoder.layer.1.attention.attention.";
  const torch::Tensor qkv = sd->at("blocks.1.attn.qkv.weight");
  ASSERT_EQ(qkv.sizes(), (std::vector<int64_t>{18, 6}));
  EXPECT_TRUE(torch::equal(qkv.narrow(0, 0, 6), hf.at(l + "query.weight")));
  EXPECT_TRUE(torch::equal(qkv.narrow(0, 6, 6), hf.at(l + "key.weight")));
  EXPECT_TRUE(torch::equal(qkv.narrow(0, 12, 6), hf.at(l + "value.weight")));
  EXPECT_TRUE(
      torch::equal(sd->at("blocks.1.attn.qkv.bias").narrow(0, 6, 6), hf.at(l + "key.bias")));
  EXPECT_TRUE(torch::equal(sd->at("blocks.0.norm2.weight"),
                           hf.at("vit.encoder.layer.0.layernorm_after.weight")));
  EXPECT_TRUE(torch::equal(sd->at("blocks.0.mlp.fc2.weight"),
                           hf.at("vit.encoder.layer.0.output.dense.weight")));
  EXPECT_TRUE(torch::equal(sd->at("head.weight"), hf.at("classifier.weight")));
  EXPECT_EQ(sd->count("head_dist.weight"), 0u);
  EXPECT_EQ(sd->size(), 4u + 2 * 12u + 2u + 2u);
}

TEST(HfWeightsTest, QkvBiasFalseGivesZeroBiases) {
  Architecture a = TinyArch(false);
  a.qkv_bias = false;
  StateDict hf = HfDict(a, "vit.", std::string(kHfVit));
  for (int i = 0; i < a.depth; ++i) {
    for (const char* p : {"query", "key", "value"}) {
      hf.erase(absl::StrCat("vit.encoder.layer.", i, ".attention.attention.", p, ".bias"));
    }
  }
  absl::StatusOr<StateDict> sd = HfToTimmStateDict(hf, a, kHfVit);
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_EQ(sd->at("blocks.0.attn.qkv.bias").abs().sum().item<float>(), 0.0f);
}

TEST(HfWeightsTest, DeitHeads) {
  const Architecture a = TinyArch(true);
  StateDict teacher = HfDict(a, "deit.", std::string(kHfDeitTeacher));
  absl::StatusOr<StateDict> t = HfToTimmStateDict(teacher, a, kHfDeitTeacher);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(torch::equal(t->at("head.weight"), teacher.at("cls_classifier.weight")));
  EXPECT_TRUE(torch::equal(t->at("head_dist.bias"), teacher.at("distillation_classifier.bias")));
  EXPECT_TRUE(torch::equal(t->at("dist_token"), teacher.at("deit.embeddings.distillation_token")));

  StateDict plain = HfDict(a, "deit.", std::string(kHfDeit));
  absl::StatusOr<StateDict> p = HfToTimmStateDict(plain, a, kHfDeit);
  ASSERT_TRUE(p.ok()) << p.status();
  // (head(cls) + head_dist(dist)) / 2 == classifier(cls): head doubled, head_dist zero.
  EXPECT_TRUE(torch::equal(p->at("head.weight"), plain.at("classifier.weight") * 2));
  EXPECT_EQ(p->at("head_dist.weight").abs().sum().item<float>(), 0.0f);
}

TEST(HfWeightsTest, PoolerIsIgnored) {
  const Architecture a = TinyArch(false);
  StateDict hf = HfDict(a, "vit.", std::string(kHfVit));
  hf["vit.pooler.dense.weight"] = torch::randn({6, 6});
  EXPECT_TRUE(HfToTimmStateDict(hf, a, kHfVit).ok());
}

TEST(HfWeightsTest, MissingUnexpectedAndMisshapenKeysAreListed) {
  const Architecture a = TinyArch(false);
  StateDict hf = HfDict(a, "vit.", std::string(kHfVit));
  hf.erase("vit.encoder.layer.1.attention.attention.value.weight");
  hf["vit.encoder.layer.0.intermediate.dense.weight"] = torch::randn({13, 6});
  hf["vit.encoder.layer.0.layer_scale1.lambda1"] = torch::randn({6});
  absl::StatusOr<StateDict> sd = HfToTimmStateDict(hf, a, kHfVit);
  ASSERT_FALSE(sd.ok());
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(sd.status().message());
  EXPECT_THAT(msg, HasSubstr("1 missing: vit.encoder.layer.1.attention.attention.value.weight "
                             "[6,6]"));
  EXPECT_THAT(msg, HasSubstr("vit.encoder.layer.0.intermediate.dense.weight: expected [12,6], "
                             "got [13,6]"));
  EXPECT_THAT(msg, HasSubstr("1 unexpected: vit.encoder.layer.0.layer_scale1.lambda1"));
}

TEST(HfWeightsTest, TimmKeysAreNotHuggingFaceKeys) {
  const Architecture a = TinyArch(false);
  StateDict timm;
  timm["cls_token"] = torch::randn({1, 1, 6});
  absl::StatusOr<StateDict> sd = HfToTimmStateDict(timm, a, kHfVit);
  ASSERT_FALSE(sd.ok());
  EXPECT_THAT(sd.status().message(), HasSubstr("unexpected: cls_token"));
  EXPECT_THAT(sd.status().message(), HasSubstr("missing: vit.embeddings.cls_token"));
}

}  // namespace
}  // namespace vitserve
