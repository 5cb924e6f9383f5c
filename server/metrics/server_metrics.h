// Prometheus metrics of the server: one object, created once in main and injected
// (no global registry). Thread-safe: every method may be called from any thread,
// concurrently.
//
// Two ways to record for a model:
//   ForModel(model, method) -> ModelMetrics*   a per-model handle, resolved once (a map
//       lookup under a lock); its methods touch cached series only: no lookup, no lock.
//       The serving core keeps one per served model (ModelState::metrics) for the hot path.
//   OnRequestDone(record), OnBatch(model, ...) ...   the same, named by string: each call
//       resolves the handle first (ForModel). For callers without a handle, e.g. a refusal
//       of a request that names no served model.
// Both give the same series and values.
//
// Names follow the Prometheus conventions Triton and TF Serving use: prefix vitserve_,
// base units (seconds, bytes, ratios 0-1), _total on counters, histograms only (no
// summaries), so that quantiles aggregate across replicas with
// histogram_quantile(q, sum by (le) (rate(..._bucket[w]))). MACs are multiply-adds
// (FLOPs = 2 x MACs), and the metric names say macs. docs/monitoring.md lists every series.
//
// Label cardinality is bounded by construction, because label values arrive from clients:
//   model            a model announced with OnModelLoaded, otherwise "_unknown" (a client
//                    asking for a model that does not exist must not create a series per name)
//   method           one of MethodName() ("dense", "evit", ...), otherwise "other"
//   code             the grpc::StatusCode name ("OK", "INVALID_ARGUMENT", ...)
//   reason           one of the kReject* constants below, otherwise "other"
//   keep_rate_level  the keep-rate rounded to the nearest tenth, "0.1" ... "1.0"
//   outcome, direction   fixed sets documented per metric
// Call OnModelLoaded for every model before recording anything else for it (and before
// ForModel: a handle taken for a name not yet announced stays on "_unknown").
//
// Implementation details live in server_metrics.cc; callers need only this header.
#ifndef VITSERVE_SERVER_METRICS_SERVER_METRICS_H_
#define VITSERVE_SERVER_METRICS_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vitserve {

struct MetricsOptions {
  // "127.0.0.1:9090", "0.0.0.0:9090"; port 0 picks a free port (see port()).
  // Empty = no HTTP exposer (tests can still Serialize()).
  // The exposer is prometheus-cpp's (civetweb). In a process that links LibTorch it cannot
  // start its threads (small fixed thread stacks vs LibTorch's static TLS; see
  // server/rpc/metrics_http_server.h), so Create() returns UNAVAILABLE there: the vitserve
  // binary leaves this empty and serves Serialize() through MetricsHttpServer.
  std::string bind_address;
  // Threads of the HTTP exposer (scrapes are rare and cheap).
  int exposer_threads = 2;
};

// Rejection reasons accepted by OnRejected (any other string is counted as "other").
inline constexpr char kRejectQueueFull[] = "queue_full";
inline constexpr char kRejectDeadline[] = "deadline";
inline constexpr char kRejectBudgetUnmeetable[] = "budget_unmeetable";
inline constexpr char kRejectCancelled[] = "cancelled";
inline constexpr char kRejectDraining[] = "draining";

// One finished request (successful or not), without its model: what a ModelMetrics handle
// records.
struct RequestOutcome {
  int grpc_code = 0;             // grpc::StatusCode value
  double queue_seconds = 0;      // admission to start of the batch that ran it
  double compute_seconds = 0;    // that batch's compute time
  double total_seconds = 0;      // admission to response
  float keep_rate = 1.0f;        // applied (successful requests)
  uint64_t macs = 0;             // executed for this image
  uint64_t dense_macs = 0;       // the dense model's MACs for one image
  bool had_budget = false;       // a latency budget or a client deadline applied
  bool budget_met = false;       // total_seconds <= budget
  float top1_probability = 0;    // confidence of the answer (softmax of the top class)
  double expected_accuracy = 0;  // from calibration, 0 = unknown
};

// One finished request named by its model (ServerMetrics::OnRequestDone).
struct RequestRecord : RequestOutcome {
  std::string model;   // resolved model name (never empty for a served request)
  std::string method;  // the model's token-reduction method, MethodName() spelling
};

// One image of the shadow comparison.
struct ShadowRecord {
  enum class Outcome {
    kAgree,     // dense and pruned top-1 agree
    kDisagree,  // they differ
    kSkipped,   // sampled but not run (work was waiting, or the dense run failed)
  };
  Outcome outcome = Outcome::kSkipped;
  double kl_divergence = 0.0;  // KL(dense || pruned), nats; compared images only
};

// The series of one model (and the method its requests are counted under), resolved once
// by ServerMetrics::ForModel: every method touches cached prometheus series only, with no
// map lookup and no lock. Owned by the ServerMetrics that made it; the address is stable
// for that object's lifetime, reloads of the model (OnModelLoaded again) included.
// Thread-safe.
class ModelMetrics {
 public:
  virtual ~ModelMetrics() = default;

  // Every finished request, whatever its code: vitserve_requests_total{model,method,code}.
  // Successful requests (grpc_code == 0) only, so that latency quantiles describe answers
  // (failures show in the error rate and the budget counters):
  //   vitserve_request_duration_seconds{model} (total_seconds),
  //   vitserve_queue_duration_seconds{model}, vitserve_compute_duration_seconds{model},
  //   vitserve_macs_total{model}, vitserve_dense_macs_total{model}, vitserve_request_macs{model},
  //   vitserve_keep_rate{model}, vitserve_top1_probability{model,keep_rate_level},
  //   vitserve_expected_accuracy{model} (only when expected_accuracy > 0)
  // Requests with had_budget (any code): vitserve_latency_budget_total{model,outcome=met|missed}.
  virtual void OnRequestDone(const RequestOutcome& r) = 0;
  // One executed batch: vitserve_batches_total, vitserve_images_total (+= batch_size),
  // vitserve_batch_size, vitserve_batch_keep_rate, vitserve_batch_compute_duration_seconds.
  virtual void OnBatch(int batch_size, float keep_rate, double compute_seconds) = 0;
  // A request refused before or instead of compute: vitserve_rejections_total{model,reason}.
  // reason: kRejectQueueFull | kRejectDeadline | kRejectBudgetUnmeetable | kRejectCancelled |
  // kRejectDraining. The request is still reported through OnRequestDone with its code.
  virtual void OnRejected(absl::string_view reason) = 0;
  // vitserve_queue_depth{model}: requests waiting (not yet in a running batch).
  virtual void SetQueueDepth(int64_t depth) = 0;
  // The budget scheduler's view of the load (--scheduler=budget only):
  //   vitserve_arrival_rate{model}   requests per second offered recently (admitted or not)
  //   vitserve_keep_rate_cap{model}  the highest keep-rate that load leaves (rule 2c)
  virtual void SetLoad(double arrival_rate, float keep_rate_cap) = 0;
  // The budget scheduler's interference guard (server/budget/latency_guard.h), per model:
  //   vitserve_latency_safety_factor{model}  multiplier on predicted compute (>= 1)
  //   vitserve_budget_reserve_ratio{model}   fraction (0-1) of each budget kept free at its end
  //   vitserve_budget_miss_ratio{model}      recent missed / admitted budgeted requests (0-1)
  virtual void SetLatencyGuard(double safety_factor, double reserve, double miss_ratio) = 0;
  // The scheduler's latency model vs what happened, per executed batch (or request):
  //   vitserve_latency_model_abs_error_seconds{model}   |observed - predicted|
  //   vitserve_latency_model_relative_error{model}      |observed - predicted| / predicted
  //   vitserve_latency_model_predictions_total{model,direction=under|over}
  //       under: observed > predicted (optimistic prediction: budgets at risk)
  //   vitserve_latency_model_predicted_seconds_total{model},
  //   vitserve_latency_model_observed_seconds_total{model}  (ratio of rates = mean bias)
  // Non-finite or negative inputs are ignored.
  virtual void OnLatencyPrediction(double predicted_seconds, double observed_seconds) = 0;
  // Shadow dense comparison (accuracy proxy), one image:
  //   vitserve_shadow_comparisons_total{model,outcome=agree|disagree|skipped}
  //   vitserve_shadow_kl_divergence{model}  KL(dense || pruned) in nats, compared only
  virtual void OnShadow(const ShadowRecord& record) = 0;
};

class ServerMetrics {
 public:
  // Builds the registry and, when options.bind_address is set, an HTTP exposer serving
  // GET /metrics on it. Errors: INVALID_ARGUMENT for a malformed address, UNAVAILABLE when
  // the address cannot be bound (in use, not local).
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const MetricsOptions& options);
  virtual ~ServerMetrics() = default;

  // The handle of `model`, counting requests under `method` (vitserve_requests_total's
  // method label). The label rules above apply: a model never announced with OnModelLoaded
  // gets the one "_unknown" handle set, a method outside MethodName() counts as "other".
  // The same (model label, method label) always returns the same handle; never null.
  // One map lookup under a lock: call it once per model, not per request.
  virtual ModelMetrics* ForModel(const std::string& model, const std::string& method) = 0;

  // vitserve_in_flight_requests: admitted and not yet answered, all models.
  virtual void AddInFlight(int64_t delta) = 0;
  // vitserve_model_info{model,method,version} = 1. Announces the model (see the label rules
  // above); a second call for the same model replaces the old info series and keeps the
  // model's handles and series.
  virtual void OnModelLoaded(const std::string& model, const std::string& method,
                             const std::string& version) = 0;

  // The ModelMetrics methods named by model (and, for requests, method) string: each is
  // ForModel(model, method)->..., with method "" (counted as "other") where the call has none.
  // A lookup under a lock per call: for callers without a handle.
  void OnRequestDone(const RequestRecord& r);
  void OnBatch(const std::string& model, int batch_size, float keep_rate, double compute_seconds);
  void OnRejected(const std::string& model, const std::string& reason);
  void SetQueueDepth(const std::string& model, int64_t depth);
  void SetLoad(const std::string& model, double arrival_rate, float keep_rate_cap);
  void SetLatencyGuard(const std::string& model, double safety_factor, double reserve,
                       double miss_ratio);
  void OnLatencyPrediction(const std::string& model, double predicted_seconds,
                           double observed_seconds);
  void OnShadow(const std::string& model, const ShadowRecord& record);

  // The text exposition format (what /metrics returns), including
  // vitserve_process_resident_memory_bytes read from /proc/self/statm now.
  virtual std::string Serialize() const = 0;
  // The port the exposer bound (0 when none).
  virtual int port() const = 0;
};

}  // namespace vitserve

#endif  // VITSERVE_SERVER_METRICS_SERVER_METRICS_H_
