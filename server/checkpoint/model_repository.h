// The model repository on disk: <repo>/<model>/config.pbtxt (a vitserve.v1.ModelConfig in
// protobuf text format), the weights file and a labels file it names, optionally a
// calibration file (vitserve.v1.CalibrationCurve, text format). Torch-free.
#ifndef VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_
#define VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model_spec.h"

namespace vitserve {

// Names of the model directories under `repo` (those holding a config.pbtxt), sorted.
absl::StatusOr<std::vector<std::string>> ListModels(const std::string& repo);

// Parses and validates <repo>/<name>/config.pbtxt, reads labels and calibration.
// `name` must be a plain directory name: no '/', no '..', not hidden (path traversal is
// refused with INVALID_ARGUMENT). NOT_FOUND if there is no such model. Every other
// problem (unknown method, embed_dim not divisible by heads, image not divisible by
// patch, labels count != num_classes, ...) is INVALID_ARGUMENT naming the field.
absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& repo, const std::string& name);

// Parses a config text directly (tests, tools). `dir` resolves relative file names.
absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& config_text, const std::string& dir);

// Writes a config.pbtxt for `spec` (used by the training tools).
absl::Status WriteModelConfig(const ModelSpec& spec, const std::string& path);

// Writes / reads a calibration curve file.
absl::Status WriteCalibration(const std::vector<CalibrationPoint>& points,
                              const std::string& dataset, uint64_t num_examples,
                              const std::string& path);
absl::StatusOr<std::vector<CalibrationPoint>> ReadCalibration(const std::string& path);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_MODEL_REPOSITORY_H_
