// GetModelInfo's answer, built once per model at startup from the spec and the cost model
// (server/spec/cost_model.h). Pure; no gRPC server types.
#ifndef VITSERVE_SERVER_SERVING_MODEL_INFO_H_
#define VITSERVE_SERVER_SERVING_MODEL_INFO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/spec/model_spec.h"
#include "vitserve/v1/inference.pb.h"

namespace vitserve {

// Step of the keep-rate grid in ModelInfo.grid.
inline constexpr float kKeepRateGridStep = 0.1f;

// Keep-rates of the grid, descending: 1.0, 0.9, ... (multiples of kKeepRateGridStep) that
// lie in [min_keep_rate, max_keep_rate], plus min_keep_rate itself when it is not a
// multiple, plus max_keep_rate when it is not.
std::vector<float> KeepRateGrid(const PruningSpec& pruning);

// Name, version, method, architecture, preprocessing, keep-rate range, dense MACs, the
// grid (tokens per stage and MACs per keep-rate from EstimateCost), labels, per-block
// shapes (MACs use them: a compacted SViTE model reports its real cost), calibration
// points, device and the weights' zero fraction. Errors: whatever EstimateCost reports
// for a keep-rate of the grid (INVALID_ARGUMENT).
absl::StatusOr<vitserve::v1::ModelInfo> BuildModelInfo(const ModelSpec& spec,
                                                       const std::vector<BlockShape>& blocks,
                                                       const std::string& device,
                                                       double weight_zero_fraction = 0.0);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_MODEL_INFO_H_
