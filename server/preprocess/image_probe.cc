#include "server/preprocess/image_probe.h"

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr EnumNameEntry<ImageFormat> kFormatNames[] = {
    {ImageFormat::kPng, "png"},   {ImageFormat::kJpeg, "jpeg"}, {ImageFormat::kBmp, "bmp"},
    {ImageFormat::kWebP, "webp"}, {ImageFormat::kTiff, "tiff"},
};

// PNG: 8-byte signature, then the IHDR chunk (length, "IHDR", width, height; big-endian).
constexpr absl::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);
constexpr size_t kPngIhdrTypeOffset = 12;
constexpr size_t kPngWidthOffset = 16;
constexpr size_t kPngHeightOffset = 20;

// JPEG marker bytes (ITU T.81 table B.1).
constexpr uint8_t kJpegMarkerPrefix = 0xFF;
constexpr uint8_t kJpegSoi = 0xD8;
constexpr uint8_t kJpegEoi = 0xD9;
constexpr uint8_t kJpegSos = 0xDA;
constexpr uint8_t kJpegTem = 0x01;
constexpr uint8_t kJpegRst0 = 0xD0;
constexpr uint8_t kJpegRst7 = 0xD7;
constexpr uint8_t kJpegSof0 = 0xC0;
constexpr uint8_t kJpegSof15 = 0xCF;
constexpr uint8_t kJpegDht = 0xC4;  // in the SOFn range but not a frame header
constexpr uint8_t kJpegJpg = 0xC8;
constexpr uint8_t kJpegDac = 0xCC;
// SOFn payload: length(2) precision(1) height(2) width(2).
constexpr size_t kJpegSofHeightOffset = 3;
constexpr size_t kJpegSofWidthOffset = 5;

// BMP: "BM", file header of 14 bytes, then the DIB header whose first field is its size.
constexpr size_t kBmpDibSizeOffset = 14;
constexpr size_t kBmpWidthOffset = 18;
constexpr uint32_t kBmpCoreHeaderSize = 12;  // OS/2 BITMAPCOREHEADER: 16-bit dimensions
constexpr size_t kBmpCoreHeightOffset = 20;
constexpr size_t kBmpInfoHeightOffset = 22;

// WebP: "RIFF" size "WEBP", then the first chunk's FourCC at 12 and its payload at 20.
constexpr size_t kWebPFourCcOffset = 12;
constexpr size_t kWebPPayloadOffset = 20;
constexpr uint32_t kWebPVp8DimensionMask = 0x3FFF;  // 14 bits, upper 2 bits are scaling
constexpr uint8_t kWebPVp8LSignature = 0x2F;

// TIFF tags and field types.
constexpr uint16_t kTiffImageWidth = 256;
constexpr uint16_t kTiffImageLength = 257;
constexpr uint16_t kTiffTypeShort = 3;
constexpr uint16_t kTiffTypeLong = 4;
constexpr size_t kTiffIfdEntrySize = 12;

// Reads fixed-width integers at an offset, failing when out of bounds.
class ByteReader {
 public:
  ByteReader(absl::string_view bytes, bool big_endian) : bytes_(bytes), big_endian_(big_endian) {}

  bool Has(size_t offset, size_t n) const {
    return offset <= bytes_.size() && n <= bytes_.size() - offset;
  }
  uint8_t U8(size_t offset) const { return static_cast<uint8_t>(bytes_[offset]); }
  // Callers check Has() first.
  uint32_t Read(size_t offset, size_t n) const {
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t b = U8(offset + (big_endian_ ? i : n - 1 - i));
      v = (v << 8) | b;
    }
    return v;
  }
  size_t size() const { return bytes_.size(); }

 private:
  absl::string_view bytes_;
  bool big_endian_;
};

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " (accepted image formats: ", kAcceptedImageFormats, ")"));
}

absl::Status Truncated(ImageFormat format) {
  return Invalid(
      absl::StrCat("truncated ", ImageFormatName(format), " header: cannot read the image size"));
}

absl::StatusOr<ImageHeaderInfo> Make(ImageFormat format, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) {
    return Invalid(absl::StrCat(ImageFormatName(format), " header declares a ", width, "x", height,
                                " image; width and height must be positive"));
  }
  return ImageHeaderInfo{format, width, height};
}

absl::StatusOr<ImageHeaderInfo> ProbePng(absl::string_view bytes) {
  const ByteReader r(bytes, /*big_endian=*/true);
  if (!r.Has(kPngHeightOffset, 4)) return Truncated(ImageFormat::kPng);
  if (bytes.substr(kPngIhdrTypeOffset, 4) != "IHDR") {
    return Invalid("PNG does not start with an IHDR chunk");
  }
  // PNG dimensions are at most 2^31 - 1; larger values are invalid files.
  const int64_t w = static_cast<int32_t>(r.Read(kPngWidthOffset, 4));
  const int64_t h = static_cast<int32_t>(r.Read(kPngHeightOffset, 4));
  return Make(ImageFormat::kPng, w, h);
}

absl::StatusOr<ImageHeaderInfo> ProbeJpeg(absl::string_view bytes) {
  const ByteReader r(bytes, /*big_endian=*/true);
  size_t pos = 2;  // after SOI
  while (true) {
    // Find the next marker: 0xFF, optional 0xFF fill bytes, then the marker code.
    // Like libjpeg's next_marker(), skip extraneous bytes before a marker.
    while (r.Has(pos, 1) && r.U8(pos) != kJpegMarkerPrefix) ++pos;
    if (!r.Has(pos, 2)) return Truncated(ImageFormat::kJpeg);
    while (r.Has(pos + 1, 1) && r.U8(pos + 1) == kJpegMarkerPrefix) ++pos;
    if (!r.Has(pos + 1, 1)) return Truncated(ImageFormat::kJpeg);
    const uint8_t marker = r.U8(pos + 1);
    pos += 2;
    if (marker == kJpegSoi || marker == kJpegTem || (marker >= kJpegRst0 && marker <= kJpegRst7)) {
      continue;  // standalone markers carry no length
    }
    if (marker == kJpegEoi || marker == kJpegSos) {
      return Invalid("corrupt JPEG: no frame header (SOFn) before the image data");
    }
    if (!r.Has(pos, 2)) return Truncated(ImageFormat::kJpeg);
    const uint32_t length = r.Read(pos, 2);  // includes the two length bytes
    if (length < 2) return Invalid("corrupt JPEG: marker segment length below 2");
    const bool is_sof = marker >= kJpegSof0 && marker <= kJpegSof15 && marker != kJpegDht &&
                        marker != kJpegJpg && marker != kJpegDac;
    if (is_sof) {
      if (!r.Has(pos + kJpegSofWidthOffset, 2)) return Truncated(ImageFormat::kJpeg);
      const int64_t h = r.Read(pos + kJpegSofHeightOffset, 2);
      const int64_t w = r.Read(pos + kJpegSofWidthOffset, 2);
      if (h == 0) {
        return Invalid("JPEG with the height defined later by a DNL marker is not supported");
      }
      return Make(ImageFormat::kJpeg, w, h);
    }
    pos += length;
  }
}

absl::StatusOr<ImageHeaderInfo> ProbeBmp(absl::string_view bytes) {
  const ByteReader r(bytes, /*big_endian=*/false);
  if (!r.Has(kBmpDibSizeOffset, 4)) return Truncated(ImageFormat::kBmp);
  const uint32_t dib_size = r.Read(kBmpDibSizeOffset, 4);
  if (dib_size == kBmpCoreHeaderSize) {
    if (!r.Has(kBmpCoreHeightOffset, 2)) return Truncated(ImageFormat::kBmp);
    return Make(ImageFormat::kBmp, static_cast<int16_t>(r.Read(kBmpWidthOffset, 2)),
                static_cast<int16_t>(r.Read(kBmpCoreHeightOffset, 2)));
  }
  if (!r.Has(kBmpInfoHeightOffset, 4)) return Truncated(ImageFormat::kBmp);
  const int64_t w = static_cast<int32_t>(r.Read(kBmpWidthOffset, 4));
  int64_t h = static_cast<int32_t>(r.Read(kBmpInfoHeightOffset, 4));
  if (h < 0) h = -h;  // negative height = top-down row order
  return Make(ImageFormat::kBmp, w, h);
}

absl::StatusOr<ImageHeaderInfo> ProbeWebP(absl::string_view bytes) {
  const ByteReader r(bytes, /*big_endian=*/false);
  if (!r.Has(kWebPFourCcOffset, 4)) return Truncated(ImageFormat::kWebP);
  const absl::string_view fourcc = bytes.substr(kWebPFourCcOffset, 4);
  const size_t p = kWebPPayloadOffset;
  if (fourcc == "VP8 ") {
    // 3-byte frame tag, start code 9d 01 2a, then 16-bit width and height.
    if (!r.Has(p + 6, 4)) return Truncated(ImageFormat::kWebP);
    if (r.U8(p + 3) != 0x9D || r.U8(p + 4) != 0x01 || r.U8(p + 5) != 0x2A) {
      return Invalid("corrupt WebP: VP8 start code missing");
    }
    return Make(ImageFormat::kWebP, r.Read(p + 6, 2) & kWebPVp8DimensionMask,
                r.Read(p + 8, 2) & kWebPVp8DimensionMask);
  }
  if (fourcc == "VP8L") {
    // Signature byte, then 14 bits width-1 and 14 bits height-1 (little-endian bit order).
    if (!r.Has(p, 5)) return Truncated(ImageFormat::kWebP);
    if (r.U8(p) != kWebPVp8LSignature) return Invalid("corrupt WebP: VP8L signature missing");
    const uint32_t bits = r.Read(p + 1, 4);
    return Make(ImageFormat::kWebP, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
  }
  if (fourcc == "VP8X") {
    // Flags (1), reserved (3), canvas width-1 (24 bits), canvas height-1 (24 bits).
    if (!r.Has(p + 7, 3)) return Truncated(ImageFormat::kWebP);
    return Make(ImageFormat::kWebP, int64_t{r.Read(p + 4, 3)} + 1, int64_t{r.Read(p + 7, 3)} + 1);
  }
  return Invalid("WebP with an unknown first chunk (expected VP8, VP8L or VP8X)");
}

absl::StatusOr<ImageHeaderInfo> ProbeTiff(absl::string_view bytes) {
  const ByteReader r(bytes, /*big_endian=*/bytes[0] == 'M');
  if (!r.Has(4, 4)) return Truncated(ImageFormat::kTiff);
  const size_t ifd = r.Read(4, 4);
  if (!r.Has(ifd, 2)) return Truncated(ImageFormat::kTiff);
  const size_t count = r.Read(ifd, 2);
  int64_t width = -1;
  int64_t height = -1;
  for (size_t i = 0; i < count; ++i) {
    const size_t entry = ifd + 2 + i * kTiffIfdEntrySize;
    if (!r.Has(entry, kTiffIfdEntrySize)) return Truncated(ImageFormat::kTiff);
    const uint16_t tag = r.Read(entry, 2);
    if (tag != kTiffImageWidth && tag != kTiffImageLength) continue;
    const uint16_t type = r.Read(entry + 2, 2);
    int64_t value;
    if (type == kTiffTypeShort) {
      value = r.Read(entry + 8, 2);  // left-justified in the 4-byte value field
    } else if (type == kTiffTypeLong) {
      value = r.Read(entry + 8, 4);
    } else {
      return Invalid("corrupt TIFF: ImageWidth/ImageLength is neither SHORT nor LONG");
    }
    (tag == kTiffImageWidth ? width : height) = value;
  }
  if (width < 0 || height < 0) {
    return Invalid("TIFF first IFD lacks ImageWidth or ImageLength");
  }
  return Make(ImageFormat::kTiff, width, height);
}

}  // namespace

absl::string_view ImageFormatName(ImageFormat format) {
  return EnumName(kFormatNames, format, "unknown");
}

absl::StatusOr<ImageHeaderInfo> ProbeImageSize(absl::string_view bytes) {
  if (bytes.empty()) return Invalid("empty image: no bytes were sent");
  if (bytes.substr(0, kPngSignature.size()) == kPngSignature) return ProbePng(bytes);
  if (bytes.size() >= 3 && static_cast<uint8_t>(bytes[0]) == kJpegMarkerPrefix &&
      static_cast<uint8_t>(bytes[1]) == kJpegSoi &&
      static_cast<uint8_t>(bytes[2]) == kJpegMarkerPrefix) {
    return ProbeJpeg(bytes);
  }
  if (bytes.substr(0, 2) == "BM") return ProbeBmp(bytes);
  if (bytes.size() >= kWebPFourCcOffset && bytes.substr(0, 4) == "RIFF" &&
      bytes.substr(8, 4) == "WEBP")
    return ProbeWebP(bytes);
  if (bytes.substr(0, 4) == absl::string_view("II*\0", 4) ||
      bytes.substr(0, 4) == absl::string_view("MM\0*", 4)) {
    return ProbeTiff(bytes);
  }
  if (bytes.substr(0, 4) == absl::string_view("II+\0", 4) ||
      bytes.substr(0, 4) == absl::string_view("MM\0+", 4)) {
    return Invalid("BigTIFF is not supported; send a classic TIFF");
  }
  return Invalid("unrecognised image format (the first bytes match no known signature)");
}

}  // namespace vitserve
