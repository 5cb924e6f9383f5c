// Image classification data sets for the training tools: the Fashion-MNIST IDX reader, an
// ImageFolder reader (root/<class>/<image>) and a deterministic train/validation split.
//
// Torch-free: images are kept as uint8 pixels (HWC row-major, C = 1 or 3) so a 60k×28×28
// set is 47 MB; the trainer converts batches to float tensors and normalises them.
//
// Errors: NOT_FOUND for a missing file or directory; INVALID_ARGUMENT for content that is
// not what it claims to be (bad gzip stream, wrong IDX magic, dimensions or counts that
// disagree, truncated data, undecodable image). Every message names the file and says
// what is wrong. Thread-safety: the functions are pure; an ImageDataset is a value.
#ifndef VITSERVE_SERVER_TRAIN_DATASET_H_
#define VITSERVE_SERVER_TRAIN_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve {
namespace train {

// The IDX magic numbers (big-endian 0x0000 0x08 = unsigned byte, then the rank).
inline constexpr uint32_t kIdxImagesMagic = 0x00000803;  // rank-3 uint8: [N, rows, cols]
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // rank-1 uint8: [N]

// The ten Fashion-MNIST classes, in label order.
const std::vector<std::string>& FashionMnistClassNames();

// An in-memory labelled image set; all images have the same shape.
struct ImageDataset {
  int height = 0;
  int width = 0;
  int channels = 0;             // 1 (grayscale) or 3 (RGB)
  std::vector<uint8_t> pixels;  // size() * height * width * channels, HWC per image
  std::vector<int64_t> labels;  // one per image, in [0, class_names.size())
  std::vector<std::string> class_names;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return static_cast<int64_t>(height) * width * channels; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_bytes(); }
};

// Reads an IDX image file and an IDX label file (each gzip-compressed or raw; detected by
// the gzip magic) into a grayscale dataset. Checks magic numbers, that rows/cols are
// positive, that both files hold the same count, that the payload is exactly as long as
// the header says (truncated or trailing data is refused) and that labels are < 10 when
// `class_names` is Fashion-MNIST's (labels must be < class_names.size()).
absl::StatusOr<ImageDataset> ReadIdxDataset(const std::string& images_path,
                                            const std::string& labels_path,
                                            const std::vector<std::string>& class_names);

enum class IdxSplit { kTrain, kTest };

// Fashion-MNIST from its directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
absl::StatusOr<ImageDataset> ReadFashionMnist(const std::string& dir, IdxSplit split);

struct ImageFolderOptions {
  int image_size = 28;    // every image is resized (bilinear, aspect ignored) to this square
  bool grayscale = true;  // true: 1 channel; false: 3 channels, RGB order
};

// Reads root/<class>/<image> for every image OpenCV can decode. Classes are the
// sub-directory names in sorted order (label = index); files inside a class are read in
// sorted order. Hidden entries are skipped. Errors: NOT_FOUND (no root), INVALID_ARGUMENT
// (no class directories, an empty class, a file that is not a decodable image; named).
absl::StatusOr<ImageDataset> ReadImageFolder(const std::string& root,
                                             const ImageFolderOptions& options);

// A subset by indices (in the given order).
ImageDataset Subset(const ImageDataset& data, const std::vector<int64_t>& indices);

// Splits `data` into (train, validation) with `validation_size` images drawn by a seeded
// shuffle (std::mt19937_64, so the split is the same on every platform and run).
// INVALID_ARGUMENT if validation_size is not in [0, data.size()).
absl::StatusOr<std::pair<ImageDataset, ImageDataset>> SplitTrainValidation(const ImageDataset& data,
                                                                           int64_t validation_size,
                                                                           uint64_t seed);

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_DATASET_H_
