#include "server/runtime/inference_model.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/checkpoint/checkpoint.h"
#include "server/model/vit_inference_model.h"
#include "server/pruning/cost_model.h"

namespace vitserve {
namespace {

// 32x32 images, patch 4 (64 patches), C = 32, 4 heads, 4 blocks, 7 classes.
ModelSpec TinySpec(Method method) {
  ModelSpec s;
  s.name = "tiny";
  s.arch.image_size = 32;
  s.arch.patch_size = 4;
  s.arch.embed_dim = 32;
  s.arch.depth = 4;
  s.arch.num_heads = 4;
  s.arch.num_classes = 7;
  s.pruning.method = method;
  return s;
}

StateDict RandomWeights(const ModelSpec& spec, uint64_t seed) {
  torch::manual_seed(seed);
  Vit vit(VitOptions::FromSpec(spec.arch, spec.pruning));
  StateDict out;
  torch::NoGradGuard no_grad;
  for (const auto& item : vit->named_parameters()) {
    out[item.key()] = torch::randn(item.value().sizes()) * 0.2;
  }
  return out;
}

std::vector<ImageTensor> RandomImages(int n, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<ImageTensor> out(n);
  for (ImageTensor& img : out) {
    img.channels = 3;
    img.height = 32;
    img.width = 32;
    torch::Tensor t = torch::randn({3 * 32 * 32});
    img.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  return out;
}

std::vector<const ImageTensor*> Ptrs(const std::vector<ImageTensor>& v) {
  std::vector<const ImageTensor*> out;
  for (const ImageTensor& i : v) out.push_back(&i);
  return out;
}

std::unique_ptr<InferenceModel> MustCreate(const ModelSpec& spec, const StateDict& w,
                                           ModelLoadOptions opts = {}) {
  auto m = CreateInferenceModel(spec, w, opts);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

float MaxDiff(const std::vector<ImageResult>& a, const std::vector<ImageResult>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].logits.size(); ++j) {
      d = std::max(d, std::abs(a[i].logits[j] - b[i].logits[j]));
    }
  }
  return d;
}

TEST(InferenceModelTest, DenseRunMatchesModuleForward) {
  const ModelSpec spec = TinySpec(Method::kDense);
  const StateDict w = RandomWeights(spec, 1);
  auto model = MustCreate(spec, w);
  ASSERT_NE(model, nullptr);
  auto images = RandomImages(3, 2);
  auto res = model->Run(Ptrs(images), 1.0f);
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->size(), 3u);

  Vit vit(VitOptions::FromSpec(spec.arch, spec.pruning));
  ASSERT_TRUE(LoadStateDict(*vit, w).ok());
  vit->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> imgs;
  for (auto& i : images) imgs.push_back(torch::from_blob(i.data.data(), {3, 32, 32}));
  torch::Tensor want = vit->forward(torch::stack(imgs));
  for (int b = 0; b < 3; ++b) {
    ASSERT_EQ((*res)[b].logits.size(), 7u);
    for (int c = 0; c < 7; ++c) {
      EXPECT_NEAR((*res)[b].logits[c], want[b][c].item<float>(), 1e-4);
    }
    EXPECT_EQ((*res)[b].tokens_per_stage, std::vector<int>{65});
    EXPECT_EQ((*res)[b].macs, DenseMacs(spec.arch));
  }
  EXPECT_EQ(model->device(), "cpu");
  EXPECT_EQ(model->block_shapes().size(), 4u);
  EXPECT_EQ(model->block_shapes()[0].head_dim, 8);
}

TEST(InferenceModelTest, TokenCountsAndMacsFollowTheCostModel) {
  for (Method m : {Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT}) {
    const ModelSpec spec = TinySpec(m);
    auto model = MustCreate(spec, RandomWeights(spec, 3));
    ASSERT_NE(model, nullptr);
    auto images = RandomImages(2, 4);
    for (float keep : {1.0f, 0.7f, 0.5f}) {
      auto res = model->Run(Ptrs(images), keep);
      ASSERT_TRUE(res.ok()) << res.status();
      absl::StatusOr<CostEstimate> cost = EstimateCost(spec.arch, spec.pruning, keep);
      ASSERT_TRUE(cost.ok());
      for (const ImageResult& r : *res) {
        EXPECT_EQ(r.tokens_per_stage, cost->tokens_per_stage) << MethodName(m) << " " << keep;
        EXPECT_EQ(r.macs, cost->macs) << MethodName(m) << " " << keep;
      }
    }
  }
}

TEST(InferenceModelTest, SubBatchesGiveTheSameLogitsAsOneBatch) {
  const ModelSpec spec = TinySpec(Method::kEViT);
  const StateDict w = RandomWeights(spec, 5);
  ModelLoadOptions whole;
  whole.max_sub_batch = 0;
  ModelLoadOptions split;
  split.max_sub_batch = 2;
  auto a = MustCreate(spec, w, whole);
  auto b = MustCreate(spec, w, split);
  auto images = RandomImages(5, 6);
  auto ra = a->Run(Ptrs(images), 0.6f);
  auto rb = b->Run(Ptrs(images), 0.6f);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_EQ(rb->size(), 5u);
  EXPECT_LE(MaxDiff(*ra, *rb), 1e-4f);
  EXPECT_EQ((*ra)[4].tokens_per_stage, (*rb)[4].tokens_per_stage);
}

TEST(InferenceModelTest, DeterministicAcrossRunsAndThreads) {
  const ModelSpec spec = TinySpec(Method::kToMe);
  auto model = MustCreate(spec, RandomWeights(spec, 7));
  auto images = RandomImages(3, 8);
  auto first = model->Run(Ptrs(images), 0.7f);
  ASSERT_TRUE(first.ok());
  std::vector<std::vector<ImageResult>> outs(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      auto r = model->Run(Ptrs(images), 0.7f);
      if (r.ok()) outs[t] = *r;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& o : outs) {
    ASSERT_EQ(o.size(), 3u);
    EXPECT_EQ(MaxDiff(*first, o), 0.0f);
  }
}

TEST(InferenceModelTest, RejectsBadImagesAndKeepRates) {
  const ModelSpec spec = TinySpec(Method::kDense);
  auto model = MustCreate(spec, RandomWeights(spec, 9));
  auto images = RandomImages(2, 1);
  images[1].height = 31;
  auto r = model->Run(Ptrs(images), 1.0f);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("image 1"), std::string::npos) << r.status();
  images = RandomImages(1, 1);
  images[0].data.pop_back();
  EXPECT_EQ(model->Run(Ptrs(images), 1.0f).status().code(), absl::StatusCode::kInvalidArgument);
  images = RandomImages(1, 1);
  for (float bad : {0.0f, -0.5f, 1.01f, NAN}) {
    EXPECT_EQ(model->Run(Ptrs(images), bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  auto empty = model->Run({}, 1.0f);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(InferenceModelTest, MissingKeyIsNamed) {
  const ModelSpec spec = TinySpec(Method::kDense);
  StateDict w = RandomWeights(spec, 1);
  w.erase("blocks.2.attn.qkv.weight");
  auto m = CreateInferenceModel(spec, w, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("'blocks.2.attn.qkv.weight'"), std::string::npos)
      << m.status();
  EXPECT_NE(m.status().message().find("[96, 32]"), std::string::npos) << m.status();
}

TEST(InferenceModelTest, WrongShapeIsNamedWithBothShapes) {
  const ModelSpec spec = TinySpec(Method::kDense);
  StateDict w = RandomWeights(spec, 1);
  w["head.weight"] = torch::zeros({1000, 32});
  auto m = CreateInferenceModel(spec, w, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("'head.weight' has shape [1000, 32]"), std::string::npos)
      << m.status();
  EXPECT_NE(m.status().message().find("[7, 32]"), std::string::npos) << m.status();
}

TEST(InferenceModelTest, UnexpectedKeysAreReported) {
  const ModelSpec spec = TinySpec(Method::kDense);
  StateDict w = RandomWeights(spec, 1);
  w["head_dist.weight"] = torch::zeros({7, 32});
  auto m = CreateInferenceModel(spec, w, {});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("head_dist.weight"), std::string::npos) << m.status();
}

TEST(InferenceModelTest, OtherMethodHeadsAreIgnored) {
  ModelSpec dyvit = TinySpec(Method::kDynamicViT);
  const StateDict w = RandomWeights(dyvit, 1);
  Vit vit(VitOptions::FromSpec(TinySpec(Method::kDense).arch, PruningSpec{}));
  absl::StatusOr<std::vector<std::string>> ignored = LoadStateDict(*vit, w);
  ASSERT_TRUE(ignored.ok()) << ignored.status();
  EXPECT_EQ(ignored->size(), 3u * 10u);  // 3 predictors x 5 layers x (weight, bias)
  // A DynamicViT checkpoint served dense runs.
  auto m = CreateInferenceModel(TinySpec(Method::kDense), w, {});
  EXPECT_TRUE(m.ok()) << m.status();
}

TEST(InferenceModelTest, SpecAndDeviceErrors) {
  const ModelSpec spec = TinySpec(Method::kDense);
  const StateDict w = RandomWeights(spec, 1);
  ModelLoadOptions cuda;
  cuda.device = "cuda";
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(CreateInferenceModel(spec, w, cuda).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  ModelLoadOptions tpu;
  tpu.device = "tpu";
  EXPECT_EQ(CreateInferenceModel(spec, w, tpu).status().code(), absl::StatusCode::kInvalidArgument);
  ModelLoadOptions half;
  half.dtype = "float16";
  EXPECT_EQ(CreateInferenceModel(spec, w, half).status().code(),
            absl::StatusCode::kInvalidArgument);
  ModelSpec odd = spec;
  odd.arch.num_heads = 5;
  EXPECT_EQ(CreateInferenceModel(odd, w, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateInferenceModel(TinySpec(Method::kTriLevel), w, {}).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(InferenceModelTest, LoadsSafetensorsCheckpoint) {
  const ModelSpec base = TinySpec(Method::kDynamicViT);
  const StateDict w = RandomWeights(base, 12);
  const std::string path =
      (std::filesystem::path(::testing::TempDir()) / "vitserve_tiny_dyvit.safetensors").string();
  ASSERT_TRUE(SaveSafetensors(w, path).ok());
  ModelSpec spec = base;
  spec.weights_path = path;
  auto loaded = LoadInferenceModel(spec, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto direct = MustCreate(base, w);
  auto images = RandomImages(2, 13);
  auto a = (*loaded)->Run(Ptrs(images), 0.7f);
  auto b = direct->Run(Ptrs(images), 0.7f);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(MaxDiff(*a, *b), 0.0f);
  std::remove(path.c_str());

  spec.weights_path = path + ".does-not-exist";
  EXPECT_EQ(LoadInferenceModel(spec, {}).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace vitserve
