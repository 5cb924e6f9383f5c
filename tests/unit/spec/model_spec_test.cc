#include "server/spec/model_spec.h"

#include "gtest/gtest.h"

namespace vitserve {
namespace {

TEST(MethodNameTest, RoundTripsEveryMethod) {
  for (Method m : {Method::kDense, Method::kDynamicViT, Method::kEViT, Method::kToMe, Method::kTNT,
                   Method::kSViTE, Method::kTriLevel}) {
    auto parsed = ParseMethod(MethodName(m));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, m);
  }
}

TEST(MethodNameTest, UnknownMethodListsAccepted) {
  auto parsed = ParseMethod("sparsevit");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("dynamicvit"), std::string::npos);
}

TEST(DefaultLocationsTest, ThreeStagesForTwelveBlocks) {
  EXPECT_EQ(DefaultLocations(Method::kEViT, 12), (std::vector<int>{3, 6, 9}));
  EXPECT_EQ(DefaultLocations(Method::kDynamicViT, 8), (std::vector<int>{2, 4, 6}));
  EXPECT_EQ(DefaultLocations(Method::kToMe, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(DefaultLocations(Method::kDense, 12).empty());
}

// Found by fuzz_model_spec: a depth-2 trilevel config without locations got {0, 0, 0}
// (not increasing). Shallow models get each block once.
TEST(DefaultLocationsTest, ShallowModelsGetDistinctLocations) {
  EXPECT_EQ(DefaultLocations(Method::kTriLevel, 2), (std::vector<int>{0}));
  EXPECT_EQ(DefaultLocations(Method::kDynamicViT, 3), (std::vector<int>{0}));
  EXPECT_EQ(DefaultLocations(Method::kEViT, 1), (std::vector<int>{0}));
  for (int depth = 1; depth <= 16; ++depth) {
    for (Method m : {Method::kDynamicViT, Method::kEViT, Method::kTNT, Method::kTriLevel}) {
      const std::vector<int> locs = DefaultLocations(m, depth);
      ASSERT_FALSE(locs.empty());
      for (size_t i = 0; i < locs.size(); ++i) {
        EXPECT_LT(locs[i], depth);
        if (i > 0) {
          EXPECT_GT(locs[i], locs[i - 1]) << "depth " << depth;
        }
      }
    }
  }
}

}  // namespace
}  // namespace vitserve
