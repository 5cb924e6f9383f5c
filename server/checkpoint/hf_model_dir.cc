#include "server/checkpoint/hf_model_dir.h"

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/checkpoint/hf_config.h"
#include "server/checkpoint/small_file.h"

namespace vitserve {
namespace {

namespace fs = std::filesystem;

constexpr char kPreprocessorFile[] = "preprocessor_config.json";

bool IsFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

absl::Status WithDir(const fs::path& dir, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(dir.string(), ": ", s.message()));
}

// model.safetensors, else pytorch_model.bin; sharded and non-PyTorch layouts refused.
absl::StatusOr<std::string> FindWeights(const fs::path& dir) {
  for (const char* index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"}) {
    if (IsFile(dir / index)) {
      return absl::InvalidArgumentError(
          absl::StrCat(index,
                       " found: sharded checkpoints are not supported; save the model as one "
                       "model.safetensors (save_pretrained(..., max_shard_size=\"100GB\"))"));
    }
  }
  for (const char* name : {"model.safetensors", "pytorch_model.bin"}) {
    if (IsFile(dir / name)) return (dir / name).string();
  }
  const bool other = IsFile(dir / "tf_model.h5") || IsFile(dir / "flax_model.msgpack");
  return absl::NotFoundError(
      absl::StrCat("no model.safetensors or pytorch_model.bin",
                   other ? " (TensorFlow / Flax weights are not supported)" : ""));
}

}  // namespace

absl::Status LoadHfModelDir(const std::string& dir_name, ModelSpec* spec) {
  const fs::path dir(dir_name);
  absl::StatusOr<std::string> config_text =
      ReadSmallFile((dir / kHfConfigFile).string(), "Hugging Face config");
  if (!config_text.ok()) return WithDir(dir, config_text.status());
  absl::StatusOr<HfModelConfig> config = ParseHfConfig(*config_text);
  if (!config.ok()) return WithDir(dir, config.status());

  absl::StatusOr<std::string> pre_text =
      ReadSmallFile((dir / kPreprocessorFile).string(), "Hugging Face preprocessor config");
  if (!pre_text.ok()) return WithDir(dir, pre_text.status());
  absl::StatusOr<HfPreprocessConfig> pre = ParseHfPreprocessorConfig(*pre_text, config->arch);
  if (!pre.ok()) return WithDir(dir, pre.status());

  absl::StatusOr<std::string> weights = FindWeights(dir);
  if (!weights.ok()) return WithDir(dir, weights.status());

  spec->arch = config->arch;
  spec->preprocess = pre->preprocess;
  spec->labels = std::move(config->labels);
  spec->weights_path = *weights;
  spec->labels_path.clear();
  spec->weights_layout = "huggingface";
  spec->hf_architecture = config->hf_class;
  spec->sources = std::move(config->sources);
  spec->sources.insert(spec->sources.end(), pre->sources.begin(), pre->sources.end());
  spec->sources.emplace_back("weights", fs::path(*weights).filename().string());
  return absl::OkStatus();
}

}  // namespace vitserve
