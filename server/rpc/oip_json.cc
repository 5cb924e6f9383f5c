#include "server/rpc/oip_json.h"

#include <google/protobuf/util/json_util.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/oip_translate.h"

namespace vitserve {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using json = nlohmann::json;
using ParameterMap = google::protobuf::Map<std::string, InferParameter>;

// Invalid UTF-8 (e.g. a label) is replaced rather than thrown on.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

absl::Status TypeError(const std::string& field, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("JSON field '", field, "' must be ", want));
}

absl::Status ParametersFromJson(const json& j, const std::string& field, ParameterMap* out) {
  if (!j.is_object()) return TypeError(field, "an object");
  for (const auto& [name, value] : j.items()) {
    InferParameter p;
    if (value.is_boolean()) {
      p.set_bool_param(value.get<bool>());
    } else if (value.is_number_unsigned() &&
               value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      p.set_uint64_param(value.get<uint64_t>());
    } else if (value.is_number_integer()) {
      p.set_int64_param(value.get<int64_t>());
    } else if (value.is_number()) {
      p.set_double_param(value.get<double>());
    } else if (value.is_string()) {
      p.set_string_param(value.get<std::string>());
    } else {
      return TypeError(absl::StrCat(field, ".", name), "a bool, number or string");
    }
    (*out)[name] = std::move(p);
  }
  return absl::OkStatus();
}

// Appends the leaves of a (possibly nested) JSON array of `datatype` to `contents`.
absl::Status DataFromJson(const json& j, const std::string& datatype,
                          inference::InferTensorContents* contents) {
  if (j.is_array()) {
    for (const json& e : j) {
      if (absl::Status s = DataFromJson(e, datatype, contents); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (datatype == "FP32" && j.is_number()) {
    contents->add_fp32_contents(j.get<float>());
    return absl::OkStatus();
  }
  if (datatype == "BYTES" && j.is_string()) {
    contents->add_bytes_contents(j.get<std::string>());
    return absl::OkStatus();
  }
  if (datatype == "BYTES" && j.is_object() && j.contains("b64") && j["b64"].is_string()) {
    std::string decoded;
    if (!absl::Base64Unescape(j["b64"].get<std::string>(), &decoded)) {
      return absl::InvalidArgumentError("a BYTES element's 'b64' is not valid base64");
    }
    contents->add_bytes_contents(std::move(decoded));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("input data does not match datatype '", datatype,
                   "': accepted are numbers for FP32, strings or {\"b64\": \"...\"} for BYTES"));
}

constexpr char kBinaryDataSize[] = "binary_data_size";

// Moves the binary data of the inputs that declare binary_data_size (in input order) from
// `binary` into raw_input_contents; every byte must be used.
absl::Status TakeBinaryInputs(absl::string_view binary, ModelInferRequest* request) {
  size_t pos = 0;
  for (const auto& input : request->inputs()) {
    auto it = input.parameters().find(kBinaryDataSize);
    if (it == input.parameters().end()) continue;
    const auto& p = it->second;
    const int64_t n = p.parameter_choice_case() == InferParameter::kInt64Param
                          ? p.int64_param()
                          : static_cast<int64_t>(p.uint64_param());
    if (n < 0 || static_cast<size_t>(n) > binary.size() - pos) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name(), "' declares binary_data_size ", n, " but only ",
                       binary.size() - pos, " bytes follow the JSON header"));
    }
    request->add_raw_input_contents(std::string(binary.substr(pos, static_cast<size_t>(n))));
    pos += static_cast<size_t>(n);
  }
  if (pos != binary.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        binary.size() - pos, " bytes after the JSON header belong to no input's binary_data_size"));
  }
  return absl::OkStatus();
}

absl::Status InputFromJson(const json& j, ModelInferRequest::InferInputTensor* input) {
  if (!j.is_object()) return TypeError("inputs[]", "an object");
  if (!j.contains("name") || !j["name"].is_string()) return TypeError("inputs[].name", "a string");
  if (!j.contains("datatype") || !j["datatype"].is_string()) {
    return TypeError("inputs[].datatype", "a string");
  }
  input->set_name(j["name"].get<std::string>());
  input->set_datatype(j["datatype"].get<std::string>());
  if (!j.contains("shape") || !j["shape"].is_array()) {
    return TypeError("inputs[].shape", "an array of integers");
  }
  for (const json& d : j["shape"]) {
    if (!d.is_number_integer()) return TypeError("inputs[].shape", "an array of integers");
    input->add_shape(d.get<int64_t>());
  }
  if (j.contains("parameters")) {
    absl::Status s =
        ParametersFromJson(j["parameters"], "inputs[].parameters", input->mutable_parameters());
    if (!s.ok()) return s;
  }
  // Binary tensor data extension: the data follows the JSON header.
  if (input->parameters().count(kBinaryDataSize) > 0) {
    if (j.contains("data")) return TypeError("inputs[].data", "absent with binary_data_size");
    return absl::OkStatus();
  }
  if (!j.contains("data")) return TypeError("inputs[].data", "present");
  return DataFromJson(j["data"], input->datatype(), input->mutable_contents());
}

absl::StatusOr<ModelInferRequest> RequestFromParsed(const json& j, const std::string& model,
                                                    const std::string& version) {
  if (!j.is_object()) return TypeError("(body)", "an object");
  ModelInferRequest request;
  request.set_model_name(model);
  request.set_model_version(version);
  if (j.contains("id")) {
    if (!j["id"].is_string()) return TypeError("id", "a string");
    request.set_id(j["id"].get<std::string>());
  }
  if (j.contains("parameters")) {
    absl::Status s =
        ParametersFromJson(j["parameters"], "parameters", request.mutable_parameters());
    if (!s.ok()) return s;
  }
  if (!j.contains("inputs") || !j["inputs"].is_array()) return TypeError("inputs", "an array");
  for (const json& in : j["inputs"]) {
    if (absl::Status s = InputFromJson(in, request.add_inputs()); !s.ok()) return s;
  }
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) return TypeError("outputs", "an array");
    for (const json& out : j["outputs"]) {
      if (!out.is_object() || !out.contains("name") || !out["name"].is_string()) {
        return TypeError("outputs[].name", "a string");
      }
      auto* o = request.add_outputs();
      o->set_name(out["name"].get<std::string>());
      if (out.contains("parameters")) {
        absl::Status s =
            ParametersFromJson(out["parameters"], "outputs[].parameters", o->mutable_parameters());
        if (!s.ok()) return s;
      }
    }
  }
  return request;
}

json ParametersToJson(const ParameterMap& parameters) {
  json out = json::object();
  for (const auto& [name, p] : parameters) {
    switch (p.parameter_choice_case()) {
      case InferParameter::kBoolParam:
        out[name] = p.bool_param();
        break;
      case InferParameter::kInt64Param:
        out[name] = p.int64_param();
        break;
      case InferParameter::kUint64Param:
        out[name] = p.uint64_param();
        break;
      case InferParameter::kDoubleParam:
        out[name] = p.double_param();
        break;
      default:
        out[name] = p.string_param();
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ModelInferRequest> InferRequestFromJson(absl::string_view body,
                                                       const std::string& model,
                                                       const std::string& version,
                                                       size_t header_length) {
  if (header_length > body.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Inference-Header-Content-Length ",
                                                   header_length, " exceeds the body (",
                                                   body.size(), " bytes)"));
  }
  const absl::string_view header = header_length > 0 ? body.substr(0, header_length) : body;
  json j;
  try {
    j = json::parse(header.begin(), header.end());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("request body is not valid JSON: ", e.what()));
  }
  absl::StatusOr<ModelInferRequest> request = RequestFromParsed(j, model, version);
  if (!request.ok()) return request.status();
  if (absl::Status s = TakeBinaryInputs(body.substr(header.size()), &*request); !s.ok()) return s;
  return request;
}

namespace {

bool IsTrue(const ParameterMap& parameters, const char* name) {
  auto it = parameters.find(name);
  return it != parameters.end() &&
         it->second.parameter_choice_case() == InferParameter::kBoolParam &&
         it->second.bool_param();
}

// Whether output i goes as binary data: the request's binary_data_output, or its i-th
// requested output's binary_data (outputs are answered in request order).
bool BinaryOutput(const ModelInferRequest& request, int i) {
  if (i < request.outputs_size() && request.outputs(i).parameters().count("binary_data") > 0) {
    return IsTrue(request.outputs(i).parameters(), "binary_data");
  }
  return IsTrue(request.parameters(), "binary_data_output");
}

absl::StatusOr<json> OutputData(const inference::ModelInferResponse::InferOutputTensor& tensor,
                                const std::string& raw) {
  json data = json::array();
  if (tensor.datatype() == "FP32") {
    for (size_t pos = 0; pos + sizeof(float) <= raw.size(); pos += sizeof(float)) {
      float v = 0;
      std::memcpy(&v, raw.data() + pos, sizeof(float));
      data.push_back(v);
    }
    return data;
  }
  absl::StatusOr<std::vector<std::string>> elements = DecodeRawBytes(raw);
  if (!elements.ok()) return absl::InternalError(elements.status().message());
  for (std::string& e : *elements) data.push_back(std::move(e));
  return data;
}

}  // namespace

absl::StatusOr<HttpInferBody> InferResponseToHttp(const ModelInferRequest& request,
                                                  const inference::ModelInferResponse& response) {
  json out = {{"model_name", response.model_name()},
              {"model_version", response.model_version()},
              {"id", response.id()},
              {"parameters", ParametersToJson(response.parameters())},
              {"outputs", json::array()}};
  if (response.raw_output_contents_size() != response.outputs_size()) {
    return absl::InternalError("raw_output_contents do not match the outputs");
  }
  std::string binary;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& tensor = response.outputs(i);
    const std::string& raw = response.raw_output_contents(i);
    json o = {
        {"name", tensor.name()}, {"datatype", tensor.datatype()}, {"shape", json(tensor.shape())}};
    if (BinaryOutput(request, i)) {
      o["parameters"] = {{kBinaryDataSize, raw.size()}};
      binary += raw;
    } else {
      absl::StatusOr<json> data = OutputData(tensor, raw);
      if (!data.ok()) return data.status();
      o["data"] = *std::move(data);
    }
    out["outputs"].push_back(std::move(o));
  }
  HttpInferBody body;
  body.body = Dump(out);
  if (!binary.empty()) {
    body.header_length = body.body.size();
    body.body += binary;
  }
  return body;
}

absl::StatusOr<std::string> InferResponseToJson(const inference::ModelInferResponse& response) {
  absl::StatusOr<HttpInferBody> body = InferResponseToHttp(ModelInferRequest(), response);
  if (!body.ok()) return body.status();
  return std::move(body->body);
}

std::string ServerMetadataToJson(const inference::ServerMetadataResponse& metadata) {
  return Dump(json{{"name", metadata.name()},
                   {"version", metadata.version()},
                   {"extensions", json(metadata.extensions())}});
}

std::string ModelMetadataToJson(const inference::ModelMetadataResponse& metadata) {
  auto tensors = [](const auto& list) {
    json out = json::array();
    for (const auto& t : list) {
      out.push_back({{"name", t.name()}, {"datatype", t.datatype()}, {"shape", json(t.shape())}});
    }
    return out;
  };
  return Dump(json{{"name", metadata.name()},
                   {"versions", json(metadata.versions())},
                   {"platform", metadata.platform()},
                   {"inputs", tensors(metadata.inputs())},
                   {"outputs", tensors(metadata.outputs())}});
}

std::string ProtoToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string ErrorJson(absl::string_view message) {
  return Dump(json{{"error", std::string(message)}});
}

}  // namespace vitserve
