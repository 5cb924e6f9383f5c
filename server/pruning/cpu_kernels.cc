#include "server/pruning/cpu_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "server/pruning/gemm_plan.h"
#include "server/pruning/packed_gemm.h"
#include "server/pruning/task_pool.h"

#ifdef VITSERVE_HAVE_DNNL
#include <dnnl.h>
#endif

#include "server/pruning/device_attention.h"

namespace vitserve {
namespace {

// Work per ParallelTasks task of the element-wise kernels (only matters with more than
// one intra-op thread).
constexpr int64_t kRowsPerTask = 64;
constexpr int64_t kValuesPerTask = 16384;

// Output columns per task when an [m, n] product is split across `threads`: one block per
// thread, a multiple of 16 columns (one AVX-512 vector).
int64_t ColumnsPerBlock(int64_t n, int64_t threads) {
  return std::max<int64_t>(16, ((n + threads - 1) / threads + 15) / 16 * 16);
}

// ParallelTasks over [0, n) in chunks of `grain`: fn(begin, end) per chunk.
void ParallelRanges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t chunks = (n + grain - 1) / grain;
  ParallelTasks(chunks, KernelThreads(),
                [&](int64_t i) { fn(i * grain, std::min(n, (i + 1) * grain)); });
}

bool IsPlainCpuFloat(const torch::Tensor& t) {
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

// exp(x) for x <= 0 (softmax after the row maximum is subtracted), Cephes' expf: range
// reduction by ln 2, a degree-6 polynomial, the power of two built in the exponent bits.
// Relative error <= 1e-7 against std::exp on [-87, 0]; below -87 it returns exp(-87)
// (~1.6e-38) instead of a denormal or 0. Branch-free so the loops below vectorise.
__attribute__((always_inline)) inline float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = __builtin_rintf(x * 1.44269504088896341f);  // x / ln 2, rounded
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln 2 (two parts)
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return y * two_n;
}

// Eight floats (GCC's vector extension): one ymm register in the AVX2 and AVX-512 clones,
// two xmm in the plain one. The row reductions below keep their partial results in it:
// `#pragma omp simd reduction(...)` spilled them to a stack array and combined the lanes
// one scalar at a time after every row (16 dependent operations per reduction on AVX-512),
// as much work as the vector loop itself on the bundled model's 50-token rows.
typedef float Float8 __attribute__((vector_size(8 * sizeof(float))));

// max(p[0..n)), n >= 1.
__attribute__((always_inline)) inline float RowMax(const float* p, int64_t n) {
  float max = p[0];
  int64_t j = 0;
  if (n >= 8) {
    Float8 m;
    std::memcpy(&m, p, sizeof(m));
    for (j = 8; j + 8 <= n; j += 8) {
      Float8 v;
      std::memcpy(&v, p + j, sizeof(v));
      m = v > m ? v : m;
    }
    for (int i = 0; i < 8; ++i) max = m[i] > max ? m[i] : max;
  }
  for (; j < n; ++j) max = p[j] > max ? p[j] : max;
  return max;
}

// p[0] + ... + p[n - 1], eight partial sums.
__attribute__((always_inline)) inline float RowSum(const float* p, int64_t n) {
  Float8 s = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    Float8 v;
    std::memcpy(&v, p + j, sizeof(v));
    s += v;
  }
  float sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; j < n; ++j) sum += p[j];
  return sum;
}

// (p[0] - mean)² + ... + (p[n - 1] - mean)², eight partial sums.
__attribute__((always_inline)) inline float RowSquaredDeviation(const float* p, int64_t n,
                                                                float mean) {
  Float8 s = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    Float8 v;
    std::memcpy(&v, p + j, sizeof(v));
    v -= mean;
    s += v * v;
  }
  float sum = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; j < n; ++j) sum += (p[j] - mean) * (p[j] - mean);
  return sum;
}

// probs[r, :] = softmax(logits[r, :] + bias) for `rows` rows of `n`; bias may be null.
// ATen's softmax costs 2.6 ns per element on these small rows (its exp is not vectorised
// in Debian's build): 220 of the 290 us the attention core of one 50-token block took for
// a batch of 8. Compiled for AVX-512, AVX2 and plain x86-64, picked at load time.
[[maybe_unused]] __attribute__((target_clones("avx512f", "avx2", "default"))) void SoftmaxRows(
    const float* logits, const float* bias, float* probs, int64_t rows, int64_t n) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* l = logits + row * n;
    float* p = probs + row * n;
    if (bias != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) p[j] = l[j] + bias[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) p[j] = l[j];
    }
    const float max = RowMax(p, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) p[j] = ExpNonPositive(p[j] - max);
    const float inv = 1.0f / RowSum(p, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) p[j] *= inv;
  }
}

// y = (x - mean) / sqrt(var + eps) * weight + bias for `rows` rows of `c` (biased
// variance, two passes, as ATen). ATen's layer_norm took 33 us for 400 rows of 96 here.
__attribute__((target_clones("avx512f", "avx2", "default"))) void LayerNormRows(
    const float* x, const float* weight, const float* bias, float* y, int64_t rows, int64_t c,
    float eps) {
  for (int64_t row = 0; row < rows; ++row) {
    const float* xr = x + row * c;
    float* yr = y + row * c;
    const float mean = RowSum(xr, c) / static_cast<float>(c);
    const float sq = RowSquaredDeviation(xr, c, mean);
    const float inv_std = 1.0f / std::sqrt(sq / static_cast<float>(c) + eps);
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - mean) * inv_std * weight[j] + bias[j];
  }
}

// x = x · Φ(x) = 0.5 x (1 + erf(x / √2)) in place. erf by Abramowitz & Stegun 7.1.26
// (|error| <= 1.5e-7): erf(z) = 1 - t(a1 + t(a2 + t(a3 + t(a4 + t a5)))) e^(-z²),
// t = 1 / (1 + p z) for z >= 0, odd. ATen's gelu took 72 us for 154k values here.
__attribute__((target_clones("avx512f", "avx2", "default"))) void GeluInPlace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = (v < 0.0f ? -v : v) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.3275911f * z);
    float poly = 1.061405429f;
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    const float erf_abs = 1.0f - poly * t * ExpNonPositive(-z * z);
    const float erf = v < 0.0f ? -erf_abs : erf_abs;
    x[i] = 0.5f * v * (1.0f + erf);
  }
}

// y[m, n] = x[m, k] · w[n, k]ᵀ + b[n] (+ residual[m, n]) (then GELU), with the output
// columns cut into blocks of `cols` run by ParallelTasks (task_pool.h): `gemm(n0, nb)` adds
// the product for columns [n0, n0 + nb) into y (single-threaded: inside a task). oneDNN's
// own multi-threaded sgemm collapsed here (Debian's build: dense DeiT-S batch 1 17.3 img/s
// at 1 thread, 1.4 at 2; bench/results/threads-cpu.md), the per-thread blocks do not. The
// epilogue runs on each block while it is in cache: the bias (and residual) initialise y,
// the GEMM accumulates into it, GELU last.
void BlockedLinear(const float* b, const float* residual, bool gelu, float* y, int64_t m, int64_t n,
                   int64_t cols, const std::function<void(int64_t, int64_t)>& gemm) {
  const int64_t blocks = (n + cols - 1) / cols;
  ParallelTasks(blocks, KernelThreads(), [&](int64_t blk) {
    const int64_t n0 = blk * cols;
    const int64_t nb = std::min(cols, n - n0);
    for (int64_t r = 0; r < m; ++r) {
      float* yr = y + r * n + n0;
      if (residual == nullptr) {
        std::memcpy(yr, b + n0, nb * sizeof(float));
      } else {
        const float* rr = residual + r * n + n0;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) yr[j] = rr[j] + b[n0 + j];
      }
    }
    gemm(n0, nb);
    if (gelu) {
      for (int64_t r = 0; r < m; ++r) GeluInPlace(y + r * n + n0, nb);
    }
  });
}

#ifdef VITSERVE_HAVE_DNNL
// BlockedLinear through oneDNN's sgemm (beta = 1), one block per thread, blocks multiples
// of 16 columns (one AVX-512 vector).
void SgemmLinear(const float* x, const float* w, const float* b, const float* residual, bool gelu,
                 float* y, int64_t m, int64_t n, int64_t k) {
  BlockedLinear(
      b, residual, gelu, y, m, n, ColumnsPerBlock(n, KernelThreads()), [&](int64_t n0, int64_t nb) {
        const dnnl_status_t st =
            dnnl_sgemm('N', 'T', m, nb, k, 1.0f, x, k, w + n0 * k, k, 1.0f, y + n0, n);
        TORCH_CHECK(st == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(st));
      });
}
#endif

// BlockedLinear through the weights packed at load (packed_gemm.h), blocks whole panels.
void PackedLinear(const float* x, const PackedWeights& w, const float* b, const float* residual,
                  bool gelu, float* y, int64_t m) {
  const int64_t threads = KernelThreads();
  const int64_t panels_per_block = std::max<int64_t>(1, (w.panels() + threads - 1) / threads);
  BlockedLinear(b, residual, gelu, y, m, w.n(), panels_per_block * w.panel(),
                [&](int64_t n0, int64_t nb) {
                  const int64_t p0 = n0 / w.panel();
                  PackedGemm(x, m, w.k(), w, y, w.n(), p0, p0 + (nb + w.panel() - 1) / w.panel());
                });
}

// oneDNN's matmul on weights reordered at load, the rows split into one contiguous range
// per thread (at least kMatmulRowsPerTask each); the epilogue runs as post-ops. False
// (y untouched) when oneDNN has no primitive for a range's row count.
constexpr int64_t kMatmulRowsPerTask = 16;

bool MatmulLinear(const float* x, const OneDnnMatmulWeights& w, const float* b,
                  const float* residual, bool gelu, float* y, int64_t m) {
  const int64_t n = w.n();
  const int64_t k = w.k();
  const int64_t tasks =
      std::max<int64_t>(1, std::min<int64_t>(KernelThreads(), m / kMatmulRowsPerTask));
  for (int64_t t = 0; t < tasks; ++t) {  // makes the primitives outside the tasks
    if (!w.Ready((t + 1) * m / tasks - t * m / tasks, residual != nullptr, gelu)) return false;
  }
  ParallelTasks(tasks, KernelThreads(), [&](int64_t t) {
    const int64_t r0 = t * m / tasks;
    const int64_t rows = (t + 1) * m / tasks - r0;
    (void)w.Run(x + r0 * k, b, residual != nullptr ? residual + r0 * n : nullptr, gelu, y + r0 * n,
                rows);  // Ready above: runs
  });
  return true;
}

// at::linear (Debian's OpenBLAS) + epilogue, with the output columns split across the
// intra-op threads like SgemmLinear: each task's OpenBLAS call runs single-threaded
// (task_pool.h), so the only threads on the cores are the pool's. x [..., K], y [..., N].
torch::Tensor AtenLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const LinearEpilogue& epilogue) {
  const int64_t n = weight.size(0);
  const int threads = KernelThreads();
  if (threads <= 1 || n < 32) {
    torch::Tensor y = at::linear(x, weight, bias);
    if (epilogue.residual.defined()) y.add_(epilogue.residual.reshape(y.sizes()));
    if (epilogue.gelu) FastGelu_(y);
    return y;
  }
  const torch::Tensor x2 = x.reshape({-1, x.size(-1)});
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = n;
  torch::Tensor y = at::empty({x2.size(0), n}, x.options());
  const torch::Tensor r2 =
      epilogue.residual.defined() ? epilogue.residual.reshape({x2.size(0), n}) : torch::Tensor();
  const int64_t cols = ColumnsPerBlock(n, threads);
  ParallelTasks((n + cols - 1) / cols, threads, [&](int64_t blk) {
    const int64_t n0 = blk * cols;
    const int64_t nb = std::min(cols, n - n0);
    c10::InferenceMode inference;  // the caller's mode is per thread; workers need their own
    torch::Tensor part = at::linear(x2, weight.narrow(0, n0, nb), bias.narrow(0, n0, nb));
    if (r2.defined()) part.add_(r2.narrow(1, n0, nb));
    if (epilogue.gelu) FastGelu_(part);  // runs inline: nested in a task
    y.narrow(1, n0, nb).copy_(part);
  });
  return y.view(out_shape);
}

}  // namespace

int KernelThreads() {
  if (at::in_parallel_region()) return 1;
  const int scoped = IntraOpThreads();
  return scoped > 0 ? scoped : at::get_num_threads();
}

bool FastCpuKernelsAvailable() {
#ifdef VITSERVE_HAVE_DNNL
  return true;
#else
  return false;
#endif
}

torch::Tensor FastLayerNorm(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, double eps) {
  const int64_t c = x.size(-1);
  // Contiguous, or [B, N, C] whose rows are contiguous within each image (a token range
  // narrowed out of a bigger sequence, e.g. the patch tokens after the prefix).
  const bool rows_contiguous =
      x.is_contiguous() || (x.dim() == 3 && x.stride(2) == 1 && x.stride(1) == c);
  if (!(IsPlainCpuFloat(x) && IsPlainCpuFloat(weight) && IsPlainCpuFloat(bias) && rows_contiguous &&
        weight.is_contiguous() && bias.is_contiguous() && weight.numel() == c &&
        bias.numel() == c && c > 0)) {
    return at::layer_norm(x, {c}, weight, bias, eps);
  }
  torch::Tensor y = at::empty(x.sizes(), x.options());  // contiguous
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (x.is_contiguous()) {
    ParallelRanges(x.numel() / c, kRowsPerTask, [&](int64_t begin, int64_t end) {
      LayerNormRows(xp + begin * c, wp, bp, yp + begin * c, end - begin, c,
                    static_cast<float>(eps));
    });
  } else {
    const int64_t n = x.size(1);
    const int64_t image_stride = x.stride(0);
    ParallelRanges(x.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        LayerNormRows(xp + i * image_stride, wp, bp, yp + i * n * c, n, c, static_cast<float>(eps));
      }
    });
  }
  return y;
}

void FastGelu_(torch::Tensor& x) {
  if (!(IsPlainCpuFloat(x) && x.is_contiguous())) {
    at::gelu_(x);
    return;
  }
  float* xp = x.data_ptr<float>();
  ParallelRanges(x.numel(), kValuesPerTask,
                 [&](int64_t begin, int64_t end) { GeluInPlace(xp + begin, end - begin); });
}

torch::Tensor FastLinear(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, const LinearEpilogue& epilogue) {
  const torch::Tensor& residual = epilogue.residual;
  const GemmPlan* plan = CurrentGemmPlan();
  const int64_t k = x.size(-1);
  const int64_t n = weight.size(0);
  const int64_t rows = k > 0 ? x.numel() / k : 0;
  const GemmKernel kernel = plan != nullptr ? plan->Lookup(rows, n, k) : GemmKernel::kOneDnn;
  const bool plain = IsPlainCpuFloat(x) && IsPlainCpuFloat(weight) && IsPlainCpuFloat(bias) &&
                     weight.is_contiguous() && bias.is_contiguous() && x.stride(-1) == 1 &&
                     (!residual.defined() || IsPlainCpuFloat(residual));
  const PackedWeights* packed = nullptr;
  if (kernel == GemmKernel::kPacked && plain && CurrentPackedWeights() != nullptr) {
    packed = CurrentPackedWeights()->Find(weight.data_ptr<float>(), n, k);
  }
  const OneDnnMatmulWeights* matmul = nullptr;
  if (kernel == GemmKernel::kMatmul && plain && CurrentPackedWeights() != nullptr) {
    matmul = CurrentPackedWeights()->FindMatmul(weight.data_ptr<float>(), n, k);
  }
#ifndef VITSERVE_HAVE_DNNL
  if (packed == nullptr) return AtenLinear(x, weight, bias, epilogue);
#endif
  if (kernel == GemmKernel::kAten || !plain) return AtenLinear(x, weight, bias, epilogue);
  TORCH_CHECK(weight.size(1) == k, "FastLinear: weight ", weight.sizes(), " vs input ", x.sizes());
  torch::Tensor x2 = x.is_contiguous() ? x : x.contiguous();
  std::vector<int64_t> out_shape = x2.sizes().vec();
  out_shape.back() = n;
  torch::Tensor r2;
  if (residual.defined()) {
    TORCH_CHECK(residual.numel() == rows * n && residual.size(-1) == n, "FastLinear: residual ",
                residual.sizes(), " vs output ", out_shape);
    r2 = residual.is_contiguous() ? residual : residual.contiguous();
  }
  torch::Tensor y = at::empty(out_shape, x2.options());
  const float* rp = r2.defined() ? r2.data_ptr<float>() : nullptr;
  if (matmul != nullptr && MatmulLinear(x2.data_ptr<float>(), *matmul, bias.data_ptr<float>(), rp,
                                        epilogue.gelu, y.data_ptr<float>(), rows)) {
    return y;
  }
  if (packed != nullptr) {
    PackedLinear(x2.data_ptr<float>(), *packed, bias.data_ptr<float>(), rp, epilogue.gelu,
                 y.data_ptr<float>(), rows);
    return y;
  }
#ifdef VITSERVE_HAVE_DNNL
  SgemmLinear(x2.data_ptr<float>(), weight.data_ptr<float>(), bias.data_ptr<float>(), rp,
              epilogue.gelu, y.data_ptr<float>(), rows, n, k);
#endif
  return y;
}

torch::Tensor FastAttention(const torch::Tensor& q, const torch::Tensor& kv, int64_t heads,
                            double scale, const torch::Tensor& key_bias, torch::Tensor* cls_probs) {
  if (!q.is_cpu()) return DeviceAttention(q, kv, heads, scale, key_bias, cls_probs);
#ifdef VITSERVE_HAVE_DNNL
  const bool fast = IsPlainCpuFloat(q) && IsPlainCpuFloat(kv) && q.stride(2) == 1 &&
                    kv.stride(2) == 1 && (!key_bias.defined() || IsPlainCpuFloat(key_bias));
  if (fast) {
    const AttentionDims dims = CheckAttentionDims(q, kv, heads, "FastAttention");
    const int64_t b = dims.b, nq = dims.nq, c = dims.c, n = dims.n, d = dims.d;
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
    ParallelRanges(b * heads, 1, [&](int64_t begin, int64_t end) {
      // Logits and probabilities of one (image, head): nq x n each, reused per thread.
      thread_local std::vector<float> logits, probs;
      logits.resize(static_cast<size_t>(nq * n));
      probs.resize(static_cast<size_t>(nq * n));
      float* lp = logits.data();
      float* pp = probs.data();
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bi = task / heads;
        const int64_t h = task % heads;
        const float* qh = qp + bi * q_bs + h * d;
        const float* kh = kvp + bi * kv_bs + h * d;
        const float* vh = kvp + bi * kv_bs + c + h * d;
        // logits = scale · q kᵀ   (nq x d) · (d x n); oneDNN runs single-threaded in tasks.
        (void)dnnl_sgemm('N', 'T', nq, n, d, static_cast<float>(scale), qh, q_rs, kh, kv_rs, 0.0f,
                         lp, n);
        SoftmaxRows(lp, biasp != nullptr ? biasp + bi * n : nullptr, pp, nq, n);
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
