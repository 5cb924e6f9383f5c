#include "server/preprocess/preprocessor.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#ifndef VITSERVE_NO_OPENCV
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#else
// A build without OpenCV (-DVITSERVE_WITH_OPENCV=OFF, bench/gpu) takes tensor inputs
// only; the spec is still validated with OpenCV's interpolation values.
namespace cv {
enum { INTER_LINEAR = 1, INTER_CUBIC = 2, INTER_AREA = 3 };
}  // namespace cv
#endif
#include "server/preprocess/image_probe.h"
#include "server/preprocess/pil_resize.h"

namespace vitserve {
namespace {

constexpr int kRgbChannels = 3;
constexpr int kGrayChannels = 1;
constexpr double kMaxPixelValue = 255.0;
// 16-bit to 8-bit: 65535 / 257 = 255 exactly, so the full range maps onto the full range.
constexpr double k16To8Scale = 1.0 / 257.0;
// PIL's ITU-R 601-2 luma in 16-bit fixed point (Pillow libImaging/Convert.c, L24).
constexpr uint32_t kLumaR = 19595;
constexpr uint32_t kLumaG = 38470;
constexpr uint32_t kLumaB = 7471;
constexpr uint32_t kLumaRound = 1u << 15;
constexpr int kLumaShift = 16;

// Resamplers: 1..5 are PilFilter codes (Pillow-exact, pil_resize.h); the others below.
// OpenCV's INTER_NEAREST(_EXACT) picks different source pixels than PIL for some scale
// factors, so vitserve resamples nearest itself (PilNearestResize).
constexpr int kPilNearest = -1;
constexpr int kCvArea = -2;

enum ResizeMode { kShorterSide = 0, kSquash = 1, kNoResize = 2 };
enum CropRule { kCropRound = 0, kCropFloor = 1, kCropNone = 2 };

constexpr absl::string_view kAcceptedInterpolations =
    "bicubic, bilinear, lanczos, box, hamming, nearest, area";

absl::StatusOr<int> ParseInterpolation(absl::string_view name) {
  if (name.empty()) return static_cast<int>(PilFilter::kBicubic);
  if (name == "nearest") return kPilNearest;
  if (name == "area") return kCvArea;
  absl::StatusOr<PilFilter> f = ParsePilFilter(name);
  if (f.ok()) return static_cast<int>(*f);
  return absl::InvalidArgumentError(
      absl::StrCat("preprocessing.interpolation \"", name,
                   "\" is not supported; accepted: ", kAcceptedInterpolations));
}

absl::StatusOr<int> ParseCrop(absl::string_view name) {
  if (name.empty() || name == "center") return kCropRound;
  if (name == "center_floor") return kCropFloor;
  if (name == "none") return kCropNone;
  return absl::InvalidArgumentError(absl::StrCat(
      "preprocessing.crop \"", name, "\" is not supported; accepted: center, center_floor, none"));
}

std::string ShapeString(int c, int h, int w) { return absl::StrCat("[", c, ",", h, ",", w, "]"); }

#ifndef VITSERVE_NO_OPENCV
// Converts a decoded image (any of 1/2/3/4 channels, 8-bit) to 8-bit RGB or gray.
absl::StatusOr<cv::Mat> ToTargetChannels(const cv::Mat& in, int target_channels) {
  cv::Mat rgb;
  switch (in.channels()) {
    case 1:
      if (target_channels == kGrayChannels) return in;
      cv::cvtColor(in, rgb, cv::COLOR_GRAY2RGB);
      return rgb;
    case 2: {  // gray + alpha: drop alpha
      cv::Mat gray;
      cv::extractChannel(in, gray, 0);
      if (target_channels == kGrayChannels) return gray;
      cv::cvtColor(gray, rgb, cv::COLOR_GRAY2RGB);
      return rgb;
    }
    case 3:
      cv::cvtColor(in, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(in, rgb, cv::COLOR_BGRA2RGB);  // alpha dropped, not composited
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "decoded image has ", in.channels(), " channels; accepted: 1 (gray), 2 (gray+alpha), ",
          "3 (color) or 4 (color+alpha)"));
  }
  if (target_channels == kRgbChannels) return rgb;
  cv::Mat gray(rgb.rows, rgb.cols, CV_8UC1);
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* src = rgb.ptr<uint8_t>(y);
    uint8_t* dst = gray.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      dst[x] = PilLuma(src[3 * x], src[3 * x + 1], src[3 * x + 2]);
    }
  }
  return gray;
}

// Source index of each output position along one axis, as Pillow's ImagingScaleAffine
// computes it: start at half a step, accumulate the step in double, truncate.
std::vector<int> PilNearestIndices(int src, int dst) {
  std::vector<int> idx(dst);
  const double step = static_cast<double>(src) / dst;
  double pos = step * 0.5;
  for (int i = 0; i < dst; ++i) {
    idx[i] = std::min(static_cast<int>(pos), src - 1);
    pos += step;
  }
  return idx;
}

// Nearest-neighbour resize of an 8-bit image, pixel-for-pixel as PIL's Image.NEAREST.
cv::Mat PilNearestResize(const cv::Mat& in, int width, int height) {
  const std::vector<int> xs = PilNearestIndices(in.cols, width);
  const std::vector<int> ys = PilNearestIndices(in.rows, height);
  const int ch = in.channels();
  cv::Mat out(height, width, in.type());
  for (int y = 0; y < height; ++y) {
    const uint8_t* src = in.ptr<uint8_t>(ys[y]);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < ch; ++c) dst[x * ch + c] = src[xs[x] * ch + c];
    }
  }
  return out;
}

// Resizes an 8-bit image to width x height with the chosen resampler (a no-op at the
// same size, as PIL's resize).
absl::StatusOr<cv::Mat> ResizeTo(const cv::Mat& img, int width, int height, int interpolation) {
  if (img.cols == width && img.rows == height) return img;
  if (interpolation == kPilNearest) return PilNearestResize(img, width, height);
  if (interpolation == kCvArea) {
    cv::Mat out;
    cv::resize(img, out, cv::Size(width, height), 0, 0, cv::INTER_AREA);
    return out;
  }
  const Image8View view{img.data, img.cols, img.rows, img.channels(), img.step[0]};
  absl::StatusOr<Image8> r = PilResize(view, width, height, static_cast<PilFilter>(interpolation));
  if (!r.ok()) return r.status();
  cv::Mat out(height, width, CV_8UC(img.channels()));
  const size_t row = static_cast<size_t>(width) * img.channels();
  for (int y = 0; y < height; ++y) {
    std::memcpy(out.ptr<uint8_t>(y), r->data.data() + row * y, row);
  }
  return out;
}

// Decodes `bytes` (probed as `header`) to 8-bit samples; INVALID_ARGUMENT for what the
// input gets wrong. OpenCV errors other than the decoder's propagate as cv::Exception.
absl::StatusOr<cv::Mat> DecodeImage(absl::string_view bytes, const ImageHeaderInfo& header) {
  const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(raw, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    // A decoder that throws on malformed data: the input's fault, not ours.
    return absl::InvalidArgumentError(
        absl::StrCat("could not decode the ", ImageFormatName(header.format), " image (", e.what(),
                     "); accepted formats: ", kAcceptedImageFormats));
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "could not decode the ", ImageFormatName(header.format),
        " image (corrupt or unsupported variant); accepted formats: ", kAcceptedImageFormats));
  }
  if (decoded.cols != header.width || decoded.rows != header.height) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inconsistent ", ImageFormatName(header.format), " image: header says ", header.width, "x",
        header.height, " but it decodes to ", decoded.cols, "x", decoded.rows));
  }
  if (decoded.depth() == CV_16U) {
    cv::Mat eight;
    decoded.convertTo(eight, CV_8U, k16To8Scale);  // round(v / 257)
    decoded = std::move(eight);
  } else if (decoded.depth() != CV_8U) {
    return absl::InvalidArgumentError(
        absl::StrCat("the image's samples are not 8- or 16-bit unsigned integers (OpenCV depth ",
                     decoded.depth(), "); accepted: 8-bit or 16-bit images"));
  }
  return decoded;
}

// The CHW float tensor of an interleaved 8-bit `crop` (size x size, `channels`
// channels): each sample times
// `rescale`, then (v - mean[c]) / stddev[c].
ImageTensor ToImageTensor(const cv::Mat& crop, int channels, int size, double rescale,
                          const std::vector<float>& mean, const std::vector<float>& stddev) {
  ImageTensor t;
  t.channels = channels;
  t.height = size;
  t.width = size;
  const size_t plane = static_cast<size_t>(size) * size;
  t.data.resize(plane * channels);
  for (int c = 0; c < channels; ++c) {
    float* dst = t.data.data() + plane * c;
    for (int y = 0; y < size; ++y) {
      const uint8_t* row = crop.ptr<uint8_t>(y);
      for (int x = 0; x < size; ++x) {
        // Same float32 results as torchvision ToTensor + Normalize (for 1/255) and as
        // Hugging Face's rescale (float64 product, cast) + normalize.
        const float v = static_cast<float>(row[x * channels + c] * rescale);
        dst[static_cast<size_t>(y) * size + x] = (v - mean[c]) / stddev[c];
      }
    }
  }
  return t;
}

#endif  // VITSERVE_NO_OPENCV

struct Geometry {
  int mode = kShorterSide;
  int resize = 0;  // shorter side, mode kShorterSide
};

// The resize mode and its size from the spec, checked against the crop.
absl::StatusOr<Geometry> CheckGeometry(const PreprocessSpec& spec, int image_size, int crop) {
  Geometry g;
  const bool squash = spec.resize_height != 0 || spec.resize_width != 0;
  if (spec.skip_resize) {
    g.mode = kNoResize;
    return g;
  }
  if (squash) {
    g.mode = kSquash;
    if (spec.resize_height <= 0 || spec.resize_width <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocessing.resize_height and resize_width must both be positive for a squash "
          "resize, got ",
          spec.resize_height, " and ", spec.resize_width));
    }
    const bool exact = spec.resize_height == image_size && spec.resize_width == image_size;
    if (crop == kCropNone ? !exact
                          : (spec.resize_height < image_size || spec.resize_width < image_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocessing: a squash to ", spec.resize_width, "x", spec.resize_height,
                       crop == kCropNone ? " without a crop must equal" : " cannot be cropped to",
                       " image_size ", image_size, "x", image_size));
    }
    return g;
  }
  g.resize = spec.resize;
  if (g.resize == 0) {
    if (!(spec.crop_pct > 0.0f && spec.crop_pct <= 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "preprocessing.crop_pct must be in (0, 1] when resize is 0, got ", spec.crop_pct));
    }
    // timm: math.floor(img_size / crop_pct), with crop_pct the stored float value.
    g.resize = static_cast<int>(
        std::floor(static_cast<double>(image_size) / static_cast<double>(spec.crop_pct)));
  }
  if (g.resize < image_size) {
    return absl::InvalidArgumentError(absl::StrCat("preprocessing.resize (", g.resize,
                                                   ") must be at least image_size (", image_size,
                                                   ") so that the center crop fits"));
  }
  if (crop == kCropNone) {
    return absl::InvalidArgumentError(
        "preprocessing.crop none needs a square output: use a squash (resize_height / "
        "resize_width) or skip_resize, not the shorter-side rule");
  }
  return g;
}

}  // namespace

uint8_t PilLuma(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((kLumaR * r + kLumaG * g + kLumaB * b + kLumaRound) >> kLumaShift);
}

ResizedSize ShorterSideResize(int64_t width, int64_t height, int64_t resize) {
  if (width <= height) return {resize, height * resize / width};
  return {width * resize / height, resize};
}

int64_t CenterCropOffsetFloor(int64_t size, int64_t crop) { return (size - crop) / 2; }

int64_t CenterCropOffset(int64_t size, int64_t crop) {
  const int64_t diff = size - crop;
  const int64_t half = diff / 2;
  if (diff % 2 == 0) return half;
  // diff / 2 is exactly half + 0.5: Python 3 round() picks the even neighbour.
  return (half % 2 == 0) ? half : half + 1;
}

absl::StatusOr<std::unique_ptr<Preprocessor>> Preprocessor::Create(
    const PreprocessSpec& spec, const Architecture& arch, const PreprocessorOptions& opts) {
  if (opts.max_image_pixels <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_image_pixels must be positive, got ", opts.max_image_pixels));
  }
  if (arch.image_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture.image_size must be positive, got ", arch.image_size));
  }
  const int channels = spec.grayscale ? kGrayChannels : kRgbChannels;
  if (arch.in_chans != channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "architecture.in_chans is ", arch.in_chans, " but preprocessing.grayscale is ",
        spec.grayscale ? "true" : "false", "; accepted: in_chans 3 with grayscale false, or ",
        "in_chans 1 with grayscale true"));
  }
  if (static_cast<int>(spec.mean.size()) != channels ||
      static_cast<int>(spec.std.size()) != channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocessing.mean and preprocessing.std need ", channels,
        " values (one per input channel); got ", spec.mean.size(), " and ", spec.std.size()));
  }
  for (int c = 0; c < channels; ++c) {
    if (!std::isfinite(spec.mean[c]) || !std::isfinite(spec.std[c]) || spec.std[c] <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocessing.mean must be finite and preprocessing.std finite and ",
                       "positive; channel ", c, " has mean ", spec.mean[c], " std ", spec.std[c]));
    }
  }
  absl::StatusOr<int> interpolation = ParseInterpolation(spec.interpolation);
  if (!interpolation.ok()) return interpolation.status();

  absl::StatusOr<int> crop = ParseCrop(spec.crop);
  if (!crop.ok()) return crop.status();
  if (!(std::isfinite(spec.rescale_factor) && spec.rescale_factor > 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "preprocessing.rescale_factor must be finite and positive, got ", spec.rescale_factor));
  }
  absl::StatusOr<Geometry> geometry = CheckGeometry(spec, arch.image_size, *crop);
  if (!geometry.ok()) return geometry.status();

  auto p = std::unique_ptr<Preprocessor>(new Preprocessor());
  p->opts_ = opts;
  p->image_size_ = arch.image_size;
  p->channels_ = channels;
  p->resize_ = geometry->resize;
  p->squash_width_ = spec.resize_width;
  p->squash_height_ = spec.resize_height;
  p->mode_ = geometry->mode;
  p->crop_ = *crop;
  p->interpolation_ = *interpolation;
  p->rescale_factor_ = spec.rescale_factor;
  p->invert_ = spec.invert;
  p->mean_ = spec.mean;
  p->std_ = spec.std;
  return p;
}

#ifdef VITSERVE_NO_OPENCV
absl::Status Preprocessor::WarmUp() const { return absl::OkStatus(); }

absl::StatusOr<ImageTensor> Preprocessor::FromEncoded(absl::string_view bytes) const {
  return absl::FailedPreconditionError(
      "this vitserve was built without OpenCV (VITSERVE_WITH_OPENCV=OFF) and takes "
      "preprocessed tensor inputs only");
}
#else
absl::Status Preprocessor::WarmUp() const {
  const cv::Mat gray(image_size_, image_size_, CV_8UC1, cv::Scalar(128));
  for (const char* ext : {".png", ".jpg"}) {
    std::vector<uchar> encoded;
    try {
      if (!cv::imencode(ext, gray, encoded)) {
        return absl::InternalError(absl::StrCat("warm-up: OpenCV cannot encode ", ext));
      }
    } catch (const cv::Exception& e) {
      return absl::InternalError(
          absl::StrCat("warm-up: OpenCV cannot encode ", ext, ": ", e.what()));
    }
    absl::StatusOr<ImageTensor> decoded = FromEncoded(
        absl::string_view(reinterpret_cast<const char*>(encoded.data()), encoded.size()));
    if (!decoded.ok()) {
      return absl::InternalError(
          absl::StrCat("warm-up: decoding a ", ext, " image failed: ", decoded.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageTensor> Preprocessor::FromEncoded(absl::string_view bytes) const {
  absl::StatusOr<ImageHeaderInfo> header = ProbeImageSize(bytes);
  if (!header.ok()) return header.status();
  // Each side is below 2^32 (TIFF's LONG), so the product fits uint64 but not int64.
  const uint64_t pixels =
      static_cast<uint64_t>(header->width) * static_cast<uint64_t>(header->height);
  if (pixels > static_cast<uint64_t>(opts_.max_image_pixels)) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", header->width, "x", header->height, " = ", pixels,
                     " pixels, more than the limit of ", opts_.max_image_pixels,
                     " pixels; downscale it or send a preprocessed tensor"));
  }
  ResizedSize resized{header->width, header->height};
  if (mode_ == kShorterSide) {
    resized = ShorterSideResize(header->width, header->height, resize_);
  } else if (mode_ == kSquash) {
    resized = {squash_width_, squash_height_};
  }
  if (resized.width * resized.height > opts_.max_image_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat("image aspect ratio is too extreme: ", header->width, "x", header->height,
                     " resized to a shorter side of ", resize_, " would be ", resized.width, "x",
                     resized.height, " pixels, more than the limit of ", opts_.max_image_pixels));
  }

  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoded image of ", bytes.size(), " bytes is larger than the 2 GiB OpenCV accepts"));
  }
  try {
    absl::StatusOr<cv::Mat> decoded = DecodeImage(bytes, *header);
    if (!decoded.ok()) return decoded.status();
    absl::StatusOr<cv::Mat> converted = ToTargetChannels(*decoded, channels_);
    if (!converted.ok()) return converted.status();
    cv::Mat img = *std::move(converted);
    if (invert_) img = cv::Scalar::all(kMaxPixelValue) - img;

    absl::StatusOr<cv::Mat> sized = ResizeTo(img, static_cast<int>(resized.width),
                                             static_cast<int>(resized.height), interpolation_);
    if (!sized.ok()) return sized.status();
    img = *std::move(sized);
    if (img.cols < image_size_ || img.rows < image_size_ ||
        (crop_ == kCropNone && (img.cols != image_size_ || img.rows != image_size_))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image is ", img.cols, "x", img.rows, " after resizing but the model needs ",
          crop_ == kCropNone ? "exactly " : "at least ", image_size_, "x", image_size_));
    }
    const bool floor_rule = crop_ == kCropFloor;
    const int top = static_cast<int>(floor_rule ? CenterCropOffsetFloor(img.rows, image_size_)
                                                : CenterCropOffset(img.rows, image_size_));
    const int left = static_cast<int>(floor_rule ? CenterCropOffsetFloor(img.cols, image_size_)
                                                 : CenterCropOffset(img.cols, image_size_));
    const cv::Mat crop = img(cv::Rect(left, top, image_size_, image_size_));

    return ToImageTensor(crop, channels_, image_size_, rescale_factor_, mean_, std_);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("OpenCV failed while preprocessing a ",
                                            ImageFormatName(header->format), " image: ", e.what()));
  }
}

#endif  // VITSERVE_NO_OPENCV

absl::StatusOr<ImageTensor> Preprocessor::FromTensor(const vitserve::v1::Tensor& t) const {
  const std::string expected = ShapeString(channels_, image_size_, image_size_);
  const auto& shape = t.shape();
  const bool chw = shape.size() == 3;
  const bool nchw = shape.size() == 4 && shape[0] == 1;
  const int offset = nchw ? 1 : 0;
  if (!(chw || nchw) || shape[offset] != channels_ || shape[offset + 1] != image_size_ ||
      shape[offset + 2] != image_size_) {
    return absl::InvalidArgumentError(absl::StrCat("tensor shape [", absl::StrJoin(shape, ","),
                                                   "] does not match the model input; expected ",
                                                   expected, " or [1,", expected.substr(1)));
  }
  const size_t want = static_cast<size_t>(channels_) * image_size_ * image_size_;
  if (static_cast<size_t>(t.data_size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor has ", t.data_size(), " values but its shape ", expected, " needs ", want));
  }
  for (int i = 0; i < t.data_size(); ++i) {
    if (!std::isfinite(t.data(i))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor value ", i, " is ", t.data(i), "; all values must be finite (no NaN or Inf)"));
    }
  }
  ImageTensor out;
  out.channels = channels_;
  out.height = image_size_;
  out.width = image_size_;
  out.data.assign(t.data().begin(), t.data().end());
  return out;
}

}  // namespace vitserve
