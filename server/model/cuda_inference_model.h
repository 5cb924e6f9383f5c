// The CUDA executor: an InferenceModel for a Vit whose weights are already on a CUDA
// device (LoadInferenceModel moves them there once, in the requested dtype). Compiled only
// with -DVITSERVE_CUDA=ON (a CUDA LibTorch); CreateInferenceModel
// (vit_inference_model.cc) hands CUDA devices here.
//
// What it adds to the plain LibTorch forward:
// - One thread owns the device. Run() validates, queues the batch and waits; a single
//   worker thread, with its own CUDA stream, runs the batches one at a time in arrival
//   order. Concurrent callers never interleave kernels or fight over graph buffers.
// - Pinned host buffers and asynchronous copies: images are packed into a page-locked
//   buffer and copied with one non-blocking transfer on the worker's stream; logits come
//   back the same way; one stream synchronisation per batch.
// - CUDA graphs (ModelLoadOptions::cuda_graphs): the first batch of each (keep-rate,
//   batch size) runs eagerly once (warm-up: cuBLAS handles, allocator), then its forward
//   (dtype conversion, the method's forward, float32 logits) is captured into a graph
//   with static input / output buffers; later batches of that key copy into the static
//   input and replay. The server's start-up latency sweep runs every keep-rate level and
//   batch size, so the graphs are captured there, before traffic. A forward that cannot
//   be captured (it synchronises with the host, e.g. SViTE's per-image selection, or
//   reports per-image token counts) stays eager for that key; so does every key after
//   kMaxCudaGraphs captures.
// - Attention runs through server/pruning/device_attention.h (fused SDPA on LibTorch
//   >= 2.1; only the CLS row of probabilities where a method needs it).
//
// Thread-safety: Run() may be called from any number of threads. Errors as
// InferenceModel::Run; a LibTorch/CUDA failure is INTERNAL with the c10 message.
#ifndef VITSERVE_SERVER_MODEL_CUDA_INFERENCE_MODEL_H_
#define VITSERVE_SERVER_MODEL_CUDA_INFERENCE_MODEL_H_

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/executor/inference_model.h"
#include "server/pruning/token_pruner.h"
#include "server/vit/vit_module.h"

namespace vitserve {

// Most graphs one model captures (each holds its own activation memory).
inline constexpr int kMaxCudaGraphs = 64;

struct CudaModelParts {
  ModelSpec spec;
  Vit vit{nullptr};  // weights on `device` in `dtype`, eval()
  std::unique_ptr<TokenPruner> pruner;
  torch::Device device{torch::kCUDA, 0};
  torch::ScalarType dtype = torch::kBFloat16;
  bool cuda_graphs = true;
  double weight_zero_fraction = 0.0;
};

// Starts the worker thread. Errors: FAILED_PRECONDITION when `device` is not CUDA.
absl::StatusOr<std::unique_ptr<InferenceModel>> CreateCudaInferenceModel(CudaModelParts parts);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_MODEL_CUDA_INFERENCE_MODEL_H_
