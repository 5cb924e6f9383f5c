#include "server/model/vit_inference_model.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/checkpoint/hf_weights.h"
#include "server/model/split_chooser.h"
#include "server/model/svite_compaction.h"
#ifdef VITSERVE_CUDA
#include "server/model/cuda_inference_model.h"
#endif
#include "server/pruning/gemm_plan.h"
#include "server/pruning/task_pool.h"
#include "server/spec/cost_model.h"

namespace vitserve {
namespace {

// Unexpected keys quoted in an error message at most.
constexpr size_t kMaxKeysInMessage = 8;

// Heads of token-reduction methods: tolerated (ignored) when the spec's method does not
// use them.
constexpr const char* kOtherMethodHeadPrefixes[] = {"score_predictor.", "alpha_heads.",
                                                    "alpha_norm.", "gumbel."};

std::string ShapeString(at::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]");
}

bool IsOtherMethodHead(const std::string& key) {
  for (const char* prefix : kOtherMethodHeadPrefixes) {
    if (absl::StartsWith(key, prefix)) return true;
  }
  return false;
}

absl::StatusOr<torch::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device == "cuda" || absl::StartsWith(device, "cuda:")) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device '", device, "' requested but CUDA is not available"));
    }
    try {
      torch::Device d(device);
      if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count())) {
        return absl::FailedPreconditionError(
            absl::StrCat("device '", device, "' requested but only ", torch::cuda::device_count(),
                         " CUDA device(s) exist"));
      }
      return d.has_index() ? d : torch::Device(torch::kCUDA, 0);
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", device, "'"));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", device, "'; accepted: cpu, cuda, cuda:N"));
}

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& dtype, const torch::Device& d) {
  if (dtype.empty()) return d.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  if (dtype == "float32") return torch::kFloat32;
  if (dtype == "bfloat16") return torch::kBFloat16;
  if (dtype == "float16") {
    if (!d.is_cuda()) {
      return absl::InvalidArgumentError(
          "dtype float16 needs a CUDA device; use float32 or "
          "bfloat16 on cpu");
    }
    return torch::kFloat16;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", dtype, "'; accepted: float32, bfloat16, float16"));
}

// The packed-GEMM kernel: the widest the CPU runs, capped by ModelLoadOptions::max_packed_isa.
absl::StatusOr<PackedIsa> ParsePackedIsa(const std::string& max_isa) {
  for (PackedIsa isa : {PackedIsa::kAvx512, PackedIsa::kAvx2, PackedIsa::kGeneric}) {
    if (max_isa == PackedIsaName(isa)) return BestPackedIsa(isa);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown max_packed_isa '", max_isa, "'; accepted: avx512, avx2, generic"));
}

enum class OneImageSplit { kAdaptive, kSplit, kSingle };

absl::StatusOr<OneImageSplit> ParseOneImageSplit(const std::string& name) {
  if (name == "adaptive") return OneImageSplit::kAdaptive;
  if (name == "split") return OneImageSplit::kSplit;
  if (name == "single") return OneImageSplit::kSingle;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown one_image_split '", name, "'; accepted: adaptive, split, single"));
}

class VitInferenceModel : public InferenceModel {
 public:
  VitInferenceModel(ModelSpec spec, Vit vit, std::unique_ptr<TokenPruner> pruner,
                    torch::Device device, torch::ScalarType dtype, int max_sub_batch,
                    std::vector<std::string> ignored_keys, double weight_zero_fraction,
                    GemmPlan gemm_plan, GemmPlan shard_plan,
                    std::unique_ptr<const PackedWeightSet> packed, int intra_op_threads,
                    OneImageSplit one_image_split)
      : spec_(std::move(spec)),
        vit_(std::move(vit)),
        blocks_(BlockShapesOf(vit_->options())),
        weight_zero_fraction_(weight_zero_fraction),
        pruner_(std::move(pruner)),
        device_(device),
        dtype_(dtype),
        max_sub_batch_(max_sub_batch),
        ignored_keys_(std::move(ignored_keys)),
        gemm_plan_(std::move(gemm_plan)),
        shard_plan_(std::move(shard_plan)),
        packed_(std::move(packed)),
        intra_op_threads_(intra_op_threads),
        one_image_split_(one_image_split) {}

  const ModelSpec& spec() const override { return spec_; }

  std::vector<BlockShape> block_shapes() const override { return blocks_; }

  double weight_zero_fraction() const override { return weight_zero_fraction_; }

  std::string device() const override { return device_.str(); }

  std::vector<std::string> kernel_choices() const override {
    std::vector<std::string> out = gemm_plan_.Describe();
    for (const std::string& line : shard_plan_.Describe()) {
      out.push_back(absl::StrCat("per-image-shard, 1 thread: ", line));
    }
    if (device_.is_cpu() && intra_op_threads_ > 1) {
      switch (one_image_split_) {
        case OneImageSplit::kAdaptive:
          out.push_back(split_chooser_.Describe());
          break;
        case OneImageSplit::kSplit:
          out.push_back("one image: split (forced)");
          break;
        case OneImageSplit::kSingle:
          out.push_back("one image: single (forced)");
          break;
      }
    }
    return out;
  }

  absl::StatusOr<std::vector<ImageResult>> Run(absl::Span<const ImageTensor* const> images,
                                               float keep_rate) override;

 private:
  absl::Status Validate(absl::Span<const ImageTensor* const> images, float keep_rate) const;

  // How many parts Run splits a batch of `batch` images into, each run on its own thread.
  int64_t ShardCount(int64_t batch) const;

  // Runs images [begin, end) in sub-batches of at most max_sub_batch_ on the calling
  // thread with the GEMM plan and thread count current on it; fills results[begin, end).
  void RunRange(absl::Span<const ImageTensor* const> images, int64_t begin, int64_t end,
                float keep_rate, const CostEstimate& cost, std::vector<ImageResult>& results);

  static std::vector<BlockShape> BlockShapesOf(const VitOptions& o) {
    std::vector<BlockShape> out;
    for (int i = 0; i < o.depth; ++i) out.push_back(o.block_shape(i));
    return out;
  }

  const ModelSpec spec_;
  Vit vit_;  // read-only after loading; forwards do not mutate it
  const std::vector<BlockShape> blocks_;
  const double weight_zero_fraction_;
  const std::unique_ptr<TokenPruner> pruner_;
  const torch::Device device_;
  const torch::ScalarType dtype_;
  const int max_sub_batch_;
  const std::vector<std::string> ignored_keys_;
  const GemmPlan gemm_plan_;   // CPU GEMM kernel per linear shape, chosen at load
  const GemmPlan shard_plan_;  // the same, timed on 1 thread, for the shards of a batch
  const std::unique_ptr<const PackedWeightSet> packed_;  // weights of the kPacked shapes
  const int intra_op_threads_;  // this model's CPU forwards split across this many threads
  const OneImageSplit one_image_split_;
  SplitChooser split_chooser_;  // one-image CPU forwards: split or single (kAdaptive)
};

absl::Status VitInferenceModel::Validate(absl::Span<const ImageTensor* const> images,
                                         float keep_rate) const {
  if (!std::isfinite(keep_rate) || keep_rate <= 0.0f || keep_rate > 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("keep_rate ", keep_rate, " is outside (0, 1]"));
  }
  const Architecture& a = spec_.arch;
  const size_t want = static_cast<size_t>(a.in_chans) * a.image_size * a.image_size;
  for (size_t i = 0; i < images.size(); ++i) {
    const ImageTensor* img = images[i];
    if (img == nullptr) return absl::InvalidArgumentError(absl::StrCat("image ", i, " is null"));
    if (img->channels != a.in_chans || img->height != a.image_size || img->width != a.image_size ||
        img->data.size() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("image ", i, " has shape [", img->channels, ", ", img->height, ", ",
                       img->width, "] with ", img->data.size(), " values; model '", spec_.name,
                       "' expects [", a.in_chans, ", ", a.image_size, ", ", a.image_size, "]"));
    }
  }
  return absl::OkStatus();
}

int64_t VitInferenceModel::ShardCount(int64_t batch) const {
  // Image shards need a CPU forward, two threads and two images; each then runs its
  // images on one thread with no synchronisation per operation. One image, or a single
  // thread, splits each operation across the threads instead (task_pool.h).
  if (!device_.is_cpu() || intra_op_threads_ < 2) return 1;
  return std::min<int64_t>(intra_op_threads_, batch);
}

void VitInferenceModel::RunRange(absl::Span<const ImageTensor* const> images, int64_t begin,
                                 int64_t end, float keep_rate, const CostEstimate& cost,
                                 std::vector<ImageResult>& results) {
  const Architecture& a = spec_.arch;
  const int64_t count = end - begin;
  const int64_t per_image = static_cast<int64_t>(a.in_chans) * a.image_size * a.image_size;
  const int64_t step = max_sub_batch_ > 0 ? std::min<int64_t>(max_sub_batch_, count) : count;
  // One sub-batch's input buffer, refilled right before each forward: a batch of 32 at
  // 224² would otherwise copy 19 MB up front and read it back cold.
  torch::Tensor stacked = torch::empty({step, a.in_chans, a.image_size, a.image_size});
  float* dst = stacked.data_ptr<float>();
  for (int64_t start = begin; start < end; start += step) {
    const int64_t n = std::min(step, end - start);
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + i * per_image, images[start + i]->data.data(), per_image * sizeof(float));
    }
    torch::Tensor chunk = stacked.narrow(0, 0, n);
    if (device_.is_cuda() || dtype_ != torch::kFloat32) {
      chunk = chunk.to(device_, dtype_);
    }
    PrunedOutput out = pruner_->Forward(*vit_, chunk, keep_rate);
    torch::Tensor logits = out.logits.to(torch::kCPU, torch::kFloat32).contiguous();
    const float* l = logits.data_ptr<float>();
    const int64_t classes = logits.size(1);
    for (int64_t i = 0; i < n; ++i) {
      ImageResult& r = results[start + i];
      r.logits.assign(l + i * classes, l + (i + 1) * classes);
      r.tokens_per_stage =
          out.image_tokens_per_stage.empty() ? out.tokens_per_stage : out.image_tokens_per_stage[i];
      r.macs = cost.macs;
    }
  }
}

absl::StatusOr<std::vector<ImageResult>> VitInferenceModel::Run(
    absl::Span<const ImageTensor* const> images, float keep_rate) {
  if (absl::Status s = Validate(images, keep_rate); !s.ok()) return s;
  std::vector<ImageResult> results(images.size());
  if (images.empty()) return results;
  absl::StatusOr<CostEstimate> cost = EstimateCost(spec_.arch, spec_.pruning, keep_rate, blocks_);
  if (!cost.ok()) return cost.status();

  const int64_t batch = static_cast<int64_t>(images.size());
  try {
    c10::InferenceMode guard;
    ScopedIntraOpThreads threads(intra_op_threads_);
    const int64_t shards = ShardCount(batch);
    if (shards <= 1) {
      // One image on several CPU threads: split each operation across them, or run it on
      // one thread (with the plan timed on one thread), as split_chooser.h decides.
      const bool choosable = device_.is_cpu() && intra_op_threads_ > 1 && batch == 1;
      SplitChooser::Kind kind = SplitChooser::Kind::kSplit;
      if (choosable && one_image_split_ == OneImageSplit::kAdaptive) {
        kind = split_chooser_.Next();
      } else if (choosable && one_image_split_ == OneImageSplit::kSingle) {
        kind = SplitChooser::Kind::kSingle;
      }
      const auto start = std::chrono::steady_clock::now();
      if (kind == SplitChooser::Kind::kSingle) {
        ScopedIntraOpThreads one(1);
        ScopedGemmPlan gemm_plan(&shard_plan_, packed_.get());
        RunRange(images, 0, batch, keep_rate, *cost, results);
      } else {
        ScopedGemmPlan gemm_plan(&gemm_plan_, packed_.get());
        RunRange(images, 0, batch, keep_rate, *cost, results);
      }
      if (choosable && one_image_split_ == OneImageSplit::kAdaptive) {
        split_chooser_.Record(
            kind, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
            static_cast<double>(cost->macs));
      }
    } else {
      // Contiguous, balanced image ranges. A shard runs on a pool worker or, when the
      // worker is not scheduled, after the others on this thread: the split and every
      // kernel are the same either way, so results do not depend on who ran what.
      ParallelTasks(shards, intra_op_threads_, [&](int64_t s) {
        c10::InferenceMode task_guard;  // thread-local, like the plan
        ScopedGemmPlan gemm_plan(&shard_plan_, packed_.get());
        RunRange(images, s * batch / shards, (s + 1) * batch / shards, keep_rate, *cost, results);
      });
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch failure running model '", spec_.name,
                                            "': ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("failure running model '", spec_.name, "': ", e.what()));
  }
  return results;
}

// The GEMM shapes a forward runs through FastLinear: every linear layer and the patch
// embedding (one GEMM), at the token counts of `images` images. DynamicViT's out_fc0 runs
// on its per-token half only (PredictorKeepScores), so that half's shape is listed instead.
std::vector<GemmShape> LinearShapes(VitImpl& vit, const std::set<int64_t>& images) {
  const VitOptions& o = vit.options();
  const int64_t tokens = o.num_prefix_tokens() + o.num_patches();
  std::vector<std::pair<int64_t, int64_t>> nk;  // (n, k)
  nk.emplace_back(o.embed_dim, static_cast<int64_t>(o.in_chans) * o.patch_size * o.patch_size);
  std::set<const torch::nn::LinearImpl*> split;  // DynamicViT's out_fc0: runs on its halves
  for (int p = 0; p < o.num_score_predictors; ++p) {
    const torch::nn::Linear& fc0 = vit.predictor(p).out_fc0;
    split.insert(fc0.get());
    nk.emplace_back(fc0->weight.size(0), fc0->weight.size(1) / 2);
  }
  for (const auto& item : vit.named_modules()) {
    const auto* linear = item.value()->as<torch::nn::Linear>();
    if (linear != nullptr && split.count(linear) == 0) {
      nk.emplace_back(linear->weight.size(0), linear->weight.size(1));
    }
  }
  std::vector<GemmShape> shapes;
  for (int64_t count : images) {
    for (const auto& [n, k] : nk) shapes.push_back({tokens * count, n, k});
  }
  return shapes;
}

// Packs every weight matrix (linear layers; the patch embedding's conv as [C, in·p·p];
// DynamicViT's split out_fc0 halves) whose (n, k) the plan runs with kPacked at some row
// count, and reorders those it runs with kMatmul.
void PackChosenWeights(VitImpl& vit, const GemmPlan& plan, PackedIsa isa, PackedWeightSet* out) {
  std::set<std::pair<int64_t, int64_t>> packed_nk;
  std::set<std::pair<int64_t, int64_t>> matmul_nk;
  for (const GemmChoice& c : plan.choices()) {
    if (c.kernel == GemmKernel::kPacked) packed_nk.emplace(c.shape.n, c.shape.k);
    if (c.kernel == GemmKernel::kMatmul) matmul_nk.emplace(c.shape.n, c.shape.k);
  }
  std::vector<torch::Tensor> weights = vit.parameters();
  for (int p = 0; p < vit.options().num_score_predictors; ++p) {
    torch::Tensor local = vit.predictor(p).OutFc0Local();
    if (local.defined()) weights.push_back(local);
  }
  for (const torch::Tensor& p : weights) {
    if (p.dim() < 2 || !p.is_contiguous() || p.scalar_type() != torch::kFloat32) continue;
    const int64_t n = p.size(0);
    const int64_t k = p.numel() / n;
    if (packed_nk.count({n, k}) > 0) out->Add(p.data_ptr<float>(), n, k, isa);
    // Not reordered (AddMatmul false): FastLinear falls back to oneDNN's sgemm.
    if (matmul_nk.count({n, k}) > 0) (void)out->AddMatmul(p.data_ptr<float>(), n, k);
  }
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> RequiredKeys(const ModelSpec& spec) {
  Vit vit(VitOptions::FromSpec(spec.arch, spec.pruning));
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& item : vit->named_parameters()) {
    out.emplace_back(item.key(), item.value().sizes().vec());
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> LoadStateDict(VitImpl& vit, const StateDict& weights) {
  auto params = vit.named_parameters();
  // Check everything before touching the module.
  for (const auto& item : params) {
    auto it = weights.find(item.key());
    if (it == weights.end()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint is missing '", item.key(),
                                                     "' (expected shape ",
                                                     ShapeString(item.value().sizes()), ")"));
    }
    if (!it->second.defined() || !it->second.is_floating_point()) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint key '", item.key(), "' is not a floating-point tensor"));
    }
    if (it->second.sizes() != item.value().sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint key '", item.key(), "' has shape ", ShapeString(it->second.sizes()),
          ", the model spec expects ", ShapeString(item.value().sizes())));
    }
  }
  std::vector<std::string> ignored;
  std::vector<std::string> unexpected;
  for (const auto& [key, tensor] : weights) {
    if (params.contains(key)) continue;
    (IsOtherMethodHead(key) ? ignored : unexpected).push_back(key);
  }
  if (!unexpected.empty()) {
    const size_t shown = std::min(unexpected.size(), kMaxKeysInMessage);
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint has ", unexpected.size(), " key(s) the model spec does not describe: ",
        absl::StrJoin(unexpected.begin(), unexpected.begin() + shown, ", "),
        unexpected.size() > shown ? ", ..." : "",
        " (check depth, distilled and the method against the checkpoint)"));
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) item.value().copy_(weights.at(item.key()));
  return ignored;
}

absl::StatusOr<std::unique_ptr<InferenceModel>> CreateInferenceModel(
    const ModelSpec& spec, const StateDict& weights, const ModelLoadOptions& opts,
    const PrunerOptions& pruner_options) {
  // Validates the architecture and locations before LibTorch sees them.
  if (absl::StatusOr<CostEstimate> c = EstimateCost(spec.arch, spec.pruning, 1.0f); !c.ok()) {
    return c.status();
  }
  if (opts.max_sub_batch < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_sub_batch ", opts.max_sub_batch, " must be >= 0"));
  }
  absl::StatusOr<torch::Device> device = ParseDevice(opts.device);
  if (!device.ok()) return device.status();
  absl::StatusOr<torch::ScalarType> dtype = ParseDtype(opts.dtype, *device);
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<PackedIsa> isa = ParsePackedIsa(opts.max_packed_isa);
  if (!isa.ok()) return isa.status();
  absl::StatusOr<OneImageSplit> one_image_split = ParseOneImageSplit(opts.one_image_split);
  if (!one_image_split.ok()) return one_image_split.status();
  absl::StatusOr<std::unique_ptr<TokenPruner>> pruner =
      CreateTokenPruner(spec.arch, spec.pruning, pruner_options);
  if (!pruner.ok()) return pruner.status();
  // Per forward (ScopedIntraOpThreads in Run), never process-wide: loading a model must not
  // change another model's thread count.
  const int intra_op_threads =
      opts.intra_op_threads > 0 ? opts.intra_op_threads : at::get_num_threads();
  try {
    VitOptions options = VitOptions::FromSpec(spec.arch, spec.pruning);
    const StateDict* to_load = &weights;
    absl::StatusOr<SviteCompaction> compacted;
    if (spec.pruning.method == Method::kSViTE) {
      compacted = CompactSvite(spec.arch, weights);
      if (!compacted.ok()) return compacted.status();
      options.block_shapes = compacted->blocks;
      to_load = &compacted->weights;
    }
    Vit vit(options);
    absl::StatusOr<std::vector<std::string>> ignored = LoadStateDict(*vit, *to_load);
    if (!ignored.ok()) return ignored.status();
    vit->to(*device, *dtype);
    vit->eval();
    for (int p = 0; p < options.num_score_predictors; ++p) vit->predictor(p).SplitOutFc0();
#ifdef VITSERVE_CUDA
    if (device->is_cuda()) {
      return CreateCudaInferenceModel({spec, std::move(vit), *std::move(pruner), *device, *dtype,
                                       opts.cuda_graphs,
                                       compacted.ok() ? compacted->weight_zero_fraction : 0.0});
    }
#endif
    GemmPlan gemm_plan;
    GemmPlan shard_plan;
    auto packed = std::make_unique<PackedWeightSet>();
    if (opts.time_gemm_kernels && device->is_cpu() && *dtype == torch::kFloat32) {
      const int64_t sub = opts.max_sub_batch > 0 ? opts.max_sub_batch : 8;
      {
        ScopedIntraOpThreads threads(intra_op_threads);  // timed as Run will run them
        gemm_plan = ChooseGemmKernelsOnce(LinearShapes(*vit, {1, sub}), *isa);
      }
      PackChosenWeights(*vit, gemm_plan, *isa, packed.get());
      if (intra_op_threads > 1) {  // Run splits batches into one-thread image shards
        ScopedIntraOpThreads one(1);
        shard_plan = ChooseGemmKernelsOnce(
            LinearShapes(*vit, {1, std::max<int64_t>(1, sub / intra_op_threads), sub}), *isa);
        PackChosenWeights(*vit, shard_plan, *isa, packed.get());
      }
    }
    return std::unique_ptr<InferenceModel>(new VitInferenceModel(
        spec, std::move(vit), *std::move(pruner), *device, *dtype, opts.max_sub_batch,
        *std::move(ignored), compacted.ok() ? compacted->weight_zero_fraction : 0.0,
        std::move(gemm_plan), std::move(shard_plan), std::move(packed), intra_op_threads,
        *one_image_split));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch failure building model '", spec.name,
                                            "': ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::unique_ptr<InferenceModel>> LoadInferenceModel(const ModelSpec& spec,
                                                                   const ModelLoadOptions& opts) {
  absl::StatusOr<Checkpoint> ckpt = LoadCheckpoint(spec.weights_path);
  if (!ckpt.ok()) return ckpt.status();
  if (spec.weights_layout == "huggingface") {  // hf_weights.h: renamed to timm keys
    absl::StatusOr<StateDict> renamed =
        HfToTimmStateDict(ckpt->model, spec.arch, spec.hf_architecture);
    if (!renamed.ok()) {
      return absl::Status(renamed.status().code(),
                          absl::StrCat(spec.weights_path, ": ", renamed.status().message()));
    }
    ckpt->model = *std::move(renamed);
  }
  if (spec.pruning.method == Method::kSViTE) {
    try {
      if (absl::Status s = ApplySviteMasks(ckpt->extra, &ckpt->model); !s.ok()) return s;
    } catch (const c10::Error& e) {
      return absl::InternalError(
          absl::StrCat("LibTorch failure applying SViTE masks: ", e.what_without_backtrace()));
    }
  }
  return CreateInferenceModel(spec, ckpt->model, opts);
}

}  // namespace vitserve
