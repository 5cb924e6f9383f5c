// Loads a model repository into ServedModels: for every model directory (ListModels),
// LoadModelSpec -> LoadInferenceModel -> Preprocessor::Create. At startup, and again for
// hot reload (SIGHUP in server/main.cc).
#ifndef VITSERVE_SERVER_RPC_MODEL_LOADER_H_
#define VITSERVE_SERVER_RPC_MODEL_LOADER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/executor/inference_model.h"
#include "server/preprocess/preprocessor.h"
#include "server/rpc/inference_service.h"

namespace vitserve {

// Every model of `repository`, in name order. Errors: NOT_FOUND when the repository has no
// model (or does not exist); otherwise the first model's error (bad config, weights,
// device), with the model's name prefixed to the message.
// One model directory <repository>/<name>. Errors carry the model's name.
absl::StatusOr<ServedModel> LoadServedModel(const std::string& repository, const std::string& name,
                                            const ModelLoadOptions& model_options,
                                            const PreprocessorOptions& preprocess_options);

absl::StatusOr<std::vector<ServedModel>> LoadModelRepository(
    const std::string& repository, const ModelLoadOptions& model_options,
    const PreprocessorOptions& preprocess_options);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_MODEL_LOADER_H_
