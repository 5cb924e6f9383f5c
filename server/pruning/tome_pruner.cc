// ToMe (facebookresearch/ToMe tome/merge.py, tome/patch/timm.py), eval mode.
//
// Every block, between attention and MLP, merges r_eff = min(r, (t - protected) / 2)
// tokens (protected = CLS [+ dist]) by bipartite soft matching on the keys averaged over
// heads, L2-normalised without eps: A = tokens at even positions, B = odd positions,
// scores = A·Bᵀ with the CLS row (and the dist column) at -inf; each A token's best B
// match; the r_eff A tokens with the highest match merge into their B token by
// size-weighted average. Output order [unmerged A in index order, all B] (distilled:
// [A0, B0, A1.., B1..]), a `size` per token, and proportional attention (log(size)
// added to the attention logits) from the second block on.

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "server/pruning/cpu_kernels.h"
#include "server/pruning/forward_common.h"
#include "server/pruning/task_pool.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/cost_model.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

// The merge plan of one block (indices per image).
struct MergePlan {
  torch::Tensor unmerged;  // [B, tA - r] indices into A, ascending
  torch::Tensor src;       // [B, r] indices into A
  torch::Tensor dst;       // [B, r] indices into B
  int r = 0;
  bool distilled = false;
};

MergePlan AtenSoftMatching(const torch::Tensor& keys, int r, bool distilled) {
  // keys [B, H, t, D] -> metric [B, t, D]
  torch::Tensor metric = keys.mean(1);
  metric = metric / metric.norm(2, /*dim=*/{-1}, /*keepdim=*/true);
  const int64_t t = metric.size(1);
  torch::Tensor a = metric.slice(1, 0, t, 2);
  torch::Tensor b = metric.slice(1, 1, t, 2);
  torch::Tensor scores = at::matmul(a, b.transpose(-1, -2));  // [B, tA, tB]
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  scores.select(1, 0).fill_(kNegInf);                 // CLS (A[0]) never merges
  if (distilled) scores.select(2, 0).fill_(kNegInf);  // dist token (B[0]) never receives
  auto [node_max, node_idx] = scores.max(-1);
  torch::Tensor edge_idx = std::get<1>(node_max.sort(-1, /*descending=*/true));
  MergePlan plan;
  plan.r = r;
  plan.distilled = distilled;
  plan.src = edge_idx.narrow(1, 0, r);
  plan.unmerged = std::get<0>(edge_idx.narrow(1, r, edge_idx.size(1) - r).sort(1));
  plan.dst = node_idx.gather(1, plan.src);
  return plan;
}

// merge(x, mode="sum") of merge.py for x [B, t, c].
torch::Tensor AtenMergeSum(const MergePlan& plan, const torch::Tensor& x) {
  const int64_t t = x.size(1);
  torch::Tensor src = x.slice(1, 0, t, 2);
  torch::Tensor dst = x.slice(1, 1, t, 2).contiguous();
  torch::Tensor unm = GatherTokens(src, plan.unmerged);
  torch::Tensor moved = GatherTokens(src, plan.src);
  dst.scatter_add_(1, plan.dst.unsqueeze(-1).expand({x.size(0), plan.r, x.size(2)}), moved);
  if (plan.distilled) {
    return at::cat({unm.narrow(1, 0, 1), dst.narrow(1, 0, 1), unm.narrow(1, 1, unm.size(1) - 1),
                    dst.narrow(1, 1, dst.size(1) - 1)},
                   1);
  }
  return at::cat({unm, dst}, 1);
}

bool IsCpuFloat(const torch::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
}

// One image's match in three steps: metric rows (head-mean keys, L2-normalised), each A
// token's best B token (node max / index; the rows can be split across tasks), then edges
// by descending max.
struct ImageMatch {
  std::vector<float> metric;    // [t, d]
  std::vector<float> node_max;  // [tA]
  std::vector<int64_t> node_idx;
};

void BuildMetric(const float* keys, int64_t head_stride, int64_t token_stride, int64_t heads,
                 int64_t t, int64_t d, ImageMatch* m) {
  m->metric.assign(static_cast<size_t>(t * d), 0.0f);
  for (int64_t tok = 0; tok < t; ++tok) {
    float* row = m->metric.data() + tok * d;
    for (int64_t h = 0; h < heads; ++h) {
      const float* k = keys + h * head_stride + tok * token_stride;
      for (int64_t j = 0; j < d; ++j) row[j] += k[j];
    }
    float sq = 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      row[j] /= static_cast<float>(heads);
      sq += row[j] * row[j];
    }
    const float norm = std::sqrt(sq);
    for (int64_t j = 0; j < d; ++j) row[j] /= norm;
  }
  const int64_t ta = (t + 1) / 2;
  m->node_max.assign(static_cast<size_t>(ta), -std::numeric_limits<float>::infinity());
  m->node_idx.assign(static_cast<size_t>(ta), 0);
}

// Best B match of A rows [i0, i1) (A[0], the CLS token, is never scored: its max stays
// -inf), over B columns [j0, tB). The dot products are vectorised.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ScoreRows(
    const float* metric, int64_t d, int64_t i0, int64_t i1, int64_t j0, int64_t tb, float* node_max,
    int64_t* node_idx) {
  for (int64_t i = std::max<int64_t>(i0, 1); i < i1; ++i) {
    const float* a = metric + 2 * i * d;
    for (int64_t j = j0; j < tb; ++j) {
      const float* b = metric + (2 * j + 1) * d;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t e = 0; e < d; ++e) dot += a[e] * b[e];
      if (dot > node_max[i]) {
        node_max[i] = dot;
        node_idx[i] = j;
      }
    }
  }
}

void FinishMatch(const ImageMatch& m, int r, int64_t* src, int64_t* dst, int64_t* unmerged) {
  const std::vector<float>& node_max = m.node_max;
  const int64_t ta = static_cast<int64_t>(node_max.size());
  std::vector<int64_t> order(static_cast<size_t>(ta));
  for (int64_t i = 0; i < ta; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return node_max[x] > node_max[y] || (node_max[x] == node_max[y] && x < y);
  });
  for (int j = 0; j < r; ++j) {
    src[j] = order[j];
    dst[j] = m.node_idx[order[j]];
  }
  std::sort(order.begin() + r, order.end());
  std::copy(order.begin() + r, order.end(), unmerged);
}

// BipartiteSoftMatching on the CPU in one pass per image (ATen's ~12 small ops per
// block cost ~0.3 ms on the bundled model's shape). Same decisions as the ATen version
// (float32 sums in a different order; ties are resolved towards the lower index). With
// fewer images than threads, each image's A rows are scored in `parts` tasks (ToMe at
// batch 1 on 2 threads otherwise left one thread idle for ~10 % of the forward).
MergePlan BipartiteSoftMatching(const torch::Tensor& keys, int r, bool distilled) {
  if (!IsCpuFloat(keys) || keys.stride(3) != 1) return AtenSoftMatching(keys, r, distilled);
  const int64_t b = keys.size(0), heads = keys.size(1), t = keys.size(2), d = keys.size(3);
  const int64_t ta = (t + 1) / 2, tb = t / 2, j0 = distilled ? 1 : 0;
  MergePlan plan;
  plan.r = r;
  plan.distilled = distilled;
  const auto index = torch::TensorOptions().dtype(torch::kInt64);
  plan.src = at::empty({b, r}, index);
  plan.dst = at::empty({b, r}, index);
  plan.unmerged = at::empty({b, ta - r}, index);
  const float* kp = keys.data_ptr<float>();
  int64_t* srcp = plan.src.data_ptr<int64_t>();
  int64_t* dstp = plan.dst.data_ptr<int64_t>();
  int64_t* unmp = plan.unmerged.data_ptr<int64_t>();
  std::vector<ImageMatch> match(static_cast<size_t>(b));
  const int threads = KernelThreads();
  // Splitting pays only when the scoring outweighs two more parallel regions (DeiT-S: 99 x
  // 98 x 64 multiply-adds an image; the bundled model's 25 x 25 x 16 ran slower split).
  constexpr int64_t kMinSplitMacs = int64_t{1} << 17;
  const int64_t parts = b >= threads || ta * tb * d < kMinSplitMacs ? 1 : (threads + b - 1) / b;
  const int64_t rows = (ta + parts - 1) / parts;
  auto build = [&](int64_t i) {
    BuildMetric(kp + i * keys.stride(0), keys.stride(1), keys.stride(2), heads, t, d, &match[i]);
  };
  auto score = [&](int64_t i, int64_t part) {
    ImageMatch& m = match[i];
    ScoreRows(m.metric.data(), d, part * rows, std::min(ta, (part + 1) * rows), j0, tb,
              m.node_max.data(), m.node_idx.data());
  };
  auto finish = [&](int64_t i) {
    FinishMatch(match[i], r, srcp + i * r, dstp + i * r, unmp + i * (ta - r));
  };
  if (parts == 1) {
    ParallelTasks(b, threads, [&](int64_t i) {
      build(i);
      score(i, 0);
      finish(i);
    });
  } else {
    ParallelTasks(b, threads, build);
    ParallelTasks(b * parts, threads, [&](int64_t k) { score(k / parts, k % parts); });
    ParallelTasks(b, threads, finish);
  }
  return plan;
}

// x [B, t, c] and size [B, t, 1] (undefined = ones) -> merged (x · size summed) / merged
// size, and the merged size: AtenMergeSum(x * size) / AtenMergeSum(size) in one pass.
std::pair<torch::Tensor, torch::Tensor> MergeWeighted(const MergePlan& plan, const torch::Tensor& x,
                                                      const torch::Tensor& size) {
  const int64_t b = x.size(0), t = x.size(1), c = x.size(2);
  if (!IsCpuFloat(x) || !x.is_contiguous() || (size.defined() && !size.is_contiguous())) {
    torch::Tensor s = size.defined() ? size : at::ones({b, t, 1}, x.options());
    torch::Tensor new_size = AtenMergeSum(plan, s);
    return {AtenMergeSum(plan, x * s).div_(new_size), new_size};
  }
  const int64_t ta = (t + 1) / 2, tb = t / 2, unm = ta - plan.r, out_t = t - plan.r;
  torch::Tensor out = at::empty({b, out_t, c}, x.options());
  torch::Tensor out_size = at::empty({b, out_t, 1}, x.options());
  ParallelTasks(b, KernelThreads(), [&](int64_t i) {
    std::vector<float> acc(static_cast<size_t>(tb * c));
    std::vector<float> acc_size(static_cast<size_t>(tb));
    {
      const float* xi = x.data_ptr<float>() + i * t * c;
      const float* si = size.defined() ? size.data_ptr<float>() + i * t : nullptr;
      auto sz = [&](int64_t tok) { return si != nullptr ? si[tok] : 1.0f; };
      for (int64_t j = 0; j < tb; ++j) {
        acc_size[j] = sz(2 * j + 1);
        for (int64_t e = 0; e < c; ++e) acc[j * c + e] = xi[(2 * j + 1) * c + e] * acc_size[j];
      }
      const int64_t* src = plan.src.data_ptr<int64_t>() + i * plan.r;
      const int64_t* dst = plan.dst.data_ptr<int64_t>() + i * plan.r;
      for (int j = 0; j < plan.r; ++j) {
        const float s = sz(2 * src[j]);
        acc_size[dst[j]] += s;
        for (int64_t e = 0; e < c; ++e) acc[dst[j] * c + e] += xi[2 * src[j] * c + e] * s;
      }
      // Output order: [unmerged A..., B...]; distilled: [A0, B0, A1.., B1..].
      std::vector<std::pair<int64_t, bool>> rows;  // (index, is_b)
      const int64_t* unmp = plan.unmerged.data_ptr<int64_t>() + i * unm;
      if (plan.distilled) {
        rows.push_back({unmp[0], false});
        rows.push_back({0, true});
        for (int64_t j = 1; j < unm; ++j) rows.push_back({unmp[j], false});
        for (int64_t j = 1; j < tb; ++j) rows.push_back({j, true});
      } else {
        for (int64_t j = 0; j < unm; ++j) rows.push_back({unmp[j], false});
        for (int64_t j = 0; j < tb; ++j) rows.push_back({j, true});
      }
      float* oi = out.data_ptr<float>() + i * out_t * c;
      float* osi = out_size.data_ptr<float>() + i * out_t;
      for (int64_t row = 0; row < out_t; ++row) {
        const auto [idx, is_b] = rows[row];
        const float s = is_b ? acc_size[idx] : sz(2 * idx);
        osi[row] = s;
        for (int64_t e = 0; e < c; ++e) {
          oi[row * c + e] = (is_b ? acc[idx * c + e] : xi[2 * idx * c + e] * s) / s;
        }
      }
    }
  });
  return {out, out_size};
}

class ToMePruner : public TokenPruner {
 public:
  ToMePruner(const Architecture& arch, const PrunerOptions& options)
      : arch_(arch), options_(options) {}

  Method method() const override { return Method::kToMe; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    const int prefix = o.num_prefix_tokens();
    const int r =
        options_.tome_r >= 0 ? options_.tome_r : ToMeMergeCountForKeepRate(arch_, keep_rate);
    torch::Tensor x = EmbedTokens(vit, images);
    torch::Tensor size;  // [B, t, 1]; undefined until the first merge (all ones)
    PrunedOutput out;
    out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
    for (int i = 0; i < o.depth; ++i) {
      BlockImpl& block = vit.block(i);
      const int t = static_cast<int>(x.size(1));
      const int merged = ToMeMergeCount(r, t, prefix);
      torch::Tensor bias;
      if (size.defined()) bias = size.log().squeeze(-1);  // [B, t]
      if (i == o.depth - 1 && options_.last_block_prefix_only) {
        // The merge leaves the prefix tokens untouched: only their rows feed the head.
        x = PrefixOnlyBlock(block, x, prefix, bias);
        out.tokens_per_stage.push_back(t - merged);
        break;
      }
      torch::Tensor keys;
      x = AttentionResidual(block, x, bias, /*cls_probs_out=*/nullptr, &keys);
      if (merged > 0) {
        const MergePlan plan = BipartiteSoftMatching(keys, merged, o.distilled);
        if (!size.defined()) size = at::ones({x.size(0), t, 1}, x.options());
        std::tie(x, size) = MergeWeighted(plan, x, size);
      }
      out.tokens_per_stage.push_back(static_cast<int>(x.size(1)));
      x = MlpResidual(block, x);
    }
    out.logits = vit.Head(x);
    return out;
  }

 private:
  Architecture arch_;
  PrunerOptions options_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeToMePruner(const Architecture& arch,
                                            const PrunerOptions& options) {
  return std::make_unique<ToMePruner>(arch, options);
}

}  // namespace vitserve
