// Fuzzes the whole path of an encoded image: Preprocessor::FromEncoded() = header probe,
// pixel limit, cv::imdecode, channel conversion, resize, crop, normalise. Two
// preprocessors see every input: models/fashion-vit's (28x28 gray, area) and an RGB one
// (32x32, bicubic, resize 36). The pixel limit is 2^20 so that one input cannot make the
// decoder allocate more than a few MB legitimately; an input that makes it allocate far
// more than the header promised shows up as an out-of-memory finding (-rss_limit_mb).
//
// Properties: no crash or out-of-bounds access in vitserve's code (OpenCV and the codecs
// are not instrumented, so only crashes are seen inside them); failures are
// INVALID_ARGUMENT; a success is a finite [C, S, S] tensor.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/preprocess/preprocessor.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr int64_t kFuzzMaxImagePixels = int64_t{1} << 20;

std::unique_ptr<vitserve::Preprocessor> MakePreprocessor(bool grayscale) {
  vitserve::Architecture arch;
  vitserve::PreprocessSpec spec;
  if (grayscale) {
    arch.image_size = 28;
    arch.patch_size = 4;
    arch.in_chans = 1;
    spec.resize = 28;
    spec.crop_pct = 1.0f;
    spec.interpolation = "area";
    spec.mean = {0.286f};
    spec.std = {0.353f};
    spec.grayscale = true;
  } else {
    arch.image_size = 32;
    arch.patch_size = 4;
    spec.resize = 36;
  }
  vitserve::PreprocessorOptions opts;
  opts.max_image_pixels = kFuzzMaxImagePixels;
  absl::StatusOr<std::unique_ptr<vitserve::Preprocessor>> p =
      vitserve::Preprocessor::Create(spec, arch, opts);
  FUZZ_CHECK(p.ok());
  return *std::move(p);
}

void Check(const vitserve::Preprocessor& p, absl::string_view bytes) {
  const absl::StatusOr<vitserve::ImageTensor> t = p.FromEncoded(bytes);
  if (!t.ok()) {
    FUZZ_CHECK(t.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(t->channels == p.channels() && t->height == p.image_size() &&
             t->width == p.image_size());
  FUZZ_CHECK(t->data.size() == static_cast<size_t>(t->channels) * t->height * t->width);
  for (const float v : t->data) FUZZ_CHECK(std::isfinite(v));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const vitserve::Preprocessor* const gray = MakePreprocessor(true).release();
  static const vitserve::Preprocessor* const rgb = MakePreprocessor(false).release();
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  Check(*gray, bytes);
  Check(*rgb, bytes);
  return 0;
}
