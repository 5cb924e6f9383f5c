// A Hugging Face model directory on disk: config.json, preprocessor_config.json and the
// weights (model.safetensors, else a zip pytorch_model.bin), read into a ModelSpec with
// weights_layout "huggingface". Torch-free (the weights are only checked to exist; the
// renaming happens at load, hf_weights.h). model_repository.h decides when a directory is
// one (config.json present and no config.pbtxt naming weights) and merges an optional
// small config.pbtxt (pruning, name, version, calibration).
//
// Errors: NOT_FOUND when a required file is missing (the message names it);
// INVALID_ARGUMENT for sharded checkpoints (model.safetensors.index.json /
// pytorch_model.bin.index.json: not supported), TensorFlow / Flax-only directories, and
// every config problem (hf_config.h). Messages start with the directory.
// Thread-safety: reentrant; reads only files under `dir`.
#ifndef VITSERVE_SERVER_CHECKPOINT_HF_MODEL_DIR_H_
#define VITSERVE_SERVER_CHECKPOINT_HF_MODEL_DIR_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"

namespace vitserve {

inline constexpr char kHfConfigFile[] = "config.json";

// Fills arch, preprocess, labels, weights_path, weights_layout, hf_architecture and
// sources of a spec whose name / version / dir are set by the caller (`spec`).
absl::Status LoadHfModelDir(const std::string& dir, ModelSpec* spec);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_CHECKPOINT_HF_MODEL_DIR_H_
