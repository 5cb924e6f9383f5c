#include "server/spec/model_spec.h"

#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr EnumNameEntry<Method> kMethodNames[] = {
    {Method::kDense, "dense"},       {Method::kDynamicViT, "dynamicvit"},
    {Method::kEViT, "evit"},         {Method::kToMe, "tome"},
    {Method::kTNT, "tnt"},           {Method::kSViTE, "svite"},
    {Method::kTriLevel, "trilevel"},
};

}  // namespace

absl::string_view MethodName(Method m) { return EnumName(kMethodNames, m, "unknown"); }

absl::StatusOr<Method> ParseMethod(absl::string_view name) {
  if (std::optional<Method> m = FindEnumByName(kMethodNames, absl::AsciiStrToLower(name))) {
    return *m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown method '", name, "'; accepted: ", EnumNameList(kMethodNames)));
}

std::vector<int> DefaultLocations(Method m, int depth) {
  switch (m) {
    case Method::kDense:
      return {};
    case Method::kToMe: {
      std::vector<int> all(depth);
      for (int i = 0; i < depth; ++i) all[i] = i;
      return all;
    }
    case Method::kSViTE:
      return {0};  // the token selector runs once, before block 0
    case Method::kTNT:
      // Released TNT DeiT-S prunes once; we default to the 3-stage layout like the others.
    case Method::kDynamicViT:
    case Method::kEViT:
    case Method::kTriLevel:
      break;
  }
  // Blocks depth/4, 2*depth/4, 3*depth/4, each once: below depth 4 they coincide
  // (depth 2: 0, 0, 0 -> {0}), and locations must be strictly increasing.
  const int q = depth / 4;
  std::vector<int> out;
  for (int loc : {q, 2 * q, 3 * q}) {
    if (out.empty() || loc > out.back()) out.push_back(loc);
  }
  return out;
}

}  // namespace vitserve
