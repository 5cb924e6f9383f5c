// Whether a new version of a model may replace the served one without a restart: what
// scheduling, validation, preprocessing and the latency model rely on must be equal.
//
// One equality per spec struct, over every field (ServingFields): a field added to
// Architecture, PruningSpec or PreprocessSpec must be added here too, which
// tests/unit/serving/spec_compat_test.cc enforces by counting the structs' fields.
#ifndef VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_
#define VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_

#include <string>
#include <tuple>

#include "server/spec/model_spec.h"

namespace vitserve {

// Every field of each struct, in declaration order.
inline auto ServingFields(const Architecture& a) {
  return std::tie(a.image_size, a.patch_size, a.in_chans, a.embed_dim, a.depth, a.num_heads,
                  a.mlp_ratio, a.num_classes, a.distilled, a.qkv_bias, a.norm_eps);
}
inline auto ServingFields(const PruningSpec& p) {
  return std::tie(p.method, p.locations, p.default_keep_rate, p.min_keep_rate, p.max_keep_rate,
                  p.attn_ratio, p.svite_plain_removal, p.tnt_seed);
}
inline auto ServingFields(const PreprocessSpec& p) {
  return std::tie(p.resize, p.crop_pct, p.resize_height, p.resize_width, p.skip_resize, p.crop,
                  p.interpolation, p.rescale_factor, p.mean, p.std, p.grayscale, p.invert);
}

// Empty when `next` keeps `served`'s architecture, pruning settings and preprocessing
// (every field equal); otherwise what changed first ("the architecture", "the pruning
// settings", "the preprocessing"). Name, version, paths, labels and calibration may change.
std::string SpecChange(const ModelSpec& served, const ModelSpec& next);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_
