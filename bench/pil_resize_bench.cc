// PilResize (Pillow-exact, antialiased) against OpenCV's cv::resize on the resizes a
// request does: shorter side to 256 from typical photo sizes, and a squash to 224.
// One thread (cv::setNumThreads(1)); rounds interleave the kernels; prints the median and
// the min-max of the per-call time over the rounds. bench/results/pil-resize.md.
//   pil_resize_bench [--rounds=N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "opencv2/core.hpp"
#include "opencv2/imgproc.hpp"
#include "server/preprocess/pil_resize.h"

namespace {

struct Case {
  int w, h, ow, oh;
};

cv::Mat RandomImage(int w, int h, std::mt19937* rng) {
  cv::Mat m(h, w, CV_8UC3);
  std::uniform_int_distribution<int> d(0, 255);
  for (int y = 0; y < h; ++y) {
    uint8_t* p = m.ptr<uint8_t>(y);
    for (int x = 0; x < w * 3; ++x) p[x] = static_cast<uint8_t>((x / 3 + y + d(*rng) / 4) & 255);
  }
  return m;
}

double TimeOnce(const std::function<void()>& f, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 7;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--rounds=", 9) == 0) rounds = std::atoi(argv[i] + 9);
  }
  cv::setNumThreads(1);
  std::mt19937 rng(1);
  const std::vector<Case> cases = {{500, 375, 341, 256},   {1024, 768, 341, 256},
                                   {1920, 1080, 455, 256}, {4000, 3000, 341, 256},
                                   {640, 480, 224, 224},   {200, 150, 341, 256}};
  std::printf("| input | output | kernel | median ms | min-max ms |\n|---|---|---|---|---|\n");
  for (const Case& c : cases) {
    const cv::Mat img = RandomImage(c.w, c.h, &rng);
    const vitserve::Image8View view{img.data, img.cols, img.rows, 3, img.step[0]};
    cv::Mat out;
    const std::vector<std::pair<std::string, std::function<void()>>> kernels = {
        {"PilResize bicubic",
         [&] { (void)vitserve::PilResize(view, c.ow, c.oh, vitserve::PilFilter::kBicubic); }},
        {"PilResize bilinear",
         [&] { (void)vitserve::PilResize(view, c.ow, c.oh, vitserve::PilFilter::kBilinear); }},
        {"cv INTER_CUBIC",
         [&] {
           cv::resize(img, out, {c.ow, c.oh}, 0, 0, cv::INTER_CUBIC);
         }},
        {"cv INTER_LINEAR",
         [&] {
           cv::resize(img, out, {c.ow, c.oh}, 0, 0, cv::INTER_LINEAR);
         }},
        {"cv INTER_AREA", [&] {
           cv::resize(img, out, {c.ow, c.oh}, 0, 0, cv::INTER_AREA);
         }}};
    const int reps = std::max(1, 3'000'000 / (c.w * c.h));
    std::vector<std::vector<double>> t(kernels.size());
    for (auto& k : kernels) k.second();  // warm-up
    for (int r = 0; r < rounds; ++r) {
      for (size_t k = 0; k < kernels.size(); ++k) t[k].push_back(TimeOnce(kernels[k].second, reps));
    }
    for (size_t k = 0; k < kernels.size(); ++k) {
      std::sort(t[k].begin(), t[k].end());
      std::printf("| %dx%d | %dx%d | %s | %.3f | %.3f-%.3f |\n", c.w, c.h, c.ow, c.oh,
                  kernels[k].first.c_str(), t[k][t[k].size() / 2], t[k].front(), t[k].back());
    }
  }
  return 0;
}
