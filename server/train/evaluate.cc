#include "server/train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/checkpoint/model_repository.h"
#include "server/executor/inference_model.h"
#include "server/train/dataset.h"
#include "server/train/plot.h"

namespace vitserve {
namespace train {
namespace {

namespace fs = std::filesystem;

constexpr char kCalibrationFile[] = "calibration.pbtxt";
constexpr char kConfigFile[] = "config.pbtxt";
constexpr char kPlotFile[] = "accuracy_vs_macs.png";
constexpr double kMega = 1e6;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

absl::StatusOr<ImageDataset> LoadEvalData(const EvalOptions& o, const ModelSpec& spec) {
  absl::StatusOr<ImageDataset> data;
  if (o.split == "test") {
    if (!o.test_folder.empty()) {
      ImageFolderOptions fo;
      fo.image_size = spec.arch.image_size;
      fo.grayscale = spec.arch.in_chans == 1;
      data = ReadImageFolder(o.test_folder, fo);
    } else {
      data = ReadFashionMnist(o.data_dir, IdxSplit::kTest);
    }
  } else if (o.split == "val") {
    absl::StatusOr<ImageDataset> train = ReadFashionMnist(o.data_dir, IdxSplit::kTrain);
    if (!train.ok()) return train.status();
    auto split = SplitTrainValidation(*train, o.val_size, o.split_seed);
    if (!split.ok()) return split.status();
    data = std::move(split->second);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--split must be test or val, got '", o.split, "'"));
  }
  if (!data.ok()) return data.status();
  if (data->height != spec.arch.image_size || data->width != spec.arch.image_size ||
      data->channels != spec.arch.in_chans) {
    return absl::InvalidArgumentError(absl::StrCat("eval data is ", data->height, "x", data->width,
                                                   "x", data->channels, " but the model takes ",
                                                   spec.arch.image_size, "x", spec.arch.image_size,
                                                   "x", spec.arch.in_chans));
  }
  if (static_cast<int>(data->class_names.size()) != spec.arch.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat("eval data has ", data->class_names.size(),
                                                   " classes, the model ", spec.arch.num_classes));
  }
  return data;
}

// CHW float tensors normalised with the spec's mean / std.
std::vector<ImageTensor> ToTensors(const ImageDataset& data, const ModelSpec& spec, int64_t n) {
  std::vector<ImageTensor> out(n);
  const int c = data.channels, h = data.height, w = data.width;
  for (int64_t i = 0; i < n; ++i) {
    ImageTensor& t = out[i];
    t.channels = c;
    t.height = h;
    t.width = w;
    t.data.resize(static_cast<size_t>(c) * h * w);
    const uint8_t* src = data.image(i);
    for (int ch = 0; ch < c; ++ch) {
      const float mean = spec.preprocess.mean[ch];
      const float std = spec.preprocess.std[ch];
      for (int p = 0; p < h * w; ++p) {
        t.data[static_cast<size_t>(ch) * h * w + p] = (src[p * c + ch] / 255.0f - mean) / std;
      }
    }
  }
  return out;
}

struct Pass {
  std::vector<int> predictions;
  uint64_t macs_sum = 0;
  std::vector<int> tokens_per_stage;
};

absl::StatusOr<Pass> RunPass(InferenceModel& model, const std::vector<ImageTensor>& images,
                             float keep_rate, int batch_size) {
  Pass pass;
  pass.predictions.reserve(images.size());
  std::vector<const ImageTensor*> batch;
  for (size_t start = 0; start < images.size(); start += batch_size) {
    batch.clear();
    for (size_t i = start; i < std::min(images.size(), start + batch_size); ++i) {
      batch.push_back(&images[i]);
    }
    absl::StatusOr<std::vector<ImageResult>> results = model.Run(batch, keep_rate);
    if (!results.ok()) return results.status();
    for (const ImageResult& r : *results) {
      pass.predictions.push_back(
          static_cast<int>(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin()));
      pass.macs_sum += r.macs;
      if (pass.tokens_per_stage.empty()) pass.tokens_per_stage = r.tokens_per_stage;
    }
  }
  return pass;
}

std::string MethodLabel(Method m) { return std::string(MethodName(m)); }

absl::Status WriteCsv(const EvalReport& report, const std::string& path) {
  std::ofstream out(path);
  out << "method,keep_rate,top1,agreement,macs,tokens_per_stage,seconds\n";
  for (const EvalRow& r : report.rows) {
    out << MethodName(r.method) << "," << absl::StrFormat("%.2f", r.keep_rate) << ","
        << absl::StrFormat("%.4f", r.top1) << "," << absl::StrFormat("%.4f", r.agreement) << ","
        << r.macs << "," << absl::StrJoin(r.tokens_per_stage, " ") << ","
        << absl::StrFormat("%.2f", r.seconds) << "\n";
  }
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::Status WritePlot(const EvalReport& report, const std::string& path,
                       const std::string& model_name) {
  std::vector<PlotSeries> series;
  std::map<Method, size_t> index;
  for (const EvalRow& r : report.rows) {
    auto it = index.find(r.method);
    if (it == index.end()) {
      it = index.emplace(r.method, series.size()).first;
      series.push_back({MethodLabel(r.method), {}, {}});
    }
    series[it->second].x.push_back(static_cast<double>(r.macs) / kMega);
    series[it->second].y.push_back(100.0 * r.top1);
  }
  PlotOptions po;
  po.title = absl::StrCat(model_name, ": top-1 vs MACs (", report.dataset, ", ",
                          report.num_examples, " images; keep-rate 1.0 ... 0.3)");
  po.x_label = "multiply-adds per image (M)";
  po.y_label = "top-1 accuracy (%)";
  return WriteLinePlot(series, po, path);
}

// One row of the report: `pass` of method `m` at keep-rate `k` against the labels and
// the dense predictions.
EvalRow MakeRow(Method m, float k, const Pass& pass, const ImageDataset& data,
                const std::vector<int>& dense_predictions, int64_t n) {
  EvalRow row;
  row.method = m;
  row.keep_rate = k;
  int64_t correct = 0, agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    correct += pass.predictions[i] == data.labels[i];
    agree += pass.predictions[i] == dense_predictions[i];
  }
  row.top1 = static_cast<double>(correct) / static_cast<double>(n);
  row.agreement = static_cast<double>(agree) / static_cast<double>(n);
  row.macs = pass.macs_sum / static_cast<uint64_t>(n);
  row.tokens_per_stage = pass.tokens_per_stage;
  return row;
}

// The methods to evaluate: dense first (the agreement reference), then each other once.
std::vector<Method> EvalMethods(const std::vector<Method>& requested) {
  std::vector<Method> methods = requested;
  methods.erase(std::remove(methods.begin(), methods.end(), Method::kDense), methods.end());
  std::sort(methods.begin(), methods.end());
  methods.erase(std::unique(methods.begin(), methods.end()), methods.end());  // once each
  methods.insert(methods.begin(), Method::kDense);
  return methods;
}

// Writes calibration.pbtxt, the updated config.pbtxt, the CSV and the plot into `dir`.
absl::Status WriteEvalOutputs(const EvalReport& report, const EvalOptions& o, const ModelSpec& spec,
                              const fs::path& dir) {
  std::vector<CalibrationPoint> points;
  for (const EvalRow& r : report.rows) {
    CalibrationPoint p;
    p.method = std::string(MethodName(r.method));
    p.keep_rate = r.keep_rate;
    p.top1 = r.top1;
    p.agreement = r.agreement;
    p.macs = r.macs;
    points.push_back(p);
  }
  const std::string calibration = (dir / kCalibrationFile).string();
  absl::Status st = WriteCalibration(points, report.dataset, report.num_examples, calibration);
  if (!st.ok()) return st;
  ModelSpec updated = spec;
  updated.calibration_path = calibration;
  st = WriteModelConfig(updated, (dir / kConfigFile).string());
  if (!st.ok()) return st;
  st = WriteCsv(report, (dir / absl::StrCat("eval_", o.split, ".csv")).string());
  if (!st.ok()) return st;
  return WritePlot(report, (dir / kPlotFile).string(), spec.name);
}

}  // namespace

absl::StatusOr<EvalReport> RunEval(const EvalOptions& o) {
  fs::path dir = fs::absolute(fs::path(o.model_dir).lexically_normal());
  if (dir.filename().empty()) dir = dir.parent_path();
  absl::StatusOr<ModelSpec> spec =
      LoadModelSpec(dir.parent_path().string(), dir.filename().string());
  if (!spec.ok()) return spec.status();
  absl::StatusOr<ImageDataset> data = LoadEvalData(o, *spec);
  if (!data.ok()) return data.status();
  const int64_t n = o.limit > 0 ? std::min(o.limit, data->size()) : data->size();
  const std::vector<ImageTensor> images = ToTensors(*data, *spec, n);

  EvalReport report;
  report.dataset = o.test_folder.empty() ? absl::StrCat("fashion-mnist/", o.split)
                                         : absl::StrCat(o.test_folder, "/", o.split);
  report.num_examples = static_cast<uint64_t>(n);
  report.dense_macs = DenseMacs(spec->arch);

  std::vector<int> dense_predictions;
  ModelLoadOptions load;
  load.max_sub_batch = 0;  // eval batches are already sized
  for (Method m : EvalMethods(o.methods)) {
    ModelSpec ms = *spec;
    ms.pruning.method = m;
    if (!(m == Method::kDynamicViT && spec->pruning.method == Method::kDynamicViT)) {
      ms.pruning.locations.clear();  // method default locations
    }
    ms.pruning.tnt_seed = 0;
    absl::StatusOr<std::unique_ptr<InferenceModel>> model = LoadInferenceModel(ms, load);
    if (!model.ok()) {
      return absl::Status(model.status().code(), absl::StrCat("loading as ", MethodName(m), ": ",
                                                              model.status().message()));
    }
    const std::vector<float> rates = m == Method::kDense ? std::vector<float>{1.0f} : o.keep_rates;
    for (float k : rates) {
      const double t0 = Now();
      absl::StatusOr<Pass> pass = RunPass(**model, images, k, o.batch_size);
      if (!pass.ok()) {
        return absl::Status(pass.status().code(), absl::StrCat(MethodName(m), " at keep ", k, ": ",
                                                               pass.status().message()));
      }
      if (m == Method::kDense) dense_predictions = pass->predictions;
      EvalRow row = MakeRow(m, k, *pass, *data, dense_predictions, n);
      row.seconds = Now() - t0;
      std::fprintf(stderr, "%-10s keep %.2f: top-1 %.2f%%, agreement %.2f%%, %.2f MMACs, %.1f s\n",
                   std::string(MethodName(m)).c_str(), k, 100.0 * row.top1, 100.0 * row.agreement,
                   static_cast<double>(row.macs) / kMega, row.seconds);
      report.rows.push_back(std::move(row));
    }
  }
  if (o.write_outputs) {
    if (absl::Status st = WriteEvalOutputs(report, o, *spec, dir); !st.ok()) return st;
  }
  return report;
}

std::string FormatEvalTable(const EvalReport& report) {
  std::string out =
      absl::StrCat("Top-1 on ", report.dataset, " (", report.num_examples, " images), dense ",
                   absl::StrFormat("%.2f", report.dense_macs / kMega),
                   " MMACs\n\n| method | keep | top-1 % | agree % | MMACs | tokens |\n"
                   "|---|---|---|---|---|---|\n");
  for (const EvalRow& r : report.rows) {
    absl::StrAppend(
        &out, absl::StrFormat("| %s | %.1f | %.2f | %.2f | %.2f | %s |\n", MethodName(r.method),
                              r.keep_rate, 100.0 * r.top1, 100.0 * r.agreement, r.macs / kMega,
                              absl::StrJoin(r.tokens_per_stage, "→")));
  }
  return out;
}

}  // namespace train
}  // namespace vitserve
