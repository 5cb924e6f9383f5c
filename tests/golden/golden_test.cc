// Golden parity: the C++ model (LoadInferenceModel + InferenceModel::Run) against the
// independent Python reference (tests/golden/reference.py).
//
// The gtest cases are the rows of tests/golden/cases.txt (read when the binary starts, so
// gtest_discover_tests sees them at build time); each case looks up its generated files in
// <GOLDEN_FIXTURE_DIR>/manifest.txt, written by the CTest fixture `golden_fixtures`
// (make_golden.py). A case passes when the logits agree to kMaxLogitError and the token
// counts per stage are identical; methods the C++ side reports as UNIMPLEMENTED are
// skipped with that status, never passed.
//
// Environment (bench/gpu/run.sh runs the same cases on a GPU):
//   VITSERVE_GOLDEN_FIXTURE_DIR  fixture directory instead of the build tree's
//   VITSERVE_GOLDEN_DEVICE       ModelLoadOptions::device (default cpu)
//   VITSERVE_GOLDEN_DTYPE        ModelLoadOptions::dtype (default float32). Other than
//                                float32, a case checks only that the top-1 class matches
//                                the reference's and prints "GOLDEN_TOP1 <case> <agree>
//                                <images>" (the caller sums the agreement rate).
//   VITSERVE_GOLDEN_MAX_ERROR    logit bound instead of kMaxLogitError (float32 only)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/executor/inference_model.h"
#include "server/preprocess/preprocessor.h"
#include "server/spec/model_spec.h"

namespace vitserve {
namespace {

// Parity bound on every logit (float32 server vs float64 reference).
constexpr double kMaxLogitError = 1e-4;

// One line of the generated manifest.txt (columns documented in its header).
struct ManifestRow {
  std::string name;
  std::string method;
  double keep_rate = 1.0;
  std::string weights_file;
  std::string inputs_file;
  std::string expected_file;
  Architecture arch;
  std::vector<int> locations;
  double attn_ratio = 0.0;
  int tome_r = 0;
};

// A tensor read from a safetensors file: shape and values widened to double.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<double> values;
};

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

std::string FixtureDir() { return EnvOr("VITSERVE_GOLDEN_FIXTURE_DIR", GOLDEN_FIXTURE_DIR); }

ModelLoadOptions LoadOptions() {
  ModelLoadOptions opts;
  opts.device = EnvOr("VITSERVE_GOLDEN_DEVICE", "cpu");
  opts.dtype = EnvOr("VITSERVE_GOLDEN_DTYPE", "float32");
  return opts;
}

double MaxLogitError() {
  return std::stod(EnvOr("VITSERVE_GOLDEN_MAX_ERROR", absl::StrCat(kMaxLogitError)));
}

int64_t ArgMax(const double* v, int64_t n) { return std::max_element(v, v + n) - v; }

// Low-precision run: counts the images whose top-1 class matches the reference's.
void ReportTopOne(const std::string& name, const std::vector<ImageResult>& got,
                  const HostTensor& want_logits) {
  const int64_t classes = want_logits.shape[1];
  int agree = 0;
  for (size_t b = 0; b < got.size(); ++b) {
    const std::vector<double> mine(got[b].logits.begin(), got[b].logits.end());
    ASSERT_EQ(static_cast<int64_t>(mine.size()), classes);
    for (double v : mine) ASSERT_TRUE(std::isfinite(v)) << name << " image " << b;
    agree += ArgMax(mine.data(), classes) == ArgMax(&want_logits.values[b * classes], classes);
  }
  std::printf("GOLDEN_TOP1 %s %d %zu\n", name.c_str(), agree, got.size());
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Case names, in order, from cases.txt ('#' starts a comment).
std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  absl::StatusOr<std::string> text = ReadFile(GOLDEN_CASES_FILE);
  if (!text.ok()) return names;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = line.substr(0, line.find('#'));
    std::vector<absl::string_view> cols = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (!cols.empty()) names.emplace_back(cols[0]);
  }
  return names;
}

absl::StatusOr<std::vector<ManifestRow>> ReadManifest() {
  const std::string path = FixtureDir() + "/manifest.txt";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::vector<ManifestRow> rows;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = line.substr(0, line.find('#'));
    std::vector<std::string> c = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (c.empty()) continue;
    if (c.size() != 14) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad line: ", line));
    }
    ManifestRow r;
    r.name = c[0];
    r.method = c[1];
    r.keep_rate = std::stod(c[2]);
    r.weights_file = c[3];
    r.inputs_file = c[4];
    r.expected_file = c[5];
    r.arch.embed_dim = std::stoi(c[6]);
    r.arch.depth = std::stoi(c[7]);
    r.arch.num_heads = std::stoi(c[8]);
    r.arch.num_classes = std::stoi(c[9]);
    r.arch.distilled = c[10] == "1";
    if (c[11] != "-") {
      for (absl::string_view v : absl::StrSplit(c[11], ',')) {
        r.locations.push_back(std::stoi(std::string(v)));
      }
    }
    r.attn_ratio = std::stod(c[12]);
    r.tome_r = std::stoi(c[13]);
    rows.push_back(std::move(r));
  }
  return rows;
}

// Minimal safetensors reader (F32 / I64, little-endian host) independent of the server's
// checkpoint code: u64 header length, JSON header (parsed as a protobuf Struct), data.
absl::StatusOr<std::map<std::string, HostTensor>> ReadSafetensors(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  uint64_t header_len = 0;
  if (bytes->size() < sizeof(header_len)) return absl::InvalidArgumentError("short file");
  std::memcpy(&header_len, bytes->data(), sizeof(header_len));
  if (bytes->size() < sizeof(header_len) + header_len) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header past end"));
  }
  google::protobuf::Struct header;
  auto parsed = google::protobuf::util::JsonStringToMessage(
      bytes->substr(sizeof(header_len), header_len), &header);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.ToString()));
  }
  const char* data = bytes->data() + sizeof(header_len) + header_len;
  const size_t data_size = bytes->size() - sizeof(header_len) - header_len;
  std::map<std::string, HostTensor> out;
  for (const auto& [name, value] : header.fields()) {
    if (name == "__metadata__") continue;
    const auto& f = value.struct_value().fields();
    const std::string dtype = f.at("dtype").string_value();
    HostTensor t;
    int64_t count = 1;
    for (const auto& d : f.at("shape").list_value().values()) {
      t.shape.push_back(static_cast<int64_t>(d.number_value()));
      count *= t.shape.back();
    }
    const auto& offs = f.at("data_offsets").list_value().values();
    const auto begin = static_cast<size_t>(offs[0].number_value());
    const auto end = static_cast<size_t>(offs[1].number_value());
    const size_t elem = dtype == "F32" ? 4 : dtype == "I64" ? 8 : 0;
    if (elem == 0 || end > data_size || end - begin != elem * count) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad entry ", name));
    }
    t.values.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      const char* p = data + begin + i * elem;
      if (elem == 4) {
        float v;
        std::memcpy(&v, p, 4);
        t.values[i] = v;
      } else {
        int64_t v;
        std::memcpy(&v, p, 8);
        t.values[i] = static_cast<double>(v);
      }
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

absl::StatusOr<ModelSpec> SpecFor(const ManifestRow& row) {
  absl::StatusOr<Method> method = ParseMethod(row.method);
  if (!method.ok()) return method.status();
  ModelSpec spec;
  spec.name = row.name;
  spec.version = "1";
  spec.dir = FixtureDir();
  spec.arch = row.arch;
  spec.pruning.method = *method;
  spec.pruning.locations = row.locations;
  spec.pruning.attn_ratio = static_cast<float>(row.attn_ratio);
  spec.pruning.default_keep_rate = static_cast<float>(row.keep_rate);
  spec.pruning.min_keep_rate = 0.1f;
  spec.pruning.max_keep_rate = 1.0f;
  spec.weights_path = FixtureDir() + "/" + row.weights_file;
  return spec;
}

// Splits images [B, C, H, W] into per-image tensors.
std::vector<ImageTensor> SplitImages(const HostTensor& images) {
  const int64_t b = images.shape[0];
  const int64_t per = images.values.size() / b;
  std::vector<ImageTensor> out(b);
  for (int64_t i = 0; i < b; ++i) {
    out[i].channels = static_cast<int>(images.shape[1]);
    out[i].height = static_cast<int>(images.shape[2]);
    out[i].width = static_cast<int>(images.shape[3]);
    out[i].data.assign(images.values.begin() + i * per, images.values.begin() + (i + 1) * per);
  }
  return out;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

// The manifest row of case `name` and its loaded model (fatal failures on errors; a
// method the C++ side reports as UNIMPLEMENTED leaves `model` null and `skip` set).
struct LoadedCase {
  ManifestRow row;
  ModelSpec spec;
  std::unique_ptr<InferenceModel> model;
  std::string skip;
};

void LoadCase(const std::string& name, LoadedCase* out) {
  absl::StatusOr<std::vector<ManifestRow>> rows = ReadManifest();
  ASSERT_TRUE(rows.ok()) << rows.status() << " (run the golden_fixtures CTest fixture)";
  const ManifestRow* row = nullptr;
  for (const ManifestRow& r : *rows) {
    if (r.name == name) row = &r;
  }
  ASSERT_NE(row, nullptr) << name << " is in cases.txt but not in the manifest";
  out->row = *row;
  absl::StatusOr<ModelSpec> spec = SpecFor(*row);
  ASSERT_TRUE(spec.ok()) << spec.status();
  out->spec = *spec;
  absl::StatusOr<std::unique_ptr<InferenceModel>> model = LoadInferenceModel(*spec, LoadOptions());
  if (!model.ok() && model.status().code() == absl::StatusCode::kUnimplemented) {
    out->skip = absl::StrCat("C++ side: ", model.status().ToString());
    return;
  }
  ASSERT_TRUE(model.ok()) << model.status();
  out->model = *std::move(model);
}

TEST_P(GoldenTest, MatchesReference) {
  LoadedCase lc;
  ASSERT_NO_FATAL_FAILURE(LoadCase(GetParam(), &lc));
  if (!lc.skip.empty()) GTEST_SKIP() << lc.skip;
  const ManifestRow* row = &lc.row;
  std::unique_ptr<InferenceModel>* model = &lc.model;
  const ModelLoadOptions load_options = LoadOptions();

  auto inputs = ReadSafetensors(FixtureDir() + "/" + row->inputs_file);
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  auto expected = ReadSafetensors(FixtureDir() + "/" + row->expected_file);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const HostTensor& want_logits = expected->at("logits");
  const HostTensor& want_tokens = expected->at("tokens_per_stage");

  std::vector<ImageTensor> images = SplitImages(inputs->at("images"));
  std::vector<const ImageTensor*> batch;
  for (const ImageTensor& im : images) batch.push_back(&im);
  const float keep_rate = static_cast<float>(row->keep_rate);
  // On a GPU the third run is a CUDA graph replay (run 1 warms up, run 2 captures): check
  // that one.
  const int runs = load_options.device == "cpu" ? 1 : 3;
  absl::StatusOr<std::vector<ImageResult>> got;
  for (int run = 0; run < runs; ++run) got = (*model)->Run(batch, keep_rate);
  if (!got.ok() && got.status().code() == absl::StatusCode::kUnimplemented) {
    GTEST_SKIP() << "C++ side: " << got.status();
  }
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), images.size());
  if (load_options.dtype != "float32") {
    ReportTopOne(row->name, *got, want_logits);
    return;
  }

  const double max_error = MaxLogitError();
  double worst_all = 0.0;  // recorded in the test XML / JSON output
  const int64_t classes = want_logits.shape[1];
  const int64_t stages = want_tokens.shape[1];
  const std::string what =
      absl::StrCat(row->method, " keep_rate=", row->keep_rate, " tome_r(reference)=", row->tome_r);
  for (size_t b = 0; b < got->size(); ++b) {
    const ImageResult& res = (*got)[b];
    std::vector<int> want_t;
    for (int64_t s = 0; s < stages; ++s) {
      want_t.push_back(static_cast<int>(want_tokens.values[b * stages + s]));
    }
    EXPECT_EQ(res.tokens_per_stage, want_t)
        << what << " image " << b << ": got [" << absl::StrJoin(res.tokens_per_stage, ",")
        << "] want [" << absl::StrJoin(want_t, ",") << "]";
    ASSERT_EQ(static_cast<int64_t>(res.logits.size()), classes) << what;
    double worst = 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      worst = std::max(worst, std::abs(res.logits[c] - want_logits.values[b * classes + c]));
    }
    EXPECT_LE(worst, max_error) << what << " image " << b;
    worst_all = std::max(worst_all, worst);
  }
  RecordProperty("max_abs_logit_error", absl::StrCat(worst_all));

  // Batch independence: the first image alone gives the same answer as in the batch.
  absl::StatusOr<std::vector<ImageResult>> single =
      (*model)->Run(absl::MakeConstSpan(batch.data(), 1), keep_rate);
  ASSERT_TRUE(single.ok()) << single.status();
  ASSERT_EQ(single->size(), 1u);
  EXPECT_EQ((*single)[0].tokens_per_stage, (*got)[0].tokens_per_stage) << what;
  for (int64_t c = 0; c < classes; ++c) {
    EXPECT_NEAR((*single)[0].logits[c], want_logits.values[c], max_error)
        << what << " batch of 1, class " << c;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenTest, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// Image inputs: three PNGs (make_golden.py: other sizes, landscape and portrait, photo-like
// texture) through the server's Preprocessor with the timm defaults (decode, Pillow-exact
// bicubic resize to 256, crop 224, ImageNet normalisation) against the same PNGs through
// timm's eval transform with PIL in Python (image_inputs.safetensors). The tensors must be
// bit-identical, and every case must then give the same logits (to kMaxLogitError, the
// tensor cases' bound), top-1 and token counts through `image` as through `tensor`.
class GoldenImageTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenImageTest, ImageInputMatchesPilPipeline) {
  LoadedCase lc;
  ASSERT_NO_FATAL_FAILURE(LoadCase(GetParam(), &lc));
  if (!lc.skip.empty()) GTEST_SKIP() << lc.skip;
  absl::StatusOr<std::unique_ptr<Preprocessor>> pre =
      Preprocessor::Create(PreprocessSpec(), lc.spec.arch, PreprocessorOptions());
  ASSERT_TRUE(pre.ok()) << pre.status();
  auto pil_inputs = ReadSafetensors(FixtureDir() + "/image_inputs.safetensors");
  ASSERT_TRUE(pil_inputs.ok()) << pil_inputs.status();
  const std::vector<ImageTensor> pil = SplitImages(pil_inputs->at("images"));
  std::vector<ImageTensor> served;
  for (size_t i = 0; i < pil.size(); ++i) {
    absl::StatusOr<std::string> png = ReadFile(absl::StrCat(FixtureDir(), "/image_", i, ".png"));
    ASSERT_TRUE(png.ok()) << png.status();
    absl::StatusOr<ImageTensor> t = (*pre)->FromEncoded(*png);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->data.size(), pil[i].data.size());
    size_t differing = 0;
    for (size_t k = 0; k < t->data.size(); ++k) differing += t->data[k] != pil[i].data[k];
    EXPECT_EQ(differing, 0u) << "image_" << i << ".png: tensor values differing from PIL's";
    served.push_back(*std::move(t));
  }
  std::vector<const ImageTensor*> pil_batch, served_batch;
  for (size_t i = 0; i < pil.size(); ++i) {
    pil_batch.push_back(&pil[i]);
    served_batch.push_back(&served[i]);
  }
  const float keep_rate = static_cast<float>(lc.row.keep_rate);
  absl::StatusOr<std::vector<ImageResult>> want = lc.model->Run(pil_batch, keep_rate);
  absl::StatusOr<std::vector<ImageResult>> got = lc.model->Run(served_batch, keep_rate);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();
  double worst = 0.0;
  for (size_t b = 0; b < pil.size(); ++b) {
    const std::vector<float>& w = (*want)[b].logits;
    const std::vector<float>& g = (*got)[b].logits;
    ASSERT_EQ(w.size(), g.size());
    for (size_t c = 0; c < w.size(); ++c) worst = std::max(worst, double{std::abs(w[c] - g[c])});
    EXPECT_EQ(std::max_element(g.begin(), g.end()) - g.begin(),
              std::max_element(w.begin(), w.end()) - w.begin())
        << "top-1 differs for image_" << b;
    EXPECT_EQ((*got)[b].tokens_per_stage, (*want)[b].tokens_per_stage) << "image_" << b;
  }
  EXPECT_LE(worst, kMaxLogitError);
  RecordProperty("max_abs_logit_diff_image_vs_pil", absl::StrCat(worst));
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenImageTest, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// The generator and this binary read the same cases.txt; the manifest must list them all.
TEST(GoldenManifest, ListsEveryCase) {
  absl::StatusOr<std::vector<ManifestRow>> rows = ReadManifest();
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<std::string> names;
  for (const ManifestRow& r : *rows) names.push_back(r.name);
  EXPECT_EQ(names, CaseNames());
  EXPECT_FALSE(names.empty());
}

}  // namespace
}  // namespace vitserve
