// `vitserve_train eval`: accuracy of every token-reduction method over a keep-rate grid,
// measured through the SERVER's inference path (LoadInferenceModel + Run, the same code
// that answers Classify), with the model's spec switched to each method in turn (method
// default locations; DynamicViT keeps the config's). Dense is measured once (keep 1.0)
// and is the reference for top-1 agreement.
//
// Inputs are fed as preprocessed tensors (the dataset's pixels /255, normalised with the
// config's mean / std): for a model whose input size equals the data's, this is what the
// image path produces for those pixels, without a decode round trip.
//
// Writes into the model directory: calibration.pbtxt (WriteCalibration) and references
// it from config.pbtxt's `calibration` field; eval_<split>.csv; accuracy_vs_macs.png.
// Errors: absl::Status from the loaders / writers; INVALID_ARGUMENT for a data set whose
// image size or class count does not match the model.
#ifndef VITSERVE_SERVER_TRAIN_EVALUATE_H_
#define VITSERVE_SERVER_TRAIN_EVALUATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"

namespace vitserve {
namespace train {

struct EvalOptions {
  std::string model_dir;
  std::string split = "test";  // "test" (final numbers) or "val" (the carved validation set)
  std::vector<Method> methods = {Method::kDense, Method::kDynamicViT, Method::kEViT, Method::kToMe,
                                 Method::kTNT};
  std::vector<float> keep_rates = {1.0f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.4f, 0.3f};
  int64_t limit = 0;     // first N images only; 0 = all
  int batch_size = 250;  // images per Run() call
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string test_folder;  // ImageFolder test set instead of Fashion-MNIST
  int64_t val_size = 5000;  // split == "val": must match the training run
  uint64_t split_seed = 0;
  bool write_outputs = true;  // calibration, config, CSV, PNG
};

struct EvalRow {
  Method method = Method::kDense;
  float keep_rate = 1.0f;
  double top1 = 0;                    // 0..1
  double agreement = 0;               // top-1 agreement with dense, 0..1
  uint64_t macs = 0;                  // mean executed MACs per image (from the executor)
  std::vector<int> tokens_per_stage;  // of the first image
  double seconds = 0;                 // wall time of this row's pass
};

struct EvalReport {
  std::string dataset;  // e.g. "fashion-mnist/test"
  uint64_t num_examples = 0;
  uint64_t dense_macs = 0;
  std::vector<EvalRow> rows;
};

absl::StatusOr<EvalReport> RunEval(const EvalOptions& options);

// A Markdown table: method × keep-rate (top-1 %, agreement %, MMACs).
std::string FormatEvalTable(const EvalReport& report);

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_EVALUATE_H_
