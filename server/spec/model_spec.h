// Plain, torch-free description of a served model: what config.pbtxt says, validated.
#ifndef VITSERVE_SERVER_SPEC_MODEL_SPEC_H_
#define VITSERVE_SERVER_SPEC_MODEL_SPEC_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// Token-reduction method applied at inference.
enum class Method { kDense, kDynamicViT, kEViT, kToMe, kTNT, kSViTE, kTriLevel };

// "dense", "dynamicvit", ... (lower case, as in config.pbtxt and the wire).
absl::string_view MethodName(Method m);
absl::StatusOr<Method> ParseMethod(absl::string_view name);

// ViT/DeiT shape (timm names). Defaults are DeiT-S at 224².
struct Architecture {
  int image_size = 224;
  int patch_size = 16;
  int in_chans = 3;
  int embed_dim = 384;
  int depth = 12;
  int num_heads = 6;
  double mlp_ratio = 4.0;
  int num_classes = 1000;
  bool distilled = false;  // DeiT distillation token + head_dist
  // false: the checkpoint has no q/k/v biases (Hugging Face qkv_bias: false); zero biases
  // are substituted at load, which gives the same numbers.
  bool qkv_bias = true;
  double norm_eps = 1e-6;  // backbone LayerNorm eps (timm 1e-6; Hugging Face config.json's)

  int num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  // Leading non-patch tokens: CLS (+ dist token when distilled).
  int num_prefix_tokens() const { return distilled ? 2 : 1; }
  int mlp_hidden() const { return static_cast<int>(embed_dim * mlp_ratio); }
  int head_dim() const { return embed_dim / num_heads; }
};

// Per-block width after SViTE compaction; empty vector in PruningSpec = uniform.
struct BlockShape {
  int num_heads = 0;
  int head_dim = 0;
  int mlp_hidden = 0;
};

struct PruningSpec {
  Method method = Method::kDense;
  std::vector<int> locations;  // block indices where reduction happens (method default if empty)
  float default_keep_rate = 1.0f;
  float min_keep_rate = 0.1f;
  float max_keep_rate = 1.0f;
  float attn_ratio = 0.0f;  // trilevel attention level (0 = off)
  bool svite_plain_removal = false;
  unsigned long long tnt_seed = 0;  // 0 = no random pre-prune
};

struct PreprocessSpec {
  int resize = 0;  // shorter side; 0 = image_size / crop_pct
  float crop_pct = 0.875f;
  // Squash (Hugging Face size {height, width}): resize to exactly this, aspect not kept.
  // Both 0 = the shorter-side rule above.
  int resize_height = 0;
  int resize_width = 0;
  bool skip_resize = false;  // Hugging Face do_resize: false
  // Center crop to image_size: "center" (torchvision: round half to even offsets),
  // "center_floor" (Hugging Face: floor offsets), "none" (the resized image must already
  // be image_size x image_size).
  std::string crop = "center";
  // Pillow-exact: bicubic, bilinear, lanczos, box, hamming; own code: nearest; OpenCV: area.
  std::string interpolation = "bicubic";
  // x = float32(double(v) * rescale_factor), then (x - mean) / std in float32. With 1/255
  // this equals torchvision's float32(v) / 255 for every 8-bit v.
  double rescale_factor = 1.0 / 255.0;
  std::vector<float> mean = {0.485f, 0.456f, 0.406f};
  std::vector<float> std = {0.229f, 0.224f, 0.225f};
  bool grayscale = false;
  bool invert = false;
};

struct CalibrationPoint {
  std::string method;
  float keep_rate = 1.0f;
  double top1 = 0.0;
  double agreement = 0.0;
  unsigned long long macs = 0;
};

// Everything the server knows about one model directory.
struct ModelSpec {
  std::string name;
  std::string version;
  std::string dir;  // absolute model directory
  Architecture arch;
  PreprocessSpec preprocess;
  PruningSpec pruning;
  std::string weights_path;         // absolute
  std::string labels_path;          // absolute, may be empty
  std::string calibration_path;     // absolute, may be empty
  std::vector<std::string> labels;  // filled by the loader
  std::vector<CalibrationPoint> calibration;
  // "timm" or "huggingface": the weights' key layout (huggingface is renamed at load).
  std::string weights_layout = "timm";
  // Hugging Face class: ViTForImageClassification, DeiTForImageClassification or
  // DeiTForImageClassificationWithTeacher; empty for timm layouts.
  std::string hf_architecture;
  // Where each setting came from, e.g. {"architecture.norm_eps", "config.json
  // layer_norm_eps"}; empty for a plain config.pbtxt model (everything from there).
  std::vector<std::pair<std::string, std::string>> sources;
};

// Default reduction locations per method, the official code's for 12-block DeiTs: {3,6,9}
// (scaled as depth/4, 2·depth/4, 3·depth/4 for other depths, each once: fewer than three
// when depth < 4); ToMe: every block. Always strictly increasing.
std::vector<int> DefaultLocations(Method m, int depth);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SPEC_MODEL_SPEC_H_
