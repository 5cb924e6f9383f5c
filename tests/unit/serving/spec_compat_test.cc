// Reload compatibility: one equality over every field, kept complete by counting fields.
#include "server/serving/spec_compat.h"

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// Converts to anything: T{AnyField{}, ...} compiles for up to as many initializers as the
// aggregate T has fields.
struct AnyField {
  template <typename U>
  operator U() const;  // NOLINT: implicit on purpose; never defined (unevaluated only)
};

template <typename T, typename Seq, typename = void>
struct BraceInitializable : std::false_type {};
template <typename T, size_t... I>
struct BraceInitializable<T, std::index_sequence<I...>,
                          std::void_t<decltype(T{(void(I), AnyField{})...})>> : std::true_type {};

// The number of fields of the aggregate T.
template <typename T, size_t N = 0>
constexpr size_t FieldCount() {
  if constexpr (BraceInitializable<T, std::make_index_sequence<N + 1>>::value) {
    return FieldCount<T, N + 1>();
  } else {
    return N;
  }
}

template <typename T>
constexpr size_t ComparedCount() {
  return std::tuple_size_v<decltype(ServingFields(std::declval<const T&>()))>;
}

TEST(SpecCompatTest, EveryFieldOfTheSpecIsCompared) {
  // A failure here: a field was added to the struct in server/spec/model_spec.h; add it
  // to ServingFields in server/serving/spec_compat.h (or say there why it may change).
  EXPECT_EQ(ComparedCount<Architecture>(), FieldCount<Architecture>());
  EXPECT_EQ(ComparedCount<PruningSpec>(), FieldCount<PruningSpec>());
  EXPECT_EQ(ComparedCount<PreprocessSpec>(), FieldCount<PreprocessSpec>());
}

TEST(SpecCompatTest, TheCounterCountsFields) {
  struct Three {
    int a;
    std::string b;
    std::vector<float> c;
  };
  EXPECT_EQ(FieldCount<Three>(), 3u);
  EXPECT_EQ(FieldCount<Architecture>(), 11u);
}

TEST(SpecCompatTest, NamesWhatChangedAndAllowsWeightsLabelsCalibrationAndVersion) {
  ModelSpec served;
  ModelSpec next = served;
  next.version = "2";
  next.labels = {"a"};
  next.calibration = {{"dense", 1.0f, 0.8, 1.0, 0}};
  next.weights_path = "/elsewhere";
  EXPECT_EQ(SpecChange(served, next), "");
  next.arch.norm_eps = 1e-5;  // missed by the hand-written list this replaced
  EXPECT_EQ(SpecChange(served, next), "the architecture");
  next = served;
  next.pruning.tnt_seed = 7;
  EXPECT_EQ(SpecChange(served, next), "the pruning settings");
  next = served;
  next.preprocess.crop = "center_floor";  // missed by the hand-written list this replaced
  EXPECT_EQ(SpecChange(served, next), "the preprocessing");
}

}  // namespace
}  // namespace vitserve
