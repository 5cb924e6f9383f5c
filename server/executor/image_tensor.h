// The executor's input: one preprocessed image. preprocess/ produces it, the executor
// (inference_model.h) consumes it; neither needs the other's header.
#ifndef VITSERVE_SERVER_EXECUTOR_IMAGE_TENSOR_H_
#define VITSERVE_SERVER_EXECUTOR_IMAGE_TENSOR_H_

#include <vector>

namespace vitserve {

// A preprocessed image: float32, CHW, row-major, already normalised.
struct ImageTensor {
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<float> data;  // channels * height * width values
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_EXECUTOR_IMAGE_TENSOR_H_
