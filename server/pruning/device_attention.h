// The attention core for tensors on an accelerator (CUDA): FastAttention
// (cpu_kernels.h) hands every non-CPU call here. Internal to server/pruning/.
//
// With LibTorch >= 2.1 the full attention runs as one fused kernel,
// at::scaled_dot_product_attention (flash / memory-efficient attention: the [N, N]
// probability matrix never reaches device memory). Methods that need attention weights
// (EViT's CLS attention) get only what they need: the CLS query's row, one [1, N] product
// and softmax per (image, head), computed beside the fused kernel. ToMe's key_bias goes in
// as SDPA's additive mask. Older LibTorch (Debian's 1.13) takes the explicit path
// (matmul, softmax, matmul), which is also what runs on CPU tensors.
//
// Same contract as FastAttention: q [B, Nq, C] (last dim contiguous; a view of a qkv
// buffer is fine), kv [B, N, 2C] keys then values, heads, scale, key_bias undefined or
// [B, N], cls_probs (when non-null) receives [B, heads, N], the post-softmax row of query
// 0, in q's dtype. Returns [B, Nq, C]. Thread-safety: stateless. Errors: c10::Error.
#ifndef VITSERVE_SERVER_PRUNING_DEVICE_ATTENTION_H_
#define VITSERVE_SERVER_PRUNING_DEVICE_ATTENTION_H_

#include <torch/types.h>

namespace vitserve {

// The sizes of an attention call under the contract above: batch b, query rows nq, width c,
// keys n, head width d = c / heads.
struct AttentionDims {
  int64_t b, nq, c, n, d;
};

// Reads the sizes and checks kv [b, n, 2c] and c % heads == 0; c10::Error
// "<who>: q <sizes> kv <sizes> heads <heads>" otherwise. Shared by FastAttention's CPU path.
AttentionDims CheckAttentionDims(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                                 const char* who);

// True when DeviceAttention runs the fused kernel (LibTorch >= 2.1).
bool FusedAttentionAvailable();

torch::Tensor DeviceAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                              double scale, const torch::Tensor& key_bias,
                              torch::Tensor* cls_probs);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_DEVICE_ATTENTION_H_
