// The executor interface between the scheduler and the model code. Torch-free: the
// scheduler and RPC layer see only this header; server/model/ implements it with LibTorch.
// It depends only downward, on spec/ (ModelSpec, BlockShape).
#ifndef VITSERVE_SERVER_EXECUTOR_INFERENCE_MODEL_H_
#define VITSERVE_SERVER_EXECUTOR_INFERENCE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/executor/image_tensor.h"
#include "server/spec/cost_model.h"
#include "server/spec/model_spec.h"

namespace vitserve {

// What one image of a batch produced.
struct ImageResult {
  std::vector<float> logits;          // num_classes values
  std::vector<int> tokens_per_stage;  // the token counts this image actually went through
  uint64_t macs = 0;                  // executed for this image
};

// A model loaded and ready to run. Thread-safety: Run() may be called from several
// threads at once; implementations hold only immutable weights (CTranslate2-style) and
// per-call state.
class InferenceModel {
 public:
  virtual ~InferenceModel() = default;

  virtual const ModelSpec& spec() const = 0;

  // Per-block shapes after compaction (SViTE); uniform otherwise.
  virtual std::vector<BlockShape> block_shapes() const = 0;

  // Fraction of exact zeros among the block weight matrices as served (SViTE's
  // unstructured sparsity); 0 when not measured.
  virtual double weight_zero_fraction() const { return 0.0; }

  // The kernels chosen for this machine at load time, one line per choice (e.g. the CPU
  // GEMM kernel per linear-layer shape, with the timings it was chosen by), and for a CPU
  // model on several threads a last line with the one-image split chooser's state as of
  // this call (it changes while the model runs); empty when nothing was chosen by
  // measurement.
  virtual std::vector<std::string> kernel_choices() const { return {}; }

  // Runs all `images` as one batch at `keep_rate` in (0, 1] (1 = dense schedule of the
  // method). Every image must have the model's input shape. Returns one result per
  // image, in order. Errors: INVALID_ARGUMENT (shape / keep-rate), INTERNAL (LibTorch
  // failure; message carries the c10 error).
  virtual absl::StatusOr<std::vector<ImageResult>> Run(absl::Span<const ImageTensor* const> images,
                                                       float keep_rate) = 0;

  // "cpu" or "cuda:0".
  virtual std::string device() const = 0;
};

struct ModelLoadOptions {
  std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
  // "float32" | "bfloat16" | "float16" (GPU only); "" = float32 on cpu, bfloat16 on cuda.
  std::string dtype;
  // CUDA only (VITSERVE_CUDA builds): capture one CUDA graph per (keep-rate, batch size)
  // on first use and replay it afterwards (server/model/cuda_inference_model.h).
  bool cuda_graphs = true;
  // Largest sub-batch run at once; bigger batches are split (CPU is memory-bound at
  // large batch, see bench/). 0 = no split.
  int max_sub_batch = 8;
  // Threads one CPU forward of this model splits across, set on the calling thread for
  // each forward (server/pruning/task_pool.h, ScopedIntraOpThreads), so models loaded
  // with different counts keep theirs; loading changes no process-wide setting.
  // 0 = LibTorch's count (at::get_num_threads) at load.
  int intra_op_threads = 0;
  // CPU float32: time the GEMM kernels per linear-layer shape at load and run the faster
  // (server/pruning/gemm_plan.h); false = oneDNN everywhere, nothing timed.
  bool time_gemm_kernels = true;
  // Widest instruction set of the packed-weight GEMM candidate (pruning/packed_gemm.h):
  // "avx512" | "avx2" | "generic"; "avx2" measures the AVX2 kernel on an AVX-512 machine.
  // The CPU's own limit applies too.
  std::string max_packed_isa = "avx512";
  // A CPU forward of one image with intra_op_threads > 1: "adaptive" picks, from the
  // measured time of recent forwards, between splitting each operation across the threads
  // and running it on one (server/model/split_chooser.h; reported in kernel_choices());
  // "split" or "single" forces one. Batches of several images split by image either way.
  std::string one_image_split = "adaptive";
};

// Loads <spec.weights_path> (safetensors or PyTorch zip checkpoint), validates the keys
// and shapes against spec.arch / spec.pruning, compacts SViTE checkpoints, and returns a
// ready model. Errors: NOT_FOUND (missing file), INVALID_ARGUMENT (bad or mismatching
// checkpoint; the message names the key), FAILED_PRECONDITION (device unavailable).
absl::StatusOr<std::unique_ptr<InferenceModel>> LoadInferenceModel(const ModelSpec& spec,
                                                                   const ModelLoadOptions& opts);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_EXECUTOR_INFERENCE_MODEL_H_
