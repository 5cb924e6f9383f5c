// A small line-plot writer (OpenCV drawing, PNG out) for the eval tool's accuracy-vs-MACs
// figure: axes with "nice" ticks and labels, one coloured line with markers per series,
// a legend. Torch-free. Thread-safety: pure function.
#ifndef VITSERVE_SERVER_TRAIN_PLOT_H_
#define VITSERVE_SERVER_TRAIN_PLOT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vitserve {
namespace train {

struct PlotSeries {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;  // same length as x; drawn in the given order
};

struct PlotOptions {
  int width = 1000;  // pixels
  int height = 680;  // pixels
  std::string title;
  std::string x_label;
  std::string y_label;
  // Axis ranges; when min >= max the range is taken from the data (with a margin).
  double x_min = 0, x_max = 0;
  double y_min = 0, y_max = 0;
};

// Ticks for [lo, hi]: multiples of 1, 2 or 5 × 10^k, about `target` of them.
std::vector<double> NiceTicks(double lo, double hi, int target);

// Draws `series` and writes a PNG to `path`. INVALID_ARGUMENT if there is nothing to
// draw or a series' x / y lengths differ; INTERNAL if the file cannot be written.
absl::Status WriteLinePlot(const std::vector<PlotSeries>& series, const PlotOptions& options,
                           const std::string& path);

}  // namespace train
}  // namespace vitserve

#endif  // VITSERVE_SERVER_TRAIN_PLOT_H_
