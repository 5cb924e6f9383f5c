#include "tests/integration/test_model_repository.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/checkpoint/checkpoint.h"
#include "server/spec/model_spec.h"
#include "server/vit/vit_module.h"

namespace vitserve {
namespace {

namespace fs = std::filesystem;

absl::Status WriteFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTestModel(const std::string& repo, const TestModelOptions& o) {
  const fs::path dir = fs::path(repo) / o.name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));

  Architecture arch;
  arch.image_size = o.image_size;
  arch.patch_size = o.patch_size;
  arch.in_chans = 3;
  arch.embed_dim = o.embed_dim;
  arch.depth = o.depth;
  arch.num_heads = o.num_heads;
  arch.mlp_ratio = 4.0;
  arch.num_classes = o.num_classes;
  PruningSpec pruning;
  absl::StatusOr<Method> method = ParseMethod(o.method);
  if (!method.ok()) return method.status();
  pruning.method = *method;

  // The module itself says which tensors a checkpoint of this spec holds.
  torch::manual_seed(o.seed);
  Vit vit(VitOptions::FromSpec(arch, pruning));
  StateDict weights;
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : vit->named_parameters()) {
      weights[item.key()] = item.value().detach().clone().contiguous();
    }
    for (const auto& item : vit->named_buffers()) {
      weights[item.key()] = item.value().detach().clone().contiguous();
    }
  }
  if (absl::Status s = SaveSafetensors(weights, (dir / "model.safetensors").string()); !s.ok()) {
    return s;
  }

  std::vector<std::string> labels;
  for (int i = 0; i < o.num_classes; ++i) labels.push_back(absl::StrCat("class_", i));
  if (absl::Status s = WriteFile(dir / "labels.txt", absl::StrJoin(labels, "\n") + "\n"); !s.ok()) {
    return s;
  }

  const std::string config = absl::StrCat("name: \"", o.name, "\"\n",                          //
                                          "version: \"", o.version, "\"\n",                    //
                                          "architecture {\n",                                  //
                                          "  image_size: ", o.image_size, "\n",                //
                                          "  patch_size: ", o.patch_size, "\n",                //
                                          "  in_chans: 3\n",                                   //
                                          "  embed_dim: ", o.embed_dim, "\n",                  //
                                          "  depth: ", o.depth, "\n",                          //
                                          "  num_heads: ", o.num_heads, "\n",                  //
                                          "  mlp_ratio: 4\n",                                  //
                                          "  num_classes: ", o.num_classes, "\n",              //
                                          "}\n",                                               //
                                          "preprocessing {\n",                                 //
                                          "  crop_pct: 0.875\n",                               //
                                          "  interpolation: \"bicubic\"\n",                    //
                                          "  mean: [0.485, 0.456, 0.406]\n",                   //
                                          "  std: [0.229, 0.224, 0.225]\n",                    //
                                          "}\n",                                               //
                                          "pruning {\n",                                       //
                                          "  method: \"", o.method, "\"\n",                    //
                                          "  default_keep_rate: ", o.default_keep_rate, "\n",  //
                                          "  min_keep_rate: ", o.min_keep_rate, "\n",          //
                                          "  max_keep_rate: ", o.max_keep_rate, "\n",          //
                                          "}\n",                                               //
                                          "weights: \"model.safetensors\"\n",                  //
                                          "labels: \"labels.txt\"\n");
  return WriteFile(dir / "config.pbtxt", config);
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "XXXXXX");
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp(", pattern, ") failed"));
  }
  return std::string(buf.data());
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace vitserve
