#include "server/preprocess/preprocessor.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"

namespace vitserve {
namespace {

using ::absl::StatusCode;
using ::testing::HasSubstr;

constexpr double kTol = 1e-6;
// ImageNet defaults (timm), restated here so the expected values are independent.
constexpr double kMean[3] = {0.485, 0.456, 0.406};
constexpr double kStd[3] = {0.229, 0.224, 0.225};

std::string Encode(const cv::Mat& img, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, img, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

Architecture Arch(int image_size, int in_chans = 3) {
  Architecture a;
  a.image_size = image_size;
  a.in_chans = in_chans;
  return a;
}

// A spec that maps the shorter side to exactly image_size: no resampling happens when
// the input's shorter side already equals it.
PreprocessSpec NoResizeSpec() {
  PreprocessSpec s;
  s.crop_pct = 1.0f;
  return s;
}

PreprocessSpec GraySpec() {
  PreprocessSpec s = NoResizeSpec();
  s.grayscale = true;
  s.mean = {0.5f};
  s.std = {0.25f};
  return s;
}

std::unique_ptr<Preprocessor> Make(const PreprocessSpec& spec, const Architecture& arch,
                                   const PreprocessorOptions& opts = {}) {
  auto p = Preprocessor::Create(spec, arch, opts);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : nullptr;
}

double Normalised(double v8, double mean, double stddev) { return (v8 / 255.0 - mean) / stddev; }

float At(const ImageTensor& t, int c, int y, int x) {
  return t.data[(static_cast<size_t>(c) * t.height + y) * t.width + x];
}

// Every value of channel c equals `expected` (within float rounding).
void ExpectConstantChannel(const ImageTensor& t, int c, double expected) {
  for (int y = 0; y < t.height; ++y) {
    for (int x = 0; x < t.width; ++x) {
      ASSERT_NEAR(At(t, c, y, x), expected, kTol) << "c=" << c << " y=" << y << " x=" << x;
    }
  }
}

// ---- Decoding of every accepted format -------------------------------------------------

struct LosslessCase {
  std::string ext;
  std::vector<int> params;
};

class LosslessFormatTest : public ::testing::TestWithParam<LosslessCase> {};

TEST_P(LosslessFormatTest, ConstantColourNormalisedExactly) {
  // 12 wide x 8 high, BGR (30, 100, 200) = RGB (200, 100, 30); image_size 8: the shorter
  // side already is 8, so values pass through unresampled; crop offset (12 - 8) / 2 = 2.
  const cv::Mat img(8, 12, CV_8UC3, cv::Scalar(30, 100, 200));
  auto p = Make(NoResizeSpec(), Arch(8));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, GetParam().ext, GetParam().params));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channels, 3);
  EXPECT_EQ(t->height, 8);
  EXPECT_EQ(t->width, 8);
  ASSERT_EQ(t->data.size(), 3u * 8 * 8);
  // Hand-computed: (200/255 - 0.485)/0.229 = 1.30705..., (100/255 - 0.456)/0.224 = -0.28501...,
  // (30/255 - 0.406)/0.225 = -1.28156...
  ExpectConstantChannel(*t, 0, 1.3070468);
  ExpectConstantChannel(*t, 1, -0.2850140);
  ExpectConstantChannel(*t, 2, -1.2815686);
}

INSTANTIATE_TEST_SUITE_P(Formats, LosslessFormatTest,
                         ::testing::Values(LosslessCase{".png", {}}, LosslessCase{".bmp", {}},
                                           LosslessCase{".tiff", {}},
                                           LosslessCase{".webp", {cv::IMWRITE_WEBP_QUALITY, 101}}),
                         [](const ::testing::TestParamInfo<LosslessCase>& info) {
                           return info.param.ext.substr(1);
                         });

TEST(PreprocessorTest, LossyFormatsDecodeCloseToTheSource) {
  const cv::Mat img(16, 24, CV_8UC3, cv::Scalar(30, 100, 200));
  auto p = Make(NoResizeSpec(), Arch(16));
  ASSERT_NE(p, nullptr);
  for (const char* ext : {".jpg", ".webp"}) {
    absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ext));
    ASSERT_TRUE(t.ok()) << ext << ": " << t.status();
    // Lossy codecs move a flat colour by a few levels at most; 6 levels of slack.
    const double slack = 6.0 / 255.0;
    EXPECT_NEAR(At(*t, 0, 5, 5), Normalised(200, kMean[0], kStd[0]), slack / kStd[0]) << ext;
    EXPECT_NEAR(At(*t, 1, 5, 5), Normalised(100, kMean[1], kStd[1]), slack / kStd[1]) << ext;
    EXPECT_NEAR(At(*t, 2, 5, 5), Normalised(30, kMean[2], kStd[2]), slack / kStd[2]) << ext;
  }
}

TEST(PreprocessorTest, DefaultTimmPipelineOutputShape) {
  // 500x375 (an ImageNet-sized example) through the DeiT defaults: resize 256, crop 224.
  cv::Mat img(375, 500, CV_8UC3);
  cv::randu(img, 0, 256);
  auto p = Make(PreprocessSpec(), Architecture());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->resize_size(), 256);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".jpg"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channels, 3);
  EXPECT_EQ(t->height, 224);
  EXPECT_EQ(t->width, 224);
  EXPECT_EQ(t->data.size(), 3u * 224 * 224);
  for (float v : t->data) ASSERT_TRUE(std::isfinite(v));
}

TEST(PreprocessorTest, WarmUpDecodesThroughTheModelsOwnPipeline) {
  auto rgb = Make(PreprocessSpec(), Architecture());
  ASSERT_NE(rgb, nullptr);
  EXPECT_TRUE(rgb->WarmUp().ok());
  auto gray = Make(GraySpec(), Arch(28, 1));
  ASSERT_NE(gray, nullptr);
  EXPECT_TRUE(gray->WarmUp().ok());
  // A limit no input-sized image can meet is a configuration error the warm-up reports at
  // start-up, instead of every request failing later.
  PreprocessorOptions tiny;
  tiny.max_image_pixels = 100;
  auto unusable = Make(GraySpec(), Arch(28, 1), tiny);
  ASSERT_NE(unusable, nullptr);
  absl::Status s = unusable->WarmUp();
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("more than the limit"));
}

TEST(PreprocessorTest, BicubicUpscaleOfFlatImageStaysFlat) {
  // 6x4 -> shorter side 10 (bicubic) -> 15x10 -> crop 10.
  const cv::Mat img(4, 6, CV_8UC3, cv::Scalar(30, 100, 200));
  PreprocessSpec spec;
  spec.resize = 10;
  auto p = Make(spec, Arch(10));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectConstantChannel(*t, 0, Normalised(200, kMean[0], kStd[0]));
  ExpectConstantChannel(*t, 1, Normalised(100, kMean[1], kStd[1]));
  ExpectConstantChannel(*t, 2, Normalised(30, kMean[2], kStd[2]));
}

// ---- Geometry: resize rule, nearest pixel centres, round-half-to-even crop -------------

TEST(GeometryTest, ShorterSideResizeTruncatesTheLongSide) {
  const ResizedSize a = ShorterSideResize(500, 375, 256);  // 256 * 500 / 375 = 341.33
  EXPECT_EQ(a.width, 341);
  EXPECT_EQ(a.height, 256);
  const ResizedSize b = ShorterSideResize(375, 500, 256);
  EXPECT_EQ(b.width, 256);
  EXPECT_EQ(b.height, 341);
  const ResizedSize c = ShorterSideResize(300, 300, 256);
  EXPECT_EQ(c.width, 256);
  EXPECT_EQ(c.height, 256);
}

TEST(GeometryTest, CenterCropOffsetRoundsHalfToEven) {
  EXPECT_EQ(CenterCropOffset(341, 224), 58);  // 58.5 -> 58 (C round() would give 59)
  EXPECT_EQ(CenterCropOffset(5, 2), 2);       // 1.5 -> 2
  EXPECT_EQ(CenterCropOffset(7, 2), 2);       // 2.5 -> 2
  EXPECT_EQ(CenterCropOffset(9, 2), 4);       // 3.5 -> 4
  EXPECT_EQ(CenterCropOffset(11, 2), 4);      // 4.5 -> 4
  EXPECT_EQ(CenterCropOffset(10, 2), 4);      // exact
  EXPECT_EQ(CenterCropOffset(224, 224), 0);
}

// Gray image whose pixel value encodes its column: value = 8 * column.
cv::Mat ColumnRamp(int width, int height) {
  cv::Mat img(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) img.at<uint8_t>(y, x) = static_cast<uint8_t>(8 * x);
  }
  return img;
}

TEST(GeometryTest, CropOffsetEndToEndIsHalfToEven) {
  // Width 13, crop 8: (13 - 8) / 2 = 2.5 -> 2 (half to even); C rounding would give 3.
  // Width 11: 1.5 -> 2. Both start at column 2, whose value is 16.
  auto p = Make(GraySpec(), Arch(8, 1));
  ASSERT_NE(p, nullptr);
  for (int width : {11, 13}) {
    absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(ColumnRamp(width, 8), ".png"));
    ASSERT_TRUE(t.ok()) << t.status();
    for (int x = 0; x < 8; ++x) {
      EXPECT_NEAR(At(*t, 0, 3, x), Normalised(8 * (x + 2), 0.5, 0.25), kTol)
          << "width " << width << " x " << x;
    }
  }
}

TEST(GeometryTest, NearestResizeUsesPixelCentresAndTorchvisionSizes) {
  // 30x20 -> shorter side 10 -> 15x10 (scale 2); nearest with PIL's pixel-centre rule
  // samples source column floor((j + 0.5) * 2) = 2j + 1. Crop 10 of 15: offset 2.5 -> 2.
  // So output column x is source column 2(x + 2) + 1, value 8 * (2x + 5).
  PreprocessSpec spec = GraySpec();
  spec.interpolation = "nearest";
  spec.resize = 10;
  auto p = Make(spec, Arch(10, 1));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(ColumnRamp(30, 20), ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  for (int x = 0; x < 10; ++x) {
    EXPECT_NEAR(At(*t, 0, 4, x), Normalised(8 * (2 * x + 5), 0.5, 0.25), kTol) << "x " << x;
  }
}

// ---- Channels, bit depth, invert --------------------------------------------------------

TEST(ChannelTest, PilLumaMatchesHandComputedValues) {
  EXPECT_EQ(PilLuma(0, 0, 0), 0);
  EXPECT_EQ(PilLuma(255, 255, 255), 255);
  // 0.299*200 + 0.587*100 + 0.114*30 = 121.92 -> 122
  EXPECT_EQ(PilLuma(200, 100, 30), 122);
  // 0.299*10 + 0.587*20 + 0.114*30 = 18.15 -> 18 (truncating /1000 also gives 18)
  EXPECT_EQ(PilLuma(10, 20, 30), 18);
  // 0.299*1 + 0.587*1 = 0.886 -> 1 (the truncating formula would give 0)
  EXPECT_EQ(PilLuma(1, 1, 0), 1);
}

TEST(ChannelTest, ColourToGrayscaleModel) {
  const cv::Mat img(8, 8, CV_8UC3, cv::Scalar(30, 100, 200));  // RGB (200, 100, 30)
  auto p = Make(GraySpec(), Arch(8, 1));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->channels, 1);
  ASSERT_EQ(t->data.size(), 64u);
  ExpectConstantChannel(*t, 0, Normalised(122, 0.5, 0.25));
}

TEST(ChannelTest, GrayImageReplicatedForColourModel) {
  const cv::Mat img(8, 8, CV_8UC1, cv::Scalar(77));
  auto p = Make(NoResizeSpec(), Arch(8));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  for (int c = 0; c < 3; ++c) ExpectConstantChannel(*t, c, Normalised(77, kMean[c], kStd[c]));
}

TEST(ChannelTest, AlphaIsDroppedNotComposited) {
  // Fully transparent colour: compositing on black would give 0, on white 255.
  const cv::Mat img(8, 8, CV_8UC4, cv::Scalar(30, 100, 200, 0));
  auto p = Make(NoResizeSpec(), Arch(8));
  ASSERT_NE(p, nullptr);
  for (const char* ext : {".png", ".tiff"}) {
    absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ext));
    ASSERT_TRUE(t.ok()) << ext << ": " << t.status();
    ExpectConstantChannel(*t, 0, Normalised(200, kMean[0], kStd[0]));
    ExpectConstantChannel(*t, 1, Normalised(100, kMean[1], kStd[1]));
    ExpectConstantChannel(*t, 2, Normalised(30, kMean[2], kStd[2]));
  }
}

TEST(ChannelTest, SixteenBitScaledByRoundingDivisionBy257) {
  // B = 0 -> 0; G = 32896 = 128 * 257 -> 128; R = 65535 -> 255.
  const cv::Mat img(8, 8, CV_16UC3, cv::Scalar(0, 32896, 65535));
  auto p = Make(NoResizeSpec(), Arch(8));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectConstantChannel(*t, 0, Normalised(255, kMean[0], kStd[0]));
  ExpectConstantChannel(*t, 1, Normalised(128, kMean[1], kStd[1]));
  ExpectConstantChannel(*t, 2, Normalised(0, kMean[2], kStd[2]));

  // 16-bit gray: 25828 / 257 = 100.498 -> 100; 25829 / 257 = 100.502 -> 101 (where the
  // high byte, v >> 8, would still be 100).
  for (auto [v16, v8] : {std::pair<int, int>{25828, 100}, {25829, 101}}) {
    const cv::Mat gray(8, 8, CV_16UC1, cv::Scalar(v16));
    auto pg = Make(GraySpec(), Arch(8, 1));
    ASSERT_NE(pg, nullptr);
    absl::StatusOr<ImageTensor> tg = pg->FromEncoded(Encode(gray, ".png"));
    ASSERT_TRUE(tg.ok()) << tg.status();
    ExpectConstantChannel(*tg, 0, Normalised(v8, 0.5, 0.25));
  }
}

TEST(ChannelTest, InvertIs255MinusValue) {
  const cv::Mat img(8, 8, CV_8UC1, cv::Scalar(55));
  PreprocessSpec spec = GraySpec();
  spec.invert = true;
  auto p = Make(spec, Arch(8, 1));
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(Encode(img, ".png"));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectConstantChannel(*t, 0, Normalised(200, 0.5, 0.25));
}

// ---- Refusals ----------------------------------------------------------------------------

// A PNG signature and IHDR claiming width x height, and nothing else: decoding it would
// fail, so an error naming the pixel limit proves the limit is checked before decoding.
std::string HugePngHeader() {
  std::string s("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  s += std::string("\x00\x01\x86\xA0\x00\x01\x86\xA0", 8);  // 100000 x 100000
  s += std::string("\x08\x02\0\0\0", 5);
  return s;
}

TEST(RefusalTest, PixelLimitCheckedBeforeDecoding) {
  auto p = Make(PreprocessSpec(), Architecture());
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(HugePngHeader());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("100000x100000"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("limit of 50000000 pixels"), std::string::npos) << t.status();
}

// Found by fuzz_preprocess: a TIFF whose first IFD says 4294967295 x 4294967295 (LONG
// fields) made width * height overflow int64 before the limit check.
TEST(RefusalTest, PixelLimitHoldsForMaximalTiffDimensions) {
  std::string tiff("II*\0\x08\0\0\0\x02\0", 10);                          // header, 2 entries
  tiff += std::string("\x00\x01\x04\x00\x01\0\0\0\xff\xff\xff\xff", 12);  // ImageWidth
  tiff += std::string("\x01\x01\x04\x00\x01\0\0\0\xff\xff\xff\xff", 12);  // ImageLength
  tiff += std::string(4, '\0');                                           // no next IFD
  auto p = Make(PreprocessSpec(), Architecture());
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t = p->FromEncoded(tiff);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("4294967295x4294967295"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("limit of 50000000 pixels"), std::string::npos) << t.status();
}

TEST(RefusalTest, PixelLimitIsConfigurable) {
  PreprocessorOptions opts;
  opts.max_image_pixels = 99;  // a 10x10 image is 100 pixels
  auto p = Make(NoResizeSpec(), Arch(8), opts);
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t =
      p->FromEncoded(Encode(cv::Mat(10, 10, CV_8UC3, cv::Scalar::all(1)), ".png"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("limit of 99"), std::string::npos) << t.status();
}

TEST(RefusalTest, ExtremeAspectRatioRefusedBeforeResizing) {
  // 4000 x 1 is only 4000 pixels but resizing its shorter side to 256 would give
  // 1024000 x 256 pixels.
  PreprocessorOptions opts;
  opts.max_image_pixels = 1'000'000;
  auto p = Make(PreprocessSpec(), Architecture(), opts);
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> t =
      p->FromEncoded(Encode(cv::Mat(1, 4000, CV_8UC3, cv::Scalar::all(1)), ".png"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("aspect ratio"), std::string::npos) << t.status();
}

TEST(RefusalTest, EmptyAndGarbageBytes) {
  auto p = Make(PreprocessSpec(), Architecture());
  ASSERT_NE(p, nullptr);
  absl::StatusOr<ImageTensor> empty = p->FromEncoded("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos) << empty.status();

  absl::StatusOr<ImageTensor> garbage = p->FromEncoded("definitely not an image");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("PNG, JPEG, BMP, WebP, TIFF"), std::string::npos)
      << garbage.status();
}

TEST(RefusalTest, ValidHeaderWithCorruptDataRefused) {
  auto p = Make(NoResizeSpec(), Arch(8));
  ASSERT_NE(p, nullptr);
  cv::Mat img(64, 64, CV_8UC3);
  cv::randu(img, 0, 256);
  std::string png = Encode(img, ".png");
  png.resize(png.size() / 2);  // header intact, pixel data cut
  absl::StatusOr<ImageTensor> t = p->FromEncoded(png);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("could not decode the png image"), std::string::npos)
      << t.status();
}

TEST(RefusalTest, BitFlippedImagesAreDecodedOrRefusedCleanly) {
  // Corrupt files must never crash the server or produce a tensor of the wrong shape.
  auto p = Make(NoResizeSpec(), Arch(16));
  ASSERT_NE(p, nullptr);
  cv::Mat img(16, 20, CV_8UC3);
  cv::randu(img, 0, 256);
  cv::RNG rng(99);
  for (const char* ext : {".png", ".jpg", ".bmp", ".webp", ".tiff"}) {
    const std::string clean = Encode(img, ext);
    for (int trial = 0; trial < 40; ++trial) {
      std::string bytes = clean;
      for (int flips = 0; flips < 3; ++flips) {
        const int at = rng.uniform(0, static_cast<int>(bytes.size()));
        bytes[at] = static_cast<char>(bytes[at] ^ (1 << rng.uniform(0, 8)));
      }
      absl::StatusOr<ImageTensor> t = p->FromEncoded(bytes);
      if (t.ok()) {
        EXPECT_EQ(t->data.size(), 3u * 16 * 16) << ext;
      } else {
        EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << ext << ": " << t.status();
      }
    }
  }
}

// ---- Tensor input --------------------------------------------------------------------------

vitserve::v1::Tensor MakeTensor(std::vector<int64_t> shape, size_t n, float value = 0.5f) {
  vitserve::v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  for (size_t i = 0; i < n; ++i) t.add_data(value + static_cast<float>(i));
  return t;
}

TEST(FromTensorTest, AcceptsChwAndBatchOfOne) {
  auto p = Make(NoResizeSpec(), Arch(4));
  ASSERT_NE(p, nullptr);
  for (const auto& shape : {std::vector<int64_t>{3, 4, 4}, std::vector<int64_t>{1, 3, 4, 4}}) {
    absl::StatusOr<ImageTensor> t = p->FromTensor(MakeTensor(shape, 48));
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->channels, 3);
    EXPECT_EQ(t->height, 4);
    EXPECT_EQ(t->width, 4);
    ASSERT_EQ(t->data.size(), 48u);
    EXPECT_EQ(t->data[0], 0.5f);
    EXPECT_EQ(t->data[47], 47.5f);
  }
}

TEST(FromTensorTest, WrongShapesNameTheExpectedShape) {
  auto p = Make(NoResizeSpec(), Arch(4));
  ASSERT_NE(p, nullptr);
  for (const auto& shape : {std::vector<int64_t>{}, std::vector<int64_t>{48},
                            std::vector<int64_t>{3, 4}, std::vector<int64_t>{1, 3, 4},
                            std::vector<int64_t>{4, 4, 3}, std::vector<int64_t>{2, 3, 4, 4},
                            std::vector<int64_t>{3, 4, 5}, std::vector<int64_t>{1, 1, 3, 4, 4}}) {
    absl::StatusOr<ImageTensor> t = p->FromTensor(MakeTensor(shape, 48));
    ASSERT_FALSE(t.ok()) << "shape size " << shape.size();
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("expected [3,4,4] or [1,3,4,4]"), std::string::npos)
        << t.status();
  }
}

TEST(FromTensorTest, DataLengthMustMatchShape) {
  auto p = Make(NoResizeSpec(), Arch(4));
  ASSERT_NE(p, nullptr);
  for (size_t n : {0u, 47u, 49u}) {
    absl::StatusOr<ImageTensor> t = p->FromTensor(MakeTensor({3, 4, 4}, n));
    ASSERT_FALSE(t.ok()) << n;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("needs 48"), std::string::npos) << t.status();
  }
}

TEST(FromTensorTest, NonFiniteValuesRefused) {
  auto p = Make(NoResizeSpec(), Arch(4));
  ASSERT_NE(p, nullptr);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    vitserve::v1::Tensor tensor = MakeTensor({3, 4, 4}, 48);
    tensor.set_data(17, bad);
    absl::StatusOr<ImageTensor> t = p->FromTensor(tensor);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("value 17"), std::string::npos) << t.status();
  }
}

TEST(FromTensorTest, GrayscaleModelExpectsOneChannel) {
  auto p = Make(GraySpec(), Arch(4, 1));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->FromTensor(MakeTensor({1, 4, 4}, 16)).ok());
  absl::StatusOr<ImageTensor> t = p->FromTensor(MakeTensor({3, 4, 4}, 48));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("[1,4,4]"), std::string::npos) << t.status();
}

// ---- Create() validation ----------------------------------------------------------------

TEST(CreateTest, RefusesInconsistentSpecs) {
  struct Case {
    const char* name;
    PreprocessSpec spec;
    Architecture arch;
    const char* needle;
  };
  std::vector<Case> cases;
  {
    Case c{"gray model without grayscale", PreprocessSpec(), Arch(224, 1), "in_chans"};
    cases.push_back(c);
  }
  {
    Case c{"mean size", PreprocessSpec(), Architecture(), "mean"};
    c.spec.mean = {0.5f};
    cases.push_back(c);
  }
  {
    Case c{"zero std", PreprocessSpec(), Architecture(), "std"};
    c.spec.std = {0.2f, 0.0f, 0.2f};
    cases.push_back(c);
  }
  {
    Case c{"interpolation", PreprocessSpec(), Architecture(),
           "bicubic, bilinear, lanczos, box, hamming, nearest, area"};
    c.spec.interpolation = "mitchell";
    cases.push_back(c);
  }
  {
    Case c{"unknown crop", PreprocessSpec(), Architecture(), "center, center_floor, none"};
    c.spec.crop = "diagonal";
    cases.push_back(c);
  }
  {
    Case c{"squash height only", PreprocessSpec(), Architecture(), "both be positive"};
    c.spec.resize_height = 256;
    cases.push_back(c);
  }
  {
    Case c{"squash below crop", PreprocessSpec(), Architecture(), "cannot be cropped"};
    c.spec.resize_height = 256;
    c.spec.resize_width = 200;
    cases.push_back(c);
  }
  {
    Case c{"no crop needs square", PreprocessSpec(), Architecture(), "needs a square output"};
    c.spec.crop = "none";
    cases.push_back(c);
  }
  {
    Case c{"rescale factor", PreprocessSpec(), Architecture(), "rescale_factor"};
    c.spec.rescale_factor = 0.0;
    cases.push_back(c);
  }
  {
    Case c{"resize below crop", PreprocessSpec(), Architecture(), "at least image_size"};
    c.spec.resize = 200;
    cases.push_back(c);
  }
  {
    Case c{"crop_pct above 1", PreprocessSpec(), Architecture(), "crop_pct"};
    c.spec.crop_pct = 1.2f;
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    auto p = Preprocessor::Create(c.spec, c.arch, PreprocessorOptions());
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(p.status().message().find(c.needle), std::string::npos)
        << c.name << ": " << p.status();
  }
}

TEST(CreateTest, TimmResizeRule) {
  PreprocessSpec spec;
  spec.crop_pct = 0.9f;  // floor(224 / 0.9) = 248
  auto p = Make(spec, Architecture());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->resize_size(), 248);
  spec.crop_pct = 0.875f;
  p = Make(spec, Architecture());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->resize_size(), 256);
}

}  // namespace
}  // namespace vitserve
