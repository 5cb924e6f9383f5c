#include "server/rpc/oip_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "server/rpc/oip_translate.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

TEST(OipJson, ParsesTensorsParametersAndOutputs) {
  auto r = InferRequestFromJson(R"({"id": "7",
      "parameters": {"vitserve_keep_rate": 0.5, "timeout": 10, "flag": true, "s": "x",
                     "big": 18446744073709551615},
      "inputs": [{"name": "tensor", "datatype": "FP32", "shape": [1, 1, 2, 2],
                  "data": [[1, 2], [3, 4.5]]}],
      "outputs": [{"name": "logits", "parameters": {"classification": 2}}]})",
                                "m", "1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model_name(), "m");
  EXPECT_EQ(r->model_version(), "1");
  EXPECT_EQ(r->id(), "7");
  EXPECT_DOUBLE_EQ(r->parameters().at("vitserve_keep_rate").double_param(), 0.5);
  EXPECT_EQ(r->parameters().at("timeout").int64_param(), 10);
  EXPECT_TRUE(r->parameters().at("flag").bool_param());
  EXPECT_EQ(r->parameters().at("s").string_param(), "x");
  EXPECT_EQ(r->parameters().at("big").uint64_param(), 18446744073709551615ull);
  EXPECT_THAT(r->inputs(0).contents().fp32_contents(), ::testing::ElementsAre(1, 2, 3, 4.5));
  EXPECT_EQ(r->outputs(0).parameters().at("classification").int64_param(), 2);
}

TEST(OipJson, BytesAcceptStringsAndBase64) {
  auto r = InferRequestFromJson(
      R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                      "data": ["ab", {"b64": "AAEC"}]}]})",
      "m", "");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->inputs(0).contents().bytes_contents(0), "ab");
  EXPECT_EQ(r->inputs(0).contents().bytes_contents(1), std::string("\x00\x01\x02", 3));
}

TEST(OipJson, BadJsonAndWrongTypesAreInvalidArgument) {
  auto bad = InferRequestFromJson("{\"inputs\": [", "m", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(InferRequestFromJson(R"({"inputs": {}})", "m", "").status().message(),
              HasSubstr("'inputs' must be an array"));
  EXPECT_THAT(InferRequestFromJson(R"({"inputs": [{"name": "tensor", "datatype": "FP32",
                                     "shape": [1], "data": ["x"]}]})",
                                   "m", "")
                  .status()
                  .message(),
              HasSubstr("does not match datatype 'FP32'"));
}

TEST(OipJson, BinaryInputsFollowTheHeader) {
  const std::string header = R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                 "parameters": {"binary_data_size": 6}}]})";
  const std::string binary = EncodeRawBytes({"ab"});
  auto r = InferRequestFromJson(header + binary, "m", "", header.size());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->raw_input_contents_size(), 1);
  EXPECT_EQ(r->raw_input_contents(0), binary);
  EXPECT_FALSE(r->inputs(0).has_contents());
  EXPECT_THAT(
      InferRequestFromJson(header + binary + "x", "m", "", header.size()).status().message(),
      HasSubstr("1 bytes after the JSON header"));
  EXPECT_THAT(InferRequestFromJson(header + "ab", "m", "", header.size()).status().message(),
              HasSubstr("declares binary_data_size 6 but only 2 bytes"));
  EXPECT_THAT(InferRequestFromJson(header, "m", "", header.size() + 1).status().message(),
              HasSubstr("exceeds the body"));
}

TEST(OipJson, BinaryOutputsWhenRequested) {
  inference::ModelInferResponse response;
  auto* logits = response.add_outputs();
  logits->set_name("logits");
  logits->set_datatype("FP32");
  logits->add_shape(1);
  logits->add_shape(1);
  response.add_raw_output_contents(std::string("\0\0\x80\x3f", 4));  // 1.0f
  inference::ModelInferRequest request;
  (*request.mutable_parameters())["binary_data_output"].set_bool_param(true);
  auto body = InferResponseToHttp(request, response);
  ASSERT_TRUE(body.ok()) << body.status();
  ASSERT_GT(body->header_length, 0u);
  auto j = nlohmann::json::parse(body->body.substr(0, body->header_length));
  EXPECT_EQ(j["outputs"][0]["parameters"]["binary_data_size"], 4);
  EXPECT_FALSE(j["outputs"][0].contains("data"));
  EXPECT_EQ(body->body.substr(body->header_length), response.raw_output_contents(0));
  request.add_outputs()->set_name("logits");
  (*request.mutable_outputs(0)->mutable_parameters())["binary_data"].set_bool_param(false);
  body = InferResponseToHttp(request, response);
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->header_length, 0u);  // the output's own binary_data wins
}

TEST(OipJson, ResponseDecodesRawOutputs) {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  auto* logits = response.add_outputs();
  logits->set_name("logits");
  logits->set_datatype("FP32");
  logits->add_shape(1);
  logits->add_shape(2);
  const float values[2] = {1.5f, -2.0f};
  response.add_raw_output_contents(std::string(reinterpret_cast<const char*>(values), 8));
  auto* classes = response.add_outputs();
  classes->set_name("logits");
  classes->set_datatype("BYTES");
  classes->add_shape(1);
  classes->add_shape(1);
  response.add_raw_output_contents(EncodeRawBytes({"0.9:3:dog"}));
  (*response.mutable_parameters())["vitserve_keep_rate"].set_string_param("0.7");
  auto text = InferResponseToJson(response);
  ASSERT_TRUE(text.ok()) << text.status();
  auto j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["outputs"][0]["data"], nlohmann::json({1.5, -2.0}));
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json({1, 2}));
  EXPECT_EQ(j["outputs"][1]["data"][0], "0.9:3:dog");
  EXPECT_EQ(j["parameters"]["vitserve_keep_rate"], "0.7");
}

}  // namespace
}  // namespace vitserve
