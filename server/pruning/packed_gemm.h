// A GEMM for linear layers whose weights are packed once, at load, into the layout its
// micro-kernel reads. Internal to server/pruning/ (FastLinear's third candidate, chosen per
// shape by timing: gemm_plan.h).
//
// Why: oneDNN's dnnl_sgemm and OpenBLAS repack the weight matrix on every call. A ViT's
// linear layers run with few rows per call (197 tokens at batch 1, 50 for the bundled
// model), where repacking the [N, K] weights costs a large share of the product itself.
// Here the weights are cut into panels of `panel` output columns, each stored [K][panel]
// contiguous (the last panel zero-padded), so the kernel streams one panel per column block
// and broadcasts the activations straight from their row-major rows: nothing is packed per
// call. Kernels: AVX-512 (panels of 32 columns, 6 x 32 register tile), AVX2 + FMA (16
// columns, 6 x 16), and plain C++ (16 columns) for other x86-64 CPUs; the widest the CPU
// has is picked when the weights are packed, capped by PackOptions::max_isa.
//
// Thread-safety: PackedWeights is immutable after PackWeights; PackedGemm may run
// concurrently on disjoint outputs.
#ifndef VITSERVE_SERVER_PRUNING_PACKED_GEMM_H_
#define VITSERVE_SERVER_PRUNING_PACKED_GEMM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace vitserve {

enum class PackedIsa { kGeneric, kAvx2, kAvx512 };

// "generic" | "avx2" | "avx512".
absl::string_view PackedIsaName(PackedIsa isa);

// The widest kernel this CPU runs, capped at `max_isa`.
PackedIsa BestPackedIsa(PackedIsa max_isa = PackedIsa::kAvx512);

class PackedWeights {
 public:
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int panel() const { return panel_; }
  PackedIsa isa() const { return isa_; }
  int64_t panels() const { return (n_ + panel_ - 1) / panel_; }
  // Panel p: k() rows of panel() floats, 64-byte aligned.
  const float* panel_data(int64_t p) const { return data_.get() + p * k_ * panel_; }

 private:
  friend PackedWeights PackWeights(const float* weight, int64_t n, int64_t k, PackedIsa isa);
  struct Free {
    void operator()(float* p) const;
  };
  int64_t n_ = 0;
  int64_t k_ = 0;
  int panel_ = 16;
  PackedIsa isa_ = PackedIsa::kGeneric;
  std::shared_ptr<float> data_;
};

// Packs weight [n, k] (row-major, a linear layer's) for the kernel of `isa`.
PackedWeights PackWeights(const float* weight, int64_t n, int64_t k, PackedIsa isa);

// y[r, c] += sum_j x[r, j] * weight[c, j] for rows r < m and the columns of panels
// [panel_begin, panel_end): x is [m, k] with row stride ldx, y [m, n] with row stride ldy.
// y must hold the addend (bias, residual) on entry: the product accumulates into it.
void PackedGemm(const float* x, int64_t m, int64_t ldx, const PackedWeights& w, float* y,
                int64_t ldy, int64_t panel_begin, int64_t panel_end);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_PACKED_GEMM_H_
