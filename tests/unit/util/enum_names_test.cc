#include "server/util/enum_names.h"

#include <optional>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

enum class Fruit { kApple, kPear, kQuince, kUnlisted };

constexpr EnumNameEntry<Fruit> kFruitNames[] = {
    {Fruit::kApple, "apple"},
    {Fruit::kPear, "pear"},
    {Fruit::kQuince, "pear"},  // a shared name: value -> name works, parsing finds the first
};

TEST(EnumNamesTest, NameOfEachValueAndFallback) {
  EXPECT_EQ(EnumName(kFruitNames, Fruit::kApple, "?"), "apple");
  EXPECT_EQ(EnumName(kFruitNames, Fruit::kPear, "?"), "pear");
  EXPECT_EQ(EnumName(kFruitNames, Fruit::kQuince, "?"), "pear");
  EXPECT_EQ(EnumName(kFruitNames, Fruit::kUnlisted, "none"), "none");
  static_assert(EnumName(kFruitNames, Fruit::kApple, "?") == "apple");
}

TEST(EnumNamesTest, FindIsExactAndFirstWins) {
  EXPECT_EQ(FindEnumByName(kFruitNames, "apple"), std::optional<Fruit>(Fruit::kApple));
  EXPECT_EQ(FindEnumByName(kFruitNames, "pear"), std::optional<Fruit>(Fruit::kPear));
  EXPECT_EQ(FindEnumByName(kFruitNames, "Apple"), std::nullopt);
  EXPECT_EQ(FindEnumByName(kFruitNames, ""), std::nullopt);
}

TEST(EnumNamesTest, ParseErrorListsTheTableInOrder) {
  EXPECT_EQ(EnumNameList(kFruitNames), "apple, pear, pear");
  const absl::StatusOr<Fruit> ok = ParseEnumName(kFruitNames, "pear", "unknown fruit");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, Fruit::kPear);
  const absl::StatusOr<Fruit> bad = ParseEnumName(kFruitNames, "fig", "unknown fruit");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "unknown fruit 'fig'; accepted: apple, pear, pear");
}

}  // namespace
}  // namespace vitserve
