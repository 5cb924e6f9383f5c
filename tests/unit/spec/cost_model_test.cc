#include "server/spec/cost_model.h"

#include <vector>

#include "gtest/gtest.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

constexpr double kGiga = 1e9;

Architecture DeitS() { return Architecture{}; }  // defaults are DeiT-S at 224²

Architecture DeitTi() {
  Architecture a;
  a.embed_dim = 192;
  a.num_heads = 3;
  return a;
}

Architecture DeitB() {
  Architecture a;
  a.embed_dim = 768;
  a.num_heads = 12;
  return a;
}

PruningSpec Spec(Method m) {
  PruningSpec s;
  s.method = m;
  return s;
}

CostEstimate Estimate(const Architecture& a, Method m, float keep) {
  absl::StatusOr<CostEstimate> e = EstimateCost(a, Spec(m), keep);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *e : CostEstimate{};
}

TEST(CostModelTest, DenseMacsOfPublishedDeits) {
  EXPECT_NEAR(DenseMacs(DeitS()) / kGiga, 4.6, 0.05);
  EXPECT_NEAR(DenseMacs(DeitTi()) / kGiga, 1.25, 0.02);
  EXPECT_NEAR(DenseMacs(DeitB()) / kGiga, 17.6, 0.05);
  // 12·N·C² + 2·N²·C per block, patch embed 196·C·768, head C·1000 (DeiT-S: 4.6 GMACs).
  const uint64_t n = 197, c = 384;
  EXPECT_EQ(DenseMacs(DeitS()), 12 * (12 * n * c * c + 2 * n * n * c) + 196 * c * 768 + c * 1000);
}

TEST(CostModelTest, DistilledCountsTwoHeadsAndDistToken) {
  Architecture a = DeitS();
  a.distilled = true;
  const uint64_t n = 198, c = 384;
  EXPECT_EQ(DenseMacs(a), 12 * (12 * n * c * c + 2 * n * n * c) + 196 * c * 768 + 2 * c * 1000);
}

TEST(CostModelTest, DenseEstimateIsDenseMacs) {
  CostEstimate e = Estimate(DeitS(), Method::kDense, 1.0f);
  EXPECT_EQ(e.macs, e.dense_macs);
  EXPECT_EQ(e.tokens_per_stage, std::vector<int>{197});
  ASSERT_EQ(e.blocks.size(), 12u);
  for (const BlockTokens& b : e.blocks) {
    EXPECT_EQ(b.attn_tokens, 197);
    EXPECT_EQ(b.mlp_tokens, 197);
  }
}

TEST(CostModelTest, EvitTokenCounts) {
  EXPECT_EQ(Estimate(DeitS(), Method::kEViT, 0.7f).tokens_per_stage,
            (std::vector<int>{197, 140, 100, 72}));
  EXPECT_EQ(Estimate(DeitS(), Method::kEViT, 0.5f).tokens_per_stage,
            (std::vector<int>{197, 100, 52, 28}));
  // Reduction happens after attention, before the MLP of blocks 3, 6, 9.
  CostEstimate e = Estimate(DeitS(), Method::kEViT, 0.7f);
  EXPECT_EQ(e.blocks[3].attn_tokens, 197);
  EXPECT_EQ(e.blocks[3].mlp_tokens, 140);
  EXPECT_EQ(e.blocks[6].attn_tokens, 140);
  EXPECT_EQ(e.blocks[6].mlp_tokens, 100);
  EXPECT_EQ(e.blocks[11].attn_tokens, 72);
  // Published EViT DeiT-S (fused): 3.0 GMACs at 0.7, 2.3 at 0.5, 4.0 at 0.9.
  EXPECT_NEAR(e.macs / kGiga, 3.0, 0.05);
  EXPECT_NEAR(Estimate(DeitS(), Method::kEViT, 0.5f).macs / kGiga, 2.3, 0.05);
  EXPECT_NEAR(Estimate(DeitS(), Method::kEViT, 0.9f).macs / kGiga, 4.0, 0.05);
}

TEST(CostModelTest, DynamicVitKeepsFromInitialCount) {
  CostEstimate e = Estimate(DeitS(), Method::kDynamicViT, 0.7f);
  // 137 / 96 / 67 patches plus CLS.
  EXPECT_EQ(e.tokens_per_stage, (std::vector<int>{197, 138, 97, 68}));
  EXPECT_EQ(e.blocks[2].attn_tokens, 197);
  EXPECT_EQ(e.blocks[3].attn_tokens, 138);
  EXPECT_EQ(e.blocks[5].mlp_tokens, 138);
  EXPECT_EQ(e.blocks[9].attn_tokens, 68);
  // The predictors add (in_conv C·C + out_conv C·C/2 + C/2·C/4 + C/4·2) MACs per patch
  // token they score: 196, 137 and 96 tokens.
  const uint64_t c = 384;
  const uint64_t predictors = (196 + 137 + 96) * (c * c + c * c / 2 + c * c / 8 + c / 2);
  // The published 2.9 G (DeiT-S, 0.7) is the backbone; with predictors it is ~2.98 G.
  EXPECT_NEAR((e.macs - predictors) / kGiga, 2.9, 0.05);
  EXPECT_NEAR(e.macs / kGiga, 2.98, 0.01);
}

TEST(CostModelTest, DynamicVitDistilledKeepsBothPrefixTokens) {
  Architecture a = DeitS();
  a.distilled = true;
  EXPECT_EQ(Estimate(a, Method::kDynamicViT, 0.7f).tokens_per_stage,
            (std::vector<int>{198, 139, 98, 69}));
}

TEST(CostModelTest, TntCountsFromCurrentCount) {
  CostEstimate e = Estimate(DeitS(), Method::kTNT, 0.7f);
  // int(196·0.7) = 137, int(137·0.7) = 95, int(95·0.7) = 66; after blocks 3, 6, 9.
  EXPECT_EQ(e.tokens_per_stage, (std::vector<int>{197, 138, 96, 67}));
  EXPECT_EQ(e.blocks[3].attn_tokens, 197);
  EXPECT_EQ(e.blocks[3].mlp_tokens, 197);
  EXPECT_EQ(e.blocks[4].attn_tokens, 138);
  // A single location (the released TNT DeiT-S layout).
  PruningSpec one = Spec(Method::kTNT);
  one.locations = {3};
  absl::StatusOr<CostEstimate> single = EstimateCost(DeitS(), one, 0.6f);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->tokens_per_stage, (std::vector<int>{197, 118}));
}

TEST(CostModelTest, TriLevelTokenCounts) {
  EXPECT_EQ(Estimate(DeitS(), Method::kTriLevel, 0.7f).tokens_per_stage,
            (std::vector<int>{197, 139, 98, 69}));
}

// SViTE: k = int(197 * keep) real tokens (+ CLS when it was not ranked), and the blocks
// run on [CLS, k patches, one zero token with multiplicity 196 - k].
TEST(CostModelTest, SviteSelectorSchedule) {
  const uint64_t c = 384;
  for (auto [keep, k] : {std::pair<float, int>{0.7f, 137}, {0.5f, 98}}) {
    CostEstimate e = Estimate(DeitS(), Method::kSViTE, keep);
    EXPECT_EQ(e.tokens_per_stage, (std::vector<int>{197, k + 1})) << keep;
    for (const BlockTokens& b : e.blocks) {
      EXPECT_EQ(b.attn_tokens, k + 2) << keep;
      EXPECT_EQ(b.mlp_tokens, k + 2) << keep;
    }
    const uint64_t n = k + 2;
    const uint64_t block = 12 * n * c * c + 2 * n * n * c;
    const uint64_t embed_head = 196 * c * 768 + c * 1000;
    EXPECT_EQ(e.macs, embed_head + 12 * block + 197 * c) << keep;  // + the selector
  }
  PruningSpec plain = Spec(Method::kSViTE);
  plain.svite_plain_removal = true;
  absl::StatusOr<CostEstimate> p = EstimateCost(DeitS(), plain, 0.5f);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->blocks[0].attn_tokens, 99);  // no zero token
}

TEST(CostModelTest, ToMeMergesInEveryBlock) {
  absl::StatusOr<CostEstimate> e = EstimateToMeCost(DeitS(), 13);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->tokens_per_stage.size(), 13u);
  EXPECT_EQ(e->tokens_per_stage.front(), 197);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(e->tokens_per_stage[i + 1], 197 - 13 * (i + 1)) << i;
    EXPECT_EQ(e->blocks[i].attn_tokens, 197 - 13 * i);
    EXPECT_EQ(e->blocks[i].mlp_tokens, 197 - 13 * (i + 1));
  }
  // Published DeiT-S GMACs r = 8 / 13 / 16: 3.4 / 2.7 / 2.3.
  EXPECT_NEAR(e->macs / kGiga, 2.7, 0.05);
  EXPECT_NEAR(EstimateToMeCost(DeitS(), 8)->macs / kGiga, 3.4, 0.05);
  EXPECT_NEAR(EstimateToMeCost(DeitS(), 16)->macs / kGiga, 2.3, 0.05);
}

TEST(CostModelTest, ToMeMergeCountIsCappedByHalfTheTokens) {
  // r = 60: 197 -> 197-60 = 137 -> 137-60 = 77 -> min(60, 76/2 = 38) -> 39 -> 19 -> ...
  absl::StatusOr<CostEstimate> e = EstimateToMeCost(DeitS(), 60);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens_per_stage[1], 137);
  EXPECT_EQ(e->tokens_per_stage[2], 77);
  EXPECT_EQ(e->tokens_per_stage[3], 39);
  EXPECT_EQ(e->tokens_per_stage[4], 20);
  EXPECT_EQ(e->tokens_per_stage.back(), 1 + 0 + 1);  // (t - 1) / 2 stops at 0 merges: 2 tokens
}

TEST(CostModelTest, ToMeKeepRateMapsToClosestMacs) {
  EXPECT_EQ(ToMeMergeCountForKeepRate(DeitS(), 1.0f), 0);
  const int r = ToMeMergeCountForKeepRate(DeitS(), 0.7f);
  const CostEstimate dyvit = Estimate(DeitS(), Method::kDynamicViT, 0.7f);
  // No other r is closer to the 3-stage schedule's backbone MACs than the chosen one.
  auto backbone = [](const CostEstimate& e) {
    const Architecture a = DeitS();
    uint64_t m = 0;
    for (const BlockTokens& b : e.blocks) {
      m += 4ull * b.attn_tokens * a.embed_dim * a.embed_dim +
           2ull * b.attn_tokens * b.attn_tokens * a.embed_dim +
           2ull * b.mlp_tokens * a.embed_dim * a.mlp_hidden();
    }
    return static_cast<double>(m);
  };
  const double target = backbone(dyvit);
  const double chosen = std::abs(backbone(*EstimateToMeCost(DeitS(), r)) - target);
  for (int other : {r - 1, r + 1}) {
    EXPECT_GE(std::abs(backbone(*EstimateToMeCost(DeitS(), other)) - target), chosen) << other;
  }
  EXPECT_EQ(r, 12);
  EXPECT_EQ(ToMeMergeCountForKeepRate(DeitS(), 0.9f), 5);
  EXPECT_EQ(ToMeMergeCountForKeepRate(DeitS(), 0.5f), 17);
  CostEstimate tome = Estimate(DeitS(), Method::kToMe, 0.7f);
  EXPECT_EQ(tome.tome_r, r);
  EXPECT_EQ(tome.tokens_per_stage[1], 197 - r);
}

TEST(CostModelTest, KeepRateOneIsTheDenseScheduleForEveryMethod) {
  for (Method m : {Method::kDense, Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT,
                   Method::kTriLevel, Method::kSViTE}) {
    CostEstimate e = Estimate(DeitS(), m, 1.0f);
    EXPECT_EQ(e.macs, e.dense_macs) << MethodName(m);
    for (int t : e.tokens_per_stage) EXPECT_EQ(t, 197) << MethodName(m);
  }
}

TEST(CostModelTest, MacsShrinkWithKeepRate) {
  for (Method m : {Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT}) {
    uint64_t prev = UINT64_MAX;
    for (float k : {1.0f, 0.9f, 0.7f, 0.5f, 0.3f}) {
      const uint64_t macs = Estimate(DeitS(), m, k).macs;
      EXPECT_LT(macs, prev) << MethodName(m) << " " << k;
      prev = macs;
    }
  }
}

TEST(CostModelTest, RejectsBadInputs) {
  EXPECT_EQ(EstimateCost(DeitS(), Spec(Method::kEViT), 0.0f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EstimateCost(DeitS(), Spec(Method::kEViT), 1.5f).status().code(),
            absl::StatusCode::kInvalidArgument);
  PruningSpec bad = Spec(Method::kEViT);
  bad.locations = {12};
  EXPECT_EQ(EstimateCost(DeitS(), bad, 0.7f).status().code(), absl::StatusCode::kInvalidArgument);
  Architecture odd = DeitS();
  odd.num_heads = 5;
  EXPECT_EQ(EstimateCost(odd, Spec(Method::kDense), 1.0f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EstimateToMeCost(DeitS(), -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CostModelTest, PerBlockShapesReplaceUniformWidths) {
  std::vector<BlockShape> shapes(12, BlockShape{3, 64, 768});  // half the heads and MLP
  const uint64_t n = 197, c = 384, a = 192, h = 768;
  EXPECT_EQ(DenseMacs(DeitS(), shapes),
            12 * (4 * n * c * a + 2 * n * n * a + 2 * n * c * h) + 196 * c * 768 + c * 1000);
}

TEST(KeepCountsTest, DecimalKeepRateRecoversTheTypedValue) {
  EXPECT_EQ(DecimalKeepRate(0.7f), 0.7);
  EXPECT_EQ(DynamicVitKeep(196, DecimalKeepRate(0.7f), 0), 137);
  EXPECT_EQ(DynamicVitKeep(196, DecimalKeepRate(0.7f), 1), 96);
  EXPECT_EQ(DynamicVitKeep(196, DecimalKeepRate(0.7f), 2), 67);
  // 0.35 as float is 0.34999999; ceil(0.35·20) must be 7, not 7 by accident of rounding up.
  EXPECT_EQ(EvitKeep(20, DecimalKeepRate(0.35f)), 7);
  EXPECT_EQ(TntKeep(20, DecimalKeepRate(0.35f)), 7);
  EXPECT_EQ(ToMeMergeCount(13, 197, 1), 13);
  EXPECT_EQ(ToMeMergeCount(13, 20, 2), 9);
}

}  // namespace
}  // namespace vitserve
