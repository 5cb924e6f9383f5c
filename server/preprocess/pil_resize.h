// Pillow-exact resampling of 8-bit images: the same output bytes as PIL's
// Image.resize(size, resample) (Pillow 9.4, libImaging/Resample.c) for the convolution
// filters BILINEAR, BICUBIC, LANCZOS, BOX and HAMMING, on 1- to 4-channel interleaved
// images (reducing_gap=None, the default of Image.resize and of torchvision / Hugging Face).
//
// The algorithm (re-implemented from Pillow's description, no code copied):
//   * separable: a horizontal pass into an 8-bit intermediate image, then a vertical pass;
//     an axis whose size does not change is not resampled (Pillow skips that pass);
//   * per output position i on an axis scaled by s = in / out: centre (i + 0.5) * s,
//     filter support = filter radius * max(s, 1) (antialiasing when shrinking), taps
//     x in [int(centre - support + 0.5), int(centre + support + 0.5)) clipped to the image,
//     weight filter((x - centre + 0.5) / max(s, 1)), normalised to sum 1 in double;
//   * weights in 22-bit fixed point (rounded half away from zero), accumulated in int32
//     from 2^21 (rounding), result >> 22 clamped to 0..255.
// Only the intermediate rows the vertical pass reads are computed (as Pillow does).
//
// Thread-safety: pure functions, reentrant.
#ifndef VITSERVE_SERVER_PREPROCESS_PIL_RESIZE_H_
#define VITSERVE_SERVER_PREPROCESS_PIL_RESIZE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

// Pillow's filters; the numbers are Pillow's (and Hugging Face's `resample`) codes.
enum class PilFilter { kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

// "bilinear", "bicubic", "lanczos", "box", "hamming" (lower case). INVALID_ARGUMENT otherwise.
absl::StatusOr<PilFilter> ParsePilFilter(absl::string_view name);
absl::string_view PilFilterName(PilFilter f);

// A read-only view of an 8-bit interleaved image; `stride` is bytes per row (>= width * channels).
struct Image8View {
  const uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  int channels = 0;
  size_t stride = 0;
};

// An owned 8-bit interleaved image with packed rows (stride = width * channels).
struct Image8 {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> data;
};

// Resizes `src` to width x height exactly as PIL's Image.resize((width, height), filter).
// Requires width, height >= 1, src non-empty, 1 <= channels <= 4 (checked: INVALID_ARGUMENT).
// A same-size call returns a copy (as PIL does).
absl::StatusOr<Image8> PilResize(const Image8View& src, int width, int height, PilFilter filter);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PREPROCESS_PIL_RESIZE_H_
