// The first check of a GPU run (bench/gpu/run.sh): one binary linking LibTorch (the GPU
// machine's, which may carry protobuf symbols of its own) and Debian's libprotobuf /
// libgrpc++ (unpacked from .debs) must round-trip a vitserve message and hand its data to
// LibTorch intact. Also prints what the run's results need: LibTorch version, CUDA
// availability and device count.
//
// Usage: gpu_proto_torch_check [--device=cuda]   Exit 0 = everything agreed.
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "google/protobuf/stubs/common.h"
#include "grpcpp/grpcpp.h"
#include "vitserve/v1/inference.pb.h"

int main(int argc, char** argv) {
  const bool want_cuda = argc > 1 && std::strcmp(argv[1], "--device=cuda") == 0;
  std::printf("libtorch %s, protobuf %s, grpc %s, cuda available %d, cuda devices %d\n",
              TORCH_VERSION,
              google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION).c_str(),
              grpc::Version().c_str(), torch::cuda::is_available() ? 1 : 0,
              static_cast<int>(torch::cuda::device_count()));

  vitserve::v1::ClassifyRequest request;
  request.set_model("round-trip");
  request.set_keep_rate(0.7f);
  vitserve::v1::Tensor* t = request.mutable_tensor();
  for (int64_t d : {3, 4, 5}) t->add_shape(d);
  for (int i = 0; i < 60; ++i) t->add_data(0.25f * static_cast<float>(i) - 3.0f);
  std::string bytes;
  if (!request.SerializeToString(&bytes)) {
    std::fprintf(stderr, "FAIL: SerializeToString\n");
    return 1;
  }
  vitserve::v1::ClassifyRequest back;
  if (!back.ParseFromString(bytes) || back.model() != "round-trip" ||
      back.tensor().data_size() != 60 || back.tensor().shape_size() != 3) {
    std::fprintf(stderr, "FAIL: ParseFromString gave %s\n", back.ShortDebugString().c_str());
    return 1;
  }
  torch::Tensor x =
      torch::from_blob(const_cast<float*>(back.tensor().data().data()), {3, 4, 5}, torch::kFloat32);
  if (want_cuda) x = x.to(torch::kCUDA);
  const double sum = x.sum().item<double>();  // sum of 0.25 i - 3 over i < 60
  const double want = 0.25 * (59.0 * 60.0 / 2.0) - 3.0 * 60.0;
  if (std::abs(sum - want) > 1e-3) {
    std::fprintf(stderr, "FAIL: tensor sum %f, want %f\n", sum, want);
    return 1;
  }
  std::printf("OK: %zu-byte message round-tripped; tensor sum %.2f on %s\n", bytes.size(), sum,
              x.device().str().c_str());
  return 0;
}
