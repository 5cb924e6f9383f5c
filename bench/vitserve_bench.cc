// In-process throughput benchmark of the vitserve executor (LoadInferenceModel's
// InferenceModel::Run: image stacking, sub-batching, the method's forward) on a
// DeiT-S-shaped model with random weights at 224² (or, with --config, the architecture and
// pruning locations of a model directory's config.pbtxt, still with random weights: speed
// does not depend on the values).
//
// For dense and each method at each keep-rate (plus ToMe at the published r = 13, SViTE
// at keep 1.0 = compaction alone, Tri-Level with its attention level at
// --trilevel_attn_ratio) and each batch size, it warms up once, then runs for --seconds of wall
// time (at least
// --min_iters runs) and reports images/s. Output: a Markdown table on stdout (img/s per
// batch, the realised speed-up over dense next to the MACs ratio), and with --json_out
// one JSON object per configuration and batch, in the same fields as bench/eager_bench.py
// so bench/run_inprocess.sh can put both side by side.
//
// SViTE runs on DeiT-S weights with 50% of the heads (3 of 6 per block) and 50% of the
// MLP units masked, the shape of SViTE's `deit_small_patch16_224_50`; the server compacts
// them at load time, and the MACs ratio is against the unpruned dense DeiT-S.
//
// Usage: vitserve_bench [--threads=2] [--batch_sizes=1,8,32] [--keep_rates=0.9,0.7,0.5]
//          [--methods=dense,dynamicvit,evit,tome,tnt,svite,trilevel] [--seconds=3]
//          [--max_sub_batch=8] [--trilevel_attn_ratio=0.5] [--streams=1] [--json_out=FILE]
//          [--device=cpu|cuda] [--dtype=float32|bfloat16|float16] [--cuda_graphs=true]
// --streams=N runs N concurrent callers of the one loaded model (how the server uses N
// batch threads); with --threads=1 each caller uses one core.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/checkpoint/model_repository.h"
#include "server/model/vit_inference_model.h"
#include "server/spec/cost_model.h"
#include "server/util/malloc_tuning.h"
#include "server/vit/vit_module.h"

ABSL_FLAG(int, threads, 2, "LibTorch intra-op threads (at::set_num_threads)");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "comma-separated batch sizes");
ABSL_FLAG(std::string, keep_rates, "0.9,0.7,0.5", "comma-separated keep-rates");
ABSL_FLAG(std::string, methods, "dense,dynamicvit,evit,tome,tnt", "methods to measure");
ABSL_FLAG(double, seconds, 3.0, "timed wall time per configuration and batch size");
ABSL_FLAG(int, min_iters, 1, "minimum timed runs per configuration and batch size");
ABSL_FLAG(int, max_sub_batch, 8, "ModelLoadOptions::max_sub_batch (0 = no split)");
ABSL_FLAG(int, streams, 1,
          "concurrent callers of Run() on the one model (the server's --num_batch_threads); "
          "img/s is their total");
ABSL_FLAG(int, tome_published_r, 13, "extra ToMe row at this r (0 = none)");
ABSL_FLAG(bool, svite_plain_removal, false,
          "extra SViTE rows with the zeroed tokens simply removed (approximate)");
ABSL_FLAG(double, trilevel_attn_ratio, 0.5,
          "extra Tri-Level rows with the attention level at this ratio (0 = none)");
ABSL_FLAG(std::string, json_out, "", "append one JSON line per measurement to this file");
ABSL_FLAG(int, seed, 0, "weight / image seed");
ABSL_FLAG(std::string, device, "cpu", "ModelLoadOptions::device: cpu | cuda | cuda:N");
ABSL_FLAG(std::string, dtype, "",
          "ModelLoadOptions::dtype: float32 | bfloat16 | float16; empty = float32 on cpu, "
          "bfloat16 on cuda");
ABSL_FLAG(bool, cuda_graphs, true, "ModelLoadOptions::cuda_graphs (cuda only)");
ABSL_FLAG(std::string, max_packed_isa, "avx512",
          "ModelLoadOptions::max_packed_isa: avx512 | avx2 | generic (the packed-weight GEMM "
          "kernel; avx2 forces the AVX2 kernel on an AVX-512 machine)");
ABSL_FLAG(std::string, one_image_split, "adaptive",
          "ModelLoadOptions::one_image_split: adaptive | split | single (batch 1 on several "
          "threads: split each operation across them or run on one)");
ABSL_FLAG(std::string, config, "",
          "a model config.pbtxt: measure its architecture and pruning locations (random "
          "weights) instead of DeiT-S, e.g. models/fashion-vit/config.pbtxt");

namespace vitserve {
namespace {

// timm's init scale for ViT weights: speed does not depend on the values.
constexpr double kWeightStd = 0.02;
constexpr double kGiga = 1e9;

struct Config {
  Method method;
  float keep_rate;
  int tome_r;                  // -1 = from the keep-rate
  float attn_ratio = 0.0f;     // Tri-Level attention level (0 = off)
  bool plain_removal = false;  // SViTE without the zero token
};

// "trilevel" or "trilevel+attn0.50": the method column and JSON "method".
std::string Label(const Config& c) {
  std::string name(MethodName(c.method));
  if (c.attn_ratio > 0.0f) name += absl::StrFormat("+attn%.2f", c.attn_ratio);
  if (c.plain_removal) name += "+plain";
  return name;
}

struct Row {
  Config config;
  uint64_t macs = 0;
  std::map<int, double> images_per_s;  // by batch size
};

std::vector<std::string> SplitList(const std::string& s) {
  return absl::StrSplit(s, ',', absl::SkipEmpty());
}

// DeiT-S weights plus every method head (DynamicViT predictors, TNT alpha heads, the
// SViTE selector).
StateDict RandomWeights(const Architecture& arch, int seed) {
  torch::manual_seed(seed);
  StateDict out;
  for (Method m : {Method::kDynamicViT, Method::kTNT, Method::kSViTE}) {
    PruningSpec p;
    p.method = m;
    Vit vit(VitOptions::FromSpec(arch, p));
    for (const auto& item : vit->named_parameters()) {
      if (out.count(item.key())) continue;
      const bool norm_weight = item.key().find("norm") != std::string::npos &&
                               item.key().find(".weight") != std::string::npos;
      out[item.key()] = norm_weight ? torch::ones(item.value().sizes())
                                    : torch::randn(item.value().sizes()) * kWeightStd;
    }
  }
  return out;
}

// `dense` with SViTE's structured masks applied: heads [H/2, H) of every block (their q,
// k, v rows) and MLP units [hidden/2, hidden) (fc1 rows, fc2 columns) zeroed.
StateDict HalfPruned(const Architecture& arch, const StateDict& dense) {
  StateDict out;
  for (const auto& [k, t] : dense) out[k] = t.clone();
  const int64_t c = arch.embed_dim, d = arch.head_dim(), h = arch.num_heads;
  const int64_t hidden = arch.mlp_hidden();
  for (int i = 0; i < arch.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    for (int part = 0; part < 3; ++part) {
      out[p + "attn.qkv.weight"].narrow(0, part * c + (h / 2) * d, (h - h / 2) * d).zero_();
    }
    out[p + "mlp.fc1.weight"].narrow(0, hidden / 2, hidden - hidden / 2).zero_();
    out[p + "mlp.fc2.weight"].narrow(1, hidden / 2, hidden - hidden / 2).zero_();
  }
  return out;
}

std::vector<ImageTensor> RandomImages(const Architecture& arch, int n, int seed) {
  torch::manual_seed(seed + 1);
  std::vector<ImageTensor> out(n);
  for (ImageTensor& img : out) {
    img.channels = arch.in_chans;
    img.height = arch.image_size;
    img.width = arch.image_size;
    torch::Tensor t = torch::randn({arch.in_chans * arch.image_size * arch.image_size});
    img.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  return out;
}

int Main() {
  Architecture arch;  // DeiT-S at 224² unless --config
  std::vector<int> config_locations;
  Method config_method = Method::kDense;
  std::string model_name = "deit_s_bench";
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<ModelSpec> config =
        in ? ParseModelSpec(text.str(), std::filesystem::path(path).parent_path().string())
           : absl::NotFoundError(absl::StrCat("cannot read ", path));
    if (!config.ok()) {
      std::fprintf(stderr, "--config: %s\n", config.status().ToString().c_str());
      return 2;
    }
    arch = config->arch;
    config_locations = config->pruning.locations;
    config_method = config->pruning.method;
    model_name = config->name;
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  const int streams = absl::GetFlag(FLAGS_streams);
  if (streams < 1) {
    std::fprintf(stderr, "--streams must be >= 1\n");
    return 2;
  }
  std::vector<int> batches;
  for (const std::string& b : SplitList(absl::GetFlag(FLAGS_batch_sizes))) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v <= 0) {
      std::fprintf(stderr, "bad batch size '%s'\n", b.c_str());
      return 2;
    }
    batches.push_back(v);
  }
  std::vector<float> keeps;
  for (const std::string& k : SplitList(absl::GetFlag(FLAGS_keep_rates))) {
    float v = 0;
    if (!absl::SimpleAtof(k, &v) || !(v > 0.0f) || v > 1.0f) {
      std::fprintf(stderr, "bad keep-rate '%s'\n", k.c_str());
      return 2;
    }
    keeps.push_back(v);
  }
  std::vector<Config> configs;
  for (const std::string& name : SplitList(absl::GetFlag(FLAGS_methods))) {
    absl::StatusOr<Method> m = ParseMethod(name);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
      return 2;
    }
    if (*m == Method::kDense) {
      configs.push_back({*m, 1.0f, -1});
      continue;
    }
    if (*m == Method::kSViTE) configs.push_back({*m, 1.0f, -1});  // compaction alone
    for (float k : keeps) configs.push_back({*m, k, -1});
    if (*m == Method::kToMe && absl::GetFlag(FLAGS_tome_published_r) > 0) {
      configs.push_back({*m, 1.0f, absl::GetFlag(FLAGS_tome_published_r)});
    }
    if (*m == Method::kSViTE && absl::GetFlag(FLAGS_svite_plain_removal)) {
      for (float k : keeps) configs.push_back({*m, k, -1, 0.0f, true});
    }
    const float attn = static_cast<float>(absl::GetFlag(FLAGS_trilevel_attn_ratio));
    if (*m == Method::kTriLevel && attn > 0.0f) {
      for (float k : keeps) configs.push_back({*m, k, -1, attn});
    }
  }

  const StateDict weights = RandomWeights(arch, absl::GetFlag(FLAGS_seed));
  const StateDict half_pruned = HalfPruned(arch, weights);
  int max_batch = 1;
  for (int b : batches) max_batch = std::max(max_batch, b);
  const std::vector<ImageTensor> images = RandomImages(arch, max_batch, absl::GetFlag(FLAGS_seed));
  std::vector<const ImageTensor*> ptrs;
  for (const ImageTensor& i : images) ptrs.push_back(&i);

  std::ofstream json;
  if (!absl::GetFlag(FLAGS_json_out).empty()) {
    json.open(absl::GetFlag(FLAGS_json_out), std::ios::app);
  }

  const uint64_t dense_macs = DenseMacs(arch);
  std::vector<Row> rows;
  for (const Config& c : configs) {
    ModelSpec spec;
    spec.name = model_name;
    spec.arch = arch;
    spec.pruning.method = c.method;
    if (c.method == config_method) spec.pruning.locations = config_locations;
    spec.pruning.attn_ratio = c.attn_ratio;
    spec.pruning.svite_plain_removal = c.plain_removal;
    ModelLoadOptions opts;
    opts.max_sub_batch = absl::GetFlag(FLAGS_max_sub_batch);
    opts.intra_op_threads = threads;
    opts.device = absl::GetFlag(FLAGS_device);
    opts.dtype = absl::GetFlag(FLAGS_dtype);
    opts.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    opts.max_packed_isa = absl::GetFlag(FLAGS_max_packed_isa);
    opts.one_image_split = absl::GetFlag(FLAGS_one_image_split);
    PrunerOptions pruner;
    pruner.tome_r = c.tome_r;
    absl::StatusOr<std::unique_ptr<InferenceModel>> model = CreateInferenceModel(
        spec, c.method == Method::kSViTE ? half_pruned : weights, opts, pruner);
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", std::string(MethodName(c.method)).c_str(),
                   model.status().ToString().c_str());
      return 1;
    }
    // Which GEMM kernel the load-time timing picked per shape (stderr: scripts read stdout).
    std::fprintf(stderr, "%s kernel choices: %s\n", std::string(MethodName(c.method)).c_str(),
                 absl::StrJoin((*model)->kernel_choices(), "; ").c_str());
    Row row;
    row.config = c;
    absl::StatusOr<CostEstimate> cost =
        c.tome_r >= 0 ? EstimateToMeCost(arch, c.tome_r)
                      : EstimateCost(arch, spec.pruning, c.keep_rate, (*model)->block_shapes());
    row.macs = cost.ok() ? cost->macs : 0;
    const int tome_r = c.method == Method::kToMe ? (cost.ok() ? cost->tome_r : -1) : -1;
    for (int b : batches) {
      absl::Span<const ImageTensor* const> batch(ptrs.data(), b);
      // On a GPU: run 1 warms up, run 2 captures the CUDA graph, run 3 replays it.
      const int warm_runs = opts.device == "cpu" ? 1 : 3;
      for (int w = 0; w < warm_runs; ++w) {
        if (auto warm = (*model)->Run(batch, c.keep_rate); !warm.ok()) {
          std::fprintf(stderr, "run failed: %s\n", warm.status().ToString().c_str());
          return 1;
        }
      }
      const auto start = std::chrono::steady_clock::now();
      const double seconds = absl::GetFlag(FLAGS_seconds);
      const int min_iters = absl::GetFlag(FLAGS_min_iters);
      // Each stream runs until the time is up. img/s is the sum of the streams' own rates
      // (runs over their own elapsed time), so the tail where one stream has stopped and
      // another still finishes its last run does not count as idle time.
      std::vector<int> stream_iters(static_cast<size_t>(streams), 0);
      std::vector<double> stream_seconds(static_cast<size_t>(streams), 0.0);
      auto stream = [&](size_t i) {
        int n = 0;
        double t = 0;
        while (n < min_iters || t < seconds) {
          (void)(*model)->Run(batch, c.keep_rate);
          ++n;
          t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
        stream_iters[i] = n;
        stream_seconds[i] = t;
      };
      std::vector<std::thread> others;
      for (int i = 1; i < streams; ++i) others.emplace_back(stream, static_cast<size_t>(i));
      stream(0);
      for (std::thread& t : others) t.join();
      int iters = 0;
      double elapsed = 0;
      double runs_per_s = 0;
      for (size_t i = 0; i < stream_iters.size(); ++i) {
        iters += stream_iters[i];
        elapsed = std::max(elapsed, stream_seconds[i]);
        runs_per_s += stream_iters[i] / stream_seconds[i];
      }
      const double ips = b * runs_per_s;
      row.images_per_s[b] = ips;
      std::fprintf(stderr, "%-10s keep %.2f r %3d batch %2d: %7.2f img/s (%d runs, %.1f s)\n",
                   Label(c).c_str(), c.keep_rate, tome_r, b, ips, iters, elapsed);
      // Batch 1 on several threads: what the one-image split chooser settled on.
      std::string one_image;
      for (const std::string& line : (*model)->kernel_choices()) {
        if (b == 1 && absl::StartsWith(line, "one image: ")) one_image = line;
      }
      if (!one_image.empty()) std::fprintf(stderr, "           %s\n", one_image.c_str());
      if (json.is_open()) {
        json << absl::StrFormat(
            "{\"impl\": \"vitserve\", \"method\": \"%s\", \"keep_rate\": %s, \"tome_r\": %s, "
            "\"batch\": %d, \"images_per_s\": %.4f, \"iters\": %d, \"seconds\": %.3f, "
            "\"threads\": %d, \"streams\": %d, \"gmacs\": %.4f, \"device\": \"%s\", "
            "\"dtype\": \"%s\", \"cuda_graphs\": %s, \"one_image\": \"%s\"}\n",
            Label(c), c.tome_r >= 0 ? "null" : absl::StrFormat("%.2f", c.keep_rate),
            tome_r >= 0 ? absl::StrCat(tome_r) : "null", b, ips, iters, elapsed, threads, streams,
            row.macs / kGiga, (*model)->device(), absl::GetFlag(FLAGS_dtype),
            absl::GetFlag(FLAGS_cuda_graphs) ? "true" : "false", one_image);
        json.flush();
      }
    }
    rows.push_back(row);
  }

  // Markdown: img/s per batch and speed-up over dense (same batch) next to the MACs ratio.
  const Row* dense = nullptr;
  for (const Row& r : rows) {
    if (r.config.method == Method::kDense) dense = &r;
  }
  std::string header = "| method | keep | ToMe r | GMACs | MACs ratio |";
  std::string rule = "|---|---|---|---|---|";
  for (int b : batches) {
    header += absl::StrFormat(" img/s b%d | speed-up b%d |", b, b);
    rule += "---|---|";
  }
  std::printf("%s\n%s\n", header.c_str(), rule.c_str());
  for (const Row& r : rows) {
    const int tome_r =
        r.config.method != Method::kToMe
            ? -1
            : (r.config.tome_r >= 0 ? r.config.tome_r
                                    : ToMeMergeCountForKeepRate(arch, r.config.keep_rate));
    std::string line =
        absl::StrFormat("| %s | %s | %s | %.2f | %.2fx |", Label(r.config),
                        r.config.tome_r >= 0 ? "-" : absl::StrFormat("%.2f", r.config.keep_rate),
                        tome_r >= 0 ? absl::StrCat(tome_r) : "-", r.macs / kGiga,
                        r.macs > 0 ? static_cast<double>(dense_macs) / r.macs : 0.0);
    for (int b : batches) {
      const double ips = r.images_per_s.at(b);
      const double base = dense != nullptr ? dense->images_per_s.at(b) : 0.0;
      line += absl::StrFormat(" %.2f | %s |", ips,
                              base > 0 ? absl::StrFormat("%.2fx", ips / base) : "-");
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  vitserve::TuneMallocForInference();  // as the server does; see malloc_tuning.h
  absl::ParseCommandLine(argc, argv);
  return vitserve::Main();
}
