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

// True when DeviceAttention runs the fused kernel (LibTorch >= 2.1).
bool FusedAttentionAvailable();

torch::Tensor DeviceAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                              double scale, const torch::Tensor& key_bias,
                              torch::Tensor* cls_probs);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PRUNING_DEVICE_ATTENTION_H_
