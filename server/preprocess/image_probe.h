// Reads an encoded image's format and pixel dimensions from its header, without decoding
// it and without OpenCV.
//
// Why: the preprocessor must refuse images that are too large BEFORE handing them to a
// decoder (a 100000x100000 PNG is a few hundred bytes on the wire and 30 GB decoded).
// This file is deliberately small, allocation-free and dependency-free so that a fuzzer
// can target ProbeImageSize() directly.
//
// Accepted formats (the ones vitserve decodes): PNG (IHDR), JPEG (first SOFn marker;
// baseline, extended, progressive, lossless, arithmetic), BMP (BITMAPCOREHEADER and
// BITMAPINFOHEADER and later), WebP (VP8 lossy, VP8L lossless, VP8X extended canvas),
// TIFF (classic little- and big-endian; first IFD's ImageWidth / ImageLength).
//
// Thread-safety: pure functions of their arguments.
#ifndef VITSERVE_SERVER_PREPROCESS_IMAGE_PROBE_H_
#define VITSERVE_SERVER_PREPROCESS_IMAGE_PROBE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

enum class ImageFormat { kPng, kJpeg, kBmp, kWebP, kTiff };

// "png", "jpeg", "bmp", "webp", "tiff".
absl::string_view ImageFormatName(ImageFormat format);

// Human-readable list of accepted formats, for error messages.
inline constexpr absl::string_view kAcceptedImageFormats = "PNG, JPEG, BMP, WebP, TIFF";

struct ImageHeaderInfo {
  ImageFormat format = ImageFormat::kPng;
  int64_t width = 0;   // pixels, > 0
  int64_t height = 0;  // pixels, > 0
};

// Identifies the format from the magic bytes and reads the dimensions from the header.
// Reads only inside `bytes` (every offset is bounds-checked) and never allocates on
// success. Errors (all INVALID_ARGUMENT, message names the problem and the accepted
// formats): empty input, unknown magic, header truncated, zero width or height, JPEG
// without an SOFn marker before the scan data, TIFF without ImageWidth/ImageLength.
absl::StatusOr<ImageHeaderInfo> ProbeImageSize(absl::string_view bytes);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_PREPROCESS_IMAGE_PROBE_H_
