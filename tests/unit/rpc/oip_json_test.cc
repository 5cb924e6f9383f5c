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
