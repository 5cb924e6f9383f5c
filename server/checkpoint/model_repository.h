// The model repository on disk: <repo>/<model>/config.pbtxt (a vitserve.v1.ModelConfig in
// protobuf text format), the weights file and a labels file it names, optionally a
// calibration file (vitserve.v1.CalibrationCurve, text format). Torch-free.
// docs/model-repository.md describes the layout and every field.
//
// Defaults filled in by the parser (proto3 fields read 0 / "" when absent, and 0 / "" means
// "default"): name = the directory name, version = "1", architecture = DeiT-S at 224²
// (Architecture's defaults, field by field), preprocessing = PreprocessSpec's defaults
// (ImageNet mean/std only when in_chans is 3), pruning.method = "dense",
// pruning.locations = DefaultLocations(method, depth), keep rates = PruningSpec's defaults.
// File names in the config are relative to the model directory and may not leave it.
//
// Validation (all INVALID_ARGUMENT, the message starts with the field name):
// text-format errors (with line and column, e.g. an unknown field), unknown method,
// architecture sizes at most 65536 (num_classes 2^24; patches per image and the MLP hidden
// size embed_dim * mlp_ratio at most 2^20),
// image_size % patch_size, embed_dim % num_heads, mlp_ratio > 0, grayscale <=> in_chans 1,
// mean/std length == in_chans, std > 0, 0 < crop_pct <= 1, resize >= image_size (or 0),
// interpolation in {bicubic, bilinear, nearest, area}, 0 < min <= default <= max <= 1 for
// the keep rates, locations strictly increasing and < depth (none for dense),
// attn_ratio / svite_plain_removal / tnt_seed only with their method, weights named and
// present, labels (if named) present with exactly num_classes non-empty lines (trailing
// blank lines tolerated, each line trimmed), calibration (if named) present and valid.
//
// Hugging Face directories (hf_model_dir.h, hf_config.h): a model directory with
// config.json and no config.pbtxt naming `weights` takes its architecture, preprocessing,
// labels and weights from config.json / preprocessor_config.json / model.safetensors (or
// pytorch_model.bin); a config.pbtxt there may set only name, version, pruning and
// calibration (architecture, preprocessing or labels in it are INVALID_ARGUMENT). Such a
// spec has weights_layout "huggingface" and records in `sources` where each setting came
// from. ListModels lists directories with either file.
//
// Thread-safety: all functions are reentrant; they touch only the files they name.
// Writers replace the target atomically (write a temporary file, then rename).
#ifndef VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_
#define VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"

namespace vitserve {

// Names of the model directories under `repo` (those holding a config.pbtxt or a Hugging
// Face config.json), sorted.
// Hidden entries are skipped. NOT_FOUND if `repo` cannot be listed.
absl::StatusOr<std::vector<std::string>> ListModels(const std::string& repo);

// Parses and validates <repo>/<name>/config.pbtxt, reads labels and calibration.
// `name` must be a plain directory name: no '/', no '..', not hidden (path traversal is
// refused with INVALID_ARGUMENT). NOT_FOUND if there is no such model. Every other
// problem (unknown method, embed_dim not divisible by heads, image not divisible by
// patch, labels count != num_classes, ...) is INVALID_ARGUMENT naming the field; the
// message starts with the config file's path. The weights are not opened here
// (LoadCheckpoint does that), only checked to exist.
absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& repo, const std::string& name);

// Parses a config text directly (tests, tools). `dir` resolves relative file names and
// gives the default name (its last component); ModelSpec::dir is its absolute form. An
// empty text with a config.json in `dir` reads the Hugging Face directory.
absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& config_text, const std::string& dir);

// Writes a config.pbtxt for `spec` (used by the training tools). Paths inside spec.dir
// are written relative to it. Every field is written explicitly, so ParseModelSpec of the
// result (with the same dir) gives back `spec`.
absl::Status WriteModelConfig(const ModelSpec& spec, const std::string& path);

// Writes / reads a calibration curve file (vitserve.v1.CalibrationCurve text format).
// ReadCalibration validates each point (known method, keep_rate in (0, 1], top1 and
// agreement in [0, 1]) and returns method names in their canonical lower case.
// Errors: NOT_FOUND (no file), INVALID_ARGUMENT (parse or validation error).
absl::Status WriteCalibration(const std::vector<CalibrationPoint>& points,
                              const std::string& dataset, uint64_t num_examples,
                              const std::string& path);
absl::StatusOr<std::vector<CalibrationPoint>> ReadCalibration(const std::string& path);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_
