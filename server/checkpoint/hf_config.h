// Hugging Face `transformers` model files, read into vitserve's spec: config.json (the
// architecture and labels) and preprocessor_config.json (the image processor). Torch-free
// and file-free (text in, spec out) so that it can be fuzzed; hf_model_dir.h reads the files.
// docs/model-repository.md ("Hugging Face model directories") is the user-facing version.
//
// config.json: "architectures" must name exactly one supported class:
//   ViTForImageClassification (model_type vit), DeiTForImageClassification and
//   DeiTForImageClassificationWithTeacher (model_type deit: CLS + distillation token).
// Read: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, image_size,
// patch_size, num_channels, layer_norm_eps, hidden_act, id2label (required); qkv_bias
// (absent: true, the value of every transformers version without the key; reported as a
// default; false: zero biases are substituted at load). hidden_act must be "gelu" (exact erf GELU);
// the tanh approximations
// ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", ...) and every other activation are
// refused, as are settings the executor cannot reproduce: layer scale (layerscale_value,
// layer_scale_init_value), mean pooling (use_mean_pooling), SwiGLU (use_swiglu_ffn) and
// relative position biases, when present with a non-default value.
//
// preprocessor_config.json: every setting is read from the file. Required: do_resize;
// size and resample when do_resize; do_normalize; image_mean and image_std when
// do_normalize. size: an int N (squash to N x N) or {"height", "width"} (squash) or
// {"shortest_edge"} (shorter side, then a center crop is required). resample: 0 nearest,
// 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming (Pillow's codes). do_center_crop /
// crop_size (int or {height, width}; must be image_size square) with Hugging Face's floor
// offsets; absent do_center_crop = no crop (reported as a default). do_rescale /
// rescale_factor; absent = 1/255 (transformers' older feature extractors rescaled
// implicitly; reported as a default).
//
// Errors: INVALID_ARGUMENT naming the file and key (JSON syntax errors with their byte
// position, wrong types, unsupported values).
#ifndef VITSERVE_SERVER_CHECKPOINT_HF_CONFIG_H_
#define VITSERVE_SERVER_CHECKPOINT_HF_CONFIG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/spec/model_spec.h"

namespace vitserve {

// Supported Hugging Face classes.
inline constexpr absl::string_view kHfVit = "ViTForImageClassification";
inline constexpr absl::string_view kHfDeit = "DeiTForImageClassification";
inline constexpr absl::string_view kHfDeitTeacher = "DeiTForImageClassificationWithTeacher";

// (setting, where it came from), e.g. ("architecture.norm_eps", "config.json layer_norm_eps").
using SettingSources = std::vector<std::pair<std::string, std::string>>;

struct HfModelConfig {
  std::string hf_class;  // one of the three above
  Architecture arch;     // distilled for both DeiT classes
  std::vector<std::string> labels;
  SettingSources sources;
};

absl::StatusOr<HfModelConfig> ParseHfConfig(absl::string_view json_text);

struct HfPreprocessConfig {
  PreprocessSpec preprocess;
  SettingSources sources;
};

// `arch` gives image_size and the channel count the output must have.
absl::StatusOr<HfPreprocessConfig> ParseHfPreprocessorConfig(absl::string_view json_text,
                                                             const Architecture& arch);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_HF_CONFIG_H_
