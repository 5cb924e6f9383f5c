#include "server/vit/vit_module.h"

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// A small ViT so the tests stay fast: 32x32 image, patch 8 (16 patches), C = 32, 2 blocks.
Architecture TinyArch() {
  Architecture a;
  a.image_size = 32;
  a.patch_size = 8;
  a.embed_dim = 32;
  a.depth = 2;
  a.num_heads = 4;
  a.num_classes = 10;
  return a;
}

std::map<std::string, std::vector<int64_t>> Shapes(const Vit& vit) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& item : vit->named_parameters()) {
    out[item.key()] = item.value().sizes().vec();
  }
  return out;
}

// Hugging Face configs carry their own LayerNorm eps (1e-12): it must reach every backbone
// LayerNorm (the executor's fast LayerNorm reads it from the module's options).
TEST(VitModuleTest, NormEpsComesFromTheArchitecture) {
  Architecture a = TinyArch();
  EXPECT_DOUBLE_EQ(VitOptions::FromArchitecture(a).norm_eps, 1e-6);
  a.norm_eps = 1e-12;
  Vit vit(VitOptions::FromArchitecture(a));
  int layer_norms = 0;
  for (const auto& m : vit->modules(/*include_self=*/false)) {
    if (const auto* ln = m->as<torch::nn::LayerNormImpl>()) {
      EXPECT_DOUBLE_EQ(ln->options.eps(), 1e-12);
      ++layer_norms;
    }
  }
  EXPECT_EQ(layer_norms, 2 * a.depth + 1);
}

TEST(VitModuleTest, DenseKeysAreTimmStateDictKeys) {
  Vit vit(VitOptions::FromArchitecture(TinyArch()));
  std::map<std::string, std::vector<int64_t>> expected = {
      {"cls_token", {1, 1, 32}},
      {"pos_embed", {1, 17, 32}},
      {"patch_embed.proj.weight", {32, 3, 8, 8}},
      {"patch_embed.proj.bias", {32}},
      {"norm.weight", {32}},
      {"norm.bias", {32}},
      {"head.weight", {10, 32}},
      {"head.bias", {10}},
  };
  for (int i = 0; i < 2; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    expected[p + "norm1.weight"] = {32};
    expected[p + "norm1.bias"] = {32};
    expected[p + "attn.qkv.weight"] = {96, 32};
    expected[p + "attn.qkv.bias"] = {96};
    expected[p + "attn.proj.weight"] = {32, 32};
    expected[p + "attn.proj.bias"] = {32};
    expected[p + "norm2.weight"] = {32};
    expected[p + "norm2.bias"] = {32};
    expected[p + "mlp.fc1.weight"] = {128, 32};
    expected[p + "mlp.fc1.bias"] = {128};
    expected[p + "mlp.fc2.weight"] = {32, 128};
    expected[p + "mlp.fc2.bias"] = {32};
  }
  EXPECT_EQ(Shapes(vit), expected);
}

TEST(VitModuleTest, DistilledAddsDistTokenAndHead) {
  Architecture a = TinyArch();
  a.distilled = true;
  auto shapes = Shapes(Vit(VitOptions::FromArchitecture(a)));
  EXPECT_EQ(shapes.at("dist_token"), (std::vector<int64_t>{1, 1, 32}));
  EXPECT_EQ(shapes.at("pos_embed"), (std::vector<int64_t>{1, 18, 32}));
  EXPECT_EQ(shapes.at("head_dist.weight"), (std::vector<int64_t>{10, 32}));
}

TEST(VitModuleTest, DynamicVitPredictorKeys) {
  Architecture a = TinyArch();
  a.depth = 4;
  PruningSpec p;
  p.method = Method::kDynamicViT;  // default locations {1, 2, 3}: three predictors
  auto shapes = Shapes(Vit(VitOptions::FromSpec(a, p)));
  for (int i = 0; i < 3; ++i) {
    const std::string s = "score_predictor." + std::to_string(i) + ".";
    EXPECT_EQ(shapes.at(s + "in_conv.0.weight"), (std::vector<int64_t>{32})) << s;
    EXPECT_EQ(shapes.at(s + "in_conv.0.bias"), (std::vector<int64_t>{32})) << s;
    EXPECT_EQ(shapes.at(s + "in_conv.1.weight"), (std::vector<int64_t>{32, 32})) << s;
    EXPECT_EQ(shapes.at(s + "out_conv.0.weight"), (std::vector<int64_t>{16, 32})) << s;
    EXPECT_EQ(shapes.at(s + "out_conv.2.weight"), (std::vector<int64_t>{8, 16})) << s;
    EXPECT_EQ(shapes.at(s + "out_conv.4.weight"), (std::vector<int64_t>{2, 8})) << s;
    EXPECT_EQ(shapes.at(s + "out_conv.4.bias"), (std::vector<int64_t>{2})) << s;
  }
  EXPECT_EQ(shapes.count("score_predictor.3.in_conv.0.weight"), 0u);
  // No other predictor keys than the five linear/norm layers (GELUs have no parameters).
  int predictor_keys = 0;
  for (const auto& [k, v] : shapes) predictor_keys += k.rfind("score_predictor.", 0) == 0;
  EXPECT_EQ(predictor_keys, 3 * 10);
}

// The inference copy of out_fc0's per-token half: made by SplitOutFc0, equal to the weight's
// first C/2 columns, and withdrawn once the weight changes (a training step), so a caller
// never multiplies by stale values.
TEST(VitModuleTest, OutFc0LocalIsTheFirstHalfUntilTheWeightChanges) {
  Architecture a = TinyArch();
  PruningSpec p;
  p.method = Method::kDynamicViT;
  p.locations = {1};
  Vit vit(VitOptions::FromSpec(a, p));
  ScorePredictorImpl& predictor = vit->predictor(0);
  EXPECT_FALSE(predictor.OutFc0Local().defined());  // not split yet
  predictor.SplitOutFc0();
  torch::Tensor local = predictor.OutFc0Local();
  ASSERT_TRUE(local.defined());
  EXPECT_TRUE(local.is_contiguous());
  EXPECT_EQ(local.sizes().vec(), (std::vector<int64_t>{16, 16}));
  EXPECT_TRUE(torch::equal(local, predictor.out_fc0->weight.narrow(1, 0, 16)));
  {
    torch::NoGradGuard no_grad;
    predictor.out_fc0->weight.add_(1.0);
  }
  EXPECT_FALSE(predictor.OutFc0Local().defined());
  predictor.SplitOutFc0();
  EXPECT_TRUE(torch::equal(predictor.OutFc0Local(), predictor.out_fc0->weight.narrow(1, 0, 16)));
}

TEST(VitModuleTest, TntAndSviteHeadKeys) {
  Architecture a = TinyArch();
  PruningSpec tnt;
  tnt.method = Method::kTNT;
  auto shapes = Shapes(Vit(VitOptions::FromSpec(a, tnt)));
  EXPECT_EQ(shapes.at("alpha_heads.0.weight"), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(shapes.at("alpha_heads.1.bias"), (std::vector<int64_t>{1}));
  EXPECT_EQ(shapes.at("alpha_norm.weight"), (std::vector<int64_t>{32}));
  EXPECT_EQ(shapes.count("alpha_heads.2.weight"), 0u);

  PruningSpec svite;
  svite.method = Method::kSViTE;
  shapes = Shapes(Vit(VitOptions::FromSpec(a, svite)));
  EXPECT_EQ(shapes.at("gumbel.weight"), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(shapes.at("gumbel.bias"), (std::vector<int64_t>{1}));
}

// The forward pass against an independent, op-by-op restatement of timm's ViT.
TEST(VitModuleTest, ForwardMatchesExplicitTimmComputation) {
  torch::manual_seed(7);
  Architecture a = TinyArch();
  a.distilled = true;
  Vit vit(VitOptions::FromArchitecture(a));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : vit->parameters()) p.normal_(0.0, 0.2);
  }
  vit->eval();
  torch::Tensor images = torch::randn({3, 3, 32, 32});

  torch::NoGradGuard no_grad;
  const torch::Tensor got = vit->forward(images);

  auto params = vit->named_parameters();
  auto P = [&](const std::string& k) { return params[k]; };
  auto ln = [&](const torch::Tensor& x, const std::string& k) {
    torch::Tensor mu = x.mean(-1, true);
    torch::Tensor var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / torch::sqrt(var + 1e-6) * P(k + ".weight") + P(k + ".bias");
  };
  auto lin = [&](const torch::Tensor& x, const std::string& k) {
    return torch::matmul(x, P(k + ".weight").t()) + P(k + ".bias");
  };
  // Patch embedding by explicit unfolding: patch (r, c) covers rows 8r..8r+7.
  torch::Tensor patches = images.unfold(2, 8, 8).unfold(3, 8, 8);  // [B,3,4,4,8,8]
  patches = patches.permute({0, 2, 3, 1, 4, 5}).reshape({3, 16, 3 * 64});
  torch::Tensor x = torch::matmul(patches, P("patch_embed.proj.weight").reshape({32, -1}).t()) +
                    P("patch_embed.proj.bias");
  x = torch::cat({P("cls_token").expand({3, 1, 32}), P("dist_token").expand({3, 1, 32}), x}, 1) +
      P("pos_embed");
  for (int i = 0; i < 2; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    torch::Tensor h = lin(ln(x, b + "norm1"), b + "attn.qkv");  // [B, N, 96]
    std::vector<torch::Tensor> heads;
    for (int hh = 0; hh < 4; ++hh) {
      torch::Tensor q = h.narrow(-1, hh * 8, 8);
      torch::Tensor k = h.narrow(-1, 32 + hh * 8, 8);
      torch::Tensor v = h.narrow(-1, 64 + hh * 8, 8);
      torch::Tensor att = torch::softmax(torch::matmul(q, k.transpose(1, 2)) / std::sqrt(8.0), -1);
      heads.push_back(torch::matmul(att, v));
    }
    x = x + lin(torch::cat(heads, -1), b + "attn.proj");
    torch::Tensor m = lin(ln(x, b + "norm2"), b + "mlp.fc1");
    m = 0.5 * m * (1 + torch::erf(m / std::sqrt(2.0)));
    x = x + lin(m, b + "mlp.fc2");
  }
  x = ln(x, "norm");
  torch::Tensor want = (lin(x.select(1, 0), "head") + lin(x.select(1, 1), "head_dist")) / 2;
  EXPECT_LT((got - want).abs().max().item<float>(), 1e-4);
}

}  // namespace
}  // namespace vitserve
