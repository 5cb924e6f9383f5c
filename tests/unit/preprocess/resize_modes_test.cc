// PilResize's contract (pil_resize.h) on hand-checkable inputs, and the Hugging Face resize
// and crop modes of the Preprocessor (squash, floor crop, no crop). Pixel-for-pixel parity
// with Pillow on random images is pil_parity_test.py's job.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "server/preprocess/pil_resize.h"
#include "server/preprocess/preprocessor.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

Image8View View(const std::vector<uint8_t>& data, int w, int h, int c) {
  return Image8View{data.data(), w, h, c, static_cast<size_t>(w) * c};
}

TEST(PilResizeTest, ConstantImagesStayConstantWithEveryFilter) {
  const std::vector<uint8_t> flat(37 * 23 * 3, 77);
  for (PilFilter f : {PilFilter::kBilinear, PilFilter::kBicubic, PilFilter::kLanczos,
                      PilFilter::kBox, PilFilter::kHamming}) {
    for (const auto& [w, h] : std::vector<std::pair<int, int>>{{5, 4}, {100, 61}, {37, 9}}) {
      absl::StatusOr<Image8> out = PilResize(View(flat, 37, 23, 3), w, h, f);
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(out->data, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3, 77))
          << PilFilterName(f) << " " << w << "x" << h;
    }
  }
}

// 4 -> 2 pixels, bilinear: scale 2, support 2; output 0 is centred at 1.0 and weighs
// pixels 0..2 with the triangle (x - 1 + 0.5) / 2 -> 0.75, 0.75, 0.25 (normalised: 3/7,
// 3/7, 1/7): (0 * 3 + 70 * 3 + 140) / 7 = 50. Output 1: pixels 1..3, weights 1/7, 3/7,
// 3/7: (70 + 140 * 3 + 210 * 3) / 7 = 160. OpenCV's INTER_LINEAR gives 35 and 175.
TEST(PilResizeTest, DownscaleAntialiasesWithTheWidenedTriangle) {
  const std::vector<uint8_t> row = {0, 70, 140, 210};
  absl::StatusOr<Image8> out = PilResize(View(row, 4, 1, 1), 2, 1, PilFilter::kBilinear);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->data, (std::vector<uint8_t>{50, 160}));
}

TEST(PilResizeTest, RefusesBadArguments) {
  const std::vector<uint8_t> px(4, 0);
  EXPECT_FALSE(PilResize(View(px, 2, 2, 1), 0, 3, PilFilter::kBicubic).ok());
  EXPECT_FALSE(PilResize(View(px, 1, 1, 5), 3, 3, PilFilter::kBicubic).ok());
  EXPECT_FALSE(PilResize(Image8View{}, 3, 3, PilFilter::kBicubic).ok());
  EXPECT_FALSE(ParsePilFilter("mitchell").ok());
  EXPECT_EQ(*ParsePilFilter("hamming"), PilFilter::kHamming);
}

// Gray image whose pixel value encodes its column: value = 8 * column.
std::string ColumnRampPng(int width, int height) {
  cv::Mat img(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) img.at<uint8_t>(y, x) = static_cast<uint8_t>(8 * x);
  }
  std::vector<uchar> buf;
  cv::imencode(".png", img, buf);
  return std::string(buf.begin(), buf.end());
}

std::unique_ptr<Preprocessor> GrayPreprocessor(PreprocessSpec spec, int image_size) {
  spec.grayscale = true;
  spec.mean = {0.0f};
  spec.std = {1.0f};
  Architecture arch;
  arch.image_size = image_size;
  arch.patch_size = image_size;
  arch.in_chans = 1;
  absl::StatusOr<std::unique_ptr<Preprocessor>> p =
      Preprocessor::Create(spec, arch, PreprocessorOptions());
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

// Hugging Face's center_crop: floor((11 - 8) / 2) = 1 (torchvision's rule would give 2).
// The squash to the image's own size resamples nothing (as PIL's resize at the same size).
TEST(ResizeModesTest, SquashWithFloorCropLikeHuggingFace) {
  PreprocessSpec spec;
  spec.resize_height = 8;
  spec.resize_width = 11;
  spec.crop = "center_floor";
  auto p = GrayPreprocessor(spec, 8);
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(ColumnRampPng(11, 8));
  ASSERT_TRUE(t.ok()) << t.status();
  for (int x = 0; x < 8; ++x) {
    EXPECT_FLOAT_EQ(t->data[3 * 8 + x], static_cast<float>(8 * (x + 1)) / 255.0f) << "x " << x;
  }
  EXPECT_EQ(CenterCropOffsetFloor(11, 8), 1);
  EXPECT_EQ(CenterCropOffsetFloor(341, 224), 58);
}

// crop "none": the resized image is the model input; with skip_resize the image itself
// must already have the model's size.
TEST(ResizeModesTest, NoCropNeedsTheExactSize) {
  PreprocessSpec spec;
  spec.skip_resize = true;
  spec.crop = "none";
  auto p = GrayPreprocessor(spec, 8);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->FromEncoded(ColumnRampPng(8, 8)).ok());
  absl::StatusOr<ImageTensor> t = p->FromEncoded(ColumnRampPng(9, 8));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("needs exactly 8x8"));
}

}  // namespace
}  // namespace vitserve
