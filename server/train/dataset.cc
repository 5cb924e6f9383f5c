#include "server/train/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;

// First two bytes of every gzip stream (RFC 1952).
constexpr unsigned char kGzipMagic0 = 0x1f;
constexpr unsigned char kGzipMagic1 = 0x8b;
// IDX header sizes: magic + one uint32 per dimension.
constexpr size_t kIdxImagesHeaderBytes = 16;
constexpr size_t kIdxLabelsHeaderBytes = 8;
// Chunk size for inflating.
constexpr size_t kInflateChunk = 1 << 16;

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Inflates a gzip stream (possibly several members). A stream that ends early is an
// error: truncated downloads are the common failure.
absl::StatusOr<std::string> Gunzip(const std::string& compressed, const std::string& path) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError(absl::StrCat(path, ": zlib inflateInit2 failed"));
  }
  std::string out;
  std::string chunk(kInflateChunk, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs.avail_in = static_cast<uInt>(compressed.size());
  int rc = Z_OK;
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk.data());
    zs.avail_out = static_cast<uInt>(chunk.size());
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(chunk.data(), chunk.size() - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      // Concatenated gzip members are legal.
      if (inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (rc != Z_OK) break;
    if (zs.avail_in == 0 && zs.avail_out != 0) {
      rc = Z_BUF_ERROR;  // input exhausted before the end of the stream
      break;
    }
  }
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": corrupt or truncated gzip stream (zlib code ", rc, " after ",
                     out.size(), " decompressed bytes)"));
  }
  return out;
}

// Raw or gzip-compressed file content.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  absl::StatusOr<std::string> raw = ReadWholeFile(path);
  if (!raw.ok()) return raw.status();
  if (raw->size() >= 2 && static_cast<unsigned char>((*raw)[0]) == kGzipMagic0 &&
      static_cast<unsigned char>((*raw)[1]) == kGzipMagic1) {
    return Gunzip(*raw, path);
  }
  return raw;
}

uint32_t BigEndian32(const std::string& s, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

bool IsHidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

}  // namespace

const std::vector<std::string>& FashionMnistClassNames() {
  static const auto* const kNames =
      new std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return *kNames;
}

absl::StatusOr<ImageDataset> ReadIdxDataset(const std::string& images_path,
                                            const std::string& labels_path,
                                            const std::vector<std::string>& class_names) {
  absl::StatusOr<std::string> images = ReadMaybeGzip(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadMaybeGzip(labels_path);
  if (!labels.ok()) return labels.status();

  if (images->size() < kIdxImagesHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": ", images->size(),
                                                   " bytes, shorter than the 16-byte IDX header"));
  }
  if (labels->size() < kIdxLabelsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": ", labels->size(),
                                                   " bytes, shorter than the 8-byte IDX header"));
  }
  const uint32_t image_magic = BigEndian32(*images, 0);
  if (image_magic != kIdxImagesMagic) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": bad IDX magic ",
                                                   Hex(image_magic), ", expected ",
                                                   Hex(kIdxImagesMagic), " (uint8 rank-3 images)"));
  }
  const uint32_t label_magic = BigEndian32(*labels, 0);
  if (label_magic != kIdxLabelsMagic) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": bad IDX magic ",
                                                   Hex(label_magic), ", expected ",
                                                   Hex(kIdxLabelsMagic), " (uint8 rank-1 labels)"));
  }
  const uint64_t count = BigEndian32(*images, 4);
  const uint64_t rows = BigEndian32(*images, 8);
  const uint64_t cols = BigEndian32(*images, 12);
  const uint64_t label_count = BigEndian32(*labels, 4);
  // A 28×28 image needs nothing like 2^16 on a side; the bound keeps the products small.
  constexpr uint64_t kMaxSide = 1 << 15;
  if (rows == 0 || cols == 0 || rows > kMaxSide || cols > kMaxSide) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": implausible image dimensions ", rows, "x", cols));
  }
  if (count != label_count) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, " holds ", count, " images but ",
                                                   labels_path, " holds ", label_count, " labels"));
  }
  const uint64_t want_images = kIdxImagesHeaderBytes + count * rows * cols;
  if (images->size() != want_images) {
    return absl::InvalidArgumentError(absl::StrCat(
        images_path, ": ", images->size() < want_images ? "truncated" : "trailing data",
        ": header says ", count, " images of ", rows, "x", cols, " (", want_images,
        " bytes) but the file has ", images->size(), " bytes"));
  }
  const uint64_t want_labels = kIdxLabelsHeaderBytes + count;
  if (labels->size() != want_labels) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels_path, ": ", labels->size() < want_labels ? "truncated" : "trailing data",
        ": header says ", count, " labels (", want_labels, " bytes) but the file has ",
        labels->size(), " bytes"));
  }

  ImageDataset data;
  data.height = static_cast<int>(rows);
  data.width = static_cast<int>(cols);
  data.channels = 1;
  data.class_names = class_names;
  data.pixels.assign(images->begin() + kIdxImagesHeaderBytes, images->end());
  data.labels.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    const auto label = static_cast<unsigned char>((*labels)[kIdxLabelsHeaderBytes + i]);
    if (label >= class_names.size()) {
      return absl::InvalidArgumentError(absl::StrCat(labels_path, ": label ", int{label},
                                                     " at index ", i, " is not below ",
                                                     class_names.size(), " classes"));
    }
    data.labels[i] = label;
  }
  return data;
}

absl::StatusOr<ImageDataset> ReadFashionMnist(const std::string& dir, IdxSplit split) {
  const std::string prefix = split == IdxSplit::kTrain ? "train" : "t10k";
  return ReadIdxDataset((fs::path(dir) / (prefix + "-images-idx3-ubyte.gz")).string(),
                        (fs::path(dir) / (prefix + "-labels-idx1-ubyte.gz")).string(),
                        FashionMnistClassNames());
}

absl::StatusOr<ImageDataset> ReadImageFolder(const std::string& root,
                                             const ImageFolderOptions& options) {
  if (options.image_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ImageFolder: image_size must be positive, got ", options.image_size));
  }
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat(root, ": no such directory"));
  }
  std::vector<fs::path> class_dirs;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory() && !IsHidden(e.path())) class_dirs.push_back(e.path());
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat(root, ": ", ec.message()));
  std::sort(class_dirs.begin(), class_dirs.end());
  if (class_dirs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ": no class sub-directories (expected root/<class>/<image>)"));
  }

  ImageDataset data;
  data.height = options.image_size;
  data.width = options.image_size;
  data.channels = options.grayscale ? 1 : 3;
  const cv::Size size(options.image_size, options.image_size);
  for (size_t label = 0; label < class_dirs.size(); ++label) {
    data.class_names.push_back(class_dirs[label].filename().string());
    std::vector<fs::path> files;
    for (const fs::directory_entry& e : fs::directory_iterator(class_dirs[label], ec)) {
      if (e.is_regular_file() && !IsHidden(e.path())) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(class_dirs[label].string(), ": class directory holds no images"));
    }
    for (const fs::path& file : files) {
      cv::Mat image;
      try {
        image =
            cv::imread(file.string(), options.grayscale ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
        if (!image.empty()) {
          if (image.depth() != CV_8U) image.convertTo(image, CV_8U);
          if (!options.grayscale) cv::cvtColor(image, image, cv::COLOR_BGR2RGB);
          if (image.size() != size) cv::resize(image, image, size, 0, 0, cv::INTER_LINEAR);
        }
      } catch (const cv::Exception& e) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.string(), ": OpenCV cannot decode it: ", e.what()));
      }
      if (image.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not a decodable image"));
      }
      if (!image.isContinuous()) image = image.clone();
      data.pixels.insert(data.pixels.end(), image.data,
                         image.data + image.total() * image.elemSize());
      data.labels.push_back(static_cast<int64_t>(label));
    }
  }
  return data;
}

ImageDataset Subset(const ImageDataset& data, const std::vector<int64_t>& indices) {
  ImageDataset out;
  out.height = data.height;
  out.width = data.width;
  out.channels = data.channels;
  out.class_names = data.class_names;
  const int64_t bytes = data.image_bytes();
  out.pixels.resize(indices.size() * bytes);
  out.labels.resize(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::copy_n(data.image(indices[i]), bytes, out.pixels.data() + i * bytes);
    out.labels[i] = data.labels[indices[i]];
  }
  return out;
}

absl::StatusOr<std::pair<ImageDataset, ImageDataset>> SplitTrainValidation(const ImageDataset& data,
                                                                           int64_t validation_size,
                                                                           uint64_t seed) {
  if (validation_size < 0 || validation_size >= data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("validation size ", validation_size, " must be in [0, ", data.size(), ")"));
  }
  std::vector<int64_t> order(data.size());
  for (int64_t i = 0; i < data.size(); ++i) order[i] = i;
  // Fisher-Yates with raw mt19937_64 draws: std::shuffle and the distributions are
  // implementation-defined, the engine's output sequence is not.
  std::mt19937_64 rng(seed);
  for (int64_t i = data.size() - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  std::vector<int64_t> val(order.begin(), order.begin() + validation_size);
  std::vector<int64_t> train(order.begin() + validation_size, order.end());
  // Keep the original order inside each part (easier to reason about, same split).
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return std::make_pair(Subset(data, train), Subset(data, val));
}

}  // namespace train
}  // namespace vitserve
