#include "server/preprocess/pil_resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/util/enum_names.h"

namespace vitserve {
namespace {

constexpr EnumNameEntry<PilFilter> kFilterNames[] = {
    {PilFilter::kBilinear, "bilinear"}, {PilFilter::kBicubic, "bicubic"},
    {PilFilter::kLanczos, "lanczos"},   {PilFilter::kBox, "box"},
    {PilFilter::kHamming, "hamming"},
};

// Fixed-point precision of the weights: 32 bits - 8 (pixel) - 2 (headroom), as Pillow.
constexpr int kPrecisionBits = 22;
constexpr int32_t kRoundingBias = int32_t{1} << (kPrecisionBits - 1);
constexpr double kFixedOne = static_cast<double>(int32_t{1} << kPrecisionBits);
constexpr double kPi = 3.14159265358979323846;

double Sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

// The filters exactly as Pillow writes them (same operation order, in double).
double FilterValue(PilFilter f, double x) {
  switch (f) {
    case PilFilter::kBox:
      return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case PilFilter::kBilinear:
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    case PilFilter::kHamming:
      if (x < 0.0) x = -x;
      if (x == 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x = x * kPi;
      return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as Pillow
    case PilFilter::kBicubic: {
      constexpr double a = -0.5;
      if (x < 0.0) x = -x;
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    }
    case PilFilter::kLanczos:
      return (-3.0 <= x && x < 3.0) ? Sinc(x) * Sinc(x / 3) : 0.0;
  }
  return 0.0;
}

double FilterSupport(PilFilter f) {
  switch (f) {
    case PilFilter::kBox:
      return 0.5;
    case PilFilter::kBilinear:
    case PilFilter::kHamming:
      return 1.0;
    case PilFilter::kBicubic:
      return 2.0;
    case PilFilter::kLanczos:
      return 3.0;
  }
  return 1.0;
}

// Taps of one axis: output i reads inputs [first[i], first[i] + count[i]) with the
// fixed-point weights weights[i * ksize + k].
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

AxisCoeffs PrecomputeAxis(int in_size, int out_size, PilFilter filter) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = FilterSupport(filter) * filterscale;
  AxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  const double ss = 1.0 / filterscale;
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::max(xmax - xmin, 0);
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      w[k] = FilterValue(filter, (static_cast<double>(k + xmin) - center + 0.5) * ss);
      total += w[k];
    }
    int32_t* dst = &c.weights[static_cast<size_t>(i) * c.ksize];
    for (int k = 0; k < n; ++k) {
      const double v = (total != 0.0 ? w[k] / total : w[k]) * kFixedOne;
      dst[k] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);  // half away from zero
    }
    c.first[i] = xmin;
    c.count[i] = n;
  }
  return c;
}

inline uint8_t Clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over rows [row0, row0 + rows) of `src` into `dst` (packed).
template <int C>
void HorizontalPass(const Image8View& src, int row0, int rows, const AxisCoeffs& c, uint8_t* dst) {
  const int out_w = static_cast<int>(c.first.size());
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.data + static_cast<size_t>(row0 + y) * src.stride;
    uint8_t* out = dst + static_cast<size_t>(y) * out_w * C;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = &c.weights[static_cast<size_t>(x) * c.ksize];
      const uint8_t* p = in + static_cast<size_t>(c.first[x]) * C;
      int32_t acc[C];
      for (int ch = 0; ch < C; ++ch) acc[ch] = kRoundingBias;
      for (int t = 0; t < c.count[x]; ++t) {
        for (int ch = 0; ch < C; ++ch) acc[ch] += p[t * C + ch] * k[t];
      }
      for (int ch = 0; ch < C; ++ch) out[x * C + ch] = Clip8(acc[ch]);
    }
  }
}

// Vertical pass: `src` rows are already shifted so that row 0 is the first one read.
void VerticalPass(const Image8View& src, const AxisCoeffs& c, int row_shift, uint8_t* dst) {
  const int out_h = static_cast<int>(c.first.size());
  const int row_len = src.width * src.channels;
  std::vector<int32_t> acc(row_len);
  for (int y = 0; y < out_h; ++y) {
    const int32_t* k = &c.weights[static_cast<size_t>(y) * c.ksize];
    std::fill(acc.begin(), acc.end(), kRoundingBias);
    for (int t = 0; t < c.count[y]; ++t) {
      const uint8_t* in = src.data + static_cast<size_t>(c.first[y] - row_shift + t) * src.stride;
      const int32_t w = k[t];
      for (int i = 0; i < row_len; ++i) acc[i] += in[i] * w;
    }
    uint8_t* out = dst + static_cast<size_t>(y) * row_len;
    for (int i = 0; i < row_len; ++i) out[i] = Clip8(acc[i]);
  }
}

void HorizontalDispatch(const Image8View& src, int row0, int rows, const AxisCoeffs& c,
                        uint8_t* dst) {
  switch (src.channels) {
    case 1:
      return HorizontalPass<1>(src, row0, rows, c, dst);
    case 2:
      return HorizontalPass<2>(src, row0, rows, c, dst);
    case 3:
      return HorizontalPass<3>(src, row0, rows, c, dst);
    default:
      return HorizontalPass<4>(src, row0, rows, c, dst);
  }
}

Image8View ViewOf(const Image8& im) {
  return Image8View{im.data.data(), im.width, im.height, im.channels,
                    static_cast<size_t>(im.width) * im.channels};
}

}  // namespace

absl::StatusOr<PilFilter> ParsePilFilter(absl::string_view name) {
  return ParseEnumName(kFilterNames, name, "unknown PIL filter");
}

absl::string_view PilFilterName(PilFilter f) { return EnumName(kFilterNames, f, "?"); }

absl::StatusOr<Image8> PilResize(const Image8View& src, int width, int height, PilFilter filter) {
  if (src.data == nullptr || src.width < 1 || src.height < 1 || src.channels < 1 ||
      src.channels > 4 || src.stride < static_cast<size_t>(src.width) * src.channels) {
    return absl::InvalidArgumentError(absl::StrCat("PilResize: bad source image ", src.width, "x",
                                                   src.height, "x", src.channels));
  }
  if (width < 1 || height < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("PilResize: bad target size ", width, "x", height));
  }
  const int ch = src.channels;
  Image8View cur = src;
  Image8 tmp;
  int row_shift = 0;
  const bool vertical = height != src.height;
  const AxisCoeffs vc = PrecomputeAxis(src.height, height, filter);
  if (width != src.width) {
    // Only the rows the vertical pass reads: [first of row 0, end of the last row).
    const int row0 = vc.first.front();
    const int row1 = vc.first.back() + vc.count.back();
    const AxisCoeffs hc = PrecomputeAxis(src.width, width, filter);
    tmp.width = width;
    tmp.height = vertical ? row1 - row0 : src.height;
    tmp.channels = ch;
    tmp.data.resize(static_cast<size_t>(tmp.width) * tmp.height * ch);
    HorizontalDispatch(src, vertical ? row0 : 0, tmp.height, hc, tmp.data.data());
    row_shift = vertical ? row0 : 0;
    cur = ViewOf(tmp);
  }
  if (!vertical) {
    if (width != src.width) return tmp;
    Image8 copy{src.width, src.height, ch, {}};
    copy.data.resize(static_cast<size_t>(src.width) * src.height * ch);
    for (int y = 0; y < src.height; ++y) {
      std::memcpy(copy.data.data() + static_cast<size_t>(y) * src.width * ch,
                  src.data + static_cast<size_t>(y) * src.stride,
                  static_cast<size_t>(src.width) * ch);
    }
    return copy;
  }
  Image8 out{cur.width, height, ch, {}};
  out.data.resize(static_cast<size_t>(out.width) * height * ch);
  VerticalPass(cur, vc, row_shift, out.data.data());
  return out;
}

}  // namespace vitserve
