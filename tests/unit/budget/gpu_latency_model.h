// A latency model for budget-policy tests, shared by their files.
#ifndef VITSERVE_TESTS_UNIT_BUDGET_GPU_LATENCY_MODEL_H_
#define VITSERVE_TESTS_UNIT_BUDGET_GPU_LATENCY_MODEL_H_

#include <map>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "server/budget/latency_model.h"

namespace vitserve {
namespace testing_fixtures {

// A GPU-like table: t(k, b) = base(k) + 1 ms · (b − 1), base = 10 / 8 / 6 ms at keep-rate
// 1.0 / 0.8 / 0.6. Batching is cheap, lowering the keep-rate saves 2 ms per level.
inline std::shared_ptr<LatencyModel> GpuModel() {
  LatencyModel::Options options;
  options.keep_rate_levels = {1.0f, 0.8f, 0.6f};
  options.batch_sizes = {1, 2, 4, 8};
  const std::map<float, int> base_ms = {{1.0f, 10}, {0.8f, 8}, {0.6f, 6}};
  std::vector<LatencyPoint> points;
  for (const auto& [k, base] : base_ms) {
    for (int b : options.batch_sizes) {
      points.push_back(LatencyPoint{k, b, absl::Milliseconds(base + b - 1)});
    }
  }
  auto model = LatencyModel::Create(options, points);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::shared_ptr<LatencyModel>(std::move(*model));
}

}  // namespace testing_fixtures
}  // namespace vitserve

#endif  // VITSERVE_TESTS_UNIT_BUDGET_GPU_LATENCY_MODEL_H_
