#include "client/output.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/json_writer.h"
#include "google/protobuf/util/json_util.h"

namespace vitserve::client {
namespace {

constexpr double kMacsPerGmac = 1e9;
constexpr double kMsPerSecond = 1000.0;
constexpr double kPercent = 100.0;

void WriteLatency(JsonWriter& w, const LatencySummary& s) {
  w.BeginObject();
  w.Key("count").Int(s.count);
  w.Key("mean_seconds").Double(s.mean);
  w.Key("p50_seconds").Double(s.p50);
  w.Key("p95_seconds").Double(s.p95);
  w.Key("p99_seconds").Double(s.p99);
  w.Key("max_seconds").Double(s.max);
  w.EndObject();
}

std::string LatencyRow(absl::string_view name, const LatencySummary& s) {
  if (s.count == 0) return absl::StrFormat("%-22s (no samples)\n", name);
  return absl::StrFormat("%-22s p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  mean %.1f ms (n=%d)\n",
                         name, s.p50 * kMsPerSecond, s.p95 * kMsPerSecond, s.p99 * kMsPerSecond,
                         s.max * kMsPerSecond, s.mean * kMsPerSecond, s.count);
}

}  // namespace

std::string FormatGmacs(uint64_t macs) {
  const double g = static_cast<double>(macs) / kMacsPerGmac;
  // Two decimals for real models; three significant digits for tiny test models, whose
  // cost would otherwise print as 0.00.
  constexpr double kTwoDecimalsFrom = 0.1;
  if (g >= kTwoDecimalsFrom || macs == 0) return absl::StrFormat("%.2f", g);
  return absl::StrFormat("%.3g", g);
}

std::string ClassifyResultJson(absl::string_view file, const vitserve::v1::ClassifyResponse& r,
                               double client_seconds) {
  JsonWriter w;
  w.BeginObject();
  w.Key("file").String(file);
  w.Key("request_id").String(r.request_id());
  w.Key("model").String(r.model());
  w.Key("predictions").BeginArray();
  for (const auto& p : r.predictions()) {
    w.BeginObject();
    w.Key("class_index").Uint(p.class_index());
    w.Key("label").String(p.label());
    w.Key("score").Float(p.score());
    w.EndObject();
  }
  w.EndArray();
  w.Key("keep_rate").Float(r.keep_rate());
  w.Key("tokens_per_stage").BeginArray();
  for (uint32_t t : r.tokens_per_stage()) w.Uint(t);
  w.EndArray();
  w.Key("macs").Uint(r.macs());
  w.Key("dense_macs").Uint(r.dense_macs());
  w.Key("expected_accuracy").Float(r.expected_accuracy());
  w.Key("timing").BeginObject();
  w.Key("queue_seconds").Double(r.timing().queue_seconds());
  w.Key("compute_seconds").Double(r.timing().compute_seconds());
  w.Key("total_seconds").Double(r.timing().total_seconds());
  w.Key("client_seconds").Double(client_seconds);
  w.EndObject();
  w.Key("batch_size").Uint(r.batch_size());
  if (r.logits_size() > 0) {
    w.Key("logits").BeginArray();
    for (float v : r.logits()) w.Float(v);
    w.EndArray();
  }
  w.EndObject();
  return w.str();
}

std::string ClassifyErrorJson(absl::string_view file, absl::string_view request_id, int code,
                              absl::string_view message) {
  JsonWriter w;
  w.BeginObject();
  w.Key("file").String(file);
  w.Key("request_id").String(request_id);
  w.Key("error").BeginObject();
  w.Key("code").String(CodeName(code));
  w.Key("code_number").Int(code);
  w.Key("message").String(message);
  w.EndObject();
  w.EndObject();
  return w.str();
}

std::string ClassifyResultText(absl::string_view file, const vitserve::v1::ClassifyResponse& r,
                               double client_seconds) {
  std::string out = absl::StrCat(file, "\n");
  absl::StrAppendFormat(&out, "  model %s  keep_rate %.2f  tokens %s  GMACs %s/%s  batch %d\n",
                        r.model(), r.keep_rate(), absl::StrJoin(r.tokens_per_stage(), "/"),
                        FormatGmacs(r.macs()), FormatGmacs(r.dense_macs()), r.batch_size());
  absl::StrAppendFormat(&out, "  latency %.1f ms (server %.1f: queue %.1f, compute %.1f)",
                        client_seconds * kMsPerSecond, r.timing().total_seconds() * kMsPerSecond,
                        r.timing().queue_seconds() * kMsPerSecond,
                        r.timing().compute_seconds() * kMsPerSecond);
  if (r.expected_accuracy() > 0) {
    absl::StrAppendFormat(&out, "  expected top-1 %.1f%%", r.expected_accuracy() * kPercent);
  }
  out += "\n";
  int rank = 1;
  for (const auto& p : r.predictions()) {
    absl::StrAppendFormat(&out, "  %2d. %6.2f%%  %5d  %s\n", rank++, p.score() * kPercent,
                          p.class_index(), p.label());
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string ClassifyErrorText(absl::string_view file, int code, absl::string_view message) {
  return absl::StrCat("vitclient: ", file, ": ", CodeName(code), ": ", message);
}

std::string ModelsText(const vitserve::v1::ListModelsResponse& models) {
  std::string out =
      absl::StrFormat("%-32s %-12s %-12s %s\n", "MODEL", "METHOD", "VERSION", "READY");
  for (const auto& m : models.models()) {
    const bool is_default = m.name() == models.default_model();
    absl::StrAppendFormat(&out, "%-32s %-12s %-12s %s\n",
                          is_default ? absl::StrCat(m.name(), " (default)") : m.name(), m.method(),
                          m.version().empty() ? "-" : m.version(), m.ready() ? "yes" : "no");
  }
  if (models.models().empty()) out += "(no models loaded)\n";
  out.pop_back();
  return out;
}

std::string ModelsJson(const vitserve::v1::ListModelsResponse& models) {
  JsonWriter w;
  w.BeginObject();
  w.Key("default_model").String(models.default_model());
  w.Key("models").BeginArray();
  for (const auto& m : models.models()) {
    w.BeginObject();
    w.Key("name").String(m.name());
    w.Key("method").String(m.method());
    w.Key("version").String(m.version());
    w.Key("ready").Bool(m.ready());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

namespace {

// The "preprocessing" line of `vitclient info`.
std::string PreprocessingLine(const vitserve::v1::ModelInfo& info) {
  std::string out;
  const auto& a = info.architecture();
  const auto& p = info.preprocessing();
  // resize 0 means floor(image_size / crop_pct) (timm), as the server computes it.
  std::string resize = "-";
  if (p.resize() > 0) {
    resize = absl::StrCat(p.resize());
  } else if (p.crop_pct() > 0) {
    resize = absl::StrCat(
        static_cast<int64_t>(std::floor(a.image_size() / static_cast<double>(p.crop_pct()))),
        " (image_size / crop_pct ", p.crop_pct(), ")");
  }
  if (p.skip_resize()) {
    resize = "none";
  } else if (p.resize_height() > 0) {
    resize = absl::StrCat("squash ", p.resize_width(), "x", p.resize_height());
  }
  const std::string crop = p.crop().empty() ? "center" : p.crop();
  const std::string rescale = p.rescale_factor() == 0.0 || p.rescale_factor() == 1.0 / 255.0
                                  ? ""
                                  : absl::StrCat(", rescale ", p.rescale_factor());
  absl::StrAppendFormat(
      &out, "preprocessing  resize %s %s, crop %d (%s), mean [%s], std [%s]%s%s%s\n", resize,
      p.interpolation().empty() ? "bicubic" : p.interpolation(), a.image_size(), crop,
      absl::StrJoin(p.mean(), ", "), absl::StrJoin(p.std(), ", "), rescale,
      p.grayscale() ? ", grayscale" : "", p.invert() ? ", inverted" : "");
  return out;
}

// The "keep-rate grid" table of `vitclient info` (empty without a grid).
std::string KeepRateGridText(const vitserve::v1::ModelInfo& info) {
  std::string out;
  if (info.grid_size() > 0) {
    // Batch sizes with a measured latency anywhere in the grid, ascending.
    std::vector<uint32_t> batches;
    for (const auto& g : info.grid()) {
      for (const auto& [b, s] : g.latency_seconds_by_batch()) batches.push_back(b);
    }
    std::sort(batches.begin(), batches.end());
    batches.erase(std::unique(batches.begin(), batches.end()), batches.end());
    out += "\nkeep-rate grid\n";
    absl::StrAppendFormat(&out, "  %-9s %-24s %9s %9s", "KEEP", "TOKENS/STAGE", "GMACS", "EXP.ACC");
    for (uint32_t b : batches) absl::StrAppendFormat(&out, " %9s", absl::StrCat("ms@b", b));
    out += "\n";
    for (const auto& g : info.grid()) {
      const std::string acc = g.expected_accuracy() > 0
                                  ? absl::StrFormat("%.2f%%", g.expected_accuracy() * kPercent)
                                  : "-";
      absl::StrAppendFormat(&out, "  %-9.3f %-24s %9s %9s", g.keep_rate(),
                            absl::StrJoin(g.tokens_per_stage(), "/"), FormatGmacs(g.macs()), acc);
      for (uint32_t b : batches) {
        const auto it = g.latency_seconds_by_batch().find(b);
        absl::StrAppendFormat(&out, " %9s",
                              it == g.latency_seconds_by_batch().end()
                                  ? "-"
                                  : absl::StrFormat("%.2f", it->second * kMsPerSecond));
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace

std::string ModelInfoText(const vitserve::v1::ModelInfo& info) {
  std::string out;
  const auto& a = info.architecture();
  absl::StrAppendFormat(
      &out, "model          %s%s\n", info.name(),
      info.version().empty() ? "" : absl::StrCat(" (version ", info.version(), ")"));
  absl::StrAppendFormat(&out, "method         %s\n", info.method());
  absl::StrAppendFormat(&out, "device         %s\n", info.device().empty() ? "-" : info.device());
  absl::StrAppendFormat(&out,
                        "architecture   %dx%d input, patch %d, %d channel(s), width %d, depth %d, "
                        "%d heads, mlp ratio %g, %d classes%s\n",
                        a.image_size(), a.image_size(), a.patch_size(), a.in_chans(), a.embed_dim(),
                        a.depth(), a.num_heads(), a.mlp_ratio(), a.num_classes(),
                        a.distilled() ? ", distilled" : "");
  out += PreprocessingLine(info);
  absl::StrAppendFormat(&out, "keep-rate      default %g, range [%g, %g]\n",
                        info.default_keep_rate(), info.min_keep_rate(), info.max_keep_rate());
  absl::StrAppendFormat(&out, "dense          %s GMACs\n", FormatGmacs(info.dense_macs()));
  if (info.labels_size() > 0)
    absl::StrAppendFormat(&out, "labels         %d\n", info.labels_size());
  if (info.blocks_size() > 0) {
    std::vector<std::string> blocks;
    for (const auto& b : info.blocks()) {
      blocks.push_back(absl::StrCat(b.num_heads(), "h/", b.mlp_hidden()));
    }
    absl::StrAppendFormat(&out, "blocks         %s (heads/mlp hidden)\n",
                          absl::StrJoin(blocks, " "));
  }

  out += KeepRateGridText(info);
  if (info.calibration_size() > 0) {
    out += "\ncalibration\n";
    absl::StrAppendFormat(&out, "  %-12s %-9s %8s %10s %9s\n", "METHOD", "KEEP", "TOP-1",
                          "AGREEMENT", "GMACS");
    for (const auto& c : info.calibration()) {
      absl::StrAppendFormat(&out, "  %-12s %-9.3f %7.2f%% %9.2f%% %9s\n", c.method(), c.keep_rate(),
                            c.top1() * kPercent, c.agreement() * kPercent,
                            c.macs() > 0 ? FormatGmacs(c.macs()) : "-");
    }
  }
  if (info.sources_size() > 0) {
    out += "\nsettings from\n";
    for (const auto& src : info.sources()) {
      absl::StrAppendFormat(&out, "  %-36s %s\n", src.setting(), src.source());
    }
  }
  out.pop_back();
  return out;
}

std::string ModelInfoJson(const vitserve::v1::ModelInfo& info, bool with_labels) {
  vitserve::v1::ModelInfo copy = info;
  if (!with_labels) copy.clear_labels();
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(copy, &json, opts);
  if (!status.ok()) {
    JsonWriter w;
    w.BeginObject().Key("error").String(status.ToString()).EndObject();
    return w.str();
  }
  if (!with_labels && !json.empty() && json.back() == '}') {
    // The cleared list still prints as "labels":[] (always_print_primitive_fields);
    // drop it so that it cannot be read as "no labels".
    constexpr absl::string_view kEmptyLabels = "\"labels\":[],";
    const size_t at = json.find(kEmptyLabels.data(), 0, kEmptyLabels.size());
    if (at != std::string::npos) json.erase(at, kEmptyLabels.size());
    json.pop_back();
    absl::StrAppend(&json, ",\"num_labels\":", info.labels_size(), "}");
  }
  return json;
}

std::string BenchReportText(const BenchConfig& c, const BenchReport& r) {
  std::string out;
  absl::StrAppendFormat(&out, "server %s  model %s  %s", c.server,
                        c.model.empty() ? "(default)" : c.model, c.mode);
  if (c.mode == "open-loop") {
    absl::StrAppendFormat(&out, " at %g req/s (Poisson, seed %d)", c.rate, c.seed);
  } else {
    absl::StrAppendFormat(&out, " with %d in flight", c.concurrency);
  }
  absl::StrAppendFormat(&out, "\nbudget %s ms  keep_rate %s  input %s\n\n", c.budget,
                        c.keep_rate > 0 ? absl::StrCat(c.keep_rate) : "server", c.input);
  absl::StrAppendFormat(&out, "%-22s %d in %.2f s (%d OK, %d admitted)\n", "requests", r.sent,
                        r.elapsed_s, r.ok, r.admitted);
  absl::StrAppendFormat(&out, "%-22s %.2f req/s\n", "throughput (OK)", r.throughput_rps);
  absl::StrAppendFormat(&out, "%-22s %.2f req/s\n", "goodput (OK in budget)", r.goodput_rps);
  absl::StrAppendFormat(&out, "%-22s %.2f%% of all, %.2f%% of admitted\n", "SLO attainment",
                        r.attainment_all * kPercent, r.attainment_admitted * kPercent);
  out += LatencyRow("latency (OK)", r.latency_ok);
  out += LatencyRow("latency (all answers)", r.latency_all);
  absl::StrAppendFormat(&out, "%-22s %.3f\n", "mean keep-rate", r.mean_keep_rate);
  absl::StrAppendFormat(&out, "%-22s %s\n", "mean expected top-1",
                        r.mean_expected_accuracy > 0
                            ? absl::StrFormat("%.2f%%", r.mean_expected_accuracy * kPercent)
                            : "- (no calibration)");
  if (r.errors_by_code.empty()) {
    absl::StrAppendFormat(&out, "%-22s none\n", "errors");
  } else {
    std::vector<std::string> parts;
    for (const auto& [code, n] : r.errors_by_code) parts.push_back(absl::StrCat(code, " ", n));
    absl::StrAppendFormat(&out, "%-22s %s\n", "errors", absl::StrJoin(parts, ", "));
  }
  if (r.injected > 0) {
    std::vector<std::string> parts;
    for (const auto& [code, n] : r.injected_by_code) parts.push_back(absl::StrCat(code, " ", n));
    absl::StrAppendFormat(&out, "%-22s %d: %s\n", "injected (bad/cancel)", r.injected,
                          absl::StrJoin(parts, ", "));
  }
  out.pop_back();
  return out;
}

std::string BenchReportJson(const BenchConfig& c, const BenchReport& r) {
  JsonWriter w;
  w.BeginObject();
  w.Key("config").BeginObject();
  w.Key("server").String(c.server);
  w.Key("model").String(c.model);
  w.Key("mode").String(c.mode);
  w.Key("rate").Double(c.rate);
  w.Key("concurrency").Int(c.concurrency);
  w.Key("budget_ms").String(c.budget);
  w.Key("keep_rate").Float(c.keep_rate);
  w.Key("input").String(c.input);
  w.Key("seed").Uint(c.seed);
  w.EndObject();
  w.Key("sent").Int(r.sent);
  w.Key("ok").Int(r.ok);
  w.Key("admitted").Int(r.admitted);
  w.Key("slo_met").Int(r.slo_met);
  w.Key("elapsed_seconds").Double(r.elapsed_s);
  w.Key("throughput_rps").Double(r.throughput_rps);
  w.Key("goodput_rps").Double(r.goodput_rps);
  w.Key("slo_attainment_all").Double(r.attainment_all);
  w.Key("slo_attainment_admitted").Double(r.attainment_admitted);
  w.Key("latency_ok");
  WriteLatency(w, r.latency_ok);
  w.Key("latency_all");
  WriteLatency(w, r.latency_all);
  w.Key("errors_by_code").BeginObject();
  for (const auto& [code, n] : r.errors_by_code) w.Key(code).Int(n);
  w.EndObject();
  w.Key("mean_keep_rate").Double(r.mean_keep_rate);
  w.Key("mean_expected_accuracy").Double(r.mean_expected_accuracy);
  w.Key("injected").Int(r.injected);
  w.Key("injected_by_code").BeginObject();
  for (const auto& [code, n] : r.injected_by_code) w.Key(code).Int(n);
  w.EndObject();
  w.EndObject();
  return w.str();
}

}  // namespace vitserve::client
