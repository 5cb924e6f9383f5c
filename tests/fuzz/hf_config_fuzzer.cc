// Fuzzes the Hugging Face JSON readers (hf_config.h): config.json and
// preprocessor_config.json come from model directories people download. The first byte
// picks the parser (even: ParseHfConfig, odd: ParseHfPreprocessorConfig with a ViT-B/16
// architecture), the rest is the JSON text.
//
// Properties: no crash, leak or undefined behaviour on any input; failures are
// INVALID_ARGUMENT; an accepted config.json gives positive sizes that divide, a known
// class, labels matching num_classes and an eps in (0, 1); an accepted preprocessor config
// gives one finite mean and positive std per channel, a positive rescale factor and a
// geometry whose output covers image_size.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/checkpoint/hf_config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

void CheckConfig(absl::string_view text) {
  absl::StatusOr<vitserve::HfModelConfig> c = vitserve::ParseHfConfig(text);
  if (!c.ok()) {
    FUZZ_CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  const vitserve::Architecture& a = c->arch;
  FUZZ_CHECK(a.embed_dim > 0 && a.depth > 0 && a.num_heads > 0 && a.patch_size > 0);
  FUZZ_CHECK(a.image_size % a.patch_size == 0 && a.embed_dim % a.num_heads == 0);
  FUZZ_CHECK(a.mlp_hidden() > 0);
  FUZZ_CHECK(static_cast<int>(c->labels.size()) == a.num_classes && a.num_classes > 0);
  FUZZ_CHECK(a.norm_eps > 0.0 && a.norm_eps < 1.0);
  FUZZ_CHECK(c->hf_class == vitserve::kHfVit || c->hf_class == vitserve::kHfDeit ||
             c->hf_class == vitserve::kHfDeitTeacher);
}

void CheckPreprocessor(absl::string_view text) {
  vitserve::Architecture arch;
  arch.embed_dim = 768;
  arch.num_heads = 12;
  absl::StatusOr<vitserve::HfPreprocessConfig> p = vitserve::ParseHfPreprocessorConfig(text, arch);
  if (!p.ok()) {
    FUZZ_CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  const vitserve::PreprocessSpec& s = p->preprocess;
  FUZZ_CHECK(s.mean.size() == 3 && s.std.size() == 3);
  for (int c = 0; c < 3; ++c) FUZZ_CHECK(std::isfinite(s.mean[c]) && s.std[c] > 0.0f);
  FUZZ_CHECK(s.rescale_factor > 0.0 && std::isfinite(s.rescale_factor));
  if (s.resize_height != 0) {
    FUZZ_CHECK(s.resize_height >= arch.image_size && s.resize_width >= arch.image_size);
  }
  if (s.resize != 0) FUZZ_CHECK(s.resize >= arch.image_size && s.crop != "none");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    CheckConfig(text);
  } else {
    CheckPreprocessor(text);
  }
  return 0;
}
