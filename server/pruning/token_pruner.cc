#include "server/pruning/token_pruner.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitserve {

absl::StatusOr<std::unique_ptr<TokenPruner>> CreateTokenPruner(const Architecture& arch,
                                                               const PruningSpec& spec,
                                                               const PrunerOptions& options) {
  std::vector<int> locations =
      spec.locations.empty() ? DefaultLocations(spec.method, arch.depth) : spec.locations;
  for (size_t j = 0; j < locations.size(); ++j) {
    if (locations[j] < 0 || locations[j] >= arch.depth ||
        (j > 0 && locations[j] <= locations[j - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("pruning locations [", absl::StrJoin(locations, ", "),
                       "] must be increasing block indices in [0, ", arch.depth, ")"));
    }
  }
  switch (spec.method) {
    case Method::kDense:
      return MakeDensePruner(options);
    case Method::kDynamicViT:
      return MakeDynamicVitPruner(std::move(locations), options);
    case Method::kEViT:
      return MakeEvitPruner(std::move(locations), options);
    case Method::kToMe:
      return MakeToMePruner(arch, options);
    case Method::kTNT:
      if (spec.tnt_seed != 0) {
        return absl::UnimplementedError(
            "TNT random similarity pre-prune (tnt_seed != 0) is not supported; use tnt_seed 0");
      }
      return MakeTntPruner(std::move(locations), options);
    case Method::kSViTE:
    case Method::kTriLevel:
      if (arch.distilled) {
        return absl::InvalidArgumentError(
            absl::StrCat("method '", MethodName(spec.method),
                         "' has no distillation token in its official model; use distilled: "
                         "false (a DeiT-distilled checkpoint can be served dense, evit, tome, "
                         "dynamicvit or tnt)"));
      }
      if (spec.method == Method::kSViTE) {
        return MakeSvitePruner(spec.svite_plain_removal, options);
      }
      return MakeTriLevelPruner(std::move(locations), spec.attn_ratio, options);
  }
  return absl::InternalError("unknown method");
}

}  // namespace vitserve
