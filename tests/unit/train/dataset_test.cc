// Data readers and the plot writer of the training toolchain (torch-free).
#include "server/train/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "server/train/plot.h"

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("vitserve_train_test_" +
             std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void PutBigEndian(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

// An IDX image file: `count` images of rows×cols, pixel = (i + y*cols + x) % 256.
std::string IdxImages(uint32_t count, uint32_t rows, uint32_t cols,
                      uint32_t magic = kIdxImagesMagic) {
  std::string s;
  PutBigEndian(s, magic);
  PutBigEndian(s, count);
  PutBigEndian(s, rows);
  PutBigEndian(s, cols);
  for (uint32_t i = 0; i < count; ++i) {
    for (uint32_t p = 0; p < rows * cols; ++p) s.push_back(static_cast<char>((i + p) % 256));
  }
  return s;
}

std::string IdxLabels(const std::vector<uint8_t>& labels) {
  std::string s;
  PutBigEndian(s, kIdxLabelsMagic);
  PutBigEndian(s, static_cast<uint32_t>(labels.size()));
  for (uint8_t l : labels) s.push_back(static_cast<char>(l));
  return s;
}

void WriteRaw(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

void WriteGzip(const std::string& path, const std::string& content) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, content.data(), static_cast<unsigned>(content.size())),
            static_cast<int>(content.size()));
  gzclose(f);
}

std::string ReadRaw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(IdxReaderTest, ReadsGzippedImagesAndLabels) {
  TempDir dir;
  WriteGzip(dir.file("img.gz"), IdxImages(3, 4, 5));
  WriteGzip(dir.file("lbl.gz"), IdxLabels({2, 0, 9}));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 3);
  EXPECT_EQ(data->height, 4);
  EXPECT_EQ(data->width, 5);
  EXPECT_EQ(data->channels, 1);
  EXPECT_EQ(data->labels, (std::vector<int64_t>{2, 0, 9}));
  // Image 2, pixel (y=1, x=3) = (2 + 1*5 + 3) % 256.
  EXPECT_EQ(data->image(2)[1 * 5 + 3], 10);
  EXPECT_EQ(data->class_names.size(), 10u);
}

TEST(IdxReaderTest, ReadsUncompressedFiles) {
  TempDir dir;
  WriteRaw(dir.file("img"), IdxImages(2, 2, 2));
  WriteRaw(dir.file("lbl"), IdxLabels({1, 1}));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img"), dir.file("lbl"), FashionMnistClassNames());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->image(1)[3], 4);
}

TEST(IdxReaderTest, BadMagicIsInvalidArgumentNamingTheFile) {
  TempDir dir;
  WriteGzip(dir.file("img.gz"), IdxImages(2, 4, 4, /*magic=*/0x00000802));
  WriteGzip(dir.file("lbl.gz"), IdxLabels({0, 1}));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(dir.file("img.gz")));
  EXPECT_THAT(data.status().message(), HasSubstr("magic 0x00000802"));
}

TEST(IdxReaderTest, LabelFileWithImageMagicIsRefused) {
  TempDir dir;
  WriteGzip(dir.file("img.gz"), IdxImages(2, 4, 4));
  WriteGzip(dir.file("lbl.gz"), IdxImages(2, 4, 4));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(dir.file("lbl.gz")));
}

TEST(IdxReaderTest, TruncatedPayloadIsRefused) {
  TempDir dir;
  std::string images = IdxImages(3, 4, 4);
  images.resize(images.size() - 5);
  WriteGzip(dir.file("img.gz"), images);
  WriteGzip(dir.file("lbl.gz"), IdxLabels({0, 1, 2}));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(dir.file("img.gz")));
  EXPECT_THAT(data.status().message(), HasSubstr("truncated"));
}

TEST(IdxReaderTest, TruncatedGzipStreamIsRefused) {
  TempDir dir;
  WriteGzip(dir.file("full.gz"), IdxImages(50, 8, 8));
  std::string gz = ReadRaw(dir.file("full.gz"));
  WriteRaw(dir.file("img.gz"), gz.substr(0, gz.size() / 2));
  WriteGzip(dir.file("lbl.gz"), IdxLabels(std::vector<uint8_t>(50, 1)));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr(dir.file("img.gz")));
  EXPECT_THAT(data.status().message(), HasSubstr("gzip"));
}

TEST(IdxReaderTest, CountMismatchAndBadLabelAreRefused) {
  TempDir dir;
  WriteGzip(dir.file("img.gz"), IdxImages(3, 2, 2));
  WriteGzip(dir.file("lbl.gz"), IdxLabels({0, 1}));
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("3 images"));

  WriteGzip(dir.file("lbl.gz"), IdxLabels({0, 1, 10}));
  data = ReadIdxDataset(dir.file("img.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("label 10"));
}

TEST(IdxReaderTest, MissingFileIsNotFound) {
  TempDir dir;
  absl::StatusOr<ImageDataset> data =
      ReadIdxDataset(dir.file("nope.gz"), dir.file("lbl.gz"), FashionMnistClassNames());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
}

TEST(ImageFolderTest, ReadsSortedClassesResizedToGrayscale) {
  TempDir dir;
  const fs::path root = dir.file("root");
  fs::create_directories(root / "b_shirt");
  fs::create_directories(root / "a_bag");
  fs::create_directories(root / ".hidden");
  // a_bag: two white 10x6 images; b_shirt: one black 20x20 image.
  cv::Mat white(6, 10, CV_8UC3, cv::Scalar(255, 255, 255));
  ASSERT_TRUE(cv::imwrite((root / "a_bag" / "1.png").string(), white));
  ASSERT_TRUE(cv::imwrite((root / "a_bag" / "2.png").string(), white));
  cv::Mat black(20, 20, CV_8UC3, cv::Scalar(0, 0, 0));
  ASSERT_TRUE(cv::imwrite((root / "b_shirt" / "x.png").string(), black));

  ImageFolderOptions o;
  o.image_size = 8;
  absl::StatusOr<ImageDataset> data = ReadImageFolder(root.string(), o);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->class_names, (std::vector<std::string>{"a_bag", "b_shirt"}));
  EXPECT_EQ(data->labels, (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(data->height, 8);
  EXPECT_EQ(data->channels, 1);
  EXPECT_EQ(data->image(0)[0], 255);
  EXPECT_EQ(data->image(2)[63], 0);
}

TEST(ImageFolderTest, UndecodableFileIsNamed) {
  TempDir dir;
  const fs::path root = dir.file("root");
  fs::create_directories(root / "cls");
  WriteRaw((root / "cls" / "broken.png").string(), "not a png at all");
  absl::StatusOr<ImageDataset> data = ReadImageFolder(root.string(), ImageFolderOptions());
  ASSERT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data.status().message(), HasSubstr("broken.png"));
}

TEST(ImageFolderTest, EmptyRootAndMissingRoot) {
  TempDir dir;
  fs::create_directories(dir.file("empty"));
  EXPECT_EQ(ReadImageFolder(dir.file("empty"), ImageFolderOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageFolder(dir.file("missing"), ImageFolderOptions()).status().code(),
            absl::StatusCode::kNotFound);
}

ImageDataset Numbered(int n) {
  ImageDataset d;
  d.height = d.width = d.channels = 1;
  d.class_names = {"only"};
  for (int i = 0; i < n; ++i) {
    d.pixels.push_back(static_cast<uint8_t>(i));
    d.labels.push_back(0);
  }
  return d;
}

TEST(SplitTest, DeterministicDisjointAndComplete) {
  const ImageDataset data = Numbered(200);
  auto a = SplitTrainValidation(data, 50, 7);
  auto b = SplitTrainValidation(data, 50, 7);
  auto c = SplitTrainValidation(data, 50, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->first.size(), 150);
  EXPECT_EQ(a->second.size(), 50);
  EXPECT_EQ(a->second.pixels, b->second.pixels);
  EXPECT_NE(a->second.pixels, c->second.pixels);
  std::vector<int> seen(200, 0);
  for (uint8_t p : a->first.pixels) ++seen[p];
  for (uint8_t p : a->second.pixels) ++seen[p];
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 200);
  EXPECT_EQ(SplitTrainValidation(data, 200, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlotTest, NiceTicks) {
  EXPECT_EQ(NiceTicks(0.0, 10.0, 6), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const std::vector<double> t = NiceTicks(87.3, 91.6, 7);
  ASSERT_FALSE(t.empty());
  EXPECT_GE(t.front(), 87.3);
  EXPECT_LE(t.back(), 91.6);
  // Raw step 4.3 / 6 = 0.72 -> the next nice step is 1: ticks 88, 89, 90, 91.
  EXPECT_EQ(t, (std::vector<double>{88, 89, 90, 91}));
}

TEST(PlotTest, WritesAPngOfTheRequestedSize) {
  TempDir dir;
  PlotOptions o;
  o.width = 640;
  o.height = 400;
  o.title = "t";
  o.x_label = "MACs";
  o.y_label = "top-1";
  const std::string path = dir.file("plot.png");
  ASSERT_TRUE(
      WriteLinePlot({{"dense", {10}, {90}}, {"evit", {5, 7, 9}, {80, 85, 89.5}}}, o, path).ok());
  cv::Mat img = cv::imread(path);
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 640);
  EXPECT_EQ(img.rows, 400);
  // Something other than white was drawn.
  cv::Mat gray;
  cv::cvtColor(img, gray, cv::COLOR_BGR2GRAY);
  EXPECT_LT(cv::countNonZero(gray == 255), 640 * 400);
  EXPECT_EQ(WriteLinePlot({{"bad", {1, 2}, {1}}}, o, path).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteLinePlot({}, o, path).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace train
}  // namespace vitserve
