#include "server/rpc/oip_translate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

namespace vitserve {
namespace {

using inference::ModelInferRequest;
using ::testing::HasSubstr;

ModelInferRequest ImageRequest(std::vector<std::string> images, std::vector<int64_t> shape) {
  ModelInferRequest r;
  r.set_model_name("m");
  r.set_id("req-1");
  auto* in = r.add_inputs();
  in->set_name("image");
  in->set_datatype("BYTES");
  for (int64_t d : shape) in->add_shape(d);
  for (auto& i : images) in->mutable_contents()->add_bytes_contents(i);
  return r;
}

ModelInferRequest TensorRequest(int n, int c, int h, int w, bool raw) {
  ModelInferRequest r;
  auto* in = r.add_inputs();
  in->set_name("tensor");
  in->set_datatype("FP32");
  for (int64_t d : {n, c, h, w}) in->add_shape(d);
  std::vector<float> values(static_cast<size_t>(n * c * h * w));
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  if (raw) {
    r.add_raw_input_contents(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  } else {
    for (float v : values) in->mutable_contents()->add_fp32_contents(v);
  }
  return r;
}

TEST(OipTranslate, BytesInputBecomesOneTaskPerImage) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{2}, std::vector<int64_t>{2, 1}}) {
    auto plan = ParseInferRequest(ImageRequest({"a", "bc"}, shape), {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->images.size(), 2u);
    EXPECT_EQ(plan->images[0].image(), "a");
    EXPECT_EQ(plan->images[1].image(), "bc");
    EXPECT_EQ(plan->images[1].model(), "m");
    EXPECT_EQ(plan->images[1].request_id(), "req-1");
    EXPECT_TRUE(plan->images[0].return_logits());
    ASSERT_EQ(plan->outputs.size(), 1u);
    EXPECT_EQ(plan->outputs[0].name, "logits");
  }
}

TEST(OipTranslate, RawBytesInputIsLengthPrefixed) {
  ModelInferRequest r = ImageRequest({}, {2});
  r.mutable_inputs(0)->clear_contents();
  r.add_raw_input_contents(EncodeRawBytes({"xyz", ""}));
  auto plan = ParseInferRequest(r, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->images[0].image(), "xyz");
  EXPECT_EQ(plan->images[1].image(), "");
  r.set_raw_input_contents(0, std::string("\x05\x00\x00\x00"
                                          "ab",
                                          6));
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(), HasSubstr("truncated"));
}

TEST(OipTranslate, TensorInputSplitsIntoChwTensorsRawOrTyped) {
  for (bool raw : {true, false}) {
    auto plan = ParseInferRequest(TensorRequest(2, 3, 2, 2, raw), {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->images.size(), 2u);
    const auto& t = plan->images[1].tensor();
    EXPECT_THAT(t.shape(), ::testing::ElementsAre(3, 2, 2));
    ASSERT_EQ(t.data_size(), 12);
    EXPECT_EQ(t.data(0), 12.0f);  // second image starts after the first's 12 values
  }
}

TEST(OipTranslate, RejectsWrongDatatypeShapeMixedAndCounts) {
  auto message = [](const ModelInferRequest& r) {
    auto plan = ParseInferRequest(r, {});
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(plan.status().message());
  };
  ModelInferRequest wrong_type = ImageRequest({"a"}, {1});
  wrong_type.mutable_inputs(0)->set_datatype("FP32");
  EXPECT_THAT(message(wrong_type), HasSubstr("accepted: one input"));
  EXPECT_THAT(message(ImageRequest({"a"}, {1, 2})), HasSubstr("shape [1,2]"));
  EXPECT_THAT(message(ImageRequest({"a"}, {2})), HasSubstr("carries 1 elements"));
  ModelInferRequest mixed = TensorRequest(1, 1, 1, 1, false);
  mixed.add_raw_input_contents(std::string(4, '\0'));
  EXPECT_THAT(message(mixed), HasSubstr("mixes raw_input_contents and typed contents"));
  ModelInferRequest short_tensor = TensorRequest(1, 3, 2, 2, true);
  short_tensor.mutable_raw_input_contents(0)->resize(8);
  EXPECT_THAT(message(short_tensor), HasSubstr("carries 2"));
  ModelInferRequest unknown = ImageRequest({"a"}, {1});
  unknown.mutable_inputs(0)->set_name("input0");
  EXPECT_THAT(message(unknown), HasSubstr("unknown input 'input0'"));
  OipParseOptions small;
  small.max_images = 1;
  EXPECT_THAT(ParseInferRequest(ImageRequest({"a", "b"}, {2}), small).status().message(),
              HasSubstr("at most 1"));
}

TEST(OipTranslate, ParametersMapToNativeFields) {
  ModelInferRequest r = ImageRequest({"a"}, {1});
  auto& p = *r.mutable_parameters();
  p["vitserve_keep_rate"].set_double_param(0.7);
  p["vitserve_latency_budget_ms"].set_int64_param(250);
  p["vitserve_min_keep_rate"].set_double_param(0.5);
  p["vitserve_min_expected_accuracy"].set_double_param(0.8);
  p["priority"].set_uint64_param(3);
  p["timeout"].set_int64_param(1500);
  auto plan = ParseInferRequest(r, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto& c = plan->images[0];
  EXPECT_FLOAT_EQ(c.keep_rate(), 0.7f);
  EXPECT_FLOAT_EQ(c.latency_budget_ms(), 250.0f);
  EXPECT_FLOAT_EQ(c.min_keep_rate(), 0.5f);
  EXPECT_FLOAT_EQ(c.min_expected_accuracy(), 0.8f);
  EXPECT_EQ(c.priority(), 2u);  // Triton level 3 = vitserve priority 2
  EXPECT_EQ(plan->timeout, absl::Microseconds(1500));
}

TEST(OipTranslate, RejectsUnknownAndConflictingParameters) {
  ModelInferRequest r = ImageRequest({"a"}, {1});
  (*r.mutable_parameters())["keep_rate"].set_double_param(0.5);
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(),
              HasSubstr("unknown request parameter 'keep_rate'; accepted request parameters: "
                        "vitserve_keep_rate"));
  r.mutable_parameters()->clear();
  (*r.mutable_parameters())["priority"].set_int64_param(1);
  (*r.mutable_parameters())["vitserve_priority"].set_int64_param(1);
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(), HasSubstr("not both"));
  r.mutable_parameters()->clear();
  (*r.mutable_parameters())["priority"].set_int64_param(5);
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(), HasSubstr("must be in [0, 4]"));
  r.mutable_parameters()->clear();
  (*r.mutable_parameters())["vitserve_keep_rate"].set_string_param("0.5");
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(), HasSubstr("must be a finite number"));
}

TEST(OipTranslate, ClassificationOutputSetsTopK) {
  ModelInferRequest r = ImageRequest({"a"}, {1});
  auto* out = r.add_outputs();
  out->set_name("logits");
  (*out->mutable_parameters())["classification"].set_int64_param(3);
  auto plan = ParseInferRequest(r, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->images[0].top_k(), 3u);
  EXPECT_FALSE(plan->images[0].return_logits());
  out->set_name("probabilities");
  EXPECT_THAT(ParseInferRequest(r, {}).status().message(), HasSubstr("the only output is"));
}

vitserve::v1::ClassifyResponse Result(std::vector<float> logits, float keep_rate) {
  vitserve::v1::ClassifyResponse r;
  r.set_model("m");
  for (float l : logits) r.add_logits(l);
  auto* p = r.add_predictions();
  p->set_class_index(1);
  p->set_label("cat");
  p->set_score(0.5f);
  r.set_keep_rate(keep_rate);
  r.add_tokens_per_stage(17);
  r.add_tokens_per_stage(9);
  r.set_macs(100);
  r.set_dense_macs(200);
  r.set_batch_size(2);
  return r;
}

TEST(OipTranslate, ResponseCarriesRawLogitsClassificationAndParameters) {
  OipInferPlan plan;
  plan.id = "x";
  plan.images.resize(2);
  plan.outputs = {{"logits", 0}, {"logits", 1}};
  auto response = BuildInferResponse(plan, {Result({1, 2}, 0.7f), Result({3, 4}, 0.5f)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->id(), "x");
  ASSERT_EQ(response->outputs_size(), 2);
  EXPECT_EQ(response->outputs(0).datatype(), "FP32");
  EXPECT_THAT(response->outputs(0).shape(), ::testing::ElementsAre(2, 2));
  float values[4];
  ASSERT_EQ(response->raw_output_contents(0).size(), sizeof(values));
  std::memcpy(values, response->raw_output_contents(0).data(), sizeof(values));
  EXPECT_EQ(values[2], 3.0f);
  EXPECT_EQ(response->outputs(1).datatype(), "BYTES");
  EXPECT_THAT(response->outputs(1).shape(), ::testing::ElementsAre(2, 1));
  auto elements = DecodeRawBytes(response->raw_output_contents(1));
  ASSERT_TRUE(elements.ok());
  EXPECT_THAT(*elements, ::testing::ElementsAre("0.5:1:cat", "0.5:1:cat"));
  const auto& params = response->parameters();
  EXPECT_EQ(params.at("vitserve_keep_rate").string_param(), "0.7,0.5");
  EXPECT_EQ(params.at("vitserve_tokens_per_stage").string_param(), "17,9;17,9");
  EXPECT_EQ(params.at("vitserve_macs").string_param(), "100,100");
  EXPECT_EQ(params.at("vitserve_dense_macs").string_param(), "200,200");
  EXPECT_EQ(params.at("vitserve_batch_size").string_param(), "2,2");
}

}  // namespace
}  // namespace vitserve
