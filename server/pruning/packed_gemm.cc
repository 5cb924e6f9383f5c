#include "server/pruning/packed_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr int kRows = 6;  // rows of the register tile
// Rows per chunk: the chunk's activations (rows x k floats) stay in L2 while every panel of
// the chunk's column range streams past them.
constexpr int64_t kChunkFloats = 64 * 1024;

// c[r, 0:P] += sum_p a[r, p] * b[p, 0:P] for r < R; b is one packed panel [k][P].
using TileFn = void (*)(const float* a, int64_t lda, const float* b, int64_t k, float* c,
                        int64_t ldc);

template <int R>
__attribute__((target("avx512f"))) void Tile512(const float* a, int64_t lda, const float* b,
                                                int64_t k, float* c, int64_t ldc) {
  __m512 c0[R], c1[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm512_loadu_ps(c + r * ldc);
    c1[r] = _mm512_loadu_ps(c + r * ldc + 16);
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_load_ps(b + p * 32);
    const __m512 b1 = _mm512_load_ps(b + p * 32 + 16);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(c + r * ldc, c0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
  }
}

template <int R>
__attribute__((target("avx2,fma"))) void Tile256(const float* a, int64_t lda, const float* b,
                                                 int64_t k, float* c, int64_t ldc) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm256_loadu_ps(c + r * ldc);
    c1[r] = _mm256_loadu_ps(c + r * ldc + 8);
  }
  for (int64_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_load_ps(b + p * 16);
    const __m256 b1 = _mm256_load_ps(b + p * 16 + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(c + r * ldc, c0[r]);
    _mm256_storeu_ps(c + r * ldc + 8, c1[r]);
  }
}

template <int R>
void TileGeneric(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc) {
  float acc[R][16];
  for (int r = 0; r < R; ++r) std::memcpy(acc[r], c + r * ldc, sizeof(acc[r]));
  for (int64_t p = 0; p < k; ++p) {
    for (int r = 0; r < R; ++r) {
      const float av = a[r * lda + p];
      for (int j = 0; j < 16; ++j) acc[r][j] += av * b[p * 16 + j];
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(c + r * ldc, acc[r], sizeof(acc[r]));
}

struct Kernels {
  int panel;
  TileFn tile[kRows + 1];  // tile[R] for R rows; tile[0] unused
};

const Kernels& KernelsFor(PackedIsa isa) {
  static const Kernels k512{
      32, {nullptr, Tile512<1>, Tile512<2>, Tile512<3>, Tile512<4>, Tile512<5>, Tile512<6>}};
  static const Kernels k256{
      16, {nullptr, Tile256<1>, Tile256<2>, Tile256<3>, Tile256<4>, Tile256<5>, Tile256<6>}};
  static const Kernels generic{16,
                               {nullptr, TileGeneric<1>, TileGeneric<2>, TileGeneric<3>,
                                TileGeneric<4>, TileGeneric<5>, TileGeneric<6>}};
  switch (isa) {
    case PackedIsa::kAvx512:
      return k512;
    case PackedIsa::kAvx2:
      return k256;
    case PackedIsa::kGeneric:
      break;
  }
  return generic;
}

// Rows [r0, r1) of one panel; columns past the matrix's n go through a scratch tile.
void PanelRows(const Kernels& kern, const float* x, int64_t ldx, const float* panel, int64_t k,
               float* y, int64_t ldy, int64_t cols, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
    if (cols == kern.panel) {
      kern.tile[rows](x + r * ldx, ldx, panel, k, y + r * ldy, ldy);
      continue;
    }
    alignas(64) float tile[kRows * 32] = {};
    for (int i = 0; i < rows; ++i) {
      std::memcpy(tile + i * kern.panel, y + (r + i) * ldy, cols * sizeof(float));
    }
    kern.tile[rows](x + r * ldx, ldx, panel, k, tile, kern.panel);
    for (int i = 0; i < rows; ++i) {
      std::memcpy(y + (r + i) * ldy, tile + i * kern.panel, cols * sizeof(float));
    }
  }
}

constexpr EnumNameEntry<PackedIsa> kIsaNames[] = {
    {PackedIsa::kAvx512, "avx512"}, {PackedIsa::kAvx2, "avx2"}, {PackedIsa::kGeneric, "generic"}};

}  // namespace

absl::string_view PackedIsaName(PackedIsa isa) { return EnumName(kIsaNames, isa, "generic"); }

PackedIsa BestPackedIsa(PackedIsa max_isa) {
  __builtin_cpu_init();
  PackedIsa best = PackedIsa::kGeneric;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = PackedIsa::kAvx2;
  if (__builtin_cpu_supports("avx512f")) best = PackedIsa::kAvx512;
  return std::min(best, max_isa);
}

void PackedWeights::Free::operator()(float* p) const { std::free(p); }

PackedWeights PackWeights(const float* weight, int64_t n, int64_t k, PackedIsa isa) {
  PackedWeights w;
  w.n_ = n;
  w.k_ = k;
  w.isa_ = isa;
  w.panel_ = KernelsFor(isa).panel;
  const size_t floats = static_cast<size_t>(w.panels() * k * w.panel_);
  const size_t bytes = std::max<size_t>(64, (floats * sizeof(float) + 63) / 64 * 64);
  w.data_ = std::shared_ptr<float>(static_cast<float*>(std::aligned_alloc(64, bytes)),
                                   PackedWeights::Free());
  float* out = w.data_.get();
  std::memset(out, 0, bytes);
  for (int64_t p = 0; p < w.panels(); ++p) {
    float* panel = out + p * k * w.panel_;
    const int64_t n0 = p * w.panel_;
    const int64_t cols = std::min<int64_t>(w.panel_, n - n0);
    for (int64_t j = 0; j < cols; ++j) {
      const float* row = weight + (n0 + j) * k;
      for (int64_t q = 0; q < k; ++q) panel[q * w.panel_ + j] = row[q];
    }
  }
  return w;
}

void PackedGemm(const float* x, int64_t m, int64_t ldx, const PackedWeights& w, float* y,
                int64_t ldy, int64_t panel_begin, int64_t panel_end) {
  const Kernels& kern = KernelsFor(w.isa());
  const int64_t k = w.k();
  const int64_t chunk =
      std::max<int64_t>(kRows, kChunkFloats / std::max<int64_t>(k, 1) / kRows * kRows);
  for (int64_t r0 = 0; r0 < m; r0 += chunk) {
    const int64_t r1 = std::min(m, r0 + chunk);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const int64_t n0 = p * w.panel();
      const int64_t cols = std::min<int64_t>(w.panel(), w.n() - n0);
      PanelRows(kern, x, ldx, w.panel_data(p), k, y + n0, ldy, cols, r0, r1);
    }
  }
}

}  // namespace vitserve
