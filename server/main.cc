// vitserve: serves the models of a model repository over gRPC. Wiring only: flags ->
// options, load models, start metrics, service and server, wait for SIGTERM/SIGINT, drain.
//
// Startup prints exactly one line `vitserve listening on <host>:<port>` on stdout (and
// `vitserve metrics on <host>:<port>` when metrics are on, `vitserve http on <host>:<port>`
// with --http_port, the Open Inference Protocol's REST form) once the models are loaded,
// warmed up and health is SERVING. Errors go to stderr with a non-zero exit status.
// With --scheduler=budget (the default) each model's latency sweep runs while the service
// is created, before the port opens (bounded by --sweep_time_cap_s per model); its summary
// goes to stderr.
//
// Security: --tls_cert/--tls_key make the gRPC port TLS-only (plaintext clients fail the
// handshake); --tls_client_ca adds mutual TLS. --metrics_host binds /metrics elsewhere
// (e.g. loopback) than the gRPC --host. docs/production.md.
//
// On SIGHUP: hot reload of every model directory (InferenceServiceImpl::ReloadModel): a
// new version is loaded beside the old one, warmed up and switched in atomically; a
// broken one is refused with a log line and the old version keeps serving.
//
// On SIGTERM/SIGINT: health NOT_SERVING, new requests refused (UNAVAILABLE), in-flight
// requests finish (up to --drain_timeout_s), then exit 0.
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/checkpoint/model_repository.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/grpc_server.h"
#include "server/rpc/inference_service.h"
#include "server/rpc/metrics_http_server.h"
#include "server/rpc/model_loader.h"
#include "server/rpc/oip_core.h"
#include "server/rpc/oip_grpc_service.h"
#include "server/rpc/oip_http_server.h"
#include "server/tls/tls_credentials.h"
#include "server/util/cli_usage.h"
#include "server/util/clock.h"
#include "server/util/malloc_tuning.h"

ABSL_FLAG(std::string, model_repository, "",
          "Directory with one sub-directory per model (config.pbtxt, weights, labels). "
          "Required.");
ABSL_FLAG(std::string, default_model, "", "Model for requests that name none (default: first).");
ABSL_FLAG(std::string, host, "0.0.0.0", "Interface to listen on (127.0.0.1 = loopback only).");
ABSL_FLAG(int, port, 0, "gRPC port; 0 picks a free port (printed on stdout).");
ABSL_FLAG(std::string, metrics_host, "",
          "Interface for the /metrics endpoint; empty = the same as --host (e.g. 127.0.0.1 "
          "keeps metrics off the public interface).");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM server certificate chain; with --tls_key the gRPC port speaks TLS only.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; set -> mutual TLS: clients must present a certificate it signed.");
ABSL_FLAG(int, metrics_port, 0,
          "Prometheus /metrics port on --host; 0 picks a free port (printed), -1 disables.");
ABSL_FLAG(int, http_port, -1,
          "Open Inference Protocol (KServe v2) REST port on --host; 0 picks a free port "
          "(printed), -1 disables (docs/oip.md). Its gRPC form is always on --port.");
ABSL_FLAG(int64_t, http_max_body_bytes, 64 << 20,
          "Largest accepted REST request body (bytes); larger ones get 413.");
ABSL_FLAG(int, http_threads, 16, "REST worker threads (each holds one request until answered).");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda | cuda:N");
ABSL_FLAG(std::string, dtype, "",
          "float32 | bfloat16 | float16 (cuda only); empty = float32 on cpu, bfloat16 on cuda");
ABSL_FLAG(bool, cuda_graphs, true,
          "cuda: capture a CUDA graph per (keep-rate, batch size) and replay it");
// Default 1: the fastest setting measured on the 2-core Debian machine (DeiT-S dense 18.0
// img/s at batch 1 vs 15.2 with 2 threads, which switch the GEMMs from oneDNN to ATen);
// bench/results/threads-cpu.md.
ABSL_FLAG(int, threads, 1,
          "LibTorch intra-op threads (default 1: fastest measured here, see "
          "bench/results/threads-cpu.md); 0 = hardware concurrency.");
ABSL_FLAG(int, max_batch_size, 8, "Largest batch run at once.");
ABSL_FLAG(int, max_queue_delay_ms, 5,
          "How long the first request of a batch waits for more (milliseconds).");
ABSL_FLAG(int, max_queue_size, 256,
          "Requests waiting in all queues; more are refused with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, num_batch_threads, 1, "Batches run concurrently.");
ABSL_FLAG(int, max_stream_in_flight, 32,
          "Unanswered requests per ClassifyStream before the server stops reading it.");
ABSL_FLAG(int64_t, max_image_pixels, 50'000'000,
          "Largest accepted image (width x height), checked before decoding.");
ABSL_FLAG(int, max_message_bytes, vitserve::kDefaultMaxReceiveMessageBytes,
          "Largest accepted gRPC request message (bytes).");
ABSL_FLAG(std::string, scheduler, "budget",
          "budget = latency-budget scheduler (keep-rate chosen per batch from the requests' "
          "budgets; a latency sweep per model at start-up) | fixed = size-or-delay batching "
          "at the requested or default keep-rate.");
ABSL_FLAG(double, shadow_fraction, 0.05,
          "Accuracy proxy: fraction of pruned requests also run dense when the server is idle "
          "(0 = off).");
ABSL_FLAG(double, sweep_time_cap_s, 20,
          "--scheduler=budget: cap on each model's start-up latency sweep (seconds); points "
          "not measured by then are extrapolated.");
ABSL_FLAG(int, sweep_repeats, 3,
          "--scheduler=budget: timed runs per sweep point (the median is kept).");
ABSL_FLAG(double, budget_safety_fraction, 0.1,
          "--scheduler=budget: predicted batch times are inflated by this fraction before "
          "deadline checks (>= 0).");
ABSL_FLAG(double, budget_safety_margin_ms, 1.0,
          "--scheduler=budget: ... and by this many milliseconds per batch (dispatch, work "
          "outside the measured compute; >= 0).");
ABSL_FLAG(double, budget_target_utilization, 0.8,
          "--scheduler=budget: the load cap. The policy serves no keep-rate at which the "
          "recent arrival rate would take more than this fraction of the device's time "
          "(full batches, predicted); in [0, 1], 0 = off.");
ABSL_FLAG(double, budget_miss_target, 0.005,
          "--scheduler=budget: target ratio of admitted budgeted requests that miss their "
          "budget; predictions are inflated while misses or batch times exceed it "
          "(docs/scheduler.md, \"Interference\"). In [0, 1); 0 = no such correction.");
ABSL_FLAG(int, drain_timeout_s, 30,
          "On SIGTERM, how long in-flight requests may take before they are cancelled.");

namespace vitserve {
namespace {

int Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "vitserve: " << what << ": " << status << std::endl;
  return 1;
}

int Run() {
  const std::string repository = absl::GetFlag(FLAGS_model_repository);
  if (repository.empty()) {
    std::cerr << "vitserve: --model_repository=DIR is required" << std::endl;
    return 2;
  }
  const std::string scheduler = absl::GetFlag(FLAGS_scheduler);
  if (scheduler != "budget" && scheduler != "fixed") {
    std::cerr << "vitserve: --scheduler must be budget or fixed, got '" << scheduler << "'"
              << std::endl;
    return 2;
  }
  const double shadow_fraction = absl::GetFlag(FLAGS_shadow_fraction);
  if (!(shadow_fraction >= 0.0 && shadow_fraction <= 1.0)) {
    std::cerr << "vitserve: --shadow_fraction must be in [0, 1], got " << shadow_fraction
              << std::endl;
    return 2;
  }
  const double safety_fraction = absl::GetFlag(FLAGS_budget_safety_fraction);
  const double safety_margin_ms = absl::GetFlag(FLAGS_budget_safety_margin_ms);
  if (!(safety_fraction >= 0.0) || !(safety_margin_ms >= 0.0)) {
    std::cerr << "vitserve: --budget_safety_fraction and --budget_safety_margin_ms must be "
                 ">= 0, got "
              << safety_fraction << " and " << safety_margin_ms << std::endl;
    return 2;
  }
  const double target_utilization = absl::GetFlag(FLAGS_budget_target_utilization);
  if (!(target_utilization >= 0.0 && target_utilization <= 1.0)) {
    std::cerr << "vitserve: --budget_target_utilization must be in [0, 1], got "
              << target_utilization << std::endl;
    return 2;
  }
  const double miss_target = absl::GetFlag(FLAGS_budget_miss_target);
  if (!(miss_target >= 0.0 && miss_target < 1.0)) {
    std::cerr << "vitserve: --budget_miss_target must be in [0, 1), got " << miss_target
              << std::endl;
    return 2;
  }
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  // SIGTERM/SIGINT are taken synchronously by sigwait() below; blocked here, before any
  // thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string host = absl::GetFlag(FLAGS_host);
  const std::string metrics_host =
      absl::GetFlag(FLAGS_metrics_host).empty() ? host : absl::GetFlag(FLAGS_metrics_host);
  // Read the certificates before anything starts: a bad file is a startup error.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                             absl::GetFlag(FLAGS_tls_client_ca)});
  if (!credentials.ok()) return Fail("bad TLS configuration", credentials.status());
  // Metrics are served by MetricsHttpServer, not by prometheus-cpp's civetweb exposer,
  // which cannot start threads in a process with LibTorch (see metrics_http_server.h).
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Create({});
  if (!metrics.ok()) return Fail("cannot create metrics", metrics.status());
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
        MetricsHttpServer::Start(metrics_host, metrics_port, metrics->get());
    if (!started.ok()) return Fail("cannot start the metrics endpoint", started.status());
    metrics_server = std::move(*started);
  }

  ModelLoadOptions load_options;
  load_options.device = absl::GetFlag(FLAGS_device);
  load_options.dtype = absl::GetFlag(FLAGS_dtype);
  load_options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  load_options.intra_op_threads = threads;  // set explicitly, never left to LibTorch
  PreprocessorOptions preprocess_options;
  preprocess_options.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  absl::StatusOr<std::vector<ServedModel>> models =
      LoadModelRepository(repository, load_options, preprocess_options);
  if (!models.ok()) return Fail("cannot load the model repository", models.status());

  RealClock clock;
  InferenceServiceOptions service_options;
  service_options.default_model = absl::GetFlag(FLAGS_default_model);
  service_options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  service_options.max_queue_delay = absl::Milliseconds(absl::GetFlag(FLAGS_max_queue_delay_ms));
  service_options.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  service_options.num_batch_threads = absl::GetFlag(FLAGS_num_batch_threads);
  service_options.max_stream_in_flight = absl::GetFlag(FLAGS_max_stream_in_flight);
  service_options.scheduler =
      scheduler == "budget" ? SchedulerKind::kBudget : SchedulerKind::kFixed;
  service_options.sweep_repeats = absl::GetFlag(FLAGS_sweep_repeats);
  service_options.sweep_time_cap = absl::Seconds(absl::GetFlag(FLAGS_sweep_time_cap_s));
  service_options.shadow_fraction = absl::GetFlag(FLAGS_shadow_fraction);
  service_options.safety_fraction = safety_fraction;
  service_options.safety_margin = absl::Microseconds(std::llround(1e3 * safety_margin_ms));
  service_options.target_utilization = target_utilization;
  service_options.guard_miss_target = miss_target;
  service_options.log = [](const std::string& line) {
    std::cerr << "vitserve: " << line << std::endl;
  };
  absl::StatusOr<std::unique_ptr<InferenceServiceImpl>> service =
      InferenceServiceImpl::Create(std::move(*models), service_options, &clock, metrics->get());
  if (!service.ok()) return Fail("cannot create the service", service.status());

  // The Open Inference Protocol over the same service: gRPC on --port, REST on --http_port.
  OipCoreOptions oip_options;
  oip_options.server_version = VITSERVE_VERSION;
  OipCore oip(service->get(), &clock, oip_options);
  OipGrpcService oip_grpc(&oip);

  GrpcServerOptions server_options;
  server_options.host = host;
  server_options.port = absl::GetFlag(FLAGS_port);
  server_options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  server_options.credentials = *credentials;
  server_options.extra_services.push_back(&oip_grpc);
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(service->get(), server_options);
  if (!server.ok()) return Fail("cannot start the gRPC server", server.status());

  if (absl::Status warm = (*service)->WarmUp(); !warm.ok()) return Fail("warm-up failed", warm);
  std::unique_ptr<OipHttpServer> http_server;
  if (absl::GetFlag(FLAGS_http_port) >= 0) {
    OipHttpOptions http_options;
    http_options.host = host;
    http_options.port = absl::GetFlag(FLAGS_http_port);
    http_options.max_body_bytes =
        static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_http_max_body_bytes)));
    http_options.threads = absl::GetFlag(FLAGS_http_threads);
    absl::StatusOr<std::unique_ptr<OipHttpServer>> started =
        OipHttpServer::Start(&oip, http_options);
    if (!started.ok()) return Fail("cannot start the REST endpoint", started.status());
    http_server = std::move(*started);
  }
  (*server)->SetServing(true);
  oip.SetReady(true);
  std::cout << "vitserve listening on " << (*server)->address() << "\n";
  if (http_server != nullptr) {
    std::cout << "vitserve http on "
              << (host.find(':') != std::string::npos
                      ? absl::StrCat("[", host, "]:", http_server->port())
                      : absl::StrCat(host, ":", http_server->port()))
              << "\n";
  }
  if (metrics_server != nullptr) {
    std::cout << "vitserve metrics on "
              << (metrics_host.find(':') != std::string::npos
                      ? absl::StrCat("[", metrics_host, "]:", metrics_server->port())
                      : absl::StrCat(metrics_host, ":", metrics_server->port()))
              << "\n";
  }
  std::cout << std::flush;

  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // Hot reload: every model directory is loaded again beside the served version and
    // swapped in when it loads and warms up; a broken one is refused and the old version
    // keeps serving. Traffic flows on the batch threads meanwhile.
    absl::StatusOr<std::vector<std::string>> names = ListModels(repository);
    if (!names.ok()) {
      std::cerr << "vitserve: reload: " << names.status() << std::endl;
      continue;
    }
    for (const std::string& name : *names) {
      absl::StatusOr<ServedModel> next =
          LoadServedModel(repository, name, load_options, preprocess_options);
      const std::string version = next.ok() ? next->model->spec().version : "";
      absl::Status s = next.ok() ? (*service)->ReloadModel(*std::move(next)) : next.status();
      if (s.ok()) {
        std::cerr << "vitserve: reload: model '" << name << "' now serves version " << version
                  << std::endl;
      } else {
        std::cerr << "vitserve: reload refused, the served version stays: " << s << std::endl;
      }
    }
  }
  std::cerr << "vitserve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") << ", draining"
            << std::endl;
  (*server)->SetServing(false);
  oip.SetReady(false);
  (*service)->StartDraining();
  (*server)->Shutdown(absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s)));
  if (http_server != nullptr) http_server->Stop();
  (*service)->Shutdown();
  if (metrics_server != nullptr) metrics_server->Stop();
  std::cerr << "vitserve: stopped" << std::endl;
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  vitserve::TuneMallocForInference();  // before any thread; see malloc_tuning.h
  vitserve::SetCommandLineUsage(
      "server/main.cc",
      "vitserve --model_repository=DIR [--port=N] [--metrics_port=N] [flags]\n"
      "gRPC server for token-pruned Vision Transformers (see README.md). Ports default to 0:\n"
      "a free port, printed on the 'listening on' line; the quick start uses 8500 and 9090.");
  absl::ParseCommandLine(argc, argv);
  return vitserve::Run();
}
