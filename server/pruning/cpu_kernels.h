// CPU fast paths for the operations that dominate a ViT forward: the linear layers
// (~92% of a DeiT-S's multiply-adds), the attention core, LayerNorm and GELU. Internal to
// server/pruning/.
//
// Why: Debian's LibTorch routes float32 GEMMs to OpenBLAS, which on this machine picks
// its AVX2 (Haswell) kernels; oneDNN's sgemm (libdnnl, already a LibTorch dependency)
// JIT-compiles AVX-512 kernels and is ~2x faster on the same shapes (bench/README.md).
// The attention core runs one (image, head) pair per task: q·kᵀ, softmax and ·v stay in
// cache, heads are read in place from the qkv buffer and written in place into the
// merged-heads layout (no permute / reshape copies), which keeps large batches from
// becoming memory-bound. Its softmax, LayerNorm and GELU are plain loops compiled for
// AVX-512 / AVX2 / x86-64 (picked at load time) with a polynomial exp: Debian's ATen
// spent 0.5-2.6 ns per element on them (no vectorised exp), as much as the GEMMs of a
// small model (bench/results/kernels-cpu.md).
//
// The GEMM paths fall back to plain ATen ops when oneDNN is not compiled in
// (VITSERVE_HAVE_DNNL); every function falls back when the tensors are not contiguous
// float32 on the CPU. Results agree with ATen to float32 rounding (tests compare against
// the ATen path).
// Thread-safety: stateless; may be called from many threads. Parallelism follows
// KernelThreads(): the task pool's threads (task_pool.h) each run oneDNN or OpenBLAS
// single-threaded on their share (GEMM column blocks, (image, head) attention tasks, rows).
// Errors: c10::Error on bad shapes.
#ifndef VITSERVE_SERVER_PRUNING_CPU_KERNELS_H_
#define VITSERVE_SERVER_PRUNING_CPU_KERNELS_H_

#include <torch/types.h>

namespace vitserve {

// True when the oneDNN fast paths are compiled in.
bool FastCpuKernelsAvailable();

// The threads the kernels below split one call's work across on this thread: the
// innermost ScopedIntraOpThreads' count (task_pool.h), else at::get_num_threads(); 1
// inside an ATen parallel region or a ParallelTasks task.
int KernelThreads();

// LayerNorm over the last dim of float32 CPU x [..., C] with weight and bias [C], for x
// contiguous or [B, N, C] with contiguous rows (a narrowed token range); ATen's
// at::layer_norm for anything else. Returns a contiguous tensor. Agrees with ATen to
// float32 rounding.
torch::Tensor FastLayerNorm(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, double eps);

// x = GELU(x) (the erf form, nn.GELU's default) in place; erf to 1.5e-7. Non-contiguous or
// non-CPU-float32 x goes through at::gelu_.
void FastGelu_(torch::Tensor& x);

// What FastLinear does to each output block while it is in cache.
struct LinearEpilogue {
  // Added to the output: [..., N] with the output's shape (a copy is made if it is not
  // contiguous). The sum is (residual + bias) + x · weightᵀ.
  torch::Tensor residual;
  // Then GELU (FastGelu_'s erf form) on the sum.
  bool gelu = false;
};

// y = x · weightᵀ + bias (+ epilogue) for x [..., K], weight [N, K], bias [N] -> [..., N].
// With more than one intra-op thread the output columns are split across the threads.
torch::Tensor FastLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const LinearEpilogue& epilogue = {});

// Multi-head attention core on a fused qkv projection.
//   q:   [B, Nq, C] queries (a view is fine if its last dim is contiguous)
//   kv:  [B, N, 2C] keys then values, or pass q = qkv[..., :C] and kv = qkv[..., C:]
//        of the [B, N, 3C] qkv output (strided views are read in place)
//   heads, scale: head count and logit scale (head_dim^-0.5)
//   key_bias: undefined, or [B, N] added to every logit row (ToMe's log(size))
//   cls_probs: when non-null, receives [B, heads, N], the post-softmax row of query 0
// Returns [B, Nq, C] = heads merged (before the output projection).
torch::Tensor FastAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                            double scale, const torch::Tensor& key_bias, torch::Tensor* cls_probs);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_CPU_KERNELS_H_
