#include "server/rpc/oip_translate.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vitserve {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using vitserve::v1::ClassifyRequest;
using vitserve::v1::ClassifyResponse;

constexpr char kAcceptedInputs[] =
    "accepted: one input, either 'image' (BYTES, shape [N] or [N,1], encoded images) or "
    "'tensor' (FP32, shape [N,C,H,W])";
constexpr char kAcceptedParameters[] =
    "accepted request parameters: vitserve_keep_rate, vitserve_latency_budget_ms, "
    "vitserve_min_keep_rate, vitserve_min_expected_accuracy, vitserve_priority, priority, "
    "timeout, binary_data_output";
// Triton's HTTP flag for binary outputs: every output here is binary in gRPC already.
constexpr char kBinaryDataOutput[] = "binary_data_output";

absl::StatusOr<double> Number(const std::string& name, const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      return static_cast<double>(p.int64_param());
    case InferParameter::kUint64Param:
      return static_cast<double>(p.uint64_param());
    case InferParameter::kDoubleParam:
      if (!std::isfinite(p.double_param())) break;
      return p.double_param();
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parameter '", name, "' must be a finite number (int64, uint64 or double)"));
}

absl::StatusOr<int64_t> Integer(const std::string& name, const InferParameter& p) {
  absl::StatusOr<double> v = Number(name, p);
  if (!v.ok()) return v.status();
  if (*v != std::floor(*v) || *v < 0 || *v > 9.0e15) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "' must be a non-negative integer, got ", *v));
  }
  return static_cast<int64_t>(*v);
}

// The request-level parameters, applied to `base` (a ClassifyRequest template).
absl::Status ApplyParameters(const ModelInferRequest& request, const OipParseOptions& options,
                             ClassifyRequest* base, absl::Duration* timeout) {
  bool native_priority = false;
  int64_t triton_priority = 0;
  for (const auto& [name, value] : request.parameters()) {
    if (name == kBinaryDataOutput) continue;
    if (name == kOipPriority || name == kTritonPriority || name == kTritonTimeout) {
      absl::StatusOr<int64_t> v = Integer(name, value);
      if (!v.ok()) return v.status();
      if (name == kTritonTimeout) {
        if (*v > 0) *timeout = absl::Microseconds(*v);
      } else if (name == kTritonPriority) {
        triton_priority = *v;
      } else {
        native_priority = true;
        base->set_priority(static_cast<uint32_t>(std::min<int64_t>(*v, 1 << 30)));
      }
      continue;
    }
    float* field = nullptr;
    float keep_rate = 0, budget = 0, min_keep_rate = 0, min_accuracy = 0;
    if (name == kOipKeepRate) field = &keep_rate;
    if (name == kOipLatencyBudgetMs) field = &budget;
    if (name == kOipMinKeepRate) field = &min_keep_rate;
    if (name == kOipMinExpectedAccuracy) field = &min_accuracy;
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown request parameter '", name, "'; ", kAcceptedParameters));
    }
    absl::StatusOr<double> v = Number(name, value);
    if (!v.ok()) return v.status();
    *field = static_cast<float>(*v);
    if (name == kOipKeepRate) base->set_keep_rate(keep_rate);
    if (name == kOipLatencyBudgetMs) base->set_latency_budget_ms(budget);
    if (name == kOipMinKeepRate) base->set_min_keep_rate(min_keep_rate);
    if (name == kOipMinExpectedAccuracy) base->set_min_expected_accuracy(min_accuracy);
  }
  if (triton_priority > 0) {
    if (native_priority) {
      return absl::InvalidArgumentError(
          "set either 'priority' (Triton, 1 = most urgent) or 'vitserve_priority' (0 = most "
          "urgent), not both");
    }
    if (triton_priority > static_cast<int64_t>(options.num_priority_levels)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter 'priority' must be in [0, ", options.num_priority_levels,
                       "] (0 = default, 1 = most urgent), got ", triton_priority));
    }
    base->set_priority(static_cast<uint32_t>(triton_priority - 1));
  }
  return absl::OkStatus();
}

absl::Status CheckInputTensor(const ModelInferRequest::InferInputTensor& input) {
  for (const auto& [name, value] : input.parameters()) {
    if (name != "binary_data_size") {
      return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", name, "' on input '",
                                                     input.name(), "'; none is accepted"));
    }
  }
  const bool image = input.name() == kOipImageInput;
  const bool tensor = input.name() == kOipTensorInput;
  if (!image && !tensor) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown input '", input.name(), "'; ", kAcceptedInputs));
  }
  const char* want = image ? "BYTES" : "FP32";
  if (input.datatype() != want) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "' has datatype '",
                                                   input.datatype(), "'; ", kAcceptedInputs));
  }
  const auto& s = input.shape();
  bool shape_ok = image ? (s.size() == 1 || (s.size() == 2 && s[1] == 1)) : s.size() == 4;
  for (int64_t d : s) shape_ok = shape_ok && d > 0;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name(), "' has shape [",
                                                   absl::StrJoin(s, ","), "]; ", kAcceptedInputs));
  }
  return absl::OkStatus();
}

// The N images of a checked "image" input.
absl::StatusOr<std::vector<std::string>> ImageElements(const ModelInferRequest& request) {
  const auto& input = request.inputs(0);
  const size_t n = static_cast<size_t>(input.shape(0));
  std::vector<std::string> images;
  if (request.raw_input_contents_size() > 0) {
    absl::StatusOr<std::vector<std::string>> decoded =
        DecodeRawBytes(request.raw_input_contents(0));
    if (!decoded.ok()) return decoded.status();
    images = std::move(*decoded);
  } else {
    images.assign(input.contents().bytes_contents().begin(),
                  input.contents().bytes_contents().end());
  }
  if (images.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' has shape [", n, "] but carries ", images.size(), " elements"));
  }
  return images;
}

// The N [C,H,W] tensors of a checked "tensor" input.
absl::StatusOr<std::vector<vitserve::v1::Tensor>> TensorElements(const ModelInferRequest& request) {
  const auto& input = request.inputs(0);
  const auto& s = input.shape();
  const int64_t per_image = s[1] * s[2] * s[3];
  const int64_t total = per_image * s[0];
  const float* data = nullptr;
  int64_t count = 0;
  if (request.raw_input_contents_size() > 0) {
    const std::string& raw = request.raw_input_contents(0);
    if (raw.size() % sizeof(float) != 0) {
      return absl::InvalidArgumentError("input 'tensor': raw contents are not whole FP32 values");
    }
    data = reinterpret_cast<const float*>(raw.data());
    count = static_cast<int64_t>(raw.size() / sizeof(float));
  } else {
    data = input.contents().fp32_contents().data();
    count = input.contents().fp32_contents_size();
  }
  if (count != total) {
    return absl::InvalidArgumentError(absl::StrCat("input 'tensor' has shape [",
                                                   absl::StrJoin(s, ","), "] (", total,
                                                   " values) but carries ", count));
  }
  std::vector<vitserve::v1::Tensor> tensors(static_cast<size_t>(s[0]));
  for (int64_t i = 0; i < s[0]; ++i) {
    vitserve::v1::Tensor& t = tensors[static_cast<size_t>(i)];
    t.add_shape(s[1]);
    t.add_shape(s[2]);
    t.add_shape(s[3]);
    t.mutable_data()->Resize(static_cast<int>(per_image), 0.0f);
    // memcpy: raw contents need not be 4-byte aligned.
    std::memcpy(t.mutable_data()->mutable_data(),
                reinterpret_cast<const char*>(data) + i * per_image * sizeof(float),
                per_image * sizeof(float));
  }
  return tensors;
}

absl::Status ParseOutputs(const ModelInferRequest& request, OipInferPlan* plan) {
  for (const auto& out : request.outputs()) {
    if (out.name() != kOipLogitsOutput) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown output '", out.name(), "'; the only output is '", kOipLogitsOutput,
          "' (FP32 [N,num_classes], or with parameter 'classification' = k, BYTES [N,k])"));
    }
    OipOutput parsed{out.name(), 0};
    for (const auto& [name, value] : out.parameters()) {
      if (name == "binary_data") continue;  // Triton HTTP: outputs are binary anyway here
      if (name != kOipClassification) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown parameter '", name, "' on output '", out.name(),
                         "'; accepted: classification (k > 0), binary_data"));
      }
      absl::StatusOr<int64_t> k = Integer(name, value);
      if (!k.ok()) return k.status();
      if (*k < 1 || *k > std::numeric_limits<int32_t>::max()) {
        return absl::InvalidArgumentError("output parameter 'classification' must be >= 1");
      }
      parsed.classification = static_cast<uint32_t>(*k);
    }
    plan->outputs.push_back(parsed);
  }
  if (plan->outputs.empty()) plan->outputs.push_back({kOipLogitsOutput, 0});
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OipInferPlan> ParseInferRequest(const ModelInferRequest& request,
                                               const OipParseOptions& options) {
  OipInferPlan plan;
  plan.model = request.model_name();
  plan.version = request.model_version();
  plan.id = request.id();
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request has ", request.inputs_size(), " inputs; ", kAcceptedInputs));
  }
  const auto& input = request.inputs(0);
  if (absl::Status s = CheckInputTensor(input); !s.ok()) return s;
  const bool typed = input.has_contents();
  if (request.raw_input_contents_size() > 0 && typed) {
    return absl::InvalidArgumentError(
        "the request mixes raw_input_contents and typed contents; send the input in exactly "
        "one of them");
  }
  if (request.raw_input_contents_size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(), " entries for 1 input"));
  }
  if (request.raw_input_contents_size() == 0 && !typed) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name(),
                                                   "' carries no data (raw_input_contents or "
                                                   "contents)"));
  }
  if (input.shape(0) > options.max_images) {
    return absl::InvalidArgumentError(absl::StrCat("the request carries ", input.shape(0),
                                                   " images; at most ", options.max_images,
                                                   " per request"));
  }
  ClassifyRequest base;
  base.set_model(request.model_name());
  base.set_request_id(request.id());
  if (absl::Status s = ApplyParameters(request, options, &base, &plan.timeout); !s.ok()) return s;
  if (absl::Status s = ParseOutputs(request, &plan); !s.ok()) return s;
  uint32_t top_k = 0;
  bool logits = false;
  for (const OipOutput& out : plan.outputs) {
    top_k = std::max(top_k, out.classification);
    logits = logits || out.classification == 0;
  }
  base.set_top_k(top_k);
  base.set_return_logits(logits);
  if (input.name() == kOipImageInput) {
    absl::StatusOr<std::vector<std::string>> images = ImageElements(request);
    if (!images.ok()) return images.status();
    for (std::string& image : *images) {
      plan.images.push_back(base);
      plan.images.back().set_image(std::move(image));
    }
  } else {
    absl::StatusOr<std::vector<vitserve::v1::Tensor>> tensors = TensorElements(request);
    if (!tensors.ok()) return tensors.status();
    for (vitserve::v1::Tensor& tensor : *tensors) {
      plan.images.push_back(base);
      *plan.images.back().mutable_tensor() = std::move(tensor);
    }
  }
  return plan;
}

namespace {

void SetStringParam(inference::ModelInferResponse* response, const char* name, std::string value) {
  (*response->mutable_parameters())[name].set_string_param(std::move(value));
}

// The native fields of every image, one comma-separated list per field.
void SetResponseParameters(const std::vector<ClassifyResponse>& results,
                           inference::ModelInferResponse* response) {
  std::vector<std::string> keep, tokens, macs, dense, accuracy, queue, compute, batch;
  for (const ClassifyResponse& r : results) {
    keep.push_back(absl::StrCat(r.keep_rate()));
    tokens.push_back(absl::StrJoin(r.tokens_per_stage(), ","));
    macs.push_back(absl::StrCat(r.macs()));
    dense.push_back(absl::StrCat(r.dense_macs()));
    accuracy.push_back(absl::StrCat(r.expected_accuracy()));
    queue.push_back(absl::StrCat(r.timing().queue_seconds()));
    compute.push_back(absl::StrCat(r.timing().compute_seconds()));
    batch.push_back(absl::StrCat(r.batch_size()));
  }
  SetStringParam(response, kOipKeepRate, absl::StrJoin(keep, ","));
  SetStringParam(response, "vitserve_tokens_per_stage", absl::StrJoin(tokens, ";"));
  SetStringParam(response, "vitserve_macs", absl::StrJoin(macs, ","));
  SetStringParam(response, "vitserve_dense_macs", absl::StrJoin(dense, ","));
  SetStringParam(response, "vitserve_expected_accuracy", absl::StrJoin(accuracy, ","));
  SetStringParam(response, "vitserve_queue_seconds", absl::StrJoin(queue, ","));
  SetStringParam(response, "vitserve_compute_seconds", absl::StrJoin(compute, ","));
  SetStringParam(response, "vitserve_batch_size", absl::StrJoin(batch, ","));
}

}  // namespace

absl::StatusOr<inference::ModelInferResponse> BuildInferResponse(
    const OipInferPlan& plan, const std::vector<ClassifyResponse>& results) {
  if (results.size() != plan.images.size() || results.empty()) {
    return absl::InternalError(
        absl::StrCat(results.size(), " results for ", plan.images.size(), " images"));
  }
  inference::ModelInferResponse response;
  response.set_model_name(results[0].model());
  response.set_model_version(plan.version);
  response.set_id(plan.id);
  const int64_t n = static_cast<int64_t>(results.size());
  for (const OipOutput& out : plan.outputs) {
    auto* tensor = response.add_outputs();
    tensor->set_name(out.name);
    tensor->add_shape(n);
    if (out.classification == 0) {
      const int classes = results[0].logits_size();
      std::string raw;
      raw.reserve(static_cast<size_t>(n * classes) * sizeof(float));
      for (const ClassifyResponse& r : results) {
        if (r.logits_size() != classes || classes == 0) {
          return absl::InternalError("a result lacks its logits");
        }
        raw.append(reinterpret_cast<const char*>(r.logits().data()),
                   static_cast<size_t>(classes) * sizeof(float));
      }
      tensor->set_datatype("FP32");
      tensor->add_shape(classes);
      response.add_raw_output_contents(std::move(raw));
      continue;
    }
    std::vector<std::string> elements;
    for (const ClassifyResponse& r : results) {
      if (static_cast<uint32_t>(r.predictions_size()) < out.classification) {
        return absl::InternalError("a result has fewer predictions than requested");
      }
      for (uint32_t j = 0; j < out.classification; ++j) {
        const auto& p = r.predictions(static_cast<int>(j));
        elements.push_back(absl::StrCat(p.score(), ":", p.class_index(), ":", p.label()));
      }
    }
    tensor->set_datatype("BYTES");
    tensor->add_shape(out.classification);
    response.add_raw_output_contents(EncodeRawBytes(elements));
  }
  SetResponseParameters(results, &response);
  return response;
}

std::string EncodeRawBytes(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& e : elements) {
    const uint32_t len = static_cast<uint32_t>(e.size());
    for (int b = 0; b < 4; ++b) raw.push_back(static_cast<char>((len >> (8 * b)) & 0xff));
    raw.append(e);
  }
  return raw;
}

absl::StatusOr<std::vector<std::string>> DecodeRawBytes(const std::string& raw) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) {
      return absl::InvalidArgumentError(
          "raw BYTES contents are truncated (each element is a 4-byte little-endian length, "
          "then the bytes)");
    }
    uint32_t len = 0;
    for (int b = 0; b < 4; ++b) {
      len |= static_cast<uint32_t>(static_cast<unsigned char>(raw[pos + b])) << (8 * b);
    }
    pos += 4;
    if (raw.size() - pos < len) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw BYTES contents are truncated: an element of ", len, " bytes has ",
                       raw.size() - pos, " left"));
    }
    out.push_back(raw.substr(pos, len));
    pos += len;
  }
  return out;
}

}  // namespace vitserve
