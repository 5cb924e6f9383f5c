// Fuzzes ParseModelSpec(): config.pbtxt (protobuf text format) parsing and validation.
// The input is the config text; the model directory is a fixture made once per process
// (weights, a 10-line and a 3-line labels file, a calibration curve) so that configs
// naming those files get past the file checks. An input starting with "#calibration\n"
// is instead written to a file and read with ReadCalibration(), the other text-format
// parser of the repository.
//
// Properties: no crash, leak or undefined behaviour on any input; failures are
// INVALID_ARGUMENT (or NOT_FOUND for a missing calibration file); a spec that validates
// keeps every promise of model_repository.h: positive dimensions that divide, keep rates
// ordered in (0, 1], locations increasing and inside the model, one mean/std per channel,
// labels matching num_classes, files inside the model directory, and the architecture's
// derived sizes (patches, head_dim, mlp_hidden) computable in int without overflow.
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/model_repository.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kCalibrationMode = "#calibration\n";

// <tmp>/vitserve_fuzz_model_spec.XXXXXX/fashion-vit
std::string* model_dir = nullptr;
std::string* root_dir = nullptr;

void WriteFile(const fs::path& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  FUZZ_CHECK(out.good());
}

void RemoveFixture() {
  std::error_code ec;
  if (root_dir != nullptr) fs::remove_all(*root_dir, ec);
}

void CheckSpec(const vitserve::ModelSpec& spec) {
  const vitserve::Architecture& a = spec.arch;
  FUZZ_CHECK(a.image_size > 0 && a.patch_size > 0 && a.in_chans > 0 && a.embed_dim > 0 &&
             a.depth > 0 && a.num_heads > 0 && a.num_classes > 0);
  FUZZ_CHECK(a.image_size % a.patch_size == 0 && a.embed_dim % a.num_heads == 0);
  FUZZ_CHECK(a.mlp_ratio > 0.0 && std::isfinite(a.mlp_ratio));
  // What the model and cost model compute from the architecture must fit an int.
  FUZZ_CHECK(a.embed_dim * a.mlp_ratio <= std::numeric_limits<int>::max());
  const int64_t side = a.image_size / a.patch_size;
  FUZZ_CHECK(side * side <= std::numeric_limits<int>::max());
  FUZZ_CHECK(a.num_patches() > 0 && a.head_dim() > 0 && a.mlp_hidden() >= 0);

  const vitserve::PruningSpec& p = spec.pruning;
  FUZZ_CHECK(0.0f < p.min_keep_rate && p.min_keep_rate <= p.default_keep_rate &&
             p.default_keep_rate <= p.max_keep_rate && p.max_keep_rate <= 1.0f);
  for (size_t i = 0; i < p.locations.size(); ++i) {
    FUZZ_CHECK(p.locations[i] >= 0 && p.locations[i] < a.depth);
    if (i > 0) FUZZ_CHECK(p.locations[i - 1] < p.locations[i]);
  }
  FUZZ_CHECK(p.attn_ratio >= 0.0f && p.attn_ratio <= 1.0f);

  const vitserve::PreprocessSpec& pre = spec.preprocess;
  FUZZ_CHECK(pre.mean.size() == static_cast<size_t>(a.in_chans));
  FUZZ_CHECK(pre.std.size() == static_cast<size_t>(a.in_chans));
  for (const float s : pre.std) FUZZ_CHECK(s > 0.0f);
  FUZZ_CHECK(pre.crop_pct > 0.0f && pre.crop_pct <= 1.0f);
  FUZZ_CHECK(pre.resize == 0 || pre.resize >= a.image_size);
  FUZZ_CHECK(pre.grayscale == (a.in_chans == 1));

  const std::string inside = spec.dir + "/";
  FUZZ_CHECK(absl::StartsWith(spec.weights_path, inside));
  if (!spec.labels_path.empty()) {
    FUZZ_CHECK(absl::StartsWith(spec.labels_path, inside));
    FUZZ_CHECK(spec.labels.size() == static_cast<size_t>(a.num_classes));
  }
  if (!spec.calibration_path.empty()) {
    FUZZ_CHECK(absl::StartsWith(spec.calibration_path, inside));
  }
  for (const vitserve::CalibrationPoint& c : spec.calibration) {
    FUZZ_CHECK(c.keep_rate > 0.0f && c.keep_rate <= 1.0f);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  std::string tmpl = (fs::temp_directory_path() / "vitserve_fuzz_model_spec.XXXXXX").string();
  FUZZ_CHECK(mkdtemp(tmpl.data()) != nullptr);
  root_dir = new std::string(tmpl);
  const fs::path dir = fs::path(tmpl) / "fashion-vit";
  fs::create_directories(dir);
  model_dir = new std::string(dir.string());
  // Only existence is checked for the weights.
  WriteFile(dir / "model.safetensors", std::string(8, '\0'));
  WriteFile(dir / "labels.txt",
            "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\n"
            "Ankle boot\n");
  WriteFile(dir / "labels3.txt", "a\nb\n\n  c  \n\n");
  WriteFile(dir / "calibration.pbtxt",
            "dataset: \"fashion-mnist/test\"\nnum_examples: 10000\n"
            "points { method: \"dense\" keep_rate: 1 top1: 0.8244 agreement: 1 macs: 6220608 }\n"
            "points { method: \"dynamicvit\" keep_rate: 0.5 top1: 0.61 agreement: 0.7 }\n");
  std::atexit(RemoveFixture);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (absl::StartsWith(text, kCalibrationMode)) {
    // Outside the model directory, so that no config can name it.
    const std::string path = *root_dir + "/fuzz_calibration.pbtxt";
    WriteFile(path, absl::string_view(text).substr(kCalibrationMode.size()));
    const absl::StatusOr<std::vector<vitserve::CalibrationPoint>> points =
        vitserve::ReadCalibration(path);
    if (!points.ok()) {
      FUZZ_CHECK(points.status().code() == absl::StatusCode::kInvalidArgument);
      return 0;
    }
    for (const vitserve::CalibrationPoint& c : *points) {
      FUZZ_CHECK(c.keep_rate > 0.0f && c.keep_rate <= 1.0f);
      FUZZ_CHECK(c.top1 >= 0.0 && c.top1 <= 1.0 && c.agreement >= 0.0 && c.agreement <= 1.0);
    }
    return 0;
  }
  const absl::StatusOr<vitserve::ModelSpec> spec = vitserve::ParseModelSpec(text, *model_dir);
  if (!spec.ok()) {
    FUZZ_CHECK(spec.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  CheckSpec(*spec);
  return 0;
}
