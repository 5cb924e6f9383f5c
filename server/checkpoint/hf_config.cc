#include "server/checkpoint/hf_config.h"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kConfigJson = "config.json";
constexpr absl::string_view kPreprocessorJson = "preprocessor_config.json";
constexpr int64_t kMaxDim = int64_t{1} << 16;
constexpr int64_t kMaxClasses = int64_t{1} << 24;

absl::Status Invalid(absl::string_view file, absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", key, ": ", what));
}

absl::StatusOr<Json> ParseObject(absl::string_view text, absl::string_view file) {
  try {
    Json j = Json::parse(text.begin(), text.end());
    if (!j.is_object()) return Invalid(file, "(top level)", "is not a JSON object");
    return j;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
}

// Typed reads that name the key on failure.
absl::StatusOr<int64_t> GetInt(const Json& j, const char* key, absl::string_view file,
                               int64_t lo = 1, int64_t hi = kMaxDim) {
  auto it = j.find(key);
  if (it == j.end()) return Invalid(file, key, "missing");
  if (!it->is_number_integer()) return Invalid(file, key, "must be an integer");
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return Invalid(file, key, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<double> GetNumber(const Json& j, const char* key, absl::string_view file) {
  auto it = j.find(key);
  if (it == j.end()) return Invalid(file, key, "missing");
  if (!it->is_number()) return Invalid(file, key, "must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v)) return Invalid(file, key, "must be finite");
  return v;
}

absl::StatusOr<bool> GetBool(const Json& j, const char* key, absl::string_view file) {
  auto it = j.find(key);
  if (it == j.end()) return Invalid(file, key, "missing");
  if (!it->is_boolean()) return Invalid(file, key, "must be true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> GetString(const Json& j, const char* key, absl::string_view file) {
  auto it = j.find(key);
  if (it == j.end()) return Invalid(file, key, "missing");
  if (!it->is_string()) return Invalid(file, key, "must be a string");
  return it->get<std::string>();
}

std::string From(absl::string_view file, absl::string_view key) {
  return absl::StrCat(file, " ", key);
}

// Settings the executor cannot reproduce, refused when present with a value that turns
// them on (null / false / 0 are the "off" values transformers writes).
absl::Status RefuseUnsupported(const Json& j) {
  static constexpr const char* kKeys[] = {
      "layerscale_value", "layer_scale_init_value",     "use_mean_pooling",
      "use_swiglu_ffn",   "use_relative_position_bias", "use_shared_relative_position_bias"};
  for (const char* key : kKeys) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    const bool off =
        (it->is_boolean() && !it->get<bool>()) || (it->is_number() && it->get<double>() == 0.0);
    if (!off) {
      return Invalid(kConfigJson, key,
                     absl::StrCat(it->dump(), " is not supported: vitserve's executor has no ", key,
                                  " (a plain ViT / DeiT only)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadClass(const Json& j) {
  auto it = j.find("architectures");
  if (it == j.end() || !it->is_array() || it->size() != 1 || !(*it)[0].is_string()) {
    return Invalid(kConfigJson, "architectures",
                   absl::StrCat("must be a list naming one class; supported: ", kHfVit, ", ",
                                kHfDeit, ", ", kHfDeitTeacher));
  }
  const std::string cls = (*it)[0].get<std::string>();
  if (cls != kHfVit && cls != kHfDeit && cls != kHfDeitTeacher) {
    return Invalid(kConfigJson, "architectures",
                   absl::StrCat("'", cls, "' is not supported; supported: ", kHfVit, ", ", kHfDeit,
                                ", ", kHfDeitTeacher));
  }
  absl::StatusOr<std::string> type = GetString(j, "model_type", kConfigJson);
  if (!type.ok()) return type.status();
  const std::string want = cls == kHfVit ? "vit" : "deit";
  if (*type != want) {
    return Invalid(kConfigJson, "model_type",
                   absl::StrCat("'", *type, "' does not match ", cls, " (needs '", want, "')"));
  }
  return cls;
}

absl::StatusOr<std::vector<std::string>> ReadLabels(const Json& j) {
  auto it = j.find("id2label");
  if (it == j.end() || !it->is_object() || it->empty()) {
    return Invalid(kConfigJson, "id2label", "missing or empty: it gives the number of classes");
  }
  if (static_cast<int64_t>(it->size()) > kMaxClasses) {
    return Invalid(kConfigJson, "id2label", "implausibly many classes");
  }
  std::vector<std::string> labels(it->size());
  std::vector<bool> seen(it->size(), false);
  for (auto& [key, value] : it->items()) {
    size_t id = 0;
    if (!absl::SimpleAtoi(key, &id) || id >= labels.size() || seen[id] || !value.is_string()) {
      return Invalid(kConfigJson, "id2label",
                     absl::StrCat("entry \"", key, "\" is not a unique class index 0..",
                                  labels.size() - 1, " with a string label"));
    }
    seen[id] = true;
    labels[id] = value.get<std::string>();
  }
  return labels;
}

// The sizes of config.json into `arch`.
absl::Status ReadSizes(const Json& j, Architecture* arch, SettingSources* sources) {
  struct IntField {
    const char* key;
    int* target;
    const char* setting;
  };
  int hidden = 0;
  int intermediate = 0;
  for (const IntField& f :
       {IntField{"hidden_size", &arch->embed_dim, "architecture.embed_dim"},
        IntField{"num_hidden_layers", &arch->depth, "architecture.depth"},
        IntField{"num_attention_heads", &arch->num_heads, "architecture.num_heads"},
        IntField{"intermediate_size", &intermediate, "architecture.mlp_ratio"},
        IntField{"image_size", &arch->image_size, "architecture.image_size"},
        IntField{"patch_size", &arch->patch_size, "architecture.patch_size"},
        IntField{"num_channels", &arch->in_chans, "architecture.in_chans"}}) {
    absl::StatusOr<int64_t> v = GetInt(j, f.key, kConfigJson);
    if (!v.ok()) return v.status();
    *f.target = static_cast<int>(*v);
    sources->emplace_back(f.setting, From(kConfigJson, f.key));
  }
  hidden = arch->embed_dim;
  if (arch->image_size % arch->patch_size != 0) {
    return Invalid(
        kConfigJson, "image_size",
        absl::StrCat(arch->image_size, " is not divisible by patch_size ", arch->patch_size));
  }
  if (hidden % arch->num_heads != 0) {
    return Invalid(
        kConfigJson, "hidden_size",
        absl::StrCat(hidden, " is not divisible by num_attention_heads ", arch->num_heads));
  }
  if (arch->in_chans != 3 && arch->in_chans != 1) {
    return Invalid(kConfigJson, "num_channels", "must be 3 (RGB) or 1 (grayscale)");
  }
  const int64_t side = arch->image_size / arch->patch_size;
  if (side * side > (int64_t{1} << 20))
    return Invalid(kConfigJson, "image_size", "too many patches");
  arch->mlp_ratio = static_cast<double>(intermediate) / hidden;
  if (arch->mlp_hidden() != intermediate) {
    return Invalid(kConfigJson, "intermediate_size",
                   absl::StrCat(intermediate, " is not representable as hidden_size x ratio"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfModelConfig> ParseHfConfig(absl::string_view json_text) {
  absl::StatusOr<Json> j = ParseObject(json_text, kConfigJson);
  if (!j.ok()) return j.status();
  HfModelConfig out;
  absl::StatusOr<std::string> cls = ReadClass(*j);
  if (!cls.ok()) return cls.status();
  out.hf_class = *cls;
  if (absl::Status s = RefuseUnsupported(*j); !s.ok()) return s;
  if (absl::Status s = ReadSizes(*j, &out.arch, &out.sources); !s.ok()) return s;
  out.arch.distilled = out.hf_class != kHfVit;
  out.sources.emplace_back("architecture.distilled", From(kConfigJson, "architectures"));

  absl::StatusOr<double> eps = GetNumber(*j, "layer_norm_eps", kConfigJson);
  if (!eps.ok()) return eps.status();
  if (!(*eps > 0.0 && *eps < 1.0)) return Invalid(kConfigJson, "layer_norm_eps", "not in (0, 1)");
  out.arch.norm_eps = *eps;
  out.sources.emplace_back("architecture.norm_eps", From(kConfigJson, "layer_norm_eps"));

  absl::StatusOr<std::string> act = GetString(*j, "hidden_act", kConfigJson);
  if (!act.ok()) return act.status();
  if (*act != "gelu") {
    return Invalid(kConfigJson, "hidden_act",
                   absl::StrCat("'", *act,
                                "' is not supported: vitserve computes the exact (erf) GELU, "
                                "hidden_act \"gelu\"; tanh approximations and other activations "
                                "would change the logits"));
  }
  out.sources.emplace_back("activation", From(kConfigJson, "hidden_act"));

  if (j->contains("qkv_bias")) {
    absl::StatusOr<bool> qkv_bias = GetBool(*j, "qkv_bias", kConfigJson);
    if (!qkv_bias.ok()) return qkv_bias.status();
    out.arch.qkv_bias = *qkv_bias;
    out.sources.emplace_back("qkv_bias", From(kConfigJson, "qkv_bias"));
  } else {
    out.sources.emplace_back("qkv_bias", "default: true (absent from config.json)");
  }
  absl::StatusOr<std::vector<std::string>> labels = ReadLabels(*j);
  if (!labels.ok()) return labels.status();
  out.labels = *std::move(labels);
  out.arch.num_classes = static_cast<int>(out.labels.size());
  out.sources.emplace_back("architecture.num_classes", From(kConfigJson, "id2label"));
  out.sources.emplace_back("labels", From(kConfigJson, "id2label"));
  return out;
}

}  // namespace vitserve

namespace vitserve {
namespace {

// Pillow / transformers resample codes: the name of code i is kResampleNames[i].
constexpr const char* kResampleNames[] = {"nearest", "lanczos", "bilinear",
                                          "bicubic", "box",     "hamming"};

absl::StatusOr<std::string> ResampleName(int64_t code) {
  if (code < 0 || code >= static_cast<int64_t>(std::size(kResampleNames))) {
    return Invalid(kPreprocessorJson, "resample",
                   absl::StrCat(code, " is not a Pillow filter code (0..5)"));
  }
  return std::string(kResampleNames[code]);
}

// `size` / `crop_size`: an int N (N x N), {"height", "width"}, or {"shortest_edge"}
// (returned as height = width = 0, shortest = N).
struct HfSize {
  int height = 0;
  int width = 0;
  int shortest = 0;
};

absl::StatusOr<HfSize> ReadSize(const Json& j, const char* key, bool allow_shortest) {
  auto it = j.find(key);
  if (it == j.end()) return Invalid(kPreprocessorJson, key, "missing");
  HfSize s;
  if (it->is_number_integer()) {
    absl::StatusOr<int64_t> n = GetInt(j, key, kPreprocessorJson);
    if (!n.ok()) return n.status();
    s.height = s.width = static_cast<int>(*n);
    return s;
  }
  if (it->is_object() && it->contains("height") && it->contains("width") && it->size() == 2) {
    absl::StatusOr<int64_t> h = GetInt(*it, "height", kPreprocessorJson);
    absl::StatusOr<int64_t> w = GetInt(*it, "width", kPreprocessorJson);
    if (!h.ok()) return h.status();
    if (!w.ok()) return w.status();
    s.height = static_cast<int>(*h);
    s.width = static_cast<int>(*w);
    return s;
  }
  if (allow_shortest && it->is_object() && it->contains("shortest_edge") && it->size() == 1) {
    absl::StatusOr<int64_t> n = GetInt(*it, "shortest_edge", kPreprocessorJson);
    if (!n.ok()) return n.status();
    s.shortest = static_cast<int>(*n);
    return s;
  }
  return Invalid(kPreprocessorJson, key,
                 absl::StrCat(it->dump(), " is not supported; accepted: an integer, ",
                              "{\"height\": H, \"width\": W}",
                              allow_shortest ? " or {\"shortest_edge\": S}" : ""));
}

absl::Status ReadResize(const Json& j, PreprocessSpec* p, SettingSources* sources) {
  absl::StatusOr<bool> do_resize = GetBool(j, "do_resize", kPreprocessorJson);
  if (!do_resize.ok()) return do_resize.status();
  if (!*do_resize) {
    p->skip_resize = true;
    sources->emplace_back("preprocessing.skip_resize", From(kPreprocessorJson, "do_resize"));
    return absl::OkStatus();
  }
  absl::StatusOr<HfSize> size = ReadSize(j, "size", /*allow_shortest=*/true);
  if (!size.ok()) return size.status();
  if (size->shortest != 0) {
    p->resize = size->shortest;
    sources->emplace_back("preprocessing.resize", From(kPreprocessorJson, "size.shortest_edge"));
  } else {
    p->resize_height = size->height;
    p->resize_width = size->width;
    sources->emplace_back("preprocessing.resize_height/width", From(kPreprocessorJson, "size"));
  }
  absl::StatusOr<int64_t> code = GetInt(j, "resample", kPreprocessorJson, 0, 5);
  if (!code.ok()) return code.status();
  absl::StatusOr<std::string> name = ResampleName(*code);
  if (!name.ok()) return name.status();
  p->interpolation = *name;
  sources->emplace_back("preprocessing.interpolation", From(kPreprocessorJson, "resample"));
  return absl::OkStatus();
}

absl::Status ReadCrop(const Json& j, const Architecture& arch, PreprocessSpec* p,
                      SettingSources* sources) {
  bool crop = false;
  if (j.contains("do_center_crop")) {
    absl::StatusOr<bool> v = GetBool(j, "do_center_crop", kPreprocessorJson);
    if (!v.ok()) return v.status();
    crop = *v;
    sources->emplace_back("preprocessing.crop", From(kPreprocessorJson, "do_center_crop"));
  } else {
    sources->emplace_back("preprocessing.crop", "default: none (no do_center_crop in the file)");
  }
  p->crop = crop ? "center_floor" : "none";
  if (!crop) return absl::OkStatus();
  absl::StatusOr<HfSize> size = ReadSize(j, "crop_size", /*allow_shortest=*/false);
  if (!size.ok()) return size.status();
  if (size->height != arch.image_size || size->width != arch.image_size) {
    return Invalid(kPreprocessorJson, "crop_size",
                   absl::StrCat(size->width, "x", size->height, " differs from the model's ",
                                "image_size ", arch.image_size, " (config.json)"));
  }
  sources->emplace_back("preprocessing.crop_size", From(kPreprocessorJson, "crop_size"));
  return absl::OkStatus();
}

absl::Status ReadValues(const Json& j, const Architecture& arch, PreprocessSpec* p,
                        SettingSources* sources) {
  if (j.contains("do_rescale")) {
    absl::StatusOr<bool> rescale = GetBool(j, "do_rescale", kPreprocessorJson);
    if (!rescale.ok()) return rescale.status();
    p->rescale_factor = 1.0;
    if (*rescale) {
      absl::StatusOr<double> f = GetNumber(j, "rescale_factor", kPreprocessorJson);
      if (!f.ok()) return f.status();
      if (!(*f > 0.0)) return Invalid(kPreprocessorJson, "rescale_factor", "must be positive");
      p->rescale_factor = *f;
    }
    sources->emplace_back("preprocessing.rescale_factor",
                          From(kPreprocessorJson, *rescale ? "rescale_factor" : "do_rescale"));
  } else {
    p->rescale_factor = 1.0 / 255.0;
    sources->emplace_back("preprocessing.rescale_factor",
                          "default: 1/255 (no do_rescale in the file; older feature extractors "
                          "always rescaled)");
  }
  absl::StatusOr<bool> normalize = GetBool(j, "do_normalize", kPreprocessorJson);
  if (!normalize.ok()) return normalize.status();
  const size_t channels = static_cast<size_t>(arch.in_chans);
  p->mean.assign(channels, 0.0f);
  p->std.assign(channels, 1.0f);
  sources->emplace_back("preprocessing.mean/std", From(kPreprocessorJson, "do_normalize"));
  if (!*normalize) return absl::OkStatus();
  for (const char* key : {"image_mean", "image_std"}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_array() || it->size() != channels) {
      return Invalid(kPreprocessorJson, key,
                     absl::StrCat("must be a list of ", channels, " numbers (num_channels)"));
    }
    std::vector<float>& target = std::string(key) == "image_mean" ? p->mean : p->std;
    for (size_t c = 0; c < channels; ++c) {
      const Json& v = (*it)[c];
      if (!v.is_number() || !std::isfinite(v.get<double>())) {
        return Invalid(kPreprocessorJson, key, "values must be finite numbers");
      }
      target[c] = static_cast<float>(v.get<double>());
    }
    sources->back().second = From(kPreprocessorJson, "image_mean/image_std");
  }
  for (const float s : p->std) {
    if (!(s > 0.0f)) return Invalid(kPreprocessorJson, "image_std", "values must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfPreprocessConfig> ParseHfPreprocessorConfig(absl::string_view json_text,
                                                             const Architecture& arch) {
  absl::StatusOr<Json> j = ParseObject(json_text, kPreprocessorJson);
  if (!j.ok()) return j.status();
  HfPreprocessConfig out;
  PreprocessSpec& p = out.preprocess;
  p.grayscale = arch.in_chans == 1;
  if (absl::Status s = ReadResize(*j, &p, &out.sources); !s.ok()) return s;
  if (absl::Status s = ReadCrop(*j, arch, &p, &out.sources); !s.ok()) return s;
  if (absl::Status s = ReadValues(*j, arch, &p, &out.sources); !s.ok()) return s;
  const bool squash = p.resize_height != 0;
  if (p.crop == "none" && (p.resize != 0 || (squash && (p.resize_height != arch.image_size ||
                                                        p.resize_width != arch.image_size)))) {
    return Invalid(
        kPreprocessorJson, "size",
        absl::StrCat("without a center crop the resized image must be the model's ",
                     arch.image_size, "x", arch.image_size, " (config.json image_size)"));
  }
  if (p.crop != "none" && (p.resize != 0 ? p.resize < arch.image_size
                                         : squash && (p.resize_height < arch.image_size ||
                                                      p.resize_width < arch.image_size))) {
    return Invalid(kPreprocessorJson, "size",
                   "is smaller than crop_size (transformers would pad; vitserve does not)");
  }
  return out;
}

}  // namespace vitserve
