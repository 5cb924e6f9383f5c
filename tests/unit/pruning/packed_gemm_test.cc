#include "server/pruning/packed_gemm.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// The packed product against a plain triple loop in double, for every kernel this CPU
// runs, over row counts around the 6-row tile, column counts around the panel widths
// (16, 32; zero-padded last panel) and a panel sub-range.
TEST(PackedGemmTest, MatchesAPlainProductForEveryKernelAndEdge) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  for (PackedIsa isa : {PackedIsa::kGeneric, PackedIsa::kAvx2, PackedIsa::kAvx512}) {
    if (BestPackedIsa(isa) != isa) continue;  // this CPU lacks it
    for (int64_t m : {1, 5, 6, 7, 13, 50}) {
      for (int64_t n : {1, 16, 33, 100}) {
        for (int64_t k : {1, 7, 96}) {
          std::vector<float> x(m * (k + 3)), w(n * k), y(m * (n + 2));
          for (float& v : x) v = normal(gen);
          for (float& v : w) v = normal(gen);
          for (float& v : y) v = normal(gen);  // the addend
          const std::vector<float> y0 = y;
          const PackedWeights packed = PackWeights(w.data(), n, k, isa);
          ASSERT_EQ(packed.isa(), isa);
          // Strided x and y (ldx = k + 3, ldy = n + 2): the rows need not be packed.
          PackedGemm(x.data(), m, k + 3, packed, y.data(), n + 2, 0, packed.panels());
          for (int64_t r = 0; r < m; ++r) {
            for (int64_t c = 0; c < n + 2; ++c) {
              double want = y0[r * (n + 2) + c];
              if (c < n) {
                for (int64_t j = 0; j < k; ++j) {
                  want += static_cast<double>(x[r * (k + 3) + j]) * w[c * k + j];
                }
              }
              ASSERT_NEAR(y[r * (n + 2) + c], want, 1e-4 * (1 + std::sqrt(double(k))))
                  << PackedIsaName(isa) << " m " << m << " n " << n << " k " << k << " at (" << r
                  << ", " << c << ")";
            }
          }
        }
      }
    }
  }
}

TEST(PackedGemmTest, APanelRangeWritesOnlyItsColumns) {
  const int64_t m = 3, n = 70, k = 5;
  std::vector<float> x(m * k, 1.0f), w(n * k, 1.0f), y(m * n, 0.0f);
  const PackedWeights packed = PackWeights(w.data(), n, k, BestPackedIsa());
  ASSERT_GE(packed.panels(), 3);
  PackedGemm(x.data(), m, k, packed, y.data(), n, 1, 2);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      const bool inside = c >= packed.panel() && c < 2 * packed.panel();
      EXPECT_EQ(y[r * n + c], inside ? 5.0f : 0.0f) << r << ", " << c;
    }
  }
}

}  // namespace
}  // namespace vitserve
