// Formatting of server answers for people (tables) and programs (JSON, one object per
// line). Pure functions of the protos; no I/O.
#ifndef VITSERVE_CLIENT_OUTPUT_H_
#define VITSERVE_CLIENT_OUTPUT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "client/bench_report.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve::client {

// One JSON object (no newline) for a successful classify:
// {"file", "request_id", "model", "predictions": [{"class_index","label","score"}],
//  "keep_rate", "tokens_per_stage", "macs", "dense_macs", "expected_accuracy",
//  "timing": {"queue_seconds","compute_seconds","total_seconds","client_seconds"},
//  "batch_size", "logits" (only when the response has them)}.
std::string ClassifyResultJson(absl::string_view file, const vitserve::v1::ClassifyResponse& r,
                               double client_seconds);

// {"file", "request_id", "error": {"code": "INVALID_ARGUMENT", "code_number": 3,
//  "message"}} for a failed request (code is a grpc::StatusCode value).
std::string ClassifyErrorJson(absl::string_view file, absl::string_view request_id, int code,
                              absl::string_view message);

// Human-readable block: a header line for the file, then one line per prediction.
std::string ClassifyResultText(absl::string_view file, const vitserve::v1::ClassifyResponse& r,
                               double client_seconds);

// "vitclient: FILE: CODE: message" (for stderr).
std::string ClassifyErrorText(absl::string_view file, int code, absl::string_view message);

std::string ModelsText(const vitserve::v1::ListModelsResponse& models);
// {"default_model": ..., "models": [{"name","method","version","ready"}]}
std::string ModelsJson(const vitserve::v1::ListModelsResponse& models);

// Architecture, method, keep-rate range, the grid (keep-rate -> tokens per stage, GMACs,
// expected accuracy, measured latency per batch size when present), calibration.
std::string ModelInfoText(const vitserve::v1::ModelInfo& info);
// Every ModelInfo field (protobuf JSON mapping, original field names), except `labels`,
// which is replaced by "num_labels" unless `with_labels`.
std::string ModelInfoJson(const vitserve::v1::ModelInfo& info, bool with_labels);

// Bench report as a table and as one JSON object; `config` is echoed into the JSON.
struct BenchConfig {
  std::string server;
  std::string model;
  std::string mode;  // "open-loop" or "closed-loop"
  double rate = 0;
  int concurrency = 0;
  std::string budget;
  float keep_rate = 0;
  std::string input;  // file/dir, or "random_tensor"
  uint64_t seed = 0;
};
std::string BenchReportText(const BenchConfig& config, const BenchReport& report);
std::string BenchReportJson(const BenchConfig& config, const BenchReport& report);

// GMACs: "4.61" for 4'610'000'000 MACs; three significant digits below 0.1 G
// ("0.00123"), so tiny models do not print as 0.00.
std::string FormatGmacs(uint64_t macs);

}  // namespace vitserve::client

#endif  // VITSERVE_CLIENT_OUTPUT_H_
