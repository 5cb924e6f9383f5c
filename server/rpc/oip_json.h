// The Open Inference Protocol's REST (JSON) form <-> its gRPC messages, as pure functions
// (nlohmann/json; no server types), so that the HTTP front end runs the same path as
// ModelInfer. docs/oip.md shows the JSON.
//
// Inference request body: {"id": "...", "parameters": {...}, "inputs": [{"name",
// "datatype", "shape", "parameters", "data"}], "outputs": [{"name", "parameters"}]}.
//   * FP32 data: numbers, flat or nested (row-major) -> contents.fp32_contents.
//   * BYTES data: strings (their UTF-8 bytes) or {"b64": "<base64>"} objects (binary
//     images) -> contents.bytes_contents; flat or nested.
//   * Parameter values: bool -> bool_param, integer -> int64_param (uint64_param above
//     INT64_MAX), other number -> double_param, string -> string_param.
// Malformed JSON or a field of the wrong JSON type is INVALID_ARGUMENT with the parser's
// position / the field's name.
//
// Inference response: {"model_name", "model_version", "id", "parameters", "outputs":
// [{"name", "datatype", "shape", "data"}]} with data decoded from raw_output_contents
// (FP32 numbers, BYTES strings).
//
// Triton's binary tensor data extension: with header_length > 0 (the request's
// Inference-Header-Content-Length) the body is that much JSON followed by the data of every
// input whose parameters carry binary_data_size, in input order (the input then has no
// "data"; BYTES elements as 4-byte little-endian length + bytes, FP32 little-endian);
// every byte must belong to an input. An output goes as binary data after the JSON (its
// "parameters" say binary_data_size, no "data") when its requested output says
// "binary_data": true, or else the request says "binary_data_output": true.
//
// Thread-safety: free functions without shared state.
#ifndef VITSERVE_SERVER_RPC_OIP_JSON_H_
#define VITSERVE_SERVER_RPC_OIP_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"

namespace vitserve {

// `model` / `version` come from the URL.
absl::StatusOr<inference::ModelInferRequest> InferRequestFromJson(absl::string_view body,
                                                                  const std::string& model,
                                                                  const std::string& version,
                                                                  size_t header_length = 0);

// A response body; header_length > 0 = JSON header length (binary data follows): the
// value of the response's Inference-Header-Content-Length.
struct HttpInferBody {
  std::string body;
  size_t header_length = 0;
};

// The REST answer to `request`. INTERNAL when the raw contents do not match the outputs.
absl::StatusOr<HttpInferBody> InferResponseToHttp(const inference::ModelInferRequest& request,
                                                  const inference::ModelInferResponse& response);
// All outputs as JSON data.
absl::StatusOr<std::string> InferResponseToJson(const inference::ModelInferResponse& response);

std::string ServerMetadataToJson(const inference::ServerMetadataResponse& metadata);
std::string ModelMetadataToJson(const inference::ModelMetadataResponse& metadata);
// Triton's model configuration / statistics extensions: protobuf's JSON mapping with the
// proto field names.
std::string ProtoToJson(const google::protobuf::Message& message);

// {"error": message}.
std::string ErrorJson(absl::string_view message);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_RPC_OIP_JSON_H_
