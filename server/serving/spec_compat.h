// Whether a new version of a model may replace the served one without a restart: what
// scheduling, validation and the latency model rely on must be equal.
#ifndef VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_
#define VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_

#include <string>

#include "server/model/model_spec.h"

namespace vitserve {

// Empty when `next` keeps `served`'s architecture, pruning settings and preprocessing;
// otherwise what changed ("the architecture", "the pruning settings", "the preprocessing").
std::string SpecChange(const ModelSpec& served, const ModelSpec& next);

}  // namespace vitserve

#endif  // VITSERVE_SERVER_SERVING_SPEC_COMPAT_H_
