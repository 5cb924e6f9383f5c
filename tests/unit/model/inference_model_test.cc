#include "server/executor/inference_model.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/checkpoint/checkpoint.h"
#include "server/model/svite_compaction.h"
#include "server/model/vit_inference_model.h"
#include "server/spec/cost_model.h"

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

ModelLoadOptions WithThreads(int threads) {
  ModelLoadOptions o;
  o.intra_op_threads = threads;
  return o;
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

// Issue #21: loading a model changes no process-wide thread count (the last model loaded
// used to win), and models with different counts run side by side with equal results.
TEST(InferenceModelTest, ThreadCountsArePerModelNotProcessWide) {
  const ModelSpec spec = TinySpec(Method::kEViT);
  const StateDict w = RandomWeights(spec, 9);
  const int before = at::get_num_threads();
  ModelLoadOptions one;
  one.intra_op_threads = 1;
  ModelLoadOptions three;
  three.intra_op_threads = before == 3 ? 2 : 3;
  auto a = MustCreate(spec, w, one);
  auto b = MustCreate(spec, w, three);
  EXPECT_EQ(at::get_num_threads(), before);
  auto images = RandomImages(4, 10);
  auto ra = a->Run(Ptrs(images), 0.7f);
  auto rb = b->Run(Ptrs(images), 0.7f);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_LE(MaxDiff(*ra, *rb), 1e-4f);
  EXPECT_EQ(at::get_num_threads(), before);
}

// With two or more threads a batch of two or more images runs as image shards, one per
// thread, each on the one-thread GEMM plan; the logits agree with one thread running the
// whole batch, for every method, with sub-batches inside the shards and an odd batch.
TEST(InferenceModelTest, ImageShardsGiveTheSameLogitsAsOneThread) {
  for (Method m :
       {Method::kDense, Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT}) {
    const ModelSpec spec = TinySpec(m);
    const StateDict w = RandomWeights(spec, 11);
    ModelLoadOptions two = WithThreads(2);
    two.max_sub_batch = 2;
    auto a = MustCreate(spec, w, WithThreads(1));
    auto b = MustCreate(spec, w, two);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    for (int n : {2, 5}) {
      auto images = RandomImages(n, 12);
      auto ra = a->Run(Ptrs(images), 0.7f);
      auto rb = b->Run(Ptrs(images), 0.7f);
      ASSERT_TRUE(ra.ok() && rb.ok()) << MethodName(m);
      ASSERT_EQ(rb->size(), static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ((*rb)[i].logits.size(), 7u) << MethodName(m) << " image " << i;
        EXPECT_EQ((*ra)[i].tokens_per_stage, (*rb)[i].tokens_per_stage) << MethodName(m);
      }
      EXPECT_LE(MaxDiff(*ra, *rb), 1e-4f) << MethodName(m) << " batch " << n;
    }
  }
}

// One image on two threads: split across them or run on one (forced, and adaptive, which
// runs both during its warm-up) gives the same tokens and logits within rounding, and
// the choice is reported with the kernel choices; an unknown mode is refused at load.
TEST(InferenceModelTest, OneImageSplitOrSingleGiveTheSameLogits) {
  for (Method m : {Method::kDense, Method::kDynamicViT, Method::kToMe}) {
    const ModelSpec spec = TinySpec(m);
    const StateDict w = RandomWeights(spec, 17);
    auto images = RandomImages(1, 18);
    std::vector<std::vector<ImageResult>> outs;
    for (const char* mode : {"split", "single", "adaptive"}) {
      ModelLoadOptions o = WithThreads(2);
      o.one_image_split = mode;
      auto model = MustCreate(spec, w, o);
      ASSERT_NE(model, nullptr);
      for (int i = 0; i < 24; ++i) {  // adaptive: past its warm-up (10 of each kind)
        auto r = model->Run(Ptrs(images), 0.7f);
        ASSERT_TRUE(r.ok()) << r.status();
        if (i == 0) outs.push_back(*r);
        EXPECT_LE(MaxDiff(outs.back(), *r), 1e-5f) << MethodName(m) << " " << mode << " run " << i;
      }
      int lines = 0;
      for (const std::string& c : model->kernel_choices()) {
        if (c.rfind("one image: ", 0) != 0) continue;
        ++lines;
        if (std::string(mode) == "adaptive") {
          EXPECT_TRUE(c.find("split (split") != std::string::npos ||
                      c.find("single (split") != std::string::npos)
              << c;
        } else {
          EXPECT_EQ(c, absl::StrCat("one image: ", mode, " (forced)"));
        }
      }
      EXPECT_EQ(lines, 1) << mode;
    }
    EXPECT_LE(MaxDiff(outs[0], outs[1]), 1e-4f) << MethodName(m);
    EXPECT_EQ(outs[0][0].tokens_per_stage, outs[1][0].tokens_per_stage) << MethodName(m);
  }
  const ModelSpec spec = TinySpec(Method::kDense);
  ModelLoadOptions bad = WithThreads(2);
  bad.one_image_split = "both";
  auto made = CreateInferenceModel(spec, RandomWeights(spec, 1), bad);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(made.status().message().find("adaptive, split, single"), std::string::npos);
}

// The shards' one-thread kernel choices are timed at load and reported (GetModelInfo)
// only for models that run with more than one thread.
TEST(InferenceModelTest, ShardKernelChoicesAreReportedForMultiThreadModels) {
  const ModelSpec spec = TinySpec(Method::kDense);
  const StateDict w = RandomWeights(spec, 13);
  auto a = MustCreate(spec, w, WithThreads(1));
  auto b = MustCreate(spec, w, WithThreads(2));
  auto shard_lines = [](const InferenceModel& model) {
    int lines = 0;
    for (const std::string& c : model.kernel_choices()) {
      lines += c.rfind("per-image-shard, 1 thread: ", 0) == 0 ? 1 : 0;
    }
    return lines;
  };
  EXPECT_EQ(shard_lines(*a), 0);
  // Six (n, k) shapes (patch embedding, qkv, proj, fc1, fc2, head) at 1, 4 (a shard of a
  // full sub-batch of 8) and 8 images.
  EXPECT_EQ(shard_lines(*b), 18);
  EXPECT_FALSE(a->kernel_choices().empty());
}

// DynamicViT's out_fc0 runs on its per-token half (C/2 x C/2, here 16 x 16), split at
// load: that is the shape the plan times, so the GEMM can take a packed kernel; the full
// C/2 x C weight is never multiplied and not timed.
TEST(InferenceModelTest, DynamicVitPlansTheSplitPredictorWeight) {
  const ModelSpec spec = TinySpec(Method::kDynamicViT);
  auto model = MustCreate(spec, RandomWeights(spec, 5));
  int split = 0;
  int full = 0;
  for (const std::string& c : model->kernel_choices()) {
    split += c.find("x16x16 ") != std::string::npos ? 1 : 0;
    full += c.find("x16x32 ") != std::string::npos ? 1 : 0;
  }
  EXPECT_GT(split, 0);
  EXPECT_EQ(full, 0);
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
  ModelSpec distilled_svite = TinySpec(Method::kSViTE);
  distilled_svite.arch.distilled = true;
  EXPECT_EQ(
      CreateInferenceModel(distilled_svite, RandomWeights(distilled_svite, 2), {}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// SViTE-style pruning of TinySpec weights (C = 32, 4 heads of 8, MLP 128):
//   block 0: heads 1, 3 fully masked (q, k, v rows), MLP units 0..63 masked (fc1 row and
//            fc2 column) -- the official structured masks;
//   block 1: only the v rows of head 0 zero (q, k live), fc1 rows of units 0..31 zero
//            (their GELU(bias) output is a constant that must be folded);
//   block 2: every head masked (one must stay), fc2 columns of units 10..20 zero;
//   block 3: untouched.
StateDict SvitePruned(StateDict w) {
  for (auto& [key, t] : w) t = t.clone();  // the map copy shares storage with the input
  const int64_t c = 32, d = 8;
  auto rows = [&](int block, int64_t start, int64_t len) {
    w["blocks." + std::to_string(block) + ".attn.qkv.weight"].narrow(0, start, len).zero_();
  };
  for (int64_t h : {1, 3}) {
    for (int part = 0; part < 3; ++part) rows(0, part * c + h * d, d);
  }
  w["blocks.0.mlp.fc1.weight"].narrow(0, 0, 64).zero_();
  w["blocks.0.mlp.fc2.weight"].narrow(1, 0, 64).zero_();
  rows(1, 2 * c, d);
  w["blocks.1.mlp.fc1.weight"].narrow(0, 0, 32).zero_();
  rows(2, 0, 3 * c);
  w["blocks.2.mlp.fc2.weight"].narrow(1, 10, 11).zero_();
  return w;
}

TEST(InferenceModelTest, SviteCompactionKeepsTheLogits) {
  const ModelSpec spec = TinySpec(Method::kSViTE);
  const StateDict w = SvitePruned(RandomWeights(spec, 21));
  auto compacted = CompactSvite(spec.arch, w);
  ASSERT_TRUE(compacted.ok()) << compacted.status();
  EXPECT_EQ(compacted->heads_removed, 2 + 1 + 3);
  EXPECT_EQ(compacted->mlp_units_removed, 64 + 32 + 11);
  ASSERT_EQ(compacted->blocks.size(), 4u);
  const int want[4][2] = {{2, 64}, {3, 96}, {1, 117}, {4, 128}};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(compacted->blocks[i].num_heads, want[i][0]) << "block " << i;
    EXPECT_EQ(compacted->blocks[i].head_dim, 8) << "block " << i;
    EXPECT_EQ(compacted->blocks[i].mlp_hidden, want[i][1]) << "block " << i;
  }
  // Block 2 keeps one fully masked head: its zero rows are unstructured zeros now.
  EXPECT_GT(compacted->weight_zero_fraction, 0.0);
  EXPECT_LT(compacted->weight_zero_fraction, 0.1);

  // The compacted model against the masked weights run dense and uncompacted.
  auto svite = MustCreate(spec, w);
  auto dense = MustCreate(TinySpec(Method::kDense), w);
  ASSERT_TRUE(svite && dense);
  EXPECT_EQ(svite->block_shapes()[1].num_heads, 3);
  EXPECT_LT(DenseMacs(spec.arch, svite->block_shapes()), DenseMacs(spec.arch));
  const std::vector<ImageTensor> images = RandomImages(3, 5);
  auto got = svite->Run(Ptrs(images), 1.0f);
  auto want_logits = dense->Run(Ptrs(images), 1.0f);
  ASSERT_TRUE(got.ok() && want_logits.ok());
  EXPECT_LT(MaxDiff(*got, *want_logits), 1e-4f);
  // Dropping the pruned units without folding their constants (what zeroing the pruned
  // head's v-bias and the fc1-pruned units' bias computes) moves the logits visibly, so
  // the check above is not vacuous.
  StateDict no_bias = w;
  no_bias["blocks.1.attn.qkv.bias"] = w.at("blocks.1.attn.qkv.bias").clone();
  no_bias["blocks.1.attn.qkv.bias"].narrow(0, 2 * 32, 8).zero_();
  no_bias["blocks.1.mlp.fc1.bias"] = w.at("blocks.1.mlp.fc1.bias").clone();
  no_bias["blocks.1.mlp.fc1.bias"].narrow(0, 0, 32).zero_();
  auto changed = MustCreate(TinySpec(Method::kDense), no_bias);
  auto moved = changed->Run(Ptrs(images), 1.0f);
  ASSERT_TRUE(moved.ok());
  EXPECT_GT(MaxDiff(*moved, *want_logits), 1e-2f);

  // Token selection: k = int(65 * 0.5) = 32; CLS forced on, so 32 or 33 real tokens.
  auto half = svite->Run(Ptrs(images), 0.5f);
  ASSERT_TRUE(half.ok()) << half.status();
  for (const ImageResult& r : *half) {
    ASSERT_EQ(r.tokens_per_stage.size(), 2u);
    EXPECT_EQ(r.tokens_per_stage[0], 65);
    EXPECT_TRUE(r.tokens_per_stage[1] == 32 || r.tokens_per_stage[1] == 33)
        << r.tokens_per_stage[1];
    EXPECT_LT(r.macs, (*got)[0].macs);
  }
}

TEST(InferenceModelTest, SviteMasksAreAppliedAndChecked) {
  const ModelSpec spec = TinySpec(Method::kSViTE);
  StateDict w = RandomWeights(spec, 22);
  const StateDict masked = SvitePruned(w);
  std::map<std::string, StateDict> extra;
  for (const char* key : {"blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"}) {
    extra["atten_mask"][std::string(key) + "_mask"] = (masked.at(key) != 0).to(torch::kFloat);
  }
  extra["optimizer"]["state"] = torch::ones({1});  // other entries are ignored
  ASSERT_TRUE(ApplySviteMasks(extra, &w).ok());
  EXPECT_TRUE(
      torch::equal(w.at("blocks.0.attn.qkv.weight"), masked.at("blocks.0.attn.qkv.weight")));
  EXPECT_TRUE(torch::equal(w.at("blocks.0.mlp.fc1.weight"), masked.at("blocks.0.mlp.fc1.weight")));
  extra["other_mask"]["blocks.0.mlp.fc2.weight_mask"] = torch::ones({3, 3});
  EXPECT_EQ(ApplySviteMasks(extra, &w).code(), absl::StatusCode::kInvalidArgument);
  extra["other_mask"].clear();
  extra["other_mask"]["blocks.9.mlp.fc2.weight_mask"] = torch::ones({32, 128});
  EXPECT_EQ(ApplySviteMasks(extra, &w).code(), absl::StatusCode::kInvalidArgument);
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
