// Test helper for pil_parity_test.py: runs vitserve's resize / preprocessing on files so
// that Python can compare them with Pillow (+ torchvision / Hugging Face arithmetic).
//   pil_parity_tool resize IN.raw W H C OUT_W OUT_H FILTER OUT.raw
//       IN.raw: H*W*C interleaved bytes; writes OUT_H*OUT_W*C bytes.
//   pil_parity_tool preprocess IN.img OUT.f32 KEY=VALUE...
//       keys: image_size, gray (0/1), resize, crop_pct, resize_height, resize_width,
//       crop, interpolation, rescale_factor; writes the CHW float32 tensor (mean 0, std 1
//       unless mean=/std= given as comma lists).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "server/preprocess/pil_resize.h"
#include "server/preprocess/preprocessor.h"

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteAll(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  return static_cast<bool>(out);
}

int Resize(char** argv) {
  const std::string raw = ReadAll(argv[2]);
  const int w = std::stoi(argv[3]), h = std::stoi(argv[4]), c = std::stoi(argv[5]);
  const int ow = std::stoi(argv[6]), oh = std::stoi(argv[7]);
  absl::StatusOr<vitserve::PilFilter> f = vitserve::ParsePilFilter(argv[8]);
  if (!f.ok() || raw.size() != static_cast<size_t>(w) * h * c) {
    std::cerr << "bad arguments\n";
    return 2;
  }
  const vitserve::Image8View view{reinterpret_cast<const uint8_t*>(raw.data()), w, h, c,
                                  static_cast<size_t>(w) * c};
  absl::StatusOr<vitserve::Image8> out = vitserve::PilResize(view, ow, oh, *f);
  if (!out.ok()) {
    std::cerr << out.status() << "\n";
    return 1;
  }
  return WriteAll(argv[9], out->data.data(), out->data.size()) ? 0 : 1;
}

std::vector<float> Floats(const std::string& list) {
  std::vector<float> v;
  for (absl::string_view p : absl::StrSplit(list, ',')) {
    float x = 0;
    if (absl::SimpleAtof(p, &x)) v.push_back(x);
  }
  return v;
}

int Preprocess(int argc, char** argv) {
  vitserve::PreprocessSpec spec;
  vitserve::Architecture arch;
  spec.mean.clear();
  spec.std.clear();
  for (int i = 4; i < argc; ++i) {
    const std::vector<std::string> kv = absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    const std::string& k = kv[0];
    const std::string v = kv.size() > 1 ? kv[1] : "";
    if (k == "image_size") arch.image_size = std::stoi(v);
    if (k == "gray") spec.grayscale = v == "1";
    if (k == "resize") spec.resize = std::stoi(v);
    if (k == "crop_pct") spec.crop_pct = std::stof(v);
    if (k == "resize_height") spec.resize_height = std::stoi(v);
    if (k == "resize_width") spec.resize_width = std::stoi(v);
    if (k == "crop") spec.crop = v;
    if (k == "interpolation") spec.interpolation = v;
    if (k == "rescale_factor") spec.rescale_factor = std::stod(v);
    if (k == "mean") spec.mean = Floats(v);
    if (k == "std") spec.std = Floats(v);
  }
  arch.in_chans = spec.grayscale ? 1 : 3;
  if (spec.mean.empty()) spec.mean.assign(arch.in_chans, 0.0f);
  if (spec.std.empty()) spec.std.assign(arch.in_chans, 1.0f);
  auto pre = vitserve::Preprocessor::Create(spec, arch, vitserve::PreprocessorOptions{});
  if (!pre.ok()) {
    std::cerr << pre.status() << "\n";
    return 1;
  }
  absl::StatusOr<vitserve::ImageTensor> t = (*pre)->FromEncoded(ReadAll(argv[2]));
  if (!t.ok()) {
    std::cerr << t.status() << "\n";
    return 1;
  }
  return WriteAll(argv[3], t->data.data(), t->data.size() * sizeof(float)) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "resize" && argc == 10) return Resize(argv);
  if (cmd == "preprocess" && argc >= 4) return Preprocess(argc, argv);
  std::cerr << "usage: see the comment at the top of pil_parity_tool.cc\n";
  return 2;
}
