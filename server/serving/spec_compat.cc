#include "server/serving/spec_compat.h"

namespace vitserve {

std::string SpecChange(const ModelSpec& a, const ModelSpec& b) {
  if (ServingFields(a.arch) != ServingFields(b.arch)) return "the architecture";
  if (ServingFields(a.pruning) != ServingFields(b.pruning)) return "the pruning settings";
  if (ServingFields(a.preprocess) != ServingFields(b.preprocess)) return "the preprocessing";
  return "";
}

}  // namespace vitserve
