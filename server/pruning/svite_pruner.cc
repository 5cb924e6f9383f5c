// SViTE (VITA-Group/SViTE vision_transformer_data.py), eval mode, on a compacted model
// (server/model/svite_compaction.h removed the pruned heads and MLP units at load time).
//
// The token selector `gumbel` = Linear(C, 1) scores all N tokens once, after pos_embed and
// before block 0; the top k = int(N · keep) are kept, CLS forced on (so k, or k + 1 when
// CLS was not among them). Deterministic: plain top-k by score (the official eval still
// draws Gumbel noise). The official code then *zeroes* the dropped tokens and keeps them
// in the sequence, where they still take part in every softmax (and, no longer zero after
// block 0, in every LayerNorm and MLP). All of them stay identical to each other through
// every block, so they are computed once: one zero token whose attention logit gets
// log M for its M copies (exact).
//
// Layout, the same for every image so the batch stays one tensor:
//   [CLS, the k best-scoring patches, Z]
// where Z is the zero token with multiplicity M = N - 1 - k (omitted when M = 0). An
// image whose CLS was among the top k keeps only k - 1 patches: its k-th patch slot is
// zeroed too (one more copy of the zero token, multiplicity 1 in its own slot; exact).
//
// plain_removal (config `svite_plain_removal`, labelled approximate): [CLS, k best
// patches], no zero token at all; logits differ from the official ones.
#include <ATen/ATen.h>

#include <cmath>
#include <memory>
#include <vector>

#include "server/pruning/cpu_kernels.h"
#include "server/pruning/forward_common.h"
#include "server/pruning/token_pruner.h"
#include "server/spec/keep_counts.h"

namespace vitserve {
namespace {

class SvitePruner : public TokenPruner {
 public:
  SvitePruner(bool plain_removal, const PrunerOptions& options)
      : plain_removal_(plain_removal), options_(options) {}

  Method method() const override { return Method::kSViTE; }

  PrunedOutput Forward(VitImpl& vit, const torch::Tensor& images, float keep_rate) const override {
    const VitOptions& o = vit.options();
    torch::Tensor x = EmbedTokens(vit, images);  // [B, N, C]
    const int64_t b = x.size(0);
    const int n = static_cast<int>(x.size(1));
    const int k = SviteSelectCount(n, DecimalKeepRate(keep_rate));
    PrunedOutput out;
    out.tokens_per_stage.push_back(n);
    torch::Tensor key_bias;
    if (k < n) {
      torch::Tensor scores = FastLinear(x, vit.gumbel->weight, vit.gumbel->bias).squeeze(-1);
      // Best k patches in descending score; the official top-k over all N tokens is
      // these k, or CLS and the first k - 1 of them.
      torch::Tensor patch_idx = std::get<1>(at::topk(scores.narrow(1, 1, n - 1), k, 1)).add_(1);
      torch::Tensor kept = GatherTokens(x, patch_idx);  // [B, k, C]
      std::vector<int> per_image(b, k + 1);
      if (k > 0) {
        const torch::Tensor cls_in = std::get<1>(at::topk(scores, k, 1)).eq(0).any(1);  // [B]
        if (!plain_removal_) {
          kept.select(1, k - 1).mul_(cls_in.logical_not().to(kept.scalar_type()).unsqueeze(-1));
        }
        const torch::Tensor cls_cpu = cls_in.to(torch::kCPU);
        const bool* in = cls_cpu.data_ptr<bool>();
        for (int64_t i = 0; i < b; ++i) per_image[i] = in[i] ? k : k + 1;
      }
      const int zeros = n - 1 - k;  // Z's multiplicity
      std::vector<torch::Tensor> parts = {x.narrow(1, 0, 1), kept};
      if (!plain_removal_ && zeros > 0) {
        parts.push_back(at::zeros({b, 1, x.size(2)}, x.options()));
        key_bias = at::zeros({b, k + 2}, x.options());
        key_bias.select(1, k + 1).fill_(std::log(static_cast<double>(zeros)));
      }
      x = at::cat(parts, 1);
      out.tokens_per_stage.push_back(k + 1);
      if (!plain_removal_) {
        for (int i : per_image) out.image_tokens_per_stage.push_back({n, i});
      }
    } else {
      out.tokens_per_stage.push_back(n);  // the selector stage keeps everything
    }
    for (int i = 0; i < o.depth; ++i) {
      BlockImpl& block = vit.block(i);
      if (options_.last_block_prefix_only && i == o.depth - 1) {
        x = PrefixOnlyBlock(block, x, /*rows=*/1, key_bias);
      } else {
        x = MlpResidual(block, AttentionResidual(block, x, key_bias));
      }
    }
    out.logits = vit.Head(x);
    return out;
  }

 private:
  const bool plain_removal_;
  const PrunerOptions options_;
};

}  // namespace

std::unique_ptr<TokenPruner> MakeSvitePruner(bool plain_removal, const PrunerOptions& options) {
  return std::make_unique<SvitePruner>(plain_removal, options);
}

}  // namespace vitserve
