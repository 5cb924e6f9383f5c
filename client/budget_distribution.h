// Latency-budget distributions for `vitclient bench --budget_ms=DIST`, and the seeded
// random helpers the load generator uses.
//
// DIST grammar:
//   "50"                 every request has a 50 ms budget ("0" = no budget)
//   "uniform:20:100"     uniform in [20, 100] ms, 0 < lo <= hi
//   "choice:30,100,300"  one of the listed values with equal probability, each > 0
// Values are milliseconds, finite; whitespace is not allowed.
//
// Determinism: sampling uses only std::mt19937_64 and the arithmetic below (not the
// implementation-defined std::*_distribution), so a seed gives the same sequence on every
// platform. Thread-safety: BudgetDistribution is immutable; the generator is the caller's.
#ifndef VITSERVE_CLIENT_BUDGET_DISTRIBUTION_H_
#define VITSERVE_CLIENT_BUDGET_DISTRIBUTION_H_

#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve::client {

// Uniform in [0, 1) with 53 random bits.
double Uniform01(std::mt19937_64& rng);

// Exponential inter-arrival gap (seconds) of a Poisson process with `rate_per_s` > 0.
double ExponentialGap(std::mt19937_64& rng, double rate_per_s);

class BudgetDistribution {
 public:
  // Errors: INVALID_ARGUMENT naming the problem and showing the accepted forms.
  static absl::StatusOr<BudgetDistribution> Parse(absl::string_view spec);

  // One budget in milliseconds (0 = no budget, only from the constant "0").
  double Sample(std::mt19937_64& rng) const;

  // Canonical text form, e.g. "uniform:20:100".
  std::string ToString() const;

 private:
  enum class Kind { kConstant, kUniform, kChoice };
  BudgetDistribution(Kind kind, std::vector<double> values)
      : kind_(kind), values_(std::move(values)) {}

  Kind kind_;
  std::vector<double> values_;  // constant: {v}; uniform: {lo, hi}; choice: the choices
};

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_BUDGET_DISTRIBUTION_H_
