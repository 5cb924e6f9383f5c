// Prometheus metrics of the server: one object, created once in main and injected
// (no global registry). Every Family::Add reference is cached, so the hot path does no
// string lookups beyond a small per-(model, ...) map. Thread-safe.
//
// Names follow SERVING.md: prefix vitserve_, base units, _total on counters,
// histograms only. MACs are multiply-adds (FLOPs = 2 x MACs), and the metric names say macs.
#ifndef VITSERVE_SERVER_METRICS_SERVER_METRICS_H_
#define VITSERVE_SERVER_METRICS_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace vitserve {

struct MetricsOptions {
  // "127.0.0.1:9090", "0.0.0.0:9090"; empty = no HTTP exposer (tests can still Serialize()).
  std::string bind_address;
};

// One finished request (successful or not).
struct RequestRecord {
  std::string model;
  std::string method;
  int grpc_code = 0;            // grpc::StatusCode value
  double queue_seconds = 0;
  double compute_seconds = 0;
  double total_seconds = 0;
  float keep_rate = 1.0f;       // applied (successful requests)
  uint64_t macs = 0;            // executed for this image
  uint64_t dense_macs = 0;
  bool had_budget = false;
  bool budget_met = false;
  float top1_probability = 0;   // confidence of the answer
  double expected_accuracy = 0; // from calibration, 0 = unknown
};

class ServerMetrics {
 public:
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const MetricsOptions& options);
  virtual ~ServerMetrics() = default;

  virtual void OnRequestDone(const RequestRecord& r) = 0;
  virtual void OnBatch(const std::string& model, int batch_size, float keep_rate,
                       double compute_seconds) = 0;
  // reason: "queue_full" | "deadline" | "budget_unmeetable" | "cancelled" | "draining"
  virtual void OnRejected(const std::string& model, const std::string& reason) = 0;
  virtual void SetQueueDepth(const std::string& model, int64_t depth) = 0;
  virtual void AddInFlight(int64_t delta) = 0;
  virtual void OnModelLoaded(const std::string& model, const std::string& method,
                             const std::string& version) = 0;
  virtual void OnLatencyPrediction(const std::string& model, double predicted_seconds,
                                   double observed_seconds) = 0;
  // Shadow dense comparison (accuracy proxy): compared, skipped (under load), agreed.
  virtual void OnShadow(const std::string& model, bool skipped, bool top1_agrees,
                        double kl_divergence) = 0;

  // The text exposition format (what /metrics returns).
  virtual std::string Serialize() const = 0;
  // The port the exposer bound (0 when none).
  virtual int port() const = 0;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_METRICS_SERVER_METRICS_H_
