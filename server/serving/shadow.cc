#include "server/serving/shadow.h"

#include <algorithm>
#include <cmath>

namespace vitserve {

uint64_t ShadowSampleCount(uint64_t before, uint64_t n, double fraction) {
  const auto picks = [fraction](uint64_t count) {
    return static_cast<uint64_t>(std::floor(static_cast<double>(count) * fraction));
  };
  return std::min<uint64_t>(picks(before + n) - picks(before), n);
}

ShadowComparison CompareWithDense(const std::vector<float>& p, const std::vector<float>& q) {
  const auto argmax = [](const std::vector<float>& v) {
    return std::max_element(v.begin(), v.end()) - v.begin();
  };
  // KL(dense || pruned) of the two softmaxes, in nats, via log-sum-exp.
  const auto log_normaliser = [](const std::vector<float>& v) {
    const double m = *std::max_element(v.begin(), v.end());
    double sum = 0.0;
    for (float x : v) sum += std::exp(static_cast<double>(x) - m);
    return m + std::log(sum);
  };
  const double lp = log_normaliser(p);
  const double lq = log_normaliser(q);
  double kl = 0.0;
  for (size_t c = 0; c < p.size() && c < q.size(); ++c) {
    const double log_p = p[c] - lp;
    kl += std::exp(log_p) * (log_p - (q[c] - lq));
  }
  ShadowComparison out;
  out.top1_agrees = argmax(p) == argmax(q);
  out.kl_nats = std::max(0.0, kl);
  return out;
}

}  // namespace vitserve
