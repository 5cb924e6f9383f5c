// Builds a small, real model repository on disk for tests that run the real server:
// <repo>/<name>/config.pbtxt (vitserve.v1.ModelConfig text), model.safetensors (random
// weights with exactly the keys and shapes the loader expects, taken from the LibTorch
// ViT module itself) and labels.txt. Reusable by any test that needs a served model.
//
// Thread-safety: none needed (startup helper). Errors: INTERNAL for file-system failures,
// whatever SaveSafetensors reports otherwise.
#ifndef VITSERVE_TESTS_INTEGRATION_TEST_MODEL_REPOSITORY_H_
#define VITSERVE_TESTS_INTEGRATION_TEST_MODEL_REPOSITORY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vitserve {

struct TestModelOptions {
  std::string name = "tiny";
  std::string version = "1";
  // dense | dynamicvit | evit | tome | tnt | svite | trilevel
  std::string method = "evit";
  // A tiny ViT so that a CPU forward takes about a millisecond: 16 patches.
  int image_size = 32;
  int patch_size = 8;
  int embed_dim = 64;
  int depth = 4;
  int num_heads = 4;
  int num_classes = 10;
  float default_keep_rate = 0.7f;
  float min_keep_rate = 0.25f;
  float max_keep_rate = 1.0f;
  // Seeds the random weights (same seed, same weights).
  uint64_t seed = 1;
};

// Writes one model directory <repo>/<options.name>/, creating directories as needed.
// Labels are "class_0" ... "class_{num_classes-1}".
absl::Status WriteTestModel(const std::string& repo, const TestModelOptions& options);

// Creates a fresh, empty directory under $TMPDIR (or /tmp) and returns its path.
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);

// Deletes `path` recursively (best effort).
void RemoveTree(const std::string& path);

}  // namespace vitserve

#endif  // VITSERVE_TESTS_INTEGRATION_TEST_MODEL_REPOSITORY_H_
