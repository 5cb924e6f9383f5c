// Pure translation between the Open Inference Protocol ("KServe v2", package `inference`)
// and vitserve's native request/response (vitserve.v1.ClassifyRequest/ClassifyResponse).
// No server types, no I/O: the gRPC service, the HTTP front end and the unit tests all go
// through these functions (docs/oip.md is the user-facing description).
//
// Request (ParseInferRequest):
//   * Exactly one input tensor, either
//       - "image": BYTES, shape [N] or [N, 1], one encoded image (JPEG, PNG, ...) per
//         element; or
//       - "tensor": FP32, shape [N, C, H, W], preprocessed images (checked against the
//         model by the preprocessor, as the native tensor input).
//     Its data comes either from raw_input_contents (BYTES elements as Triton encodes
//     them: 4-byte little-endian length, then the bytes; FP32 little-endian) or from the
//     typed `contents` (bytes_contents / fp32_contents), never both. 1 <= N <=
//     ParseOptions::max_images. The N images become N ClassifyRequests (N tasks).
//   * Request parameters: vitserve_keep_rate, vitserve_latency_budget_ms,
//     vitserve_min_keep_rate, vitserve_min_expected_accuracy (numbers), vitserve_priority
//     (0 = most urgent .. 3), and Triton's `priority` (1 = most urgent .. 4, 0 = default;
//     level p is vitserve priority p - 1) and `timeout` (microseconds: the request is
//     answered DEADLINE_EXCEEDED if not done by then). `binary_data_output` (Triton's
//     HTTP binary extension, handled by oip_json.h) is accepted and ignored here.
//     Anything else is INVALID_ARGUMENT listing these.
//   * Outputs: "logits" (FP32 [N, num_classes], raw); with the output parameter
//     `classification` = k (Triton's classification extension) it becomes BYTES [N, k] of
//     "score:index:label" (score = softmax probability, best first). No outputs
//     requested = "logits".
//   Every problem is INVALID_ARGUMENT naming what is accepted.
//
// Response (BuildInferResponse): outputs in the requested order, data in
// raw_output_contents; response parameters carry the native response's fields, one value
// per image in request order, comma-separated strings (tokens per stage: images separated
// by ';', stages by ','): vitserve_keep_rate, vitserve_tokens_per_stage, vitserve_macs,
// vitserve_dense_macs, vitserve_expected_accuracy, vitserve_queue_seconds,
// vitserve_compute_seconds, vitserve_batch_size.
//
// Thread-safety: free functions without shared state.
#ifndef VITSERVE_SERVER_RPC_OIP_TRANSLATE_H_
#define VITSERVE_SERVER_RPC_OIP_TRANSLATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

// Tensor and parameter names of the protocol mapping (a contract: docs/oip.md).
inline constexpr char kOipImageInput[] = "image";
inline constexpr char kOipTensorInput[] = "tensor";
inline constexpr char kOipLogitsOutput[] = "logits";
inline constexpr char kOipClassification[] = "classification";
inline constexpr char kOipKeepRate[] = "vitserve_keep_rate";
inline constexpr char kOipLatencyBudgetMs[] = "vitserve_latency_budget_ms";
inline constexpr char kOipMinKeepRate[] = "vitserve_min_keep_rate";
inline constexpr char kOipMinExpectedAccuracy[] = "vitserve_min_expected_accuracy";
inline constexpr char kOipPriority[] = "vitserve_priority";
inline constexpr char kTritonPriority[] = "priority";
inline constexpr char kTritonTimeout[] = "timeout";

struct OipParseOptions {
  // Largest N (images per request).
  int max_images = 64;
  // vitserve priority levels (Triton priority 1..num_priority_levels).
  uint32_t num_priority_levels = 4;
};

// One requested output.
struct OipOutput {
  std::string name;             // kOipLogitsOutput
  uint32_t classification = 0;  // k > 0: BYTES [N, k] "score:index:label"
};

// A parsed ModelInferRequest.
struct OipInferPlan {
  std::string model;    // model_name ("" = the default model)
  std::string version;  // model_version ("" = the served one)
  std::string id;
  // One per image, in request order: model, input and scheduling fields set.
  std::vector<vitserve::v1::ClassifyRequest> images;
  std::vector<OipOutput> outputs;
  // Triton's `timeout`; InfiniteDuration() = none.
  absl::Duration timeout = absl::InfiniteDuration();
};

absl::StatusOr<OipInferPlan> ParseInferRequest(const inference::ModelInferRequest& request,
                                               const OipParseOptions& options);

// `results` holds one response per image of `plan`, in order (all succeeded).
// INTERNAL when a result lacks the logits or the predictions the plan asked for.
absl::StatusOr<inference::ModelInferResponse> BuildInferResponse(
    const OipInferPlan& plan, const std::vector<vitserve::v1::ClassifyResponse>& results);

// Triton's raw BYTES encoding: per element a 4-byte little-endian length, then the bytes.
std::string EncodeRawBytes(const std::vector<std::string>& elements);
// Inverse of EncodeRawBytes; INVALID_ARGUMENT when truncated.
absl::StatusOr<std::vector<std::string>> DecodeRawBytes(const std::string& raw);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_OIP_TRANSLATE_H_
