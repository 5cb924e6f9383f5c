#include "server/checkpoint/model_repository.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/checkpoint/atomic_file.h"
#include "server/checkpoint/hf_model_dir.h"
#include "server/checkpoint/small_file.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {
namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kConfigFile = "config.pbtxt";
constexpr absl::string_view kDefaultVersion = "1";
constexpr std::array<absl::string_view, 7> kInterpolations = {
    "bicubic", "bilinear", "lanczos", "box", "hamming", "nearest", "area"};
constexpr std::array<absl::string_view, 3> kCrops = {"center", "center_floor", "none"};

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// Collects the first text-format error with its (1-based) position.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (error_.empty()) {
      error_ = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

absl::Status ParseText(const std::string& text, const std::string& where,
                       google::protobuf::Message* msg) {
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, msg)) {
    return Invalid(where, errors.error().empty() ? "cannot parse" : errors.error());
  }
  return absl::OkStatus();
}

// A model-relative file name from config.pbtxt: not absolute, no '..' component, and
// naming an existing regular file. Returns the absolute path.
absl::StatusOr<std::string> ResolveFile(const std::string& dir, const std::string& name,
                                        absl::string_view field) {
  const fs::path rel(name);
  if (rel.is_absolute()) {
    return Invalid(field, absl::StrCat("'", name, "' must be relative to the model directory"));
  }
  for (const fs::path& part : rel) {
    if (part == "..") {
      return Invalid(field, absl::StrCat("'", name, "' may not leave the model directory"));
    }
  }
  const fs::path full = (fs::path(dir) / rel).lexically_normal();
  std::error_code ec;
  if (!fs::is_regular_file(full, ec)) {
    return Invalid(field, absl::StrCat("file '", full.string(), "' does not exist"));
  }
  return full.string();
}

absl::Status CheckKeepRate(float v, absl::string_view field) {
  if (!(v > 0.0f && v <= 1.0f)) {
    return Invalid(field, absl::StrCat(v, " is outside (0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status FillArchitecture(const v1::Architecture& a, Architecture* out) {
  // Large values would overflow int arithmetic downstream; no ViT comes near these. The
  // wire fields are uint32: they are checked before the conversion to int, where a value
  // of 2^31 or more would turn negative (and INT_MIN % -1 traps).
  constexpr uint32_t kMaxDim = 1 << 16;
  constexpr uint32_t kMaxClasses = 1 << 24;
  if (a.image_size() > kMaxDim || a.patch_size() > kMaxDim || a.embed_dim() > kMaxDim ||
      a.depth() > kMaxDim || a.num_heads() > kMaxDim || a.in_chans() > kMaxDim ||
      a.num_classes() > kMaxClasses) {
    return Invalid("architecture", "a dimension is implausibly large");
  }
  // Proto3 scalars read 0 when absent: 0 keeps the DeiT-S default of Architecture.
  if (a.image_size() != 0) out->image_size = static_cast<int>(a.image_size());
  if (a.patch_size() != 0) out->patch_size = static_cast<int>(a.patch_size());
  if (a.in_chans() != 0) out->in_chans = static_cast<int>(a.in_chans());
  if (a.embed_dim() != 0) out->embed_dim = static_cast<int>(a.embed_dim());
  if (a.depth() != 0) out->depth = static_cast<int>(a.depth());
  if (a.num_heads() != 0) out->num_heads = static_cast<int>(a.num_heads());
  if (a.mlp_ratio() != 0.0f) out->mlp_ratio = a.mlp_ratio();
  if (a.num_classes() != 0) out->num_classes = static_cast<int>(a.num_classes());
  out->distilled = a.distilled();
  if (out->image_size % out->patch_size != 0) {
    return Invalid(
        "architecture.image_size",
        absl::StrCat(out->image_size, " is not divisible by patch_size ", out->patch_size));
  }
  if (out->embed_dim % out->num_heads != 0) {
    return Invalid("architecture.embed_dim",
                   absl::StrCat(out->embed_dim, " is not divisible by num_heads ", out->num_heads));
  }
  if (!(out->mlp_ratio > 0.0 && std::isfinite(out->mlp_ratio))) {
    return Invalid("architecture.mlp_ratio", "must be positive");
  }
  // Architecture::num_patches() and mlp_hidden() compute these in int.
  constexpr int64_t kMaxTokens = int64_t{1} << 20;
  const int64_t side = out->image_size / out->patch_size;
  if (side * side > kMaxTokens) {
    return Invalid("architecture.image_size",
                   absl::StrCat(out->image_size, " / patch_size ", out->patch_size, " gives ",
                                side * side, " patches, more than ", kMaxTokens));
  }
  constexpr int64_t kMaxMlpHidden = int64_t{1} << 20;
  if (out->embed_dim * out->mlp_ratio > static_cast<double>(kMaxMlpHidden)) {
    return Invalid("architecture.mlp_ratio",
                   absl::StrCat(out->mlp_ratio, " x embed_dim ", out->embed_dim,
                                " is an implausibly large MLP (more than ", kMaxMlpHidden, ")"));
  }
  return absl::OkStatus();
}

// Squash size, crop rule, rescale factor and skip_resize (the Hugging Face options).
absl::Status FillGeometry(const v1::Preprocessing& p, const Architecture& arch,
                          PreprocessSpec* out) {
  out->resize_height = static_cast<int>(p.resize_height());
  out->resize_width = static_cast<int>(p.resize_width());
  out->skip_resize = p.skip_resize();
  if ((out->resize_height == 0) != (out->resize_width == 0) || out->resize_height < 0 ||
      out->resize_width < 0) {
    return Invalid("preprocessing.resize_height",
                   "resize_height and resize_width are set together (a squash) or not at all");
  }
  if (!p.crop().empty()) out->crop = p.crop();
  if (std::find(kCrops.begin(), kCrops.end(), out->crop) == kCrops.end()) {
    return Invalid("preprocessing.crop",
                   absl::StrCat("unknown '", p.crop(), "'; accepted: center, center_floor, none"));
  }
  const bool squash = out->resize_height != 0;
  const bool exact = out->resize_height == arch.image_size && out->resize_width == arch.image_size;
  if (squash && (out->crop == "none" ? !exact
                                     : (out->resize_height < arch.image_size ||
                                        out->resize_width < arch.image_size))) {
    return Invalid("preprocessing.resize_height",
                   absl::StrCat("a squash to ", out->resize_width, "x", out->resize_height,
                                " does not give image_size ", arch.image_size, " with crop '",
                                out->crop, "'"));
  }
  if (out->crop == "none" && !squash && !out->skip_resize) {
    return Invalid("preprocessing.crop",
                   "'none' needs a squash (resize_height / resize_width) or skip_resize");
  }
  if (p.rescale_factor() != 0.0) out->rescale_factor = p.rescale_factor();
  if (!(std::isfinite(out->rescale_factor) && out->rescale_factor > 0.0)) {
    return Invalid("preprocessing.rescale_factor", "must be finite and positive");
  }
  return absl::OkStatus();
}

absl::Status FillPreprocess(const v1::Preprocessing& p, const Architecture& arch,
                            PreprocessSpec* out) {
  out->resize = static_cast<int>(p.resize());
  if (p.crop_pct() != 0.0f) out->crop_pct = p.crop_pct();
  if (!(out->crop_pct > 0.0f && out->crop_pct <= 1.0f)) {
    return Invalid("preprocessing.crop_pct", absl::StrCat(out->crop_pct, " is outside (0, 1]"));
  }
  if (out->resize != 0 && out->resize < arch.image_size) {
    return Invalid("preprocessing.resize",
                   absl::StrCat(out->resize, " is smaller than image_size ", arch.image_size));
  }
  if (!p.interpolation().empty()) out->interpolation = absl::AsciiStrToLower(p.interpolation());
  if (std::find(kInterpolations.begin(), kInterpolations.end(), out->interpolation) ==
      kInterpolations.end()) {
    return Invalid("preprocessing.interpolation",
                   absl::StrCat("unknown '", p.interpolation(),
                                "'; accepted: bicubic, bilinear, lanczos, box, hamming, nearest, "
                                "area"));
  }
  if (absl::Status s = FillGeometry(p, arch, out); !s.ok()) return s;
  out->grayscale = p.grayscale();
  out->invert = p.invert();
  if (out->grayscale != (arch.in_chans == 1)) {
    return Invalid("preprocessing.grayscale",
                   absl::StrCat("grayscale is ", out->grayscale ? "true" : "false",
                                " but architecture.in_chans is ", arch.in_chans,
                                " (grayscale images need in_chans 1, and in_chans 1 needs "
                                "grayscale: true)"));
  }
  const size_t channels = static_cast<size_t>(arch.in_chans);
  const PreprocessSpec defaults;
  struct PerChannel {
    absl::string_view field;
    const google::protobuf::RepeatedField<float>& values;
    std::vector<float>& target;
  };
  for (const PerChannel& pc : {PerChannel{"preprocessing.mean", p.mean(), out->mean},
                               PerChannel{"preprocessing.std", p.std(), out->std}}) {
    if (pc.values.empty()) {
      if (channels != defaults.mean.size()) {
        return Invalid(
            pc.field, absl::StrCat("must be given (", channels, " values) when in_chans is not 3"));
      }
      continue;  // ImageNet defaults already in `out`
    }
    if (static_cast<size_t>(pc.values.size()) != channels) {
      return Invalid(pc.field,
                     absl::StrCat("has ", pc.values.size(), " values, in_chans is ", channels));
    }
    pc.target.assign(pc.values.begin(), pc.values.end());
  }
  for (const float s : out->std) {
    if (!(s > 0.0f)) return Invalid("preprocessing.std", "values must be positive");
  }
  return absl::OkStatus();
}

absl::Status FillPruning(const v1::PruningConfig& p, const Architecture& arch, PruningSpec* out) {
  absl::StatusOr<Method> method = ParseMethod(p.method().empty() ? "dense" : p.method());
  if (!method.ok()) return Invalid("pruning.method", method.status().message());
  out->method = *method;
  if (p.locations().empty()) {
    out->locations = DefaultLocations(out->method, arch.depth);
  } else {
    out->locations.clear();
    for (const uint32_t loc : p.locations()) {
      if (loc >= static_cast<uint32_t>(arch.depth)) {
        return Invalid("pruning.locations",
                       absl::StrCat("block ", loc, " does not exist (depth ", arch.depth, ")"));
      }
      if (!out->locations.empty() && static_cast<int>(loc) <= out->locations.back()) {
        return Invalid("pruning.locations", "must be strictly increasing");
      }
      out->locations.push_back(static_cast<int>(loc));
    }
  }
  if (out->method == Method::kDense && !out->locations.empty()) {
    return Invalid("pruning.locations", "a dense model has no reduction locations");
  }
  // 0 = unset: keep the PruningSpec defaults.
  if (p.default_keep_rate() != 0.0f) out->default_keep_rate = p.default_keep_rate();
  if (p.min_keep_rate() != 0.0f) out->min_keep_rate = p.min_keep_rate();
  if (p.max_keep_rate() != 0.0f) out->max_keep_rate = p.max_keep_rate();
  if (absl::Status s = CheckKeepRate(out->min_keep_rate, "pruning.min_keep_rate"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckKeepRate(out->max_keep_rate, "pruning.max_keep_rate"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckKeepRate(out->default_keep_rate, "pruning.default_keep_rate");
      !s.ok()) {
    return s;
  }
  if (!(out->min_keep_rate <= out->default_keep_rate &&
        out->default_keep_rate <= out->max_keep_rate)) {
    return Invalid("pruning",
                   absl::StrCat("keep rates must satisfy 0 < min_keep_rate (", out->min_keep_rate,
                                ") <= default_keep_rate (", out->default_keep_rate,
                                ") <= max_keep_rate (", out->max_keep_rate, ") <= 1"));
  }
  if (out->method == Method::kDense) {
    // A dense model reduces no tokens, so a keep-rate below 1 would change nothing but the
    // reported number: it serves 1.0 only (requests for less are refused as out of range,
    // and the scheduler sweeps one level). Configs written before this rule say 0.1.
    out->default_keep_rate = out->min_keep_rate = out->max_keep_rate = 1.0f;
  }
  out->attn_ratio = p.attn_ratio();
  if (!(out->attn_ratio >= 0.0f && out->attn_ratio <= 1.0f)) {
    return Invalid("pruning.attn_ratio", absl::StrCat(out->attn_ratio, " is outside [0, 1]"));
  }
  if (out->attn_ratio != 0.0f && out->method != Method::kTriLevel) {
    return Invalid("pruning.attn_ratio", "applies only to method trilevel");
  }
  out->svite_plain_removal = p.svite_plain_removal();
  if (out->svite_plain_removal && out->method != Method::kSViTE) {
    return Invalid("pruning.svite_plain_removal", "applies only to method svite");
  }
  out->tnt_seed = p.tnt_seed();
  if (out->tnt_seed != 0 && out->method != Method::kTNT) {
    return Invalid("pruning.tnt_seed", "applies only to method tnt");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ReadLabels(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, "labels file");
  if (!text.ok()) return text.status();
  std::vector<std::string> labels;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    labels.emplace_back(absl::StripAsciiWhitespace(line));
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();  // trailing blanks
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty()) {
      return Invalid("labels", absl::StrCat("line ", i + 1, " of '", path, "' is empty"));
    }
  }
  return labels;
}

absl::StatusOr<std::vector<CalibrationPoint>> ParseCalibration(const std::string& text,
                                                               const std::string& where) {
  v1::CalibrationCurve curve;
  if (absl::Status s = ParseText(text, where, &curve); !s.ok()) return s;
  std::vector<CalibrationPoint> points;
  for (int i = 0; i < curve.points_size(); ++i) {
    const v1::CalibrationPoint& p = curve.points(i);
    const std::string field = absl::StrCat(where, ": points[", i, "]");
    absl::StatusOr<Method> method = ParseMethod(p.method());
    if (!method.ok()) return Invalid(field, method.status().message());
    if (absl::Status s = CheckKeepRate(p.keep_rate(), absl::StrCat(field, ".keep_rate")); !s.ok()) {
      return s;
    }
    if (!(p.top1() >= 0.0 && p.top1() <= 1.0) || !(p.agreement() >= 0.0 && p.agreement() <= 1.0)) {
      return Invalid(field, "top1 and agreement are fractions in [0, 1]");
    }
    CalibrationPoint cp;
    cp.method = std::string(MethodName(*method));
    cp.keep_rate = p.keep_rate();
    cp.top1 = p.top1();
    cp.agreement = p.agreement();
    cp.macs = p.macs();
    points.push_back(std::move(cp));
  }
  return points;
}

// `path` relative to `dir` when it lies inside it, else unchanged.
std::string RelativeTo(const std::string& path, const std::string& dir) {
  if (path.empty() || dir.empty()) return path;
  const fs::path rel =
      fs::path(path).lexically_normal().lexically_relative(fs::path(dir).lexically_normal());
  if (rel.empty() || *rel.begin() == "..") return path;
  return rel.string();
}

absl::Status ValidateModelName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.front() == '.' ||
      name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid model name '", name,
                     "': a model name is a plain directory name (no '/', not empty, not "
                     "starting with '.')"));
  }
  return absl::OkStatus();
}

absl::Status FillWeightsAndLabels(const v1::ModelConfig& config, ModelSpec* spec) {
  if (config.weights().empty()) {
    return Invalid("weights", "missing: name the .safetensors / .pth file in the model directory");
  }
  absl::StatusOr<std::string> weights = ResolveFile(spec->dir, config.weights(), "weights");
  if (!weights.ok()) return weights.status();
  spec->weights_path = *weights;
  if (config.labels().empty()) return absl::OkStatus();
  absl::StatusOr<std::string> labels = ResolveFile(spec->dir, config.labels(), "labels");
  if (!labels.ok()) return labels.status();
  spec->labels_path = *labels;
  absl::StatusOr<std::vector<std::string>> lines = ReadLabels(spec->labels_path);
  if (!lines.ok()) return lines.status();
  if (static_cast<int>(lines->size()) != spec->arch.num_classes) {
    return Invalid("labels",
                   absl::StrCat("'", config.labels(), "' has ", lines->size(),
                                " labels, architecture.num_classes is ", spec->arch.num_classes));
  }
  spec->labels = *std::move(lines);
  return absl::OkStatus();
}

// A Hugging Face directory (config.json, no weights in config.pbtxt): the architecture,
// preprocessing, labels and weights come from its files; config.pbtxt may only add name,
// version, pruning and calibration.
absl::Status FillFromHf(const v1::ModelConfig& config, ModelSpec* spec) {
  const char* owned = config.has_architecture()    ? "architecture"
                      : config.has_preprocessing() ? "preprocessing"
                      : !config.labels().empty()   ? "labels"
                                                   : nullptr;
  if (owned != nullptr) {
    return Invalid(owned,
                   absl::StrCat("comes from config.json / preprocessor_config.json in a ",
                                "Hugging Face model directory; remove it from ", kConfigFile,
                                " (allowed there: name, version, pruning, ", "calibration)"));
  }
  return LoadHfModelDir(spec->dir, spec);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListModels(const std::string& repo) {
  std::error_code ec;
  fs::directory_iterator it(repo, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("model repository '", repo, "' cannot be listed: ", ec.message()));
  }
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!ValidateModelName(name).ok()) continue;  // hidden entries and the like
    if (fs::is_regular_file(entry.path() / std::string(kConfigFile), ec) ||
        fs::is_regular_file(entry.path() / kHfConfigFile, ec)) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& repo, const std::string& name) {
  if (absl::Status s = ValidateModelName(name); !s.ok()) return s;
  const fs::path dir = fs::absolute(fs::path(repo) / name).lexically_normal();
  const fs::path config = dir / std::string(kConfigFile);
  std::error_code ec;
  const bool has_pbtxt = fs::is_regular_file(config, ec);
  const bool has_hf = fs::is_regular_file(dir / kHfConfigFile, ec);
  if (!has_pbtxt && !has_hf) {
    return absl::NotFoundError(absl::StrCat("no model '", name, "' in '", repo, "' (neither ",
                                            config.string(), " nor ", kHfConfigFile, " found)"));
  }
  std::string text;
  if (has_pbtxt) {
    absl::StatusOr<std::string> read = ReadSmallFile(config.string(), "model config");
    if (!read.ok()) return read.status();
    text = *std::move(read);
  }
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(text, dir.string());
  if (!spec.ok()) {
    const std::string where = has_pbtxt ? config.string() : dir.string();
    return absl::Status(spec.status().code(), absl::StrCat(where, ": ", spec.status().message()));
  }
  return spec;
}

absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& config_text, const std::string& dir) {
  v1::ModelConfig config;
  if (absl::Status s = ParseText(config_text, std::string(kConfigFile), &config); !s.ok()) {
    return s;
  }
  ModelSpec spec;
  const fs::path abs_dir = fs::absolute(fs::path(dir)).lexically_normal();
  spec.dir = abs_dir.string();
  if (!spec.dir.empty() && spec.dir.back() == '/' && spec.dir.size() > 1) spec.dir.pop_back();
  const std::string dir_name = fs::path(spec.dir).filename().string();
  spec.name = config.name().empty() ? dir_name : config.name();
  if (absl::Status s = ValidateModelName(spec.name); !s.ok()) return Invalid("name", s.message());
  if (!config.name().empty() && config.name() != dir_name) {
    return Invalid("name", absl::StrCat("'", config.name(), "' differs from the directory name '",
                                        dir_name, "'"));
  }
  spec.version = config.version().empty() ? std::string(kDefaultVersion) : config.version();

  std::error_code ec;
  const bool hf = config.weights().empty() && fs::is_regular_file(abs_dir / kHfConfigFile, ec);
  if (hf) {
    if (absl::Status s = FillFromHf(config, &spec); !s.ok()) return s;
  } else {
    if (absl::Status s = FillArchitecture(config.architecture(), &spec.arch); !s.ok()) return s;
    if (absl::Status s = FillPreprocess(config.preprocessing(), spec.arch, &spec.preprocess);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = FillWeightsAndLabels(config, &spec); !s.ok()) return s;
  }
  if (absl::Status s = FillPruning(config.pruning(), spec.arch, &spec.pruning); !s.ok()) return s;
  if (hf) {
    spec.sources.emplace_back("pruning", config.has_pruning() ? "config.pbtxt pruning"
                                                              : "default: dense (no config.pbtxt)");
  }
  if (!config.calibration().empty()) {
    absl::StatusOr<std::string> calib = ResolveFile(spec.dir, config.calibration(), "calibration");
    if (!calib.ok()) return calib.status();
    spec.calibration_path = *calib;
    absl::StatusOr<std::vector<CalibrationPoint>> points = ReadCalibration(spec.calibration_path);
    if (!points.ok()) return Invalid("calibration", points.status().message());
    spec.calibration = *std::move(points);
  }
  return spec;
}

absl::Status WriteModelConfig(const ModelSpec& spec, const std::string& path) {
  v1::ModelConfig config;
  config.set_name(spec.name);
  config.set_version(spec.version);
  v1::Architecture* a = config.mutable_architecture();
  a->set_image_size(static_cast<uint32_t>(spec.arch.image_size));
  a->set_patch_size(static_cast<uint32_t>(spec.arch.patch_size));
  a->set_in_chans(static_cast<uint32_t>(spec.arch.in_chans));
  a->set_embed_dim(static_cast<uint32_t>(spec.arch.embed_dim));
  a->set_depth(static_cast<uint32_t>(spec.arch.depth));
  a->set_num_heads(static_cast<uint32_t>(spec.arch.num_heads));
  a->set_mlp_ratio(static_cast<float>(spec.arch.mlp_ratio));
  a->set_num_classes(static_cast<uint32_t>(spec.arch.num_classes));
  a->set_distilled(spec.arch.distilled);
  v1::Preprocessing* p = config.mutable_preprocessing();
  p->set_resize(static_cast<uint32_t>(spec.preprocess.resize));
  p->set_crop_pct(spec.preprocess.crop_pct);
  p->set_interpolation(spec.preprocess.interpolation);
  for (const float m : spec.preprocess.mean) p->add_mean(m);
  for (const float s : spec.preprocess.std) p->add_std(s);
  p->set_grayscale(spec.preprocess.grayscale);
  p->set_invert(spec.preprocess.invert);
  p->set_resize_height(static_cast<uint32_t>(spec.preprocess.resize_height));
  p->set_resize_width(static_cast<uint32_t>(spec.preprocess.resize_width));
  p->set_crop(spec.preprocess.crop);
  p->set_rescale_factor(spec.preprocess.rescale_factor);
  p->set_skip_resize(spec.preprocess.skip_resize);
  v1::PruningConfig* r = config.mutable_pruning();
  r->set_method(std::string(MethodName(spec.pruning.method)));
  for (const int loc : spec.pruning.locations) r->add_locations(static_cast<uint32_t>(loc));
  r->set_default_keep_rate(spec.pruning.default_keep_rate);
  r->set_min_keep_rate(spec.pruning.min_keep_rate);
  r->set_max_keep_rate(spec.pruning.max_keep_rate);
  r->set_attn_ratio(spec.pruning.attn_ratio);
  r->set_svite_plain_removal(spec.pruning.svite_plain_removal);
  r->set_tnt_seed(spec.pruning.tnt_seed);
  config.set_weights(RelativeTo(spec.weights_path, spec.dir));
  config.set_labels(RelativeTo(spec.labels_path, spec.dir));
  config.set_calibration(RelativeTo(spec.calibration_path, spec.dir));
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(config, &text)) {
    return absl::InternalError("cannot print the model config");
  }
  return WriteFileAtomically(path, text);
}

absl::Status WriteCalibration(const std::vector<CalibrationPoint>& points,
                              const std::string& dataset, uint64_t num_examples,
                              const std::string& path) {
  v1::CalibrationCurve curve;
  curve.set_dataset(dataset);
  curve.set_num_examples(num_examples);
  for (const CalibrationPoint& cp : points) {
    v1::CalibrationPoint* p = curve.add_points();
    p->set_method(cp.method);
    p->set_keep_rate(cp.keep_rate);
    p->set_top1(cp.top1);
    p->set_agreement(cp.agreement);
    p->set_macs(cp.macs);
  }
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(curve, &text)) {
    return absl::InternalError("cannot print the calibration curve");
  }
  return WriteFileAtomically(path, text);
}

absl::StatusOr<std::vector<CalibrationPoint>> ReadCalibration(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, "calibration file");
  if (!text.ok()) return text.status();
  return ParseCalibration(*text, path);
}

}  // namespace vitserve
