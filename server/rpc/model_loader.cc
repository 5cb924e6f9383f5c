#include "server/rpc/model_loader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/checkpoint/model_repository.h"

namespace vitserve {
namespace {

absl::Status Prefixed(const std::string& model, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("model '", model, "': ", status.message()));
}

}  // namespace

absl::StatusOr<ServedModel> LoadServedModel(const std::string& repository, const std::string& name,
                                            const ModelLoadOptions& model_options,
                                            const PreprocessorOptions& preprocess_options) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(repository, name);
  if (!spec.ok()) return Prefixed(name, spec.status());
  absl::StatusOr<std::unique_ptr<Preprocessor>> preprocessor =
      Preprocessor::Create(spec->preprocess, spec->arch, preprocess_options);
  if (!preprocessor.ok()) return Prefixed(name, preprocessor.status());
  absl::StatusOr<std::unique_ptr<InferenceModel>> model = LoadInferenceModel(*spec, model_options);
  if (!model.ok()) return Prefixed(name, model.status());
  return ServedModel{std::move(*model), std::move(*preprocessor)};
}

absl::StatusOr<std::vector<ServedModel>> LoadModelRepository(
    const std::string& repository, const ModelLoadOptions& model_options,
    const PreprocessorOptions& preprocess_options) {
  absl::StatusOr<std::vector<std::string>> names = ListModels(repository);
  if (!names.ok()) return names.status();
  if (names->empty()) {
    return absl::NotFoundError(
        absl::StrCat("no models in repository '", repository,
                     "' (expected <repo>/<model>/config.pbtxt or a Hugging Face "
                     "<repo>/<model>/config.json)"));
  }
  std::vector<ServedModel> models;
  for (const std::string& name : *names) {
    absl::StatusOr<ServedModel> served =
        LoadServedModel(repository, name, model_options, preprocess_options);
    if (!served.ok()) return served.status();
    models.push_back(*std::move(served));
  }
  return models;
}

}  // namespace vitserve
