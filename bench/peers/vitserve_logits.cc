// Prints vitserve's logits for a model directory, for the peer benchmark's export check
// (bench/peers/check_export.sh): the ONNX export must agree with the executor itself.
//
// Usage: vitserve_logits --model_dir=models/fashion-vit --method=dense --keep_rate=1
//          [--tome_r=-1] --input=FILE
// FILE (written by export.py --check): first line "B C H W", then B*C*H*W floats
// (preprocessed images). Output: B lines of num_classes logits. The model is the
// directory's config.pbtxt and weights with the pruning method replaced by --method
// (locations: the config's for its own method, the method's defaults otherwise).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/model_repository.h"
#include "server/model/vit_inference_model.h"

ABSL_FLAG(std::string, model_dir, "models/fashion-vit", "model directory (config.pbtxt)");
ABSL_FLAG(std::string, method, "dense", "pruning method to run");
ABSL_FLAG(double, keep_rate, 1.0, "keep-rate");
ABSL_FLAG(int, tome_r, -1, "ToMe merges per block (-1: from the keep-rate)");
ABSL_FLAG(std::string, input, "", "input images file (see above)");

namespace vitserve {
namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "vitserve_logits: %s\n", what.c_str());
  return 1;
}

int Main() {
  const std::filesystem::path dir(absl::GetFlag(FLAGS_model_dir));
  std::ifstream config_in(dir / "config.pbtxt");
  std::stringstream text;
  text << config_in.rdbuf();
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(text.str(), dir.string());
  if (!spec.ok()) return Fail(spec.status().ToString());
  absl::StatusOr<Method> method = ParseMethod(absl::GetFlag(FLAGS_method));
  if (!method.ok()) return Fail(method.status().ToString());
  if (*method != spec->pruning.method) spec->pruning.locations.clear();
  spec->pruning.method = *method;
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(spec->weights_path);
  if (!ckpt.ok()) return Fail(ckpt.status().ToString());
  PrunerOptions pruner;
  pruner.tome_r = absl::GetFlag(FLAGS_tome_r);
  absl::StatusOr<std::unique_ptr<InferenceModel>> model =
      CreateInferenceModel(*spec, ckpt->model, ModelLoadOptions{}, pruner);
  if (!model.ok()) return Fail(model.status().ToString());

  std::ifstream in(absl::GetFlag(FLAGS_input));
  int b = 0, c = 0, h = 0, w = 0;
  if (!(in >> b >> c >> h >> w) || b <= 0) return Fail("bad input header");
  std::vector<ImageTensor> images(static_cast<size_t>(b));
  std::vector<const ImageTensor*> ptrs;
  for (ImageTensor& img : images) {
    img.channels = c;
    img.height = h;
    img.width = w;
    img.data.resize(static_cast<size_t>(c) * h * w);
    for (float& v : img.data) {
      if (!(in >> v)) return Fail("input file too short");
    }
    ptrs.push_back(&img);
  }
  absl::StatusOr<std::vector<ImageResult>> out =
      (*model)->Run(ptrs, static_cast<float>(absl::GetFlag(FLAGS_keep_rate)));
  if (!out.ok()) return Fail(out.status().ToString());
  for (const ImageResult& r : *out) {
    for (size_t i = 0; i < r.logits.size(); ++i) {
      std::printf("%s%.9g", i ? " " : "", r.logits[i]);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return vitserve::Main();
}
