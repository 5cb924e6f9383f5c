// One linear layer's weights reordered once, at load, into the layout oneDNN's matmul
// primitive picks for them (format_tag::any: the blocked layout of its brgemm kernels on
// AVX-512), and the primitives that multiply by them. Internal to server/pruning/: the
// GEMM plan (gemm_plan.h) times it against the other kernels as "matmul".
//
// Why: oneDNN's sgemm (the kOneDnn kernel) packs the weight matrix again on every call, and
// on this project's Ice Lake VM it ran DeiT-S's fc1 (197 x 1536 x 384) at ~60 % of the
// sgemm peak; the matmul primitive on weights reordered at load ran the same product
// 1.2-2.2x faster at 68-394 rows (a standalone timing, one thread, 2026-12-07). The bias,
// residual and GELU run as the primitive's post-ops, while the output is in cache.
//
// A primitive is made per (rows, epilogue) on first use and kept (the token count changes
// per pruning stage and batch size, so rows are not known at load); oneDNN's own primitive
// cache makes a second weight of the same shape cheap.
// Thread-safety: Run may be called from many threads at once. It runs on the calling
// thread only: the primitives are made single-threaded (oneDNN fixes a primitive's thread
// count when it is made); FastLinear splits rows across its threads itself.
#ifndef VITSERVE_SERVER_PRUNING_ONEDNN_MATMUL_H_
#define VITSERVE_SERVER_PRUNING_ONEDNN_MATMUL_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace vitserve {

class OneDnnMatmulWeights {
 public:
  // Reorders `weight` [n, k] (row-major, the Linear layout; copied, the caller's buffer is
  // not kept). Errors: UNIMPLEMENTED when oneDNN is not compiled in or has no matmul
  // for this shape; INTERNAL on a oneDNN failure.
  static absl::StatusOr<std::unique_ptr<OneDnnMatmulWeights>> Create(const float* weight, int64_t n,
                                                                     int64_t k);
  ~OneDnnMatmulWeights();
  OneDnnMatmulWeights(const OneDnnMatmulWeights&) = delete;
  OneDnnMatmulWeights& operator=(const OneDnnMatmulWeights&) = delete;

  int64_t n() const;
  int64_t k() const;

  // y [m, n] = GELU?((residual +) bias + x [m, k] · weightᵀ), all row-major and dense;
  // residual may be null (then none), gelu applies after the residual, as LinearEpilogue.
  // False (y untouched) when oneDNN has no primitive for these rows on these weights (or
  // only its slow reference one): the caller runs another kernel.
  bool Run(const float* x, const float* bias, const float* residual, bool gelu, float* y,
           int64_t m) const;
  // Makes (or finds) the primitive Run would use; false where Run would return false.
  bool Ready(int64_t m, bool residual, bool gelu) const;

  struct State;  // oneDNN objects; defined in the .cc

 private:
  explicit OneDnnMatmulWeights(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_ONEDNN_MATMUL_H_
