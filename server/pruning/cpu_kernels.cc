#include "server/pruning/cpu_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#ifdef VITSERVE_HAVE_DNNL
#include <dnnl.h>
#endif

namespace vitserve {
namespace {

// Used only by the oneDNN paths; [[maybe_unused]] keeps the ATen-only build (no
// libdnnl-dev) compiling under -Werror.
[[maybe_unused]] bool IsPlainCpuFloat(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
}

// ATen reference of FastAttention (also the fallback).
torch::Tensor AtenAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                            double scale, const torch::Tensor& key_bias, torch::Tensor* cls_probs) {
  const int64_t b = q.size(0);
  const int64_t nq = q.size(1);
  const int64_t c = q.size(2);
  const int64_t n = kv.size(1);
  const int64_t d = c / heads;
  torch::Tensor qh = q.reshape({b, nq, heads, d}).transpose(1, 2);
  torch::Tensor kvh = kv.reshape({b, n, 2, heads, d}).permute({2, 0, 3, 1, 4});
  torch::Tensor logits = at::matmul(qh, kvh[0].transpose(-2, -1)).mul_(scale);
  if (key_bias.defined()) logits.add_(key_bias.view({b, 1, 1, n}));
  torch::Tensor probs = at::_softmax(logits, -1, false);
  if (cls_probs != nullptr) *cls_probs = probs.select(2, 0);
  return at::matmul(probs, kvh[1]).transpose(1, 2).reshape({b, nq, c});
}

// Debian's oneDNN sgemm collapses with more than one intra-op thread on the 2-core
// machine (dense DeiT-S batch 1: 17.3 img/s at 1 thread, 1.4 at 2), while ATen's GEMMs
// scale (10.3 -> 15.6); bench/results/threads-cpu.md. So oneDNN runs only single-threaded.
[[maybe_unused]] bool OneDnnProfitable() { return at::get_num_threads() == 1; }

}  // namespace

bool FastCpuKernelsAvailable() {
#ifdef VITSERVE_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

torch::Tensor FastLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias) {
#ifdef VITSERVE_HAVE_DNNL
  if (OneDnnProfitable() && IsPlainCpuFloat(x) && IsPlainCpuFloat(weight) &&
      IsPlainCpuFloat(bias) && weight.is_contiguous() && bias.is_contiguous() &&
      x.stride(-1) == 1) {
    const int64_t k = x.size(-1);
    const int64_t n = weight.size(0);
    TORCH_CHECK(weight.size(1) == k, "FastLinear: weight ", weight.sizes(), " vs input ",
                x.sizes());
    torch::Tensor x2 = x.is_contiguous() ? x : x.contiguous();
    const int64_t m = x2.numel() / k;
    std::vector<int64_t> out_shape = x2.sizes().vec();
    out_shape.back() = n;
    torch::Tensor y = at::empty(out_shape, x2.options());
    y.view({m, n}).copy_(bias.unsqueeze(0).expand({m, n}));
    at::init_num_threads();  // oneDNN (OpenMP) uses this thread's OpenMP thread count
    const dnnl_status_t st = dnnl_sgemm('N', 'T', m, n, k, 1.0f, x2.data_ptr<float>(), k,
                                        weight.data_ptr<float>(), k, 1.0f, y.data_ptr<float>(), n);
    TORCH_CHECK(st == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(st));
    return y;
  }
#endif
  return at::linear(x, weight, bias);
}

torch::Tensor FastAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                            double scale, const torch::Tensor& key_bias, torch::Tensor* cls_probs) {
#ifdef VITSERVE_HAVE_DNNL
  const bool fast = OneDnnProfitable() && IsPlainCpuFloat(q) && IsPlainCpuFloat(kv) &&
                    q.stride(2) == 1 && kv.stride(2) == 1 &&
                    (!key_bias.defined() || IsPlainCpuFloat(key_bias));
  if (fast) {
    const int64_t b = q.size(0);
    const int64_t nq = q.size(1);
    const int64_t c = q.size(2);
    const int64_t n = kv.size(1);
    const int64_t d = c / heads;
    TORCH_CHECK(kv.size(0) == b && kv.size(2) == 2 * c && d * heads == c, "FastAttention: q ",
                q.sizes(), " kv ", kv.sizes(), " heads ", heads);
    torch::Tensor bias = key_bias.defined() ? key_bias.contiguous() : key_bias;
    torch::Tensor out = at::empty({b, nq, c}, q.options());
    if (cls_probs != nullptr) *cls_probs = at::empty({b, heads, n}, q.options());
    const float* qp = q.data_ptr<float>();
    const float* kvp = kv.data_ptr<float>();
    const float* biasp = bias.defined() ? bias.data_ptr<float>() : nullptr;
    float* outp = out.data_ptr<float>();
    float* clsp = cls_probs != nullptr ? cls_probs->data_ptr<float>() : nullptr;
    const int64_t q_bs = q.stride(0), q_rs = q.stride(1);
    const int64_t kv_bs = kv.stride(0), kv_rs = kv.stride(1);
    at::init_num_threads();
    at::parallel_for(0, b * heads, 1, [&](int64_t begin, int64_t end) {
      // Logits and probabilities of one (image, head): nq x n each.
      torch::Tensor logits = at::empty({nq, n}, q.options());
      torch::Tensor probs = at::empty({nq, n}, q.options());
      float* lp = logits.data_ptr<float>();
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bi = task / heads;
        const int64_t h = task % heads;
        const float* qh = qp + bi * q_bs + h * d;
        const float* kh = kvp + bi * kv_bs + h * d;
        const float* vh = kvp + bi * kv_bs + c + h * d;
        // logits = scale · q kᵀ   (nq x d) · (d x n); inside a parallel region oneDNN
        // runs single-threaded.
        (void)dnnl_sgemm('N', 'T', nq, n, d, static_cast<float>(scale), qh, q_rs, kh, kv_rs, 0.0f,
                         lp, n);
        if (biasp != nullptr) logits.add_(bias[bi].unsqueeze(0));
        at::_softmax_out(probs, logits, -1, false);
        const float* pp = probs.data_ptr<float>();
        if (clsp != nullptr) std::copy(pp, pp + n, clsp + (bi * heads + h) * n);
        // out[bi, :, h·d : (h+1)·d] = probs · v   (nq x n) · (n x d), written in place.
        (void)dnnl_sgemm('N', 'N', nq, d, n, 1.0f, pp, n, vh, kv_rs, 0.0f,
                         outp + bi * nq * c + h * d, c);
      }
    });
    return out;
  }
#endif
  return AtenAttention(q, kv, heads, scale, key_bias, cls_probs);
}

}  // namespace vitserve
