#include "client/output.h"

#include <string>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

vitserve::v1::ClassifyResponse MakeResponse() {
  vitserve::v1::ClassifyResponse r;
  auto* p = r.add_predictions();
  p->set_class_index(281);
  p->set_label("tabby, \"cat\"");
  p->set_score(0.75f);
  p = r.add_predictions();
  p->set_class_index(7);
  p->set_label("cock");
  p->set_score(0.125f);
  r.set_keep_rate(0.7f);
  for (uint32_t t : {197u, 137u, 96u, 67u}) r.add_tokens_per_stage(t);
  r.set_macs(2'900'000'000ull);
  r.set_dense_macs(4'600'000'000ull);
  r.mutable_timing()->set_queue_seconds(0.001);
  r.mutable_timing()->set_compute_seconds(0.01);
  r.mutable_timing()->set_total_seconds(0.0125);
  r.set_batch_size(4);
  r.set_model("deit_s");
  r.set_request_id("id-1");
  r.set_expected_accuracy(0.795f);
  return r;
}

TEST(ClassifyOutputTest, JsonHasEveryFieldWithStableNames) {
  EXPECT_EQ(ClassifyResultJson("dir/a b.jpg", MakeResponse(), 0.015),
            R"({"file":"dir/a b.jpg","request_id":"id-1","model":"deit_s","predictions":[)"
            R"({"class_index":281,"label":"tabby, \"cat\"","score":0.75},)"
            R"({"class_index":7,"label":"cock","score":0.125}],"keep_rate":0.7,)"
            R"("tokens_per_stage":[197,137,96,67],"macs":2900000000,"dense_macs":4600000000,)"
            R"("expected_accuracy":0.795,"timing":{"queue_seconds":0.001,"compute_seconds":0.01,)"
            R"("total_seconds":0.0125,"client_seconds":0.015},"batch_size":4})");
}

TEST(ClassifyOutputTest, LogitsOnlyWhenPresent) {
  vitserve::v1::ClassifyResponse r = MakeResponse();
  EXPECT_EQ(ClassifyResultJson("f", r, 0).find("logits"), std::string::npos);
  r.add_logits(1.5f);
  r.add_logits(-2.0f);
  EXPECT_NE(ClassifyResultJson("f", r, 0).find(R"("logits":[1.5,-2])"), std::string::npos);
}

TEST(ClassifyOutputTest, ErrorJsonNamesTheCode) {
  EXPECT_EQ(ClassifyErrorJson("x.png", "id-2", 3, "bad \"image\""),
            R"({"file":"x.png","request_id":"id-2","error":{"code":"INVALID_ARGUMENT",)"
            R"("code_number":3,"message":"bad \"image\""}})");
  EXPECT_EQ(ClassifyErrorText("x.png", 8, "queue full"),
            "vitclient: x.png: RESOURCE_EXHAUSTED: queue full");
}

TEST(ClassifyOutputTest, TextShowsPredictionsAndCost) {
  const std::string text = ClassifyResultText("a.jpg", MakeResponse(), 0.015);
  EXPECT_EQ(text.find("a.jpg\n"), 0u);
  EXPECT_NE(text.find("keep_rate 0.70"), std::string::npos) << text;
  EXPECT_NE(text.find("tokens 197/137/96/67"), std::string::npos) << text;
  EXPECT_NE(text.find("GMACs 2.90/4.60"), std::string::npos) << text;
  EXPECT_NE(text.find("latency 15.0 ms"), std::string::npos) << text;
  EXPECT_NE(text.find("expected top-1 79.5%"), std::string::npos) << text;
  EXPECT_NE(text.find(" 1.  75.00%    281  tabby, \"cat\""), std::string::npos) << text;
  EXPECT_NE(text.find(" 2.  12.50%      7  cock"), std::string::npos) << text;
  EXPECT_NE(text.back(), '\n');
}

TEST(FormatGmacsTest, TwoDecimalsOrThreeSignificantDigits) {
  EXPECT_EQ(FormatGmacs(4'610'000'000ull), "4.61");
  EXPECT_EQ(FormatGmacs(100'000'000ull), "0.10");
  EXPECT_EQ(FormatGmacs(1'234'567ull), "0.00123");
  EXPECT_EQ(FormatGmacs(0), "0.00");
}

TEST(ModelsOutputTest, MarksDefaultAndReadiness) {
  vitserve::v1::ListModelsResponse m;
  m.set_default_model("b");
  auto* a = m.add_models();
  a->set_name("a");
  a->set_method("evit");
  a->set_ready(false);
  auto* b = m.add_models();
  b->set_name("b");
  b->set_method("dense");
  b->set_version("3");
  b->set_ready(true);
  const std::string text = ModelsText(m);
  EXPECT_NE(text.find("b (default)"), std::string::npos) << text;
  EXPECT_NE(text.find("no"), std::string::npos) << text;
  EXPECT_EQ(ModelsJson(m),
            R"({"default_model":"b","models":[{"name":"a","method":"evit","version":"",)"
            R"("ready":false},{"name":"b","method":"dense","version":"3","ready":true}]})");
}

vitserve::v1::ModelInfo MakeInfo() {
  vitserve::v1::ModelInfo info;
  info.set_name("deit_s_evit");
  info.set_method("evit");
  info.mutable_architecture()->set_image_size(224);
  info.mutable_architecture()->set_in_chans(3);
  info.mutable_preprocessing()->set_crop_pct(0.875f);
  info.set_min_keep_rate(0.5f);
  info.set_max_keep_rate(1.0f);
  info.set_dense_macs(4'600'000'000ull);
  auto* g = info.add_grid();
  g->set_keep_rate(0.7f);
  for (uint32_t t : {197u, 140u, 100u, 72u}) g->add_tokens_per_stage(t);
  g->set_macs(3'000'000'000ull);
  g->set_expected_accuracy(0.795);
  (*g->mutable_latency_seconds_by_batch())[8] = 0.04;
  (*g->mutable_latency_seconds_by_batch())[1] = 0.0123;
  auto* dense = info.add_grid();
  dense->set_keep_rate(1.0f);
  dense->set_macs(4'600'000'000ull);
  info.add_labels("tench");
  info.add_labels("goldfish");
  return info;
}

// A Hugging Face model: the squash and crop rule, and where each setting came from.
TEST(ModelInfoOutputTest, TextShowsHuggingFaceGeometryAndSources) {
  vitserve::v1::ModelInfo info = MakeInfo();
  info.mutable_preprocessing()->set_resize_height(256);
  info.mutable_preprocessing()->set_resize_width(256);
  info.mutable_preprocessing()->set_crop("center_floor");
  info.mutable_preprocessing()->set_interpolation("bilinear");
  auto* src = info.add_sources();
  src->set_setting("architecture.norm_eps");
  src->set_source("config.json layer_norm_eps");
  const std::string text = ModelInfoText(info);
  EXPECT_NE(text.find("resize squash 256x256 bilinear, crop 224 (center_floor)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("settings from"), std::string::npos) << text;
  EXPECT_NE(text.find("architecture.norm_eps"), std::string::npos) << text;
  EXPECT_NE(text.find("config.json layer_norm_eps"), std::string::npos) << text;
  EXPECT_EQ(ModelInfoText(MakeInfo()).find("settings from"), std::string::npos);
}

TEST(ModelInfoOutputTest, TextHasGridWithLatencyColumns) {
  const std::string text = ModelInfoText(MakeInfo());
  EXPECT_NE(text.find("range [0.5, 1]"), std::string::npos) << text;
  EXPECT_NE(text.find("resize 256 (image_size / crop_pct 0.875) bicubic, crop 224"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ms@b1"), std::string::npos) << text;
  EXPECT_NE(text.find("ms@b8"), std::string::npos) << text;
  EXPECT_LT(text.find("ms@b1"), text.find("ms@b8"));
  EXPECT_NE(text.find("197/140/100/72"), std::string::npos) << text;
  EXPECT_NE(text.find("79.50%"), std::string::npos) << text;
  EXPECT_NE(text.find("12.30"), std::string::npos) << text;
  EXPECT_NE(text.find("40.00"), std::string::npos) << text;
  EXPECT_NE(text.find("labels         2"), std::string::npos) << text;
}

TEST(ModelInfoOutputTest, JsonOmitsLabelsUnlessAsked) {
  const std::string without = ModelInfoJson(MakeInfo(), /*with_labels=*/false);
  EXPECT_EQ(without.find("goldfish"), std::string::npos) << without;
  EXPECT_NE(without.find("\"num_labels\":2"), std::string::npos) << without;
  EXPECT_EQ(without.find("\"labels\""), std::string::npos) << without;
  EXPECT_NE(without.find("\"min_keep_rate\":0.5"), std::string::npos) << without;
  const std::string with = ModelInfoJson(MakeInfo(), /*with_labels=*/true);
  EXPECT_NE(with.find("goldfish"), std::string::npos) << with;
}

TEST(BenchOutputTest, JsonAndTextCarryTheReport) {
  BenchSample ok;
  ok.latency_s = 0.02;
  ok.budget_ms = 50;
  ok.keep_rate = 0.7f;
  BenchSample rejected;
  rejected.code = 8;
  const BenchReport r = ComputeBenchReport({ok, rejected}, 1.0);
  BenchConfig c;
  c.server = "127.0.0.1:8500";
  c.mode = "open-loop";
  c.rate = 2;
  c.budget = "50";
  c.input = "random_tensor";
  const std::string json = BenchReportJson(c, r);
  EXPECT_NE(json.find(R"("throughput_rps":1,)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("slo_attainment_all":0.5,)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("slo_attainment_admitted":1,)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("errors_by_code":{"RESOURCE_EXHAUSTED":1})"), std::string::npos) << json;
  const std::string text = BenchReportText(c, r);
  EXPECT_NE(text.find("50.00% of all, 100.00% of admitted"), std::string::npos) << text;
  EXPECT_NE(text.find("RESOURCE_EXHAUSTED 1"), std::string::npos) << text;
  EXPECT_NE(text.find("p50 20.0"), std::string::npos) << text;
}

}  // namespace
}  // namespace vitserve::client
