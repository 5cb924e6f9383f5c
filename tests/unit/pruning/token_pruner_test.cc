// Each method's executed forward against a slow per-image restatement of the official
// eval-mode behaviour of the official code, plus token counts against the cost model.
#include "server/pruning/token_pruner.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/pruning/block_ops.h"
#include "server/pruning/task_pool.h"
#include "server/spec/cost_model.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

constexpr float kLogitTolerance = 1e-4f;

// 32x32 images, patch 4 (64 patches), C = 32, 4 heads, 4 blocks (locations {1, 2, 3}).
Architecture TinyArch(bool distilled) {
  Architecture a;
  a.image_size = 32;
  a.patch_size = 4;
  a.embed_dim = 32;
  a.depth = 4;
  a.num_heads = 4;
  a.num_classes = 7;
  a.distilled = distilled;
  return a;
}

PruningSpec Spec(Method m) {
  PruningSpec s;
  s.method = m;
  return s;
}

// Weights with well-separated decisions (avoiding ties): std 0.2 everywhere,
// LayerNorm weights around 1.
Vit MakeVit(const Architecture& arch, const PruningSpec& spec, uint64_t seed) {
  torch::manual_seed(seed);
  Vit vit(VitOptions::FromSpec(arch, spec));
  torch::NoGradGuard no_grad;
  for (auto& item : vit->named_parameters()) {
    torch::Tensor p = item.value();
    const std::string& k = item.key();
    const bool is_norm_weight =
        (k.find("norm") != std::string::npos || k.find("in_conv.0") != std::string::npos) &&
        k.find(".weight") != std::string::npos;
    if (is_norm_weight) {
      p.normal_(1.0, 0.1);
    } else {
      p.normal_(0.0, 0.2);
    }
  }
  vit->eval();
  return vit;
}

torch::Tensor Images(int batch, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({batch, 3, 32, 32});
}

// ---- Slow references, one image at a time ([1, N, C]) ----------------------------------

torch::Tensor RefBlock(VitImpl& vit, int i, const torch::Tensor& x) {
  return vit.block(i).forward(x);
}

// Indices of `scores` (1-D) sorted by descending score.
std::vector<int64_t> DescendingOrder(const torch::Tensor& scores) {
  torch::Tensor s = scores.contiguous();
  std::vector<float> v(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  return idx;
}

torch::Tensor Rows(const torch::Tensor& x, const std::vector<int64_t>& rows) {
  return x.index_select(1, torch::tensor(rows, torch::kLong));
}

torch::Tensor RefDynamicVit(VitImpl& vit, const torch::Tensor& image, float keep_rate) {
  const VitOptions& o = vit.options();
  const int prefix = o.num_prefix_tokens();
  const std::vector<int> locs = DefaultLocations(Method::kDynamicViT, o.depth);
  torch::Tensor x = vit.Embed(image);
  int p = 0;
  for (int i = 0; i < o.depth; ++i) {
    if (p < static_cast<int>(locs.size()) && locs[p] == i) {
      const int n = static_cast<int>(x.size(1)) - prefix;
      // int(N0 · ρ^(p+1)), from the initial patch count.
      const int keep =
          static_cast<int>(o.num_patches() * std::pow(double{keep_rate}, p + 1) + 1e-9);
      torch::Tensor patches = x.narrow(1, prefix, n);
      torch::Tensor score = vit.predictor(p).forward(patches)[0].select(-1, 0);
      std::vector<int64_t> order = DescendingOrder(score);
      order.resize(std::min<int>(keep, n));
      x = torch::cat({x.narrow(1, 0, prefix), Rows(patches, order)}, 1);
      ++p;
    }
    x = RefBlock(vit, i, x);
  }
  return vit.Head(x);
}

torch::Tensor RefEvit(VitImpl& vit, const torch::Tensor& image, float keep_rate) {
  const VitOptions& o = vit.options();
  const int prefix = o.num_prefix_tokens();
  const std::vector<int> locs = DefaultLocations(Method::kEViT, o.depth);
  torch::Tensor x = vit.Embed(image);
  for (int i = 0; i < o.depth; ++i) {
    BlockImpl& blk = vit.block(i);
    if (std::find(locs.begin(), locs.end(), i) == locs.end()) {
      x = RefBlock(vit, i, x);
      continue;
    }
    auto [q, k, v] = blk.attn->QKV(blk.norm1->forward(x));
    torch::Tensor probs = blk.attn->Probabilities(q, k);
    x = x + blk.attn->Output(probs, v);
    const int n = static_cast<int>(x.size(1)) - prefix;
    const int left = static_cast<int>(std::ceil(double{keep_rate} * n - 1e-9));
    if (left < n) {
      torch::Tensor cls_attn = probs[0].select(1, 0).narrow(-1, prefix, n).mean(0);  // [n]
      std::vector<int64_t> order = DescendingOrder(cls_attn);
      std::vector<int64_t> kept(order.begin(), order.begin() + left);
      torch::Tensor fused = torch::zeros({1, 1, o.embed_dim});
      for (size_t j = left; j < order.size(); ++j) {
        fused += x[0][prefix + order[j]].view({1, 1, -1}) * cls_attn[order[j]];
      }
      x = torch::cat({x.narrow(1, 0, prefix), Rows(x.narrow(1, prefix, n), kept), fused}, 1);
    }
    x = x + blk.mlp->forward(blk.norm2->forward(x));
  }
  return vit.Head(x);
}

torch::Tensor RefTnt(VitImpl& vit, const torch::Tensor& image, float keep_rate) {
  const VitOptions& o = vit.options();
  const int prefix = o.num_prefix_tokens();
  const std::vector<int> locs = DefaultLocations(Method::kTNT, o.depth);
  torch::Tensor x = vit.Embed(image);
  for (int i = 0; i < o.depth; ++i) {
    x = RefBlock(vit, i, x);
    if (std::find(locs.begin(), locs.end(), i) == locs.end()) continue;
    const int n = static_cast<int>(x.size(1)) - prefix;
    const int keep = static_cast<int>(n * double{keep_rate} + 1e-9);
    torch::Tensor patches = x.narrow(1, prefix, n);
    torch::Tensor alpha = torch::softmax(
        vit.alpha_heads[i]->as<torch::nn::Linear>()->forward(patches)[0].squeeze(-1), 0);
    std::vector<int64_t> order = DescendingOrder(alpha);
    order.resize(keep);
    x = torch::cat({x.narrow(1, 0, prefix), Rows(patches, order)}, 1);
  }
  return vit.Head(x);
}

// ToMe, written with explicit per-token loops over one image.
torch::Tensor RefToMe(VitImpl& vit, const torch::Tensor& image, int r) {
  const VitOptions& o = vit.options();
  const int prefix = o.num_prefix_tokens();
  torch::Tensor x = vit.Embed(image);
  std::vector<float> size(x.size(1), 1.0f);
  for (int i = 0; i < o.depth; ++i) {
    BlockImpl& blk = vit.block(i);
    const int t = static_cast<int>(x.size(1));
    auto [q, k, v] = blk.attn->QKV(blk.norm1->forward(x));
    torch::Tensor bias = torch::log(torch::tensor(size)).view({1, 1, 1, t});
    x = x + blk.attn->Output(blk.attn->Probabilities(q, k, i == 0 ? torch::Tensor() : bias), v);
    const int rr = std::min(r, (t - prefix) / 2);
    if (rr > 0) {
      torch::Tensor metric = k[0].mean(0);  // [t, D]
      metric = metric / metric.norm(2, {-1}, true);
      std::vector<int> a_pos, b_pos;
      for (int j = 0; j < t; ++j) (j % 2 == 0 ? a_pos : b_pos).push_back(j);
      std::vector<float> best(a_pos.size());
      std::vector<int> best_b(a_pos.size());
      for (size_t ai = 0; ai < a_pos.size(); ++ai) {
        best[ai] = -INFINITY;
        best_b[ai] = 0;
        for (size_t bi = 0; bi < b_pos.size(); ++bi) {
          float s = (metric[a_pos[ai]] * metric[b_pos[bi]]).sum().item<float>();
          if (ai == 0) s = -INFINITY;                 // CLS row
          if (o.distilled && bi == 0) s = -INFINITY;  // dist column
          if (s > best[ai]) {                         // first maximum wins, like torch.max
            best[ai] = s;
            best_b[ai] = static_cast<int>(bi);
          }
        }
      }
      std::vector<int64_t> edge = DescendingOrder(torch::tensor(best));
      std::vector<bool> merged_a(a_pos.size(), false);
      std::vector<torch::Tensor> b_sum;
      std::vector<float> b_size;
      for (int p : b_pos) {
        b_sum.push_back(x[0][p] * size[p]);
        b_size.push_back(size[p]);
      }
      for (int e = 0; e < rr; ++e) {
        const int ai = static_cast<int>(edge[e]);
        merged_a[ai] = true;
        b_sum[best_b[ai]] = b_sum[best_b[ai]] + x[0][a_pos[ai]] * size[a_pos[ai]];
        b_size[best_b[ai]] += size[a_pos[ai]];
      }
      std::vector<torch::Tensor> unm_rows, dst_rows;
      std::vector<float> unm_size, dst_size;
      for (size_t ai = 0; ai < a_pos.size(); ++ai) {
        if (merged_a[ai]) continue;
        unm_rows.push_back(x[0][a_pos[ai]]);
        unm_size.push_back(size[a_pos[ai]]);
      }
      for (size_t bi = 0; bi < b_pos.size(); ++bi) {
        dst_rows.push_back(b_sum[bi] / b_size[bi]);
        dst_size.push_back(b_size[bi]);
      }
      std::vector<torch::Tensor> rows;
      std::vector<float> new_size;
      if (o.distilled) {  // [A0, B0, A1.., B1..]
        rows = {unm_rows[0], dst_rows[0]};
        new_size = {unm_size[0], dst_size[0]};
        rows.insert(rows.end(), unm_rows.begin() + 1, unm_rows.end());
        new_size.insert(new_size.end(), unm_size.begin() + 1, unm_size.end());
        rows.insert(rows.end(), dst_rows.begin() + 1, dst_rows.end());
        new_size.insert(new_size.end(), dst_size.begin() + 1, dst_size.end());
      } else {
        rows = unm_rows;
        rows.insert(rows.end(), dst_rows.begin(), dst_rows.end());
        new_size = unm_size;
        new_size.insert(new_size.end(), dst_size.begin(), dst_size.end());
      }
      x = torch::stack(rows).unsqueeze(0);
      size = new_size;
    }
    x = x + blk.mlp->forward(blk.norm2->forward(x));
  }
  return vit.Head(x);
}

torch::Tensor Reference(VitImpl& vit, Method m, const torch::Tensor& images, float keep,
                        int tome_r) {
  std::vector<torch::Tensor> out;
  for (int64_t b = 0; b < images.size(0); ++b) {
    torch::Tensor img = images.narrow(0, b, 1);
    switch (m) {
      case Method::kDynamicViT:
        out.push_back(RefDynamicVit(vit, img, keep));
        break;
      case Method::kEViT:
        out.push_back(RefEvit(vit, img, keep));
        break;
      case Method::kTNT:
        out.push_back(RefTnt(vit, img, keep));
        break;
      case Method::kToMe:
        out.push_back(RefToMe(vit, img, tome_r));
        break;
      default:
        out.push_back(vit.forward(img));
    }
  }
  return torch::cat(out, 0);
}

struct Case {
  Method method;
  float keep;
  bool distilled;
};

class MethodParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(MethodParityTest, MatchesReferenceAndCostModel) {
  const Case c = GetParam();
  const Architecture arch = TinyArch(c.distilled);
  const PruningSpec spec = Spec(c.method);
  Vit vit = MakeVit(arch, spec, /*seed=*/11);
  const torch::Tensor images = Images(3, /*seed=*/5);
  torch::InferenceMode guard;

  absl::StatusOr<CostEstimate> cost = EstimateCost(arch, spec, c.keep);
  ASSERT_TRUE(cost.ok()) << cost.status();
  const torch::Tensor want = Reference(*vit, c.method, images, c.keep, cost->tome_r);

  for (bool shortcut : {true, false}) {
    PrunerOptions opts;
    opts.last_block_prefix_only = shortcut;
    absl::StatusOr<std::unique_ptr<TokenPruner>> pruner = CreateTokenPruner(arch, spec, opts);
    ASSERT_TRUE(pruner.ok()) << pruner.status();
    PrunedOutput got = (*pruner)->Forward(*vit, images, c.keep);
    ASSERT_EQ(got.logits.sizes(), want.sizes());
    EXPECT_LE((got.logits - want).abs().max().item<float>(), kLogitTolerance)
        << "shortcut " << shortcut;
    EXPECT_EQ(got.tokens_per_stage, cost->tokens_per_stage) << "shortcut " << shortcut;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllMethods, MethodParityTest,
    ::testing::Values(Case{Method::kDense, 1.0f, false}, Case{Method::kDense, 1.0f, true},
                      Case{Method::kDynamicViT, 0.7f, false}, Case{Method::kDynamicViT, 0.5f, true},
                      Case{Method::kDynamicViT, 1.0f, false}, Case{Method::kEViT, 0.7f, false},
                      Case{Method::kEViT, 0.5f, true}, Case{Method::kEViT, 0.9f, false},
                      Case{Method::kToMe, 0.7f, false}, Case{Method::kToMe, 0.5f, true},
                      Case{Method::kToMe, 0.9f, false}, Case{Method::kTNT, 0.7f, false},
                      Case{Method::kTNT, 0.5f, true}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(MethodName(info.param.method)) + "_keep" +
             std::to_string(static_cast<int>(std::lround(info.param.keep * 100))) +
             (info.param.distilled ? "_distilled" : "");
    });

TEST(TokenPrunerTest, PredictorKeepScoresEqualsThePredictorModule) {
  Vit vit = MakeVit(TinyArch(false), Spec(Method::kDynamicViT), 5);
  torch::NoGradGuard no_grad;
  torch::manual_seed(6);
  // Patch tokens narrowed out of a sequence with a prefix token, as the pruner passes them.
  torch::Tensor sequence = torch::randn({3, 1 + 20, 32});
  torch::Tensor patches = sequence.narrow(1, 1, 20);
  for (int p = 0; p < 3; ++p) {
    torch::Tensor want = vit->predictor(p).forward(patches).select(-1, 0);
    torch::Tensor got = PredictorKeepScores(vit->predictor(p), patches);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE((got - want).abs().max().item<float>(), 1e-5f) << "predictor " << p;
  }
}

TEST(TokenPrunerTest, ReductionActuallyRemovesTokens) {
  const Architecture arch = TinyArch(false);
  for (Method m : {Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT, Method::kSViTE,
                   Method::kTriLevel}) {
    Vit vit = MakeVit(arch, Spec(m), 3);
    auto pruner = CreateTokenPruner(arch, Spec(m));
    ASSERT_TRUE(pruner.ok());
    torch::InferenceMode guard;
    PrunedOutput out = (*pruner)->Forward(*vit, Images(2, 1), 0.5f);
    ASSERT_GE(out.tokens_per_stage.size(), 2u) << MethodName(m);
    EXPECT_LT(out.tokens_per_stage.back(), out.tokens_per_stage.front() / 2 + 2) << MethodName(m);
  }
}

TEST(TokenPrunerTest, KeepRateOneEqualsDense) {
  const Architecture arch = TinyArch(false);
  // Not Tri-Level: its eps-softmax differs from dense by design (golden tests cover it).
  for (Method m :
       {Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT, Method::kSViTE}) {
    Vit vit = MakeVit(arch, Spec(m), 4);
    torch::InferenceMode guard;
    const torch::Tensor images = Images(2, 9);
    auto pruner = CreateTokenPruner(arch, Spec(m));
    ASSERT_TRUE(pruner.ok());
    const torch::Tensor dense = vit->forward(images);
    EXPECT_LE(((*pruner)->Forward(*vit, images, 1.0f).logits - dense).abs().max().item<float>(),
              kLogitTolerance)
        << MethodName(m);
  }
}

TEST(TokenPrunerTest, BatchEqualsImageByImage) {
  const Architecture arch = TinyArch(false);
  for (Method m : {Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT, Method::kSViTE,
                   Method::kTriLevel}) {
    Vit vit = MakeVit(arch, Spec(m), 8);
    auto pruner = CreateTokenPruner(arch, Spec(m));
    ASSERT_TRUE(pruner.ok());
    torch::InferenceMode guard;
    const torch::Tensor images = Images(4, 2);
    const torch::Tensor batch = (*pruner)->Forward(*vit, images, 0.6f).logits;
    for (int b = 0; b < 4; ++b) {
      const torch::Tensor one = (*pruner)->Forward(*vit, images.narrow(0, b, 1), 0.6f).logits;
      EXPECT_LE((batch.narrow(0, b, 1) - one).abs().max().item<float>(), kLogitTolerance)
          << MethodName(m) << " image " << b;
    }
  }
}

TEST(TokenPrunerTest, ToMeExplicitMergeCount) {
  const Architecture arch = TinyArch(false);
  Vit vit = MakeVit(arch, Spec(Method::kToMe), 6);
  PrunerOptions opts;
  opts.tome_r = 9;
  auto pruner = CreateTokenPruner(arch, Spec(Method::kToMe), opts);
  ASSERT_TRUE(pruner.ok());
  torch::InferenceMode guard;
  const torch::Tensor images = Images(2, 3);
  PrunedOutput out = (*pruner)->Forward(*vit, images, 1.0f);
  EXPECT_EQ(out.tokens_per_stage, EstimateToMeCost(arch, 9)->tokens_per_stage);
  EXPECT_LE(
      (out.logits - Reference(*vit, Method::kToMe, images, 1.0f, 9)).abs().max().item<float>(),
      kLogitTolerance);
}

// One image on 3 threads: ToMe splits that image's match scoring across tasks (only when the
// scoring is large: 129 x 128 A·B pairs of 16 values here); same merges as the reference.
TEST(TokenPrunerTest, ToMeSplitsOneImagesMatchingAcrossThreads) {
  Architecture arch = TinyArch(false);
  arch.image_size = 64;  // 256 patches
  arch.embed_dim = 64;   // head dim 16
  Vit vit = MakeVit(arch, Spec(Method::kToMe), 8);
  PrunerOptions opts;
  opts.tome_r = 40;
  auto pruner = CreateTokenPruner(arch, Spec(Method::kToMe), opts);
  ASSERT_TRUE(pruner.ok());
  torch::InferenceMode guard;
  torch::manual_seed(5);
  const torch::Tensor image = torch::randn({1, 3, 64, 64});
  const torch::Tensor reference = Reference(*vit, Method::kToMe, image, 1.0f, 40);
  for (int threads : {1, 3}) {
    ScopedIntraOpThreads scope(threads);
    const torch::Tensor logits = (*pruner)->Forward(*vit, image, 1.0f).logits;
    EXPECT_LE((logits - reference).abs().max().item<float>(), kLogitTolerance)
        << threads << " threads";
  }
}

TEST(TokenPrunerTest, FactoryErrors) {
  const Architecture arch = TinyArch(false);
  for (Method m : {Method::kSViTE, Method::kTriLevel}) {
    EXPECT_TRUE(CreateTokenPruner(arch, Spec(m)).ok()) << MethodName(m);
    EXPECT_EQ(CreateTokenPruner(TinyArch(true), Spec(m)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << MethodName(m) << " has no distillation token";
  }
  PruningSpec tnt = Spec(Method::kTNT);
  tnt.tnt_seed = 42;
  EXPECT_EQ(CreateTokenPruner(arch, tnt).status().code(), absl::StatusCode::kUnimplemented);
  PruningSpec bad = Spec(Method::kEViT);
  bad.locations = {2, 1};
  EXPECT_EQ(CreateTokenPruner(arch, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.locations = {4};
  EXPECT_EQ(CreateTokenPruner(arch, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve
