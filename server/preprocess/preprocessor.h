// Image preprocessing: encoded bytes or a client-side tensor in, a normalised CHW float32
// ImageTensor of the model's input shape out. The only vitserve module that sees OpenCV.
//
// Pipeline for encoded images (docs/preprocessing.md has the user-facing version):
//   1. Refuse empty input; read format and size from the header with ProbeImageSize()
//      (image_probe.h) and refuse images over PreprocessorOptions::max_image_pixels
//      BEFORE decoding anything.
//   2. cv::imdecode(IMREAD_UNCHANGED): no EXIF rotation (like PIL.Image.open), alpha kept
//      so that it can be dropped explicitly. Decoded size must match the header's.
//   3. 16-bit samples become 8-bit as round(v / 257) (maps 0..65535 onto 0..255 exactly).
//      Other sample types (float, 32-bit) are refused.
//   4. Channels: gray stays gray, gray+alpha loses alpha, BGR(A) loses alpha (dropped, not
//      composited onto a background) and becomes RGB. Then, per spec:
//      grayscale = false: gray is replicated to R=G=B (PIL convert("RGB"));
//      grayscale = true: RGB becomes ITU-R 601-2 luma exactly as PIL's convert("L"):
//        L = (19595 R + 38470 G + 7471 B + 32768) >> 16  (= R*299/1000 + G*587/1000 +
//        B*114/1000, rounded to nearest).
//   5. invert: v = 255 - v (8-bit), when the spec says so.
//   6. Resize, by spec: (a) shorter side to `resize` (0: floor(image_size / crop_pct),
//      the timm rule); the longer side becomes floor(long * resize / short) as in
//      torchvision; no resize when the shorter side already equals `resize`; or (b) squash
//      to resize_width x resize_height (Hugging Face size {height, width}); or (c) none
//      (skip_resize). Interpolation: bicubic, bilinear, lanczos, box, hamming ->
//      PilResize (pil_resize.h), byte-for-byte Pillow's Image.resize with its
//      antialiasing; nearest -> PIL's NEAREST pixel-centre rule (own code); area ->
//      OpenCV INTER_AREA (no PIL counterpart).
//   7. Crop image_size x image_size: "center" offsets are Python 3 round((d - crop) / 2),
//      half to even, as torchvision's CenterCrop (500x375 -> left offset 58);
//      "center_floor" offsets are (d - crop) // 2 as Hugging Face's center_crop; "none"
//      needs the resized image to be image_size x image_size already.
//   8. x = float32(double(v) * rescale_factor) (= float32(v) / 255 for 1/255, checked for
//      all 256 values), then (x - mean[c]) / std[c] in float32; CHW output.
//
// Tensor input (FromTensor) skips all of that: the client sends the already normalised
// tensor; only shape and finiteness are checked.
//
// Built with -DVITSERVE_WITH_OPENCV=OFF (the GPU build, bench/gpu/README.md) there is no
// decoder: FromEncoded answers FAILED_PRECONDITION, WarmUp does nothing, FromTensor and the
// spec validation are unchanged.
//
// Errors: INVALID_ARGUMENT for every input problem (empty, unknown format, too large,
// undecodable, unsupported sample type, wrong tensor shape or non-finite values); the
// message says what was wrong and what is accepted (a decoder exception on malformed data
// counts as undecodable). INTERNAL only for an unexpected OpenCV failure after a
// successful decode.
//
// Thread-safety: a Preprocessor is immutable after Create(); FromEncoded() and
// FromTensor() are const and may be called concurrently from any number of threads.
// (OpenCV may use its own worker threads inside cv::resize; cv::setNumThreads is a
// process-wide setting left to main.)
#ifndef VITSERVE_SERVER_PREPROCESS_PREPROCESSOR_H_
#define VITSERVE_SERVER_PREPROCESS_PREPROCESSOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/executor/image_tensor.h"
#include "server/spec/model_spec.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

struct PreprocessorOptions {
  // Largest accepted image, in pixels (width * height), checked from the header before
  // decoding. Also bounds the intermediate resized image (extreme aspect ratios).
  // 50 M pixels = e.g. 8660 x 5773; decoded RGBA16 that is 400 MB.
  int64_t max_image_pixels = 50'000'000;
};

class Preprocessor {
 public:
  // Validates the spec against the architecture and returns a ready preprocessor.
  // Errors (INVALID_ARGUMENT, naming the field): image_size <= 0; in_chans not 3 (RGB) or
  // 1 (grayscale: true); mean/std sizes != in_chans; std <= 0 or non-finite mean/std;
  // unknown interpolation (accepted: bicubic, bilinear, lanczos, box, hamming, nearest,
  // area); crop_pct not in (0, 1] when resize = 0; resize smaller than image_size; only one
  // of resize_height / resize_width set, or a squash smaller than image_size with a crop;
  // crop not center / center_floor / none; crop none with a squash other than image_size
  // or with the shorter-side rule on an image_size resize; rescale_factor not finite and
  // positive; max_image_pixels <= 0.
  static absl::StatusOr<std::unique_ptr<Preprocessor>> Create(const PreprocessSpec& spec,
                                                              const Architecture& arch,
                                                              const PreprocessorOptions& opts);

  // Decodes and preprocesses one encoded image (PNG, JPEG, BMP, WebP or TIFF).
  absl::StatusOr<ImageTensor> FromEncoded(absl::string_view bytes) const;

  // Accepts an already preprocessed tensor of shape [C, H, W] or [1, C, H, W] equal to
  // the model's input (in_chans, image_size, image_size), data length == product of the
  // shape, every value finite. Copies the data.
  absl::StatusOr<ImageTensor> FromTensor(const vitserve::v1::Tensor& t) const;

  // Decodes one small PNG and one small JPEG (made with OpenCV's encoders) through
  // FromEncoded, so that OpenCV's lazy codec initialisation is paid at start-up, not by
  // the first request (the first decode in a process took 9.3 ms here, the next 0.04 ms).
  // Errors: INTERNAL if an image cannot be encoded or the round trip fails.
  absl::Status WarmUp() const;

  // The shorter-side size images are resized to (spec.resize or the timm rule).
  int resize_size() const { return resize_; }
  int channels() const { return channels_; }
  int image_size() const { return image_size_; }

 private:
  Preprocessor() = default;

  // Implementation details; API users need not read.
  PreprocessorOptions opts_;
  int image_size_ = 0;
  int channels_ = 0;      // 3 (RGB) or 1 (grayscale)
  int resize_ = 0;        // shorter side (mode kShorterSide)
  int squash_width_ = 0;  // mode kSquash
  int squash_height_ = 0;
  int mode_ = 0;           // ResizeMode in preprocessor.cc
  int crop_ = 0;           // CropRule in preprocessor.cc
  int interpolation_ = 0;  // Resampler in preprocessor.cc; int keeps cv:: out
  double rescale_factor_ = 1.0 / 255.0;
  bool invert_ = false;
  std::vector<float> mean_;
  std::vector<float> std_;
};

// The resized size (width, height) for an image of `width` x `height` whose shorter side
// goes to `resize` (torchvision Resize(int) rule). Exposed for tests and docs.
struct ResizedSize {
  int64_t width = 0;
  int64_t height = 0;
};
ResizedSize ShorterSideResize(int64_t width, int64_t height, int64_t resize);

// torchvision's CenterCrop offset: Python 3 round((size - crop) / 2), half to even.
// Requires size >= crop.
int64_t CenterCropOffset(int64_t size, int64_t crop);
// Hugging Face's center_crop offset: (size - crop) // 2. Requires size >= crop.
int64_t CenterCropOffsetFloor(int64_t size, int64_t crop);

// PIL's convert("L") luma of one 8-bit RGB pixel.
uint8_t PilLuma(uint8_t r, uint8_t g, uint8_t b);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PREPROCESS_PREPROCESSOR_H_
