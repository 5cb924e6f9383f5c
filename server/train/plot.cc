#include "server/train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace vitserve {
namespace train {
namespace {

// Plot-area margins in pixels (left leaves room for tick labels and the y label).
constexpr int kMarginLeft = 90;
constexpr int kMarginRight = 30;
constexpr int kMarginTop = 50;
constexpr int kMarginBottom = 70;
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
constexpr double kTickFontScale = 0.5;
constexpr double kLabelFontScale = 0.6;
constexpr double kTitleFontScale = 0.7;
constexpr int kTargetTicks = 7;
constexpr int kMarkerRadius = 4;
// Fraction of the data range added on each side when ranges come from the data.
constexpr double kRangeMargin = 0.05;

// Distinguishable colours (BGR), cycled.
const cv::Scalar kColours[] = {
    {180, 119, 31},   // blue
    {14, 127, 255},   // orange
    {44, 160, 44},    // green
    {40, 39, 214},    // red
    {189, 103, 148},  // purple
    {75, 86, 140},    // brown
    {194, 119, 227},  // pink
    {127, 127, 127},  // grey
};
const cv::Scalar kBlack(0, 0, 0);
const cv::Scalar kGrid(225, 225, 225);
const cv::Scalar kWhite(255, 255, 255);

std::string TickLabel(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

void PutCentered(cv::Mat& img, const std::string& text, cv::Point centre, double scale) {
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, kFont, scale, 1, &baseline);
  cv::putText(img, text, {centre.x - size.width / 2, centre.y + size.height / 2}, kFont, scale,
              kBlack, 1, cv::LINE_AA);
}

}  // namespace

std::vector<double> NiceTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || target < 2) return ticks;
  const double raw = (hi - lo) / (target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + 1e-9 * step; t += step) {
    ticks.push_back(std::abs(t) < 1e-12 * step ? 0.0 : t);
  }
  return ticks;
}

namespace {

// Where data coordinates land in the image: the data range and the plot area's pixels.
struct PlotFrame {
  double x_lo, x_hi, y_lo, y_hi;
  int left, right, top, bottom;
  int px(double x) const {
    return static_cast<int>(std::lround(left + (x - x_lo) / (x_hi - x_lo) * (right - left)));
  }
  int py(double y) const {
    return static_cast<int>(std::lround(bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)));
  }
};

// One axis's range: [fixed_lo, fixed_hi] when given (fixed_hi > fixed_lo), else the data
// range [*lo, *hi] widened by a margin.
void FitAxis(double fixed_lo, double fixed_hi, double* lo, double* hi) {
  if (fixed_hi > fixed_lo) {
    *lo = fixed_lo;
    *hi = fixed_hi;
    return;
  }
  const double m = std::max((*hi - *lo) * kRangeMargin, 1e-9 + std::abs(*hi) * 0.01);
  *lo -= m;
  *hi += m;
}

// The data range of `series` (with a margin), or the fixed one of `o`.
absl::StatusOr<PlotFrame> MakeFrame(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  size_t points = 0;
  for (const PlotSeries& s : series) {
    if (s.x.size() != s.y.size()) {
      return absl::InvalidArgumentError(absl::StrCat("plot series '", s.name, "' has ", s.x.size(),
                                                     " x and ", s.y.size(), " y values"));
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
      ++points;
    }
  }
  if (points == 0) return absl::InvalidArgumentError("plot: no data points");
  FitAxis(o.x_min, o.x_max, &x_lo, &x_hi);
  FitAxis(o.y_min, o.y_max, &y_lo, &y_hi);

  return PlotFrame{x_lo,        x_hi,
                   y_lo,        y_hi,
                   kMarginLeft, o.width - kMarginRight,
                   kMarginTop,  o.height - kMarginBottom};
}

// Grid, ticks, tick labels, the frame, axis labels and title.
void DrawAxes(cv::Mat& img, const PlotFrame& f, const PlotOptions& o) {
  // Grid, ticks and tick labels.
  const std::vector<double> xt = NiceTicks(f.x_lo, f.x_hi, kTargetTicks);
  const std::vector<double> yt = NiceTicks(f.y_lo, f.y_hi, kTargetTicks);
  const double x_step = xt.size() > 1 ? xt[1] - xt[0] : 1.0;
  const double y_step = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
  for (double t : xt) {
    const int x = f.px(t);
    cv::line(img, {x, f.top}, {x, f.bottom}, kGrid, 1);
    cv::line(img, {x, f.bottom}, {x, f.bottom + 6}, kBlack, 1);
    PutCentered(img, TickLabel(t, x_step), {x, f.bottom + 20}, kTickFontScale);
  }
  for (double t : yt) {
    const int y = f.py(t);
    cv::line(img, {f.left, y}, {f.right, y}, kGrid, 1);
    cv::line(img, {f.left - 6, y}, {f.left, y}, kBlack, 1);
    const std::string label = TickLabel(t, y_step);
    int baseline = 0;
    const cv::Size size = cv::getTextSize(label, kFont, kTickFontScale, 1, &baseline);
    cv::putText(img, label, {f.left - 10 - size.width, y + size.height / 2}, kFont, kTickFontScale,
                kBlack, 1, cv::LINE_AA);
  }
  cv::rectangle(img, {f.left, f.top}, {f.right, f.bottom}, kBlack, 1);

  // Axis labels and title; the y label is drawn horizontally, then rotated.
  PutCentered(img, o.x_label, {(f.left + f.right) / 2, o.height - 22}, kLabelFontScale);
  PutCentered(img, o.title, {o.width / 2, kMarginTop / 2}, kTitleFontScale);
  if (!o.y_label.empty()) {
    int baseline = 0;
    const cv::Size size = cv::getTextSize(o.y_label, kFont, kLabelFontScale, 1, &baseline);
    cv::Mat label(size.height + baseline + 4, size.width + 4, CV_8UC3, kWhite);
    cv::putText(label, o.y_label, {2, size.height + 2}, kFont, kLabelFontScale, kBlack, 1,
                cv::LINE_AA);
    cv::rotate(label, label, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x0 = 8;
    const int y0 = std::max(0, (f.top + f.bottom) / 2 - label.rows / 2);
    if (x0 + label.cols <= img.cols && y0 + label.rows <= img.rows) {
      label.copyTo(img(cv::Rect(x0, y0, label.cols, label.rows)));
    }
  }
}

void DrawSeries(cv::Mat& img, const PlotFrame& f, const std::vector<PlotSeries>& series) {
  // Series (clipped to the plot area).
  cv::Mat area = img(cv::Rect(f.left, f.top, f.right - f.left, f.bottom - f.top));
  auto local = [&](double x, double y) { return cv::Point(f.px(x) - f.left, f.py(y) - f.top); };
  for (size_t s = 0; s < series.size(); ++s) {
    const cv::Scalar colour = kColours[s % (sizeof(kColours) / sizeof(kColours[0]))];
    const PlotSeries& ser = series[s];
    for (size_t i = 0; i + 1 < ser.x.size(); ++i) {
      cv::line(area, local(ser.x[i], ser.y[i]), local(ser.x[i + 1], ser.y[i + 1]), colour, 2,
               cv::LINE_AA);
    }
    for (size_t i = 0; i < ser.x.size(); ++i) {
      cv::circle(area, local(ser.x[i], ser.y[i]), kMarkerRadius, colour, cv::FILLED, cv::LINE_AA);
    }
  }
}

void DrawLegend(cv::Mat& img, const PlotFrame& f, const std::vector<PlotSeries>& series) {
  // Legend in the lower-right corner of the plot area.
  const int row_h = 22, legend_w = 190;
  const int legend_h = row_h * static_cast<int>(series.size()) + 10;
  const cv::Rect box(f.right - legend_w - 10, f.bottom - legend_h - 10, legend_w, legend_h);
  cv::rectangle(img, box, kWhite, cv::FILLED);
  cv::rectangle(img, box, kBlack, 1);
  for (size_t s = 0; s < series.size(); ++s) {
    const cv::Scalar colour = kColours[s % (sizeof(kColours) / sizeof(kColours[0]))];
    const int y = box.y + 5 + row_h * static_cast<int>(s) + row_h / 2;
    cv::line(img, {box.x + 10, y}, {box.x + 40, y}, colour, 2, cv::LINE_AA);
    cv::circle(img, {box.x + 25, y}, kMarkerRadius, colour, cv::FILLED, cv::LINE_AA);
    cv::putText(img, series[s].name, {box.x + 50, y + 5}, kFont, kTickFontScale, kBlack, 1,
                cv::LINE_AA);
  }
}

}  // namespace

absl::Status WriteLinePlot(const std::vector<PlotSeries>& series, const PlotOptions& o,
                           const std::string& path) {
  absl::StatusOr<PlotFrame> frame = MakeFrame(series, o);
  if (!frame.ok()) return frame.status();
  cv::Mat img(o.height, o.width, CV_8UC3, kWhite);
  DrawAxes(img, *frame, o);
  DrawSeries(img, *frame, series);
  DrawLegend(img, *frame, series);
  try {
    if (!cv::imwrite(path, img)) {
      return absl::InternalError(absl::StrCat(path, ": cannot write PNG"));
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace train
}  // namespace vitserve
