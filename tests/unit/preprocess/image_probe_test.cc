#include "server/preprocess/image_probe.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"

namespace vitserve {
namespace {

std::string Encode(const cv::Mat& img, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, img, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

cv::Mat Noise(int width, int height) {
  cv::Mat img(height, width, CV_8UC3);
  cv::randu(img, 0, 256);
  return img;
}

struct FormatCase {
  std::string ext;
  std::vector<int> params;
  ImageFormat format;
};

class ProbeFormatTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(ProbeFormatTest, ReadsDimensionsOfEncodedImage) {
  const FormatCase& fc = GetParam();
  // Non-square, and wider than 255 so that byte order mistakes show.
  const std::string bytes = Encode(Noise(301, 7), fc.ext, fc.params);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(bytes);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->format, fc.format);
  EXPECT_EQ(info->width, 301);
  EXPECT_EQ(info->height, 7);
}

TEST_P(ProbeFormatTest, EveryPrefixIsHandledAndNeverMisreportsTheSize) {
  const FormatCase& fc = GetParam();
  const std::string bytes = Encode(Noise(33, 20), fc.ext, fc.params);
  int ok_prefixes = 0;
  for (size_t n = 0; n <= bytes.size(); ++n) {
    absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(absl::string_view(bytes).substr(0, n));
    if (info.ok()) {
      ++ok_prefixes;
      EXPECT_EQ(info->width, 33) << "prefix " << n;
      EXPECT_EQ(info->height, 20) << "prefix " << n;
    } else {
      EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_GT(ok_prefixes, 0);
  // An empty prefix is never an image.
  EXPECT_FALSE(ProbeImageSize("").ok());
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ProbeFormatTest,
    ::testing::Values(FormatCase{".png", {}, ImageFormat::kPng},
                      FormatCase{".jpg", {cv::IMWRITE_JPEG_QUALITY, 90}, ImageFormat::kJpeg},
                      FormatCase{".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}, ImageFormat::kJpeg},
                      FormatCase{".bmp", {}, ImageFormat::kBmp},
                      FormatCase{".webp", {cv::IMWRITE_WEBP_QUALITY, 80}, ImageFormat::kWebP},
                      FormatCase{".webp", {cv::IMWRITE_WEBP_QUALITY, 101}, ImageFormat::kWebP},
                      FormatCase{".tiff", {}, ImageFormat::kTiff}),
    [](const ::testing::TestParamInfo<FormatCase>& info) {
      return std::to_string(info.index) + "_" + info.param.ext.substr(1);
    });

// A PNG signature plus an IHDR chunk; no image data at all.
std::string PngHeader(uint32_t width, uint32_t height) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  s += std::string("\0\0\0\x0dIHDR", 8);
  for (uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xFF);
  }
  s += std::string("\x08\x02\0\0\0", 5);  // 8-bit RGB, no CRC: the probe must not need it
  return s;
}

TEST(ProbeImageSizeTest, HandMadePngHeader) {
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(PngHeader(100000, 100000));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->width, 100000);
  EXPECT_EQ(info->height, 100000);
  // PNG needs 24 bytes to know the size.
  EXPECT_FALSE(ProbeImageSize(PngHeader(5, 5).substr(0, 23)).ok());
  EXPECT_TRUE(ProbeImageSize(PngHeader(5, 5).substr(0, 24)).ok());
}

TEST(ProbeImageSizeTest, ZeroDimensionsRefused) {
  EXPECT_EQ(ProbeImageSize(PngHeader(0, 10)).status().code(), absl::StatusCode::kInvalidArgument);
  // 2^31 and above is not a valid PNG dimension (it reads as negative).
  EXPECT_FALSE(ProbeImageSize(PngHeader(0x80000000u, 10)).ok());
}

TEST(ProbeImageSizeTest, JpegSkipsSegmentsBeforeTheFrameHeader) {
  // SOI, APP0 (length 6, 4 payload bytes that contain 0xFF C0 to lure a naive scanner),
  // fill byte, SOF0 declaring 640 wide x 480 high.
  const std::string jpeg(
      "\xFF\xD8"
      "\xFF\xE0\x00\x06\xFF\xC0\x01\x02"
      "\xFF\xFF\xC0\x00\x11\x08\x01\xE0\x02\x80",
      20);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(jpeg);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->format, ImageFormat::kJpeg);
  EXPECT_EQ(info->width, 640);
  EXPECT_EQ(info->height, 480);
}

TEST(ProbeImageSizeTest, JpegWithoutFrameHeaderRefused) {
  const std::string jpeg("\xFF\xD8\xFF\xDA\x00\x02\xFF\xD9", 8);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(jpeg);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("SOFn"), std::string::npos) << info.status();
}

TEST(ProbeImageSizeTest, BmpTopDownNegativeHeight) {
  std::string bmp(26, '\0');
  bmp[0] = 'B';
  bmp[1] = 'M';
  bmp[14] = 40;    // BITMAPINFOHEADER
  bmp[18] = 0x2C;  // width 300 = 0x012C
  bmp[19] = 0x01;
  // height -200 = 0xFFFFFF38
  bmp[22] = static_cast<char>(0x38);
  bmp[23] = static_cast<char>(0xFF);
  bmp[24] = static_cast<char>(0xFF);
  bmp[25] = static_cast<char>(0xFF);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(bmp);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->width, 300);
  EXPECT_EQ(info->height, 200);
}

TEST(ProbeImageSizeTest, WebPExtendedCanvas) {
  std::string webp("RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0", 20);
  // flags + reserved, then width-1 = 999 (0x0003E7) and height-1 = 69999 (0x01116F).
  webp += std::string("\0\0\0\0\xE7\x03\x00\x6F\x11\x01", 10);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(webp);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->format, ImageFormat::kWebP);
  EXPECT_EQ(info->width, 1000);
  EXPECT_EQ(info->height, 70000);
}

TEST(ProbeImageSizeTest, BigEndianTiffWithShortAndLongFields) {
  // "MM", 42, IFD at 8; 2 entries: ImageWidth SHORT 513, ImageLength LONG 70000.
  std::string tiff("MM\0*\0\0\0\x08\0\x02", 10);
  tiff += std::string("\x01\x00\x00\x03\x00\x00\x00\x01\x02\x01\x00\x00", 12);
  tiff += std::string("\x01\x01\x00\x04\x00\x00\x00\x01\x00\x01\x11\x70", 12);
  absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(tiff);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->format, ImageFormat::kTiff);
  EXPECT_EQ(info->width, 513);
  EXPECT_EQ(info->height, 70000);
  // Drop the ImageLength entry: refused, naming the missing tag.
  std::string no_length("MM\0*\0\0\0\x08\0\x01", 10);
  no_length += tiff.substr(10, 12);
  absl::StatusOr<ImageHeaderInfo> bad = ProbeImageSize(no_length);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("ImageLength"), std::string::npos) << bad.status();
}

TEST(ProbeImageSizeTest, UnknownFormatListsAcceptedFormats) {
  for (absl::string_view garbage :
       {absl::string_view("GIF89a\x01\0\x01\0", 10), absl::string_view("hello world"),
        absl::string_view("RIFF\0\0\0\0WAVE", 12), absl::string_view("\xFF", 1)}) {
    absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(garbage);
    ASSERT_FALSE(info.ok()) << garbage;
    EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(info.status().message().find("PNG, JPEG, BMP, WebP, TIFF"), std::string::npos)
        << info.status();
  }
}

// A small in-test fuzzer: random bytes behind every accepted magic must give either a
// positive size or INVALID_ARGUMENT, never a crash or an out-of-bounds read (run the
// suite under ASan to check the latter).
TEST(ProbeImageSizeTest, RandomBytesBehindEachMagic) {
  const std::vector<std::string> magics = {std::string("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16),
                                           std::string("\xFF\xD8\xFF", 3),
                                           "BM",
                                           std::string("RIFF\0\0\0\0WEBPVP8 ", 16),
                                           std::string("RIFF\0\0\0\0WEBPVP8L", 16),
                                           std::string("RIFF\0\0\0\0WEBPVP8X", 16),
                                           std::string("II*\0", 4),
                                           std::string("MM\0*", 4)};
  cv::RNG rng(1234);
  for (const std::string& magic : magics) {
    for (int trial = 0; trial < 300; ++trial) {
      std::string bytes = magic;
      const int extra = rng.uniform(0, 64);
      for (int i = 0; i < extra; ++i) bytes += static_cast<char>(rng.uniform(0, 256));
      absl::StatusOr<ImageHeaderInfo> info = ProbeImageSize(bytes);
      if (info.ok()) {
        EXPECT_GT(info->width, 0);
        EXPECT_GT(info->height, 0);
      } else {
        EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument) << info.status();
      }
    }
  }
}

}  // namespace
}  // namespace vitserve
