#include "server/serving/spec_compat.h"

namespace vitserve {

std::string SpecChange(const ModelSpec& a, const ModelSpec& b) {
  const Architecture& x = a.arch;
  const Architecture& y = b.arch;
  if (x.image_size != y.image_size || x.patch_size != y.patch_size || x.in_chans != y.in_chans ||
      x.embed_dim != y.embed_dim || x.depth != y.depth || x.num_heads != y.num_heads ||
      x.mlp_ratio != y.mlp_ratio || x.num_classes != y.num_classes || x.distilled != y.distilled) {
    return "the architecture";
  }
  const PruningSpec& p = a.pruning;
  const PruningSpec& q = b.pruning;
  if (p.method != q.method || p.locations != q.locations ||
      p.default_keep_rate != q.default_keep_rate || p.min_keep_rate != q.min_keep_rate ||
      p.max_keep_rate != q.max_keep_rate || p.attn_ratio != q.attn_ratio ||
      p.svite_plain_removal != q.svite_plain_removal || p.tnt_seed != q.tnt_seed) {
    return "the pruning settings";
  }
  const PreprocessSpec& r = a.preprocess;
  const PreprocessSpec& s = b.preprocess;
  if (r.resize != s.resize || r.crop_pct != s.crop_pct || r.interpolation != s.interpolation ||
      r.mean != s.mean || r.std != s.std || r.grayscale != s.grayscale || r.invert != s.invert) {
    return "the preprocessing";
  }
  return "";
}

}  // namespace vitserve
