#include "server/serving/model_info.h"

#include <cmath>

#include "server/spec/cost_model.h"

namespace vitserve {
namespace {

// Grid points closer than this to a range end count as that end.
constexpr float kGridTolerance = 1e-4f;
// Number of grid steps from 1.0 down to 0.
constexpr int kGridSteps = 10;

}  // namespace

std::vector<float> KeepRateGrid(const PruningSpec& pruning) {
  const float lo = pruning.min_keep_rate;
  const float hi = pruning.max_keep_rate;
  auto on_grid = [](float k) {
    const float steps = k / kKeepRateGridStep;
    return std::fabs(steps - std::round(steps)) * kKeepRateGridStep <= kGridTolerance;
  };
  std::vector<float> grid;
  if (hi > 0.0f && !on_grid(hi)) grid.push_back(hi);
  for (int i = kGridSteps; i >= 1; --i) {
    const float k = static_cast<float>(i) * kKeepRateGridStep;
    if (k <= hi + kGridTolerance && k >= lo - kGridTolerance) grid.push_back(k);
  }
  if (lo > 0.0f && (grid.empty() || std::fabs(grid.back() - lo) > kGridTolerance)) {
    grid.push_back(lo);
  }
  return grid;
}

absl::StatusOr<vitserve::v1::ModelInfo> BuildModelInfo(const ModelSpec& spec,
                                                       const std::vector<BlockShape>& blocks,
                                                       const std::string& device,
                                                       double weight_zero_fraction) {
  vitserve::v1::ModelInfo info;
  info.set_name(spec.name);
  info.set_version(spec.version);
  info.set_method(std::string(MethodName(spec.pruning.method)));
  vitserve::v1::Architecture* arch = info.mutable_architecture();
  arch->set_image_size(spec.arch.image_size);
  arch->set_patch_size(spec.arch.patch_size);
  arch->set_in_chans(spec.arch.in_chans);
  arch->set_embed_dim(spec.arch.embed_dim);
  arch->set_depth(spec.arch.depth);
  arch->set_num_heads(spec.arch.num_heads);
  arch->set_mlp_ratio(static_cast<float>(spec.arch.mlp_ratio));
  arch->set_num_classes(spec.arch.num_classes);
  arch->set_distilled(spec.arch.distilled);
  vitserve::v1::Preprocessing* pre = info.mutable_preprocessing();
  pre->set_resize(spec.preprocess.resize);
  pre->set_crop_pct(spec.preprocess.crop_pct);
  pre->set_interpolation(spec.preprocess.interpolation);
  for (float m : spec.preprocess.mean) pre->add_mean(m);
  for (float s : spec.preprocess.std) pre->add_std(s);
  pre->set_grayscale(spec.preprocess.grayscale);
  pre->set_invert(spec.preprocess.invert);
  pre->set_resize_height(spec.preprocess.resize_height);
  pre->set_resize_width(spec.preprocess.resize_width);
  pre->set_crop(spec.preprocess.crop);
  pre->set_rescale_factor(spec.preprocess.rescale_factor);
  pre->set_skip_resize(spec.preprocess.skip_resize);
  for (const auto& [setting, source] : spec.sources) {
    vitserve::v1::SettingSource* src = info.add_sources();
    src->set_setting(setting);
    src->set_source(source);
  }
  info.set_default_keep_rate(spec.pruning.default_keep_rate);
  info.set_min_keep_rate(spec.pruning.min_keep_rate);
  info.set_max_keep_rate(spec.pruning.max_keep_rate);
  info.set_dense_macs(DenseMacs(spec.arch, blocks));
  for (float k : KeepRateGrid(spec.pruning)) {
    absl::StatusOr<CostEstimate> cost = EstimateCost(spec.arch, spec.pruning, k, blocks);
    if (!cost.ok()) return cost.status();
    vitserve::v1::KeepRatePoint* point = info.add_grid();
    point->set_keep_rate(k);
    for (int t : cost->tokens_per_stage) point->add_tokens_per_stage(t);
    point->set_macs(cost->macs);
    for (const CalibrationPoint& c : spec.calibration) {
      if (c.method == MethodName(spec.pruning.method) && std::fabs(c.keep_rate - k) < 1e-4f) {
        point->set_expected_accuracy(c.top1);
      }
    }
  }
  for (const std::string& label : spec.labels) info.add_labels(label);
  for (const BlockShape& b : blocks) {
    vitserve::v1::BlockShape* shape = info.add_blocks();
    shape->set_num_heads(b.num_heads);
    shape->set_head_dim(b.head_dim);
    shape->set_mlp_hidden(b.mlp_hidden);
  }
  for (const CalibrationPoint& c : spec.calibration) {
    vitserve::v1::CalibrationPoint* p = info.add_calibration();
    p->set_method(c.method);
    p->set_keep_rate(c.keep_rate);
    p->set_top1(c.top1);
    p->set_agreement(c.agreement);
    p->set_macs(c.macs);
  }
  info.set_device(device);
  info.set_weight_zero_fraction(weight_zero_fraction);
  return info;
}

}  // namespace vitserve
