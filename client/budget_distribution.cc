#include "client/budget_distribution.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace vitserve::client {
namespace {

constexpr absl::string_view kAcceptedForms =
    "accepted: a number of milliseconds (\"50\", \"0\" = no budget), \"uniform:LO:HI\" "
    "(0 < LO <= HI) or \"choice:A,B,...\" (each > 0)";
constexpr int kMantissaBits = 53;
constexpr int kDiscardedBits = 64 - kMantissaBits;

absl::Status Bad(absl::string_view spec, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad budget distribution \"", spec, "\": ", why, "; ", kAcceptedForms));
}

bool ParseMs(absl::string_view text, double* out) {
  return absl::SimpleAtod(text, out) && std::isfinite(*out) &&
         text.find_first_of(" \t") == absl::string_view::npos;
}

}  // namespace

double Uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> kDiscardedBits) * std::ldexp(1.0, -kMantissaBits);
}

double ExponentialGap(std::mt19937_64& rng, double rate_per_s) {
  return -std::log1p(-Uniform01(rng)) / rate_per_s;  // 1 - u is in (0, 1]: finite
}

absl::StatusOr<BudgetDistribution> BudgetDistribution::Parse(absl::string_view spec) {
  if (spec.empty()) return Bad(spec, "empty");
  if (absl::ConsumePrefix(&spec, "uniform:")) {
    std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
    double lo, hi;
    if (parts.size() != 2 || !ParseMs(parts[0], &lo) || !ParseMs(parts[1], &hi)) {
      return Bad(absl::StrCat("uniform:", spec), "uniform needs two numbers LO:HI");
    }
    if (!(lo > 0 && lo <= hi)) {
      return Bad(absl::StrCat("uniform:", spec), "uniform needs 0 < LO <= HI");
    }
    return BudgetDistribution(Kind::kUniform, {lo, hi});
  }
  if (absl::ConsumePrefix(&spec, "choice:")) {
    std::vector<double> values;
    for (absl::string_view part : absl::StrSplit(spec, ',')) {
      double v;
      if (!ParseMs(part, &v) || !(v > 0)) {
        return Bad(absl::StrCat("choice:", spec),
                   absl::StrCat("\"", part, "\" is not a positive number"));
      }
      values.push_back(v);
    }
    return BudgetDistribution(Kind::kChoice, std::move(values));
  }
  double v;
  if (!ParseMs(spec, &v)) return Bad(spec, "not a number or a known distribution");
  if (v < 0) return Bad(spec, "negative budget");
  return BudgetDistribution(Kind::kConstant, {v});
}

double BudgetDistribution::Sample(std::mt19937_64& rng) const {
  switch (kind_) {
    case Kind::kConstant:
      return values_[0];
    case Kind::kUniform:
      return values_[0] + (values_[1] - values_[0]) * Uniform01(rng);
    case Kind::kChoice: {
      const size_t i = static_cast<size_t>(Uniform01(rng) * values_.size());
      return values_[std::min(i, values_.size() - 1)];
    }
  }
  return 0;
}

std::string BudgetDistribution::ToString() const {
  switch (kind_) {
    case Kind::kConstant:
      return absl::StrCat(values_[0]);
    case Kind::kUniform:
      return absl::StrCat("uniform:", values_[0], ":", values_[1]);
    case Kind::kChoice:
      return absl::StrCat("choice:", absl::StrJoin(values_, ","));
  }
  return "";
}

}  // namespace vitserve::client
