// Shared helpers of the metrics tests: a parser of the text exposition format, the
// requests and the "every family" recording sequence the tests feed ServerMetrics.
#ifndef VITSERVE_TESTS_UNIT_METRICS_METRICS_TEST_UTIL_H_
#define VITSERVE_TESTS_UNIT_METRICS_METRICS_TEST_UTIL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/metrics/server_metrics.h"

namespace vitserve {
namespace metrics_test {

inline constexpr int kGrpcOk = 0;
inline constexpr int kGrpcInvalidArgument = 3;
inline constexpr int kGrpcNotFound = 5;
inline constexpr int kGrpcResourceExhausted = 8;

// One sample of the exposition text: name, labels, value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text format as prometheus-cpp writes it (no escaped quotes in our labels).
std::vector<Sample> Parse(const std::string& text);
// Samples named `name` whose labels include every pair of `labels`.
std::vector<Sample> Find(const std::vector<Sample>& samples, const std::string& name,
                         const std::map<std::string, std::string>& labels = {});
// The value of the single sample matching; fails the test when there is not exactly one.
double Value(const std::vector<Sample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels = {});

// ServerMetrics::Create, failing the test (and returning null) on an error.
std::unique_ptr<ServerMetrics> NewMetrics(const MetricsOptions& options = {});
// A successful, budgeted request of `model` with method "evit".
RequestRecord OkRequest(const std::string& model, float keep_rate);
// Records at least one sample of every series family ServerMetrics defines, through the
// string-keyed methods.
void FillEverything(ServerMetrics& m);

// The exposition text's lines sorted, without the resident-memory sample (which changes
// between calls): equal for two objects holding the same series and values.
std::string SortedExposition(const std::string& text);

}  // namespace metrics_test
}  // namespace vitserve

#endif  // VITSERVE_TESTS_UNIT_METRICS_METRICS_TEST_UTIL_H_
